"""A local relay that speaks TLS to a plugin through OpenSSL instead of gRPC's TLS.

go-plugin's AutoMTLS certificate uses an ECDSA P-521 key, whose signatures the
TLS library built into grpcio (BoringSSL) refuses, so gRPC's own TLS cannot
reach a Go plugin. The relay listens on a private unix socket, and for each
connection gRPC makes to it opens a mutual-TLS connection (Python's ssl
module, ALPN h2) to the plugin and copies bytes both ways. Certificates that
gRPC can handle (our own SDK's P-256) do not go through it.

``open_plugin_channel`` picks the relay or gRPC's own TLS for one plugin
address (the main connection and every brokered one). ``TlsTerminator`` is the
same trick the other way round, for servers the host offers through the
go-plugin broker: under TLS 1.3 BoringSSL also cannot accept a P-521 *client*
certificate, so OpenSSL terminates the plugin's mutual TLS and passes the bytes
to a plaintext gRPC server on a private unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import tempfile
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from .mtls import CertPair, der_to_pem

__all__ = ["GRPC_OPTIONS", "TlsRelay", "TlsTerminator", "needs_relay", "open_plugin_channel"]

_CHUNK = 64 * 1024

GRPC_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
]
"""go-plugin's dial options: message sizes up to MaxInt32 both ways."""


def needs_relay(server_cert_der: bytes) -> bool:
    """True when gRPC's TLS cannot verify this certificate's key (P-521)."""
    key = x509.load_der_x509_certificate(server_cert_der).public_key()
    return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.key_size > 384


def _load_pair(ctx: ssl.SSLContext, pair: CertPair, scratch: Path) -> None:
    # load_cert_chain reads files only: write them privately, load, delete at once.
    fd, name = tempfile.mkstemp(dir=scratch, prefix=".pair-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pair.cert_pem + pair.key_pem)
        ctx.load_cert_chain(name)
    finally:
        os.unlink(name)


def _client_context(server_cert_der: bytes, client: CertPair, scratch: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=der_to_pem(server_cert_der).decode())
    ctx.set_alpn_protocols(["h2"])
    _load_pair(ctx, client, scratch)
    return ctx


def _server_context(client_cert_der: bytes, server: CertPair, scratch: Path) -> ssl.SSLContext:
    """Mutual TLS as go-plugin's own servers do it: only ``client_cert_der`` may connect."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=der_to_pem(client_cert_der).decode())
    ctx.set_alpn_protocols(["h2"])  # grpc-go refuses a TLS server that does not pick h2
    _load_pair(ctx, server, scratch)
    return ctx


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class TlsRelay:
    """Plain unix socket in front, mutual TLS to the plugin behind."""

    def __init__(
        self, network: str, address: str, server_cert_der: bytes, client: CertPair, scratch: Path
    ) -> None:
        self._network = network
        self._address = address
        self._ctx = _client_context(server_cert_der, client, scratch)
        self._dir = Path(tempfile.mkdtemp(prefix="relay-", dir=scratch))
        self.path = self._dir / "sock"
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._network == "unix":
            return await asyncio.open_unix_connection(
                self._address, ssl=self._ctx, server_hostname="localhost"
            )
        host, _, port = self._address.rpartition(":")
        return await asyncio.open_connection(
            host.strip("[]"), int(port), ssl=self._ctx, server_hostname="localhost"
        )

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def start(self) -> str:
        """Start listening; returns the gRPC target to dial."""
        self._server = await asyncio.start_unix_server(self._track, path=str(self.path))
        os.chmod(self.path, 0o600)
        return f"unix:{self.path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        with contextlib.suppress(OSError):
            self.path.unlink()
            self._dir.rmdir()


class TlsTerminator:
    """Mutual TLS in front (OpenSSL), a plaintext gRPC server's unix socket behind."""

    def __init__(
        self, upstream: Path, client_cert_der: bytes, server: CertPair, scratch: Path
    ) -> None:
        self._upstream = upstream
        self._ctx = _server_context(client_cert_der, server, scratch)
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._path: Path | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self._upstream))
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def start_unix(self, path: Path) -> str:
        """Listen on the unix socket ``path``; returns the address to announce."""
        self._server = await asyncio.start_unix_server(
            self._track, path=str(path), ssl=self._ctx, ssl_handshake_timeout=10.0
        )
        self._path = path
        os.chmod(path, 0o600)
        return str(path)

    async def start_tcp(self, host: str = "127.0.0.1") -> str:
        """Listen on a fresh loopback port; returns ``host:port`` to announce."""
        self._server = await asyncio.start_server(
            self._track, host=host, port=0, ssl=self._ctx, ssl_handshake_timeout=10.0
        )
        port = self._server.sockets[0].getsockname()[1]
        return f"{host}:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()


async def open_plugin_channel(
    network: str, address: str, server_cert_der: bytes, client: CertPair, scratch: Path
) -> tuple[grpc.aio.Channel, TlsRelay | None]:
    """A mutual-TLS channel to a plugin's server, through the relay when gRPC cannot verify
    the plugin's key. The caller closes the relay (if any) after the channel."""
    if needs_relay(server_cert_der):
        relay = TlsRelay(network, address, server_cert_der, client, scratch)
        target = await relay.start()
        return grpc.aio.insecure_channel(target, options=GRPC_OPTIONS), relay
    creds = grpc.ssl_channel_credentials(
        root_certificates=der_to_pem(server_cert_der),
        private_key=client.key_pem,
        certificate_chain=client.cert_pem,
    )
    target = f"unix:{address}" if network == "unix" else address
    options = [*GRPC_OPTIONS, ("grpc.ssl_target_name_override", "localhost")]
    return grpc.aio.secure_channel(target, creds, options=options), None
