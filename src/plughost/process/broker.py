"""go-plugin's GRPCBroker, host side: extra gRPC services by id, both ways.

go-plugin (grpc_broker.go) lets either side offer a gRPC server under a
numeric id and the other side connect to it. One bidirectional stream,
``plugin.GRPCBroker/StartStream``, opened by the host on the plugin's main
connection, carries ``ConnInfo{service_id, network, address}`` announcements:

- plugin → host: the plugin calls ``broker.AcceptAndServe(id, ...)``; its
  ``Accept`` listens on a fresh socket (a unix socket in
  ``PLUGIN_UNIX_SOCKET_DIR`` on Linux) and announces it. ``dial(id)`` waits for
  that announcement and opens a channel to it.
- host → plugin: ``serve(adders)`` starts a gRPC server for the host's own
  services, announces it under a new id and returns the id, which the host
  passes to the plugin in some call; the plugin's ``broker.Dial(id)`` waits
  (5 s) for the announcement and connects.

Ids: go-plugin's ``NextId()`` counts from 1 on each side independently. The two
directions never collide because each side only files the *other* side's
announcements (the host's ids end up in the plugin's pending table and the
plugin's in ours), so the host simply counts 1, 2, 3 ... as go-plugin's own
host does. An announcement nobody asked for is kept 5 s (go-plugin's
``timeoutWait``); one id is dialled once per announcement.

TLS (AutoMTLS): a brokered server uses the same TLS configuration as the main
one. The plugin's servers present its handshake certificate and want the
host's client certificate, so ``dial`` connects exactly like the main channel
(through the OpenSSL relay for go-plugin's P-521 certificate). The plugin
dials the host's servers trusting the certificate it got in
``PLUGIN_CLIENT_CERT`` and presenting its own, so the host's servers present
the host certificate and accept only the plugin's; for a P-521 plugin an
OpenSSL terminator stands in front of a plaintext gRPC server on a private
socket (BoringSSL cannot accept that client certificate under TLS 1.3).

Multiplexing (``PLUGIN_MULTIPLEX_GRPC``, the ``knock`` messages) is never
requested by plughost; a knock is answered with an error so the plugin fails
at once instead of after its 5 s timeout.

A hostile plugin must not make the host connect anywhere it likes:
announcements must name a unix socket inside the plugin's socket directory
(not one of the host's own) or a loopback IP literal with a port; anything else
is refused, and a ``dial`` waiting for that id fails saying why. Messages are
capped at 4 KiB, unclaimed announcements at 64, servers and channels at 256.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from .. import fsutil
from .._proto import grpc_broker_pb2
from ..errors import BrokerError
from .mtls import CertPair, der_to_pem
from .tlsrelay import GRPC_OPTIONS, TlsRelay, TlsTerminator, needs_relay, open_plugin_channel

__all__ = ["Announcement", "BrokerConfig", "GRPCBroker", "ServicerAdder"]

log = logging.getLogger(__name__)

ServicerAdder = Callable[[grpc.aio.Server], None]
"""Registers one service on a server, like a generated ``add_XServicer_to_server``."""

_METHOD = "/plugin.GRPCBroker/StartStream"
_MAX_ID = 2**32 - 1  # service ids are uint32
_MAX_MESSAGE = 4096  # bytes of one ConnInfo from the plugin
_MAX_SERVERS = 256
_MAX_CHANNELS = 256
_MAX_LOGGED = 20  # refusals and drops logged per broker; the rest are only counted
_SUN_PATH_MAX = 107  # bytes of a unix socket path, without the terminating NUL
_KNOCK_REPLY_TIMEOUT = 2.0
_SERVER_GRACE = 1.0


@dataclasses.dataclass(frozen=True)
class BrokerConfig:
    """What the broker needs to know about one plugin connection."""

    plugin_id: str
    network: str
    """How the host's own brokered servers listen: ``unix`` or ``tcp`` (127.0.0.1)."""
    socket_dir: Path
    """The plugin's socket directory: the host's sockets go in a private directory
    inside it, and the plugin's unix announcements must point inside it."""
    server_cert: bytes | None = None
    """The plugin's AutoMTLS certificate (DER, from the handshake); None without TLS."""
    client_cert: CertPair | None = None
    """The host's AutoMTLS pair (what the plugin got in PLUGIN_CLIENT_CERT)."""
    report: Callable[[str], None] | None = None
    """Where to tell the plugin's log about refused announcements (a stderr-like line)."""
    pending_ttl: float = 5.0
    max_pending: int = 64

    def __post_init__(self) -> None:
        if self.network not in ("unix", "tcp"):
            raise ValueError(f"broker network must be unix or tcp, not {self.network!r}")
        if (self.server_cert is None) != (self.client_cert is None):
            raise ValueError("TLS needs both the plugin's certificate and the host's pair")

    @property
    def tls(self) -> bool:
        return self.server_cert is not None and self.client_cert is not None


@dataclasses.dataclass(frozen=True)
class Announcement:
    """A checked ``ConnInfo`` from the plugin: where service ``service_id`` listens."""

    service_id: int
    network: str  # unix | tcp
    address: str  # the resolved socket path, or "127.0.0.1:port" / "[::1]:port"

    @property
    def target(self) -> str:
        return f"unix:{self.address}" if self.network == "unix" else self.address


@dataclasses.dataclass
class _Served:
    service_id: int
    server: grpc.aio.Server
    network: str
    address: str
    terminator: TlsTerminator | None = None

    async def stop(self) -> None:
        if self.terminator is not None:
            await self.terminator.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.stop(_SERVER_GRACE), _SERVER_GRACE + 2.0)


class _Refused(Exception):
    """An announcement the host will not connect to; the message says why."""


def _parse(raw: bytes) -> grpc_broker_pb2.ConnInfo | None:
    """The stream's deserializer: None (ends the stream) for oversized or malformed data."""
    if len(raw) > _MAX_MESSAGE:
        return None
    try:
        return grpc_broker_pb2.ConnInfo.FromString(raw)
    except DecodeError:
        return None


def _describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
        return "the plugin does not serve go-plugin's broker (plugin.GRPCBroker)"
    if exc.code() == grpc.StatusCode.CANCELLED:
        return "the broker stream was cancelled"
    return f"the broker stream failed: {exc.code().name} {exc.details() or ''}".rstrip()


class GRPCBroker:
    """go-plugin's broker for one connected plugin (see the module docstring).

    Created over the plugin's main channel; the stream opens on the first
    ``dial`` or ``serve``. Closing ends the stream for good, and with it the
    plugin's side of the broker (go-plugin closes its broker when the stream ends).
    """

    def __init__(self, channel: grpc.aio.Channel, config: BrokerConfig) -> None:
        self._channel = channel
        self.config = config
        self._call: Any = None  # grpc.aio.StreamStreamCall[ConnInfo, ConnInfo], once opened
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._last_id = 0
        self._pending: dict[int, tuple[float, Announcement | str]] = {}
        self._waiters: dict[int, list[asyncio.Future[Announcement | str]]] = {}
        self._servers: list[_Served] = []
        self._dialed: list[tuple[grpc.aio.Channel, TlsRelay | None]] = []
        self._dir: Path | None = None
        self._broken: str | None = None
        self._closing: asyncio.Task[None] | None = None
        self._logged = 0
        self.refused = 0
        """How many announcements were refused or dropped (tests, diagnostics)."""

    # -- public API ----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closing is not None

    @property
    def pending(self) -> int:
        """Announcements received that no ``dial`` has claimed yet."""
        self._expire()
        return len(self._pending)

    @property
    def served(self) -> list[Announcement]:
        """What the host announced, one entry per brokered server still running."""
        return [Announcement(s.service_id, s.network, s.address) for s in self._servers]

    async def dial(self, service_id: int, timeout: float = 5.0) -> grpc.aio.Channel:
        """A channel to the service the plugin announces under ``service_id``.

        Waits up to ``timeout`` seconds for the announcement (go-plugin's
        ``broker.Accept``/``AcceptAndServe`` on the plugin side), then as long
        again at most for the connection. The broker closes the channel on
        ``close()``; closing it earlier is fine. Raises BrokerError.
        """
        self._check_id(service_id)
        self._open_stream()
        got = await self._wait_for(service_id, timeout)
        if isinstance(got, str):
            raise self._error(got)
        return await self._connect(got, max(timeout, 0.5))

    async def serve(self, servicer_adders: Sequence[ServicerAdder]) -> int:
        """Serve the host's services on a fresh socket, announce it, return its id.

        Pass the id to the plugin, which connects with go-plugin's
        ``broker.Dial(id)`` within its 5 s. The server runs until
        ``stop_serving(id)`` or ``close()``.
        """
        self._open_stream()
        if len(self._servers) >= _MAX_SERVERS:
            raise self._error(f"too many brokered servers ({_MAX_SERVERS}) for one plugin")
        service_id = self._next_id()
        served = await self._start_server(service_id, servicer_adders)
        if self._closing is not None:  # closed while the server was starting
            await served.stop()
            self._usable()
        self._servers.append(served)
        info = grpc_broker_pb2.ConnInfo(
            service_id=service_id, network=served.network, address=served.address
        )
        try:
            await self._send(info)
        except BaseException:
            if served in self._servers:
                self._servers.remove(served)
            await served.stop()
            raise
        log.debug("%s: serving broker id %d on %s", self.config.plugin_id, service_id, info.address)
        return service_id

    async def stop_serving(self, service_id: int) -> bool:
        """Stop the brokered server ``serve`` returned ``service_id`` for (go-plugin's
        examples stop theirs once the call that used it is done); False if none runs."""
        for served in self._servers:
            if served.service_id == service_id:
                self._servers.remove(served)
                await served.stop()
                return True
        return False

    async def close(self) -> None:
        """End the stream, stop the servers, close dialled channels. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.create_task(
                self._close(), name=f"plughost:{self.config.plugin_id}:broker-close"
            )
        await asyncio.shield(self._closing)

    # -- the stream ------------------------------------------------------------------
    def _error(self, detail: str) -> BrokerError:
        return BrokerError(
            detail,
            plugin_id=self.config.plugin_id,
            suggestions=["check the plugin's log for broker errors"],
        )

    def _usable(self) -> None:
        if self._closing is not None:
            raise self._error("the broker is closed (the plugin was stopped or the broker closed)")
        if self._broken is not None:
            raise self._error(self._broken)

    def _open_stream(self) -> None:
        self._usable()
        if self._call is not None:
            return
        method = self._channel.stream_stream(
            _METHOD,
            request_serializer=grpc_broker_pb2.ConnInfo.SerializeToString,
            response_deserializer=_parse,
        )
        self._call = method()
        self._reader = asyncio.create_task(
            self._read_loop(self._call), name=f"plughost:{self.config.plugin_id}:broker"
        )

    async def _send(self, info: grpc_broker_pb2.ConnInfo) -> None:
        self._usable()
        async with self._write_lock:
            try:
                await self._call.write(info)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                reason = (
                    _describe_rpc_error(exc)
                    if isinstance(exc, grpc.aio.AioRpcError)
                    else "the broker stream has ended"
                )
                raise self._error(f"cannot announce on the broker stream: {reason}") from None

    async def _read_loop(self, call: Any) -> None:
        reason = "the plugin ended the broker stream"
        try:
            while True:
                info = await call.read()
                if info is grpc.aio.EOF:
                    break
                if info is None:
                    reason = (
                        f"the plugin sent a malformed or oversized (> {_MAX_MESSAGE} bytes) "
                        "broker message; the broker stream was closed"
                    )
                    self._note(reason)
                    break
                await self._receive(info)
        except grpc.aio.AioRpcError as exc:
            reason = _describe_rpc_error(exc)
        except asyncio.InvalidStateError:
            pass
        finally:
            call.cancel()
            self._fail(reason)

    def _fail(self, reason: str) -> None:
        if self._broken is None:
            self._broken = reason
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(reason)
        self._waiters.clear()

    async def _receive(self, info: grpc_broker_pb2.ConnInfo) -> None:
        if info.HasField("knock"):
            if info.knock.knock and not info.knock.ack:
                await self._refuse_knock(info.service_id)
            return
        service_id = info.service_id
        try:
            item: Announcement | str = self._check(info)
        except _Refused as exc:
            item = f"refused the plugin's announcement for broker id {service_id}: {exc}"
            self.refused += 1
            self._note(item)
        self._deliver(service_id, item)

    async def _refuse_knock(self, service_id: int) -> None:
        message = "plughost does not multiplex the go-plugin broker (no PLUGIN_MULTIPLEX_GRPC)"
        reply = grpc_broker_pb2.ConnInfo(
            service_id=service_id,
            knock=grpc_broker_pb2.ConnInfo.Knock(knock=True, ack=True, error=message),
        )
        with contextlib.suppress(BrokerError, TimeoutError):
            await asyncio.wait_for(self._send(reply), _KNOCK_REPLY_TIMEOUT)

    def _note(self, message: str) -> None:
        if self._logged >= _MAX_LOGGED:
            return
        self._logged += 1
        log.warning("%s: %s", self.config.plugin_id, message)
        if self.config.report is not None:
            with contextlib.suppress(Exception):
                self.config.report(f"[WARN] plughost broker: {message}")

    # -- announcements -----------------------------------------------------------------
    def _expire(self) -> None:
        cutoff = time.monotonic() - self.config.pending_ttl
        for service_id in [i for i, (at, _) in self._pending.items() if at < cutoff]:
            del self._pending[service_id]

    def _deliver(self, service_id: int, item: Announcement | str) -> None:
        waiters = self._waiters.get(service_id, [])
        while waiters:
            fut = waiters.pop(0)
            if not fut.done():
                fut.set_result(item)
                if not waiters:
                    del self._waiters[service_id]
                return
        self._waiters.pop(service_id, None)
        self._expire()
        if service_id in self._pending:  # go-plugin keeps the first one too
            self.refused += 1
            self._note(f"dropped a second announcement for broker id {service_id}")
        elif len(self._pending) >= self.config.max_pending:
            self.refused += 1
            self._note(
                f"dropped the announcement for broker id {service_id}: "
                f"{self.config.max_pending} announcements are already waiting for a dial"
            )
        else:
            self._pending[service_id] = (time.monotonic(), item)

    async def _wait_for(self, service_id: int, timeout: float) -> Announcement | str:
        self._expire()
        if service_id in self._pending:
            return self._pending.pop(service_id)[1]
        self._usable()
        fut: asyncio.Future[Announcement | str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(service_id, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise self._error(
                f"the plugin did not announce broker id {service_id} within {timeout:g} s "
                "(its broker.Accept/AcceptAndServe for that id never ran, or ran "
                f"more than {self.config.pending_ttl:g} s before the dial)"
            ) from None
        finally:
            waiters = self._waiters.get(service_id)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)
                if not waiters:
                    del self._waiters[service_id]

    def _check(self, info: grpc_broker_pb2.ConnInfo) -> Announcement:
        if info.service_id == 0:
            raise _Refused("service id 0 is never allocated")
        if info.network == "unix":
            address = self._check_unix(info.address)
        elif info.network == "tcp":
            address = self._check_tcp(info.address)
        else:
            raise _Refused(f"unknown network {info.network[:20]!r} (only unix and tcp)")
        return Announcement(info.service_id, info.network, address)

    def _check_unix(self, address: str) -> str:
        shown = repr(address[:200])
        if not address.startswith("/") or "\x00" in address:
            raise _Refused(f"unix address {shown} is not an absolute path")
        if len(address.encode()) > _SUN_PATH_MAX:
            raise _Refused(f"unix address {shown} is too long")
        real = os.path.realpath(address)
        base = os.path.realpath(self.config.socket_dir)
        if real == base or not fsutil.is_within(real, base):
            raise _Refused(
                f"unix address {shown} is outside the plugin's socket directory "
                f"{self.config.socket_dir}"
            )
        if self._dir is not None and fsutil.is_within(real, self._dir):
            raise _Refused(f"unix address {shown} is one of the host's own sockets")
        try:
            mode = os.stat(real).st_mode
        except OSError:
            raise _Refused(f"nothing listens at unix address {shown}") from None
        if not stat.S_ISSOCK(mode):
            raise _Refused(f"unix address {shown} is not a socket")
        if len(real.encode()) > _SUN_PATH_MAX:
            raise _Refused(f"unix address {shown} resolves to a path too long for a socket")
        return real

    @staticmethod
    def _check_tcp(address: str) -> str:
        shown = repr(address[:200])
        host, sep, port_text = address.rpartition(":")
        if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _Refused(f"tcp address {shown} has no valid port")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            raise _Refused(f"tcp address {shown} is not an IP address (no names)") from None
        if not ip.is_loopback:
            raise _Refused(f"tcp address {shown} is not a loopback address")
        port = int(port_text)
        return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"

    # -- dialling ----------------------------------------------------------------------
    def _prune_dialed(self) -> None:
        def alive(channel: grpc.aio.Channel) -> bool:
            try:
                return channel.get_state() is not grpc.ChannelConnectivity.SHUTDOWN
            except Exception:
                return False

        self._dialed = [(c, r) for c, r in self._dialed if alive(c) or r is not None]

    async def _connect(self, ann: Announcement, timeout: float) -> grpc.aio.Channel:
        self._prune_dialed()
        if len(self._dialed) >= _MAX_CHANNELS:
            raise self._error(f"too many brokered channels ({_MAX_CHANNELS}) to one plugin")
        relay: TlsRelay | None = None
        if self.config.server_cert is not None and self.config.client_cert is not None:
            # The relay's own directory goes straight in the socket dir, as the main
            # channel's does: one level deeper could overflow a unix socket path.
            channel, relay = await open_plugin_channel(
                ann.network,
                ann.address,
                self.config.server_cert,
                self.config.client_cert,
                self.config.socket_dir,
            )
        else:
            channel = grpc.aio.insecure_channel(ann.target, options=GRPC_OPTIONS)
        if self._closing is not None:  # closed while the relay was starting
            await _close_channel(channel, relay)
            self._usable()
        self._dialed.append((channel, relay))
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except TimeoutError:
            self._dialed.remove((channel, relay))
            await _close_channel(channel, relay)
            raise self._error(
                f"the plugin announced broker id {ann.service_id} at {ann.network}:{ann.address} "
                f"but the host could not connect within {timeout:g} s"
            ) from None
        return channel

    # -- serving -----------------------------------------------------------------------
    def _next_id(self) -> int:
        if self._last_id >= _MAX_ID:
            raise self._error("broker ids are used up (2**32 - 1)")
        self._last_id += 1
        return self._last_id

    def _check_id(self, service_id: int) -> None:
        if not 0 < service_id <= _MAX_ID:
            raise self._error(f"broker id {service_id} is not a uint32 above 0")

    def _private_dir(self) -> Path:
        """The host's own directory inside the socket dir (0700), for its brokered sockets."""
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="b-", dir=self.config.socket_dir))
        return self._dir

    async def _start_server(self, service_id: int, adders: Sequence[ServicerAdder]) -> _Served:
        server = grpc.aio.server()  # gRPC's default 4 MiB receive limit
        for add in adders:
            add(server)
        cfg = self.config
        terminator: TlsTerminator | None = None
        try:
            if cfg.server_cert is not None and cfg.client_cert is not None:
                if needs_relay(cfg.server_cert):
                    inner = self._private_dir() / f"g{service_id}"
                    server.add_insecure_port(f"unix:{inner}")
                    terminator = TlsTerminator(
                        inner, cfg.server_cert, cfg.client_cert, self._private_dir()
                    )
                    address = ""
                else:
                    creds = grpc.ssl_server_credentials(
                        [(cfg.client_cert.key_pem, cfg.client_cert.cert_pem)],
                        root_certificates=der_to_pem(cfg.server_cert),
                        require_client_auth=True,
                    )
                    address = self._bind(server, service_id, creds)
            else:
                address = self._bind(server, service_id, None)
            await server.start()
            if terminator is not None:
                if cfg.network == "unix":
                    address = await terminator.start_unix(self._private_dir() / f"s{service_id}")
                else:
                    address = await terminator.start_tcp()
        except (OSError, RuntimeError) as exc:
            if terminator is not None:
                await terminator.close()
            await server.stop(None)
            raise self._error(f"cannot start a brokered server: {exc}") from exc
        return _Served(service_id, server, cfg.network, address, terminator)

    def _bind(
        self, server: grpc.aio.Server, service_id: int, creds: grpc.ServerCredentials | None
    ) -> str:
        if self.config.network == "unix":
            path = self._private_dir() / f"s{service_id}"
            target = f"unix:{path}"
        else:
            target = "127.0.0.1:0"
        if creds is None:
            port = server.add_insecure_port(target)
        else:
            port = server.add_secure_port(target, creds)
        if self.config.network == "unix":
            return str(path)
        if not port:
            raise RuntimeError("no loopback port could be bound")
        return f"127.0.0.1:{port}"

    # -- closing -----------------------------------------------------------------------
    async def _close(self) -> None:
        self._fail("the broker was closed")
        if self._call is not None:
            self._call.cancel()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        servers, self._servers = self._servers, []
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
        dialed, self._dialed = self._dialed, []
        await asyncio.gather(*(_close_channel(c, r) for c, r in dialed), return_exceptions=True)
        self._pending.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


async def _close_channel(channel: grpc.aio.Channel, relay: TlsRelay | None) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(channel.close(), 2.0)
    if relay is not None:
        await relay.close()
