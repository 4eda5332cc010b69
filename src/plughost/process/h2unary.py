"""A lean client for unary gRPC calls to a plugin over a plaintext HTTP/2 connection.

grpcio's asyncio client spends ~70 µs of CPU per unary call in its own machinery
(a poller thread, per-call Cython objects, the channel's filter stack), which puts
Python hosts at twice go-plugin's latency and half its throughput. A unary call is
one HEADERS and one DATA frame each way, so this drives an ``h2`` connection
(python-hyper's sans-IO HTTP/2) over an asyncio connection of its own beside the
grpc channel. It declines (``call`` returns None) whatever it does not do, so the
caller uses the grpc channel: requests over one frame or the server's send window,
metadata that is not plain, more streams than the server takes at once. Streaming
calls and TLS always go through grpc. Failures are ``grpc.aio.AioRpcError`` with the
codes grpc itself would give.

What a plugin sends back is capped, so a hostile one cannot grow the host's memory:
frames at 16 KiB and header blocks at 64 frames (h2), header lists at 16 KiB (grpc's
own hard limit; over it the connection is dropped) and a reply's message at
``max_reply`` bytes (over it the call fails with RESOURCE_EXHAUSTED as the bytes
arrive, and the stream is reset).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
from h2.config import H2Configuration
from h2.connection import (
    ConnectionInputs,
    ConnectionState,
    H2Connection,
    H2ConnectionStateMachine,
)
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.exceptions import (
    DenialOfServiceError,
    NoAvailableStreamIDError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from hpack import Decoder, Encoder, HeaderTuple, NeverIndexedHeaderTuple

__all__ = ["MAX_HEADER_LIST", "MAX_REPLY", "UnaryTransport"]

MAX_HEADER_LIST = 16 * 1024
"""Bytes of a reply's header list (RFC 7541 sizes): grpc's hard metadata limit."""
MAX_REPLY = 64 * 1024 * 1024
"""Bytes of a reply's message taken by default; larger replies need ``fast_unary = False``."""

_OUR_WINDOW = 2**31 - 1  # per stream: the server never waits for a WINDOW_UPDATE from us
_CONN_TOP_UP = 2**30  # added to the connection's window at start; h2 refills it at half
_RST_CODES: dict[int, grpc.StatusCode] = {
    ErrorCodes.REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE,
    ErrorCodes.CANCEL: grpc.StatusCode.CANCELLED,
}
_STATUS_CODES = {str(code.value[0]).encode(): code for code in grpc.StatusCode}
_HTTP_CODES = {
    b"400": grpc.StatusCode.INTERNAL,
    b"401": grpc.StatusCode.UNAUTHENTICATED,
    b"403": grpc.StatusCode.PERMISSION_DENIED,
    b"404": grpc.StatusCode.UNIMPLEMENTED,
    b"429": grpc.StatusCode.UNAVAILABLE,
    b"502": grpc.StatusCode.UNAVAILABLE,
    b"503": grpc.StatusCode.UNAVAILABLE,
    b"504": grpc.StatusCode.UNAVAILABLE,
}
_Fields = list[tuple[bytes, bytes]]


class _DrainsAfterGoaway(H2ConnectionStateMachine):
    """h2 closes its side at a GOAWAY and then refuses every frame (python-hyper/h2#1181),
    but the streams the server kept (up to its last stream id) still get their replies:
    grpc-go's graceful stop says GOAWAY first. The connection stays open to read them;
    ``_Connection`` opens no stream after it."""

    def process_input(self, input_: ConnectionInputs) -> list[Event]:
        if input_ is ConnectionInputs.RECV_GOAWAY and self.state is ConnectionState.CLIENT_OPEN:
            return []
        return super().process_input(input_)


def _table_mark(coder: Encoder | Decoder) -> tuple[object, int]:
    """Changes whenever the dynamic table does (an entry added, or a resize evicting)."""
    table = coder.header_table
    return (table.dynamic_entries[0] if table.dynamic_entries else None), table.maxsize


class _Encoder(Encoder):
    """hpack's encoder, remembering each field's bytes until its table changes.

    A call's fields are the same few every time, and encoding them was a third of the
    cost of sending one; literals go without Huffman coding (bytes are cheap locally).
    """

    def __init__(self) -> None:
        super().__init__()
        self._known: dict[tuple[tuple[bytes, bytes], bool], bytes] = {}
        self._mark = _table_mark(self)

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        mark = _table_mark(self)
        if mark != self._mark or len(self._known) > 256:
            self._known.clear()
            self._mark = mark
        key = (to_add, sensitive)
        got = self._known.get(key)
        if got is None:
            got = super().add(to_add, sensitive, False)
            if _table_mark(self) == mark:
                self._known[key] = got
        return got


class _Decoder(Decoder):
    """hpack's decoder, remembering blocks that left its table as it was: the server
    answers every call with the same few bytes of indexed fields."""

    def __init__(self) -> None:
        super().__init__(MAX_HEADER_LIST)
        self._known: dict[tuple[bytes, bool], list[HeaderTuple]] = {}
        self._mark = _table_mark(self)

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        mark = _table_mark(self)
        if mark != self._mark or len(self._known) > 256:
            self._known.clear()
            self._mark = mark
        key = (bytes(data), raw)
        got = self._known.get(key)
        if got is None:
            got = list(super().decode(data, raw))
            if _table_mark(self) == mark:
                self._known[key] = got
        return list(got)


def _timeout_value(seconds: float) -> bytes:
    """grpc-timeout: at most 8 digits, in the finest unit that fits."""
    micros = max(int(seconds * 1_000_000), 1)
    for unit, per in ((b"u", 1), (b"m", 1000), (b"S", 1_000_000), (b"M", 60_000_000)):
        n = -(-micros // per)
        if n < 100_000_000:
            return b"%d" % n + unit
    return b"99999999H"


def _metadata_fields(metadata: Sequence[tuple[str, str | bytes]]) -> list[HeaderTuple] | None:
    """Metadata as header fields; None for anything grpc would treat specially."""
    out: list[HeaderTuple] = []
    for key, value in metadata:
        if not key.isascii() or not key.islower() or key.startswith((":", "grpc-")):
            return None
        if (
            key in ("te", "content-type", "user-agent")
            or not key.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            return None
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                return None
            raw = base64.b64encode(value).rstrip(b"=")
        elif isinstance(value, str) and value.isascii() and value.isprintable():
            raw = value.encode()
        else:
            return None
        # Never indexed: values differ call to call and may be secrets.
        out.append(NeverIndexedHeaderTuple(key.encode(), raw))
    return out


def _error(
    code: grpc.StatusCode,
    details: str,
    initial: Sequence[tuple[str, Any]] = (),
    trailing: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*trailing),
        details,
        f"plughost unary transport: {code.name}: {details}",
    )


def _metadata(fields: _Fields) -> list[tuple[str, Any]]:
    """The application's fields of a block, as grpc hands them over (-bin ones decoded)."""
    out: list[tuple[str, Any]] = []
    for raw_key, raw_value in fields:
        key = raw_key.decode("latin-1")
        if key.startswith((":", "grpc-")) or key == "content-type":
            continue
        if key.endswith("-bin"):
            out.append((key, base64.b64decode(raw_value + b"=" * (-len(raw_value) % 4))))
        else:
            out.append((key, raw_value.decode("latin-1")))
    return out


class _Call:
    __slots__ = ("data", "future", "initial", "timer", "trailers")

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future
        self.data = bytearray()
        self.initial: _Fields | None = None
        self.trailers: _Fields | None = None
        self.timer: asyncio.TimerHandle | None = None


def _late(call: _Call) -> bool:
    """The call's deadline has passed (its timer may not have run yet)."""
    timer = call.timer
    return timer is not None and asyncio.get_running_loop().time() >= timer.when()


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection; its calls fail with UNAVAILABLE when it goes."""

    def __init__(self, authority: bytes, max_reply: int) -> None:
        self._transport: asyncio.Transport | None = None
        self._calls: dict[int, _Call] = {}
        self._max_reply = max_reply
        self._flush_due = False
        # The fields are ours and already valid: h2 need not check or rewrite them,
        # nor turn the server's into str (grpc wants only a few of them, as bytes).
        self._h2 = H2Connection(
            H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            )
        )
        self._h2.state_machine = _DrainsAfterGoaway()
        self._h2.encoder = _Encoder()
        self._h2.decoder = _Decoder()
        # Sent by initiate_connection and in force from the start (h2's way to set them).
        self._h2.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: _OUR_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self._head = [
            HeaderTuple(b":method", b"POST"),
            HeaderTuple(b":scheme", b"http"),
            HeaderTuple(b":authority", authority),
        ]
        # After the pseudo-header fields (:path comes per call), which must lead.
        self._tail = [
            HeaderTuple(b"content-type", b"application/grpc"),
            HeaderTuple(b"te", b"trailers"),
        ]
        self.usable = True  # False after GOAWAY, a protocol error or the connection's end
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(_CONN_TOP_UP)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        why = f"connection to the plugin closed ({exc})" if exc else "connection closed"
        self._fail_all(grpc.StatusCode.UNAVAILABLE, why)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        h2 = self._h2
        try:
            events = h2.receive_data(data)
        except DenialOfServiceError as exc:
            self._abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the plugin's reply is too big: {exc}")
            return
        except ProtocolError as exc:
            self._abort(grpc.StatusCode.UNAVAILABLE, f"the plugin broke HTTP/2: {exc}")
            return
        calls = self._calls
        for event in events:
            kind = type(event)
            if kind is DataReceived:
                assert isinstance(event, DataReceived)
                h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                call = calls.get(event.stream_id)
                if call is not None:
                    call.data += event.data
                    if len(call.data) > self._max_reply + 5:
                        self._reset(event.stream_id)
                        self._settle(call, self._too_big(len(call.data)))
            elif kind is ResponseReceived:
                assert isinstance(event, ResponseReceived)
                call = calls.get(event.stream_id)
                if call is not None:
                    call.initial = event.headers
            elif kind is TrailersReceived:
                assert isinstance(event, TrailersReceived)
                call = calls.get(event.stream_id)
                if call is not None:
                    call.trailers = event.headers
            elif kind is StreamEnded:
                assert isinstance(event, StreamEnded)
                self._finish(event.stream_id)
            elif kind is StreamReset:
                assert isinstance(event, StreamReset)
                self._stream_reset(event.stream_id, event.error_code)
            elif kind is ConnectionTerminated:
                assert isinstance(event, ConnectionTerminated)
                self._going_away(event.last_stream_id or 0)
        self._flush()

    # -- what the server sent ------------------------------------------------------------
    def _finish(self, stream: int) -> None:
        call = self._calls.pop(stream, None)
        if call is None:
            return
        if _late(call):  # the reply came in the same turn as the deadline: grpc's rule
            self._expire_call(call)
        else:
            self._settle_reply(call)
        self._close_if_drained()

    def _settle_reply(self, call: _Call) -> None:
        if call.trailers is None:  # trailers-only: one block, which is the trailers
            initial: _Fields = []
            trailers = call.initial or []
        else:
            initial, trailers = call.initial or [], call.trailers
        head = dict(call.initial or [])
        tail = dict(trailers)
        status = tail.get(b"grpc-status")
        http = head.get(b":status", b"200")
        if status is None:
            if http != b"200":
                name = _HTTP_CODES.get(http, grpc.StatusCode.UNKNOWN)
                self._settle(call, _error(name, f"HTTP status {http.decode('latin-1')}"))
            else:
                self._settle(call, _error(grpc.StatusCode.INTERNAL, "the reply had no grpc-status"))
        elif status != b"0":
            code = _STATUS_CODES.get(status, grpc.StatusCode.UNKNOWN)
            details = urllib.parse.unquote(tail.get(b"grpc-message", b"").decode("latin-1"))
            self._settle(call, _error(code, details, _metadata(initial), _metadata(trailers)))
        else:
            data = call.data
            if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5]) != len(data) - 5:
                why = "the reply was not one uncompressed message"
                self._settle(call, _error(grpc.StatusCode.INTERNAL, why))
            else:
                if call.timer is not None:
                    call.timer.cancel()
                if not call.future.done():
                    call.future.set_result(bytes(data[5:]))

    def _stream_reset(self, stream: int, code: int | None) -> None:
        call = self._calls.pop(stream, None)
        if call is None:
            return
        if _late(call):  # grpc-go resets a stream whose deadline passed
            self._expire_call(call)
        else:
            status = _RST_CODES.get(code or 0, grpc.StatusCode.INTERNAL)
            self._settle(call, _error(status, f"stream reset by the plugin (code {code})"))
        self._close_if_drained()

    def _going_away(self, last: int) -> None:
        self.usable = False
        for stream in [s for s in self._calls if s > last]:
            why = "the plugin is going away"
            self._settle(self._calls.pop(stream), _error(grpc.StatusCode.UNAVAILABLE, why))
        self._close_if_drained()

    # -- calls ------------------------------------------------------------------------
    def start(
        self, path: bytes, request: bytes, timeout: float | None, extra: list[HeaderTuple]
    ) -> asyncio.Future[bytes] | None:
        """Send one call; None when it does not fit what the server lets us send now."""
        h2 = self._h2
        size = len(request) + 5
        if self._transport is None or size > min(
            h2.max_outbound_frame_size,
            h2.outbound_flow_control_window,
            h2.remote_settings.initial_window_size,
        ):
            return None
        fields = [*self._head, HeaderTuple(b":path", path), *self._tail, *extra]
        if timeout is not None:
            fields.append(NeverIndexedHeaderTuple(b"grpc-timeout", _timeout_value(timeout)))
        try:
            stream = h2.get_next_available_stream_id()
            h2.send_headers(stream, fields)
        except NoAvailableStreamIDError:
            self.usable = False
            return None
        except TooManyStreamsError:
            return None
        h2.send_data(stream, b"\x00" + len(request).to_bytes(4) + request, end_stream=True)
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future())
        if timeout is not None:
            call.timer = loop.call_later(timeout, self._expire, stream)
        self._calls[stream] = call
        if not self._flush_due:  # one write for all the calls started in this turn
            self._flush_due = True
            loop.call_soon(self._flush)
        return call.future

    def cancel(self, future: asyncio.Future[bytes]) -> None:
        """The caller gave up on the call (task cancelled): tell the server."""
        for stream, call in self._calls.items():
            if call.future is future:
                self._reset(stream)
                if call.timer is not None:
                    call.timer.cancel()
                self._flush()
                return

    def _expire(self, stream: int) -> None:
        call = self._calls.get(stream)
        if call is not None:
            self._reset(stream)
            self._expire_call(call)
            self._flush()

    def _expire_call(self, call: _Call) -> None:
        self._settle(call, _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _too_big(self, size: int) -> grpc.aio.AioRpcError:
        return _error(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the plugin's reply is over {self._max_reply} bytes ({size - 5} received so far), "
            "the most plughost's unary transport takes: set fast_unary = False on the "
            "client to take larger replies through grpc",
        )

    def _reset(self, stream: int) -> None:
        """Forget the call and send RST_STREAM(CANCEL) (written at the next flush)."""
        self._calls.pop(stream, None)
        with contextlib.suppress(StreamClosedError):  # the server finished it already
            self._h2.reset_stream(stream, ErrorCodes.CANCEL)
        self._close_if_drained()

    def _settle(self, call: _Call, exc: BaseException) -> None:
        if call.timer is not None:
            call.timer.cancel()
        if not call.future.done():
            call.future.set_exception(exc)

    def _fail_all(self, code: grpc.StatusCode, why: str) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self._settle(call, _error(code, why))

    def _flush(self) -> None:
        self._flush_due = False
        out = self._h2.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)

    def _close_if_drained(self) -> None:
        """After GOAWAY the connection ends with its last call."""
        if not self.usable and not self._calls and self._transport is not None:
            self._flush()
            self._transport.close()

    def _abort(self, code: grpc.StatusCode, why: str) -> None:
        """h2 refused what the server sent (and queued its GOAWAY): drop the connection."""
        self.usable = False
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self._fail_all(code, f"dropped the connection: {why}")

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()


class UnaryTransport:
    """Unary calls to one plugin's gRPC server (``unix:/path`` or ``host:port``)."""

    def __init__(self, target: str, max_reply: int = MAX_REPLY) -> None:
        self.target = target
        self.max_reply = max_reply
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def call(
        self,
        path: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
    ) -> bytes | None:
        """The reply's bytes; None when this call is one to send through grpc instead."""
        extra: list[HeaderTuple] = []
        if metadata:
            fields = _metadata_fields(metadata)
            if fields is None:
                return None
            extra = fields
        if timeout is not None and timeout <= 0:  # grpc fails these before sending
            raise _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connect()
        future = conn.start(path.encode(), request, timeout, extra)
        if future is None:
            return None
        try:
            return await future
        except asyncio.CancelledError:
            conn.cancel(future)
            raise

    async def _connect(self) -> _Connection:
        if self._closed:
            raise _error(grpc.StatusCode.UNAVAILABLE, "the plugin's channel is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        authority = b"localhost"
        try:
            if self.target.startswith("unix:"):
                _, conn = await loop.create_unix_connection(
                    lambda: _Connection(authority, self.max_reply),
                    self.target.removeprefix("unix:"),
                )
            else:
                host, _, port = self.target.rpartition(":")
                authority = self.target.encode()
                _, conn = await loop.create_connection(
                    lambda: _Connection(authority, self.max_reply), host.strip("[]"), int(port)
                )
        except OSError as exc:
            raise _error(
                grpc.StatusCode.UNAVAILABLE, f"cannot connect to the plugin: {exc}"
            ) from None
        if self._closed:
            conn.close()
            raise _error(grpc.StatusCode.UNAVAILABLE, "the plugin's channel is closed")
        self._conn = conn
        return conn

    async def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.closed), 2.0)
