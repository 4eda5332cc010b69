"""PluginClient's unary calls through the lean HTTP/2 transport (process/h2unary.py).

Against a real Go plugin (goecho, go-plugin's grpc-go server): replies, grpc's status
codes, deadlines, what the transport declines (large requests, call options) and
closing; each answer compared with what the grpc.aio stub gives for the same call.
Against a server played frame by frame with h2 on 127.0.0.1: what a misbehaving or
hostile plugin can send (oversized replies and header lists, GOAWAY mid-call, resets,
odd statuses) and what the transport tells the server (RST_STREAM, grpc-timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from gobuild import CACHE_DIR, REPO, go_plugins
from google.protobuf import wrappers_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import DataReceived, RequestReceived, StreamEnded, StreamReset
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes
from hyperframe.frame import GoAwayFrame, PingFrame
from waiting import async_wait_until

from plughost import PluginManager
from plughost.process.h2unary import UnaryTransport


@pytest.fixture
async def echo(
    go: str, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[PluginManager, ModuleType]]:
    """A manager running goecho, and bench.calls (for its EchoStub)."""
    monkeypatch.syspath_prepend(str(REPO))
    bench_calls = importlib.import_module("bench.calls")
    common = importlib.import_module("bench._common")
    out = go_plugins(tmp_path_factory)
    shutil.copytree(CACHE_DIR / "goecho", out / "goecho")
    root = tmp_path_factory.mktemp("root")
    common.install_copy(root, out / "goecho")
    manager = PluginManager(root)
    await manager.initialize()
    try:
        yield manager, bench_calls
    finally:
        await manager.shutdown()


def _transport(manager: PluginManager) -> UnaryTransport:
    backend = manager.backend("goecho")
    assert backend is not None and backend.unary_transport is not None
    return backend.unary_transport


@pytest.mark.interop
async def test_unary_calls_go_through_the_transport_and_match_grpc(
    echo: tuple[PluginManager, ModuleType],
) -> None:
    manager, bench_calls = echo
    client = manager.client("goecho")
    stub: Any = client.stub(bench_calls.EchoStub)
    request = wrappers_pb2.BytesValue(value=b"\x00\xffhello")
    assert await stub.Echo(request, timeout=5) == request
    assert _transport(manager)._conn is not None, "the call did not use the transport"
    # Many at once share the connection; big requests (over one frame) go through grpc.
    big = wrappers_pb2.BytesValue(value=b"b" * 100_000)
    assert await stub.Echo(big, timeout=5) == big
    for n in range(50):
        got = await stub.Echo(wrappers_pb2.BytesValue(value=b"%d" % n), timeout=5)
        assert got.value == b"%d" % n

    # The same errors as grpc's own stub gives, whichever path a call took.
    bare: Any = manager.backend("goecho").stub(bench_calls.EchoStub)  # type: ignore[union-attr]
    missing = "/echo.v1.Echo/Nope"
    channel = manager.backend("goecho").channel  # type: ignore[union-attr]
    unknown: Any = channel.unary_unary(missing)
    for call in (_transport(manager).call(missing, b"", 5.0), unknown(b"")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # A deadline already passed fails before sending, as grpc's does; a deadline that
    # passes before the reply is read fails too (grpc's own stub may get that reply).
    for call in (
        _transport(manager).call("/echo.v1.Echo/Echo", b"", -1.0),
        bare.Echo(request, timeout=-1.0),
        _transport(manager).call("/echo.v1.Echo/Echo", b"", 1e-6),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.interop
async def test_the_transport_declines_what_it_does_not_do_and_closes(
    echo: tuple[PluginManager, ModuleType],
) -> None:
    manager, _ = echo
    transport = _transport(manager)
    assert await transport.call("/echo.v1.Echo/Echo", b"x" * 20_000, 5.0) is None
    assert await transport.call("/echo.v1.Echo/Echo", b"", 5.0, [("Upper", "x")]) is None
    assert (
        await transport.call("/echo.v1.Echo/Echo", b"", 5.0, [("k", "v"), ("k-bin", b"\0")]) == b""
    )
    await transport.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await transport.call("/echo.v1.Echo/Echo", b"", 5.0)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_an_unreachable_server_is_unavailable(unused_tcp_port: int) -> None:
    transport = UnaryTransport(f"127.0.0.1:{unused_tcp_port}")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await transport.call("/echo.v1.Echo/Echo", b"", 5.0)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE


# -- a server played frame by frame ---------------------------------------------------
Answer = Callable[["_Conn", int], Awaitable[None]]
_MESSAGE = b"\x00\x00\x00\x00\x05hello"  # one uncompressed gRPC message


class _Conn:
    """One client connection to the played server: its h2 state and socket."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.writer = writer
        self.requests: dict[int, dict[bytes, bytes]] = {}
        self.resets: dict[int, int] = {}

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def reply(self, stream: int, message: bytes = _MESSAGE, **trailers: bytes) -> None:
        self.h2.send_headers(stream, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        self.h2.send_data(stream, message)
        fields = [
            (b"grpc-status", b"0"),
            *((k.replace("_", "-").encode(), v) for k, v in trailers.items()),
        ]
        self.h2.send_headers(stream, fields, end_stream=True)
        self.flush()


class _Plugin:
    """A plugin's gRPC server played with h2: ``answers`` maps a method's path to what
    the server does with a call (nothing: it never answers)."""

    def __init__(
        self, answers: dict[str, Answer], settings: dict[SettingCodes | int, int] | None = None
    ) -> None:
        self.answers = answers
        self.settings = settings or {}
        self.conns: list[_Conn] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> UnaryTransport:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.transport = UnaryTransport(f"127.0.0.1:{port}", max_reply=64 * 1024)
        return self.transport

    async def __aexit__(self, *_: object) -> None:
        await self.transport.close()
        for task in self._tasks:
            task.cancel()
        self._server.close()
        for conn in self.conns:
            conn.writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self.conns.append(conn)
        conn.h2.initiate_connection()
        if self.settings:
            conn.h2.update_settings(self.settings)
        conn.flush()
        while data := await reader.read(65536):
            with contextlib.suppress(ProtocolError):  # frames for streams reset mid-flood
                for event in conn.h2.receive_data(data):
                    if isinstance(event, RequestReceived):
                        conn.requests[event.stream_id] = dict(event.headers)
                    elif isinstance(event, DataReceived):
                        size = event.flow_controlled_length or 0
                        conn.h2.acknowledge_received_data(size, event.stream_id)
                    elif isinstance(event, StreamEnded):
                        path = conn.requests[event.stream_id][b":path"].decode()
                        answer = self.answers.get(path)
                        if answer is not None:
                            task = asyncio.ensure_future(answer(conn, event.stream_id))
                            self._tasks.add(task)
                    elif isinstance(event, StreamReset):
                        conn.resets[event.stream_id] = event.error_code or 0
            conn.flush()


async def _echo(conn: _Conn, stream: int) -> None:
    conn.reply(stream)


async def test_a_reply_over_the_cap_fails_the_call_and_resets_only_its_stream() -> None:
    sent: list[int] = []

    async def flood(conn: _Conn, stream: int) -> None:
        """A message that says it is 1 GiB, sent until the client resets the stream."""
        conn.h2.send_headers(stream, [(b":status", b"200"), (b"content-type", b"application/grpc")])
        conn.h2.send_data(stream, b"\x00" + (2**30).to_bytes(4))
        sent.append(0)
        while stream not in conn.resets and sent[0] < 2**30:
            conn.h2.send_data(stream, b"x" * 16384)
            sent[0] += 16384
            conn.flush()
            await conn.writer.drain()

    plugin = _Plugin({"/t/Flood": flood, "/t/Echo": _echo})
    async with plugin as transport:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.call("/t/Flood", b"", 10.0)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "over 65536 bytes" in (caught.value.details() or "")
        conn = plugin.conns[0]
        await async_wait_until(
            lambda: conn.resets.get(1) == ErrorCodes.CANCEL, message="RST_STREAM"
        )
        assert sent[0] < 2**30, "the server was never told to stop"
        # Only that stream went: the connection carries the next call.
        assert await transport.call("/t/Echo", b"", 5.0) == b"hello"
        assert len(plugin.conns) == 1


async def test_a_header_list_over_the_cap_drops_the_connection() -> None:
    async def big_headers(conn: _Conn, stream: int) -> None:
        fields = [(b":status", b"200"), (b"x-big", b"a" * 20_000)]
        conn.h2.send_headers(stream, fields, end_stream=True)  # in CONTINUATION frames
        conn.flush()

    plugin = _Plugin({"/t/Big": big_headers, "/t/Echo": _echo})
    async with plugin as transport:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.call("/t/Big", b"", 5.0)
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "header list larger than 16384" in (caught.value.details() or "")
        # The next call opens a new connection.
        assert await transport.call("/t/Echo", b"", 5.0) == b"hello"
        assert len(plugin.conns) == 2


async def test_after_goaway_kept_calls_finish_and_later_ones_reconnect() -> None:
    held: list[int] = []

    async def hold(conn: _Conn, stream: int) -> None:
        held.append(stream)

    async def go_away(conn: _Conn, stream: int) -> None:
        """grpc-go's graceful stop: GOAWAY (keeping the held call), a PING, then the reply."""
        goaway = GoAwayFrame(0, last_stream_id=held[0])
        conn.writer.write(goaway.serialize() + PingFrame(0, opaque_data=b"12345678").serialize())
        conn.reply(held[0])

    plugin = _Plugin({"/t/Hold": hold, "/t/GoAway": go_away, "/t/Echo": _echo})
    async with plugin as transport:
        kept = asyncio.ensure_future(transport.call("/t/Hold", b"", 5.0))
        await async_wait_until(lambda: held, message="the held call")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.call("/t/GoAway", b"", 5.0)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
        assert await kept == b"hello"
        assert await transport.call("/t/Echo", b"", 5.0) == b"hello"
        assert len(plugin.conns) == 2


async def test_deadlines_and_cancelling_reset_the_stream() -> None:
    plugin = _Plugin({})  # never answers
    async with plugin as transport:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.call("/t/Hang", b"", 0.05)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        conn = plugin.conns[0]
        assert conn.requests[1][b"grpc-timeout"] == b"50000u"
        await async_wait_until(lambda: conn.resets.get(1) == ErrorCodes.CANCEL, message="reset 1")

        call = asyncio.ensure_future(transport.call("/t/Hang", b"", None))
        await async_wait_until(lambda: 3 in conn.requests, message="the second call")
        assert b"grpc-timeout" not in conn.requests[3]
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await async_wait_until(lambda: conn.resets.get(3) == ErrorCodes.CANCEL, message="reset 3")


async def test_statuses_map_to_grpc_codes() -> None:
    async def not_found(conn: _Conn, stream: int) -> None:  # trailers-only
        fields = [
            (b":status", b"200"),
            (b"grpc-status", b"5"),
            (b"grpc-message", b"no%20such%20thing"),
            (b"x-why", b"gone"),
            (b"x-raw-bin", b"AAE"),
        ]
        conn.h2.send_headers(stream, fields, end_stream=True)
        conn.flush()

    async def http_503(conn: _Conn, stream: int) -> None:
        conn.h2.send_headers(stream, [(b":status", b"503")], end_stream=True)
        conn.flush()

    async def refused(conn: _Conn, stream: int) -> None:
        conn.h2.reset_stream(stream, ErrorCodes.REFUSED_STREAM)
        conn.flush()

    async def two_messages(conn: _Conn, stream: int) -> None:
        conn.reply(stream, _MESSAGE + _MESSAGE)

    answers: dict[str, Answer] = {
        "/t/NotFound": not_found,
        "/t/503": http_503,
        "/t/Refused": refused,
        "/t/Two": two_messages,
    }
    async with _Plugin(answers) as transport:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await transport.call("/t/NotFound", b"", 5.0)
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "no such thing"
        assert list(caught.value.trailing_metadata()) == [
            ("x-why", "gone"),
            ("x-raw-bin", b"\x00\x01"),
        ]
        for path, code in (
            ("/t/503", grpc.StatusCode.UNAVAILABLE),
            ("/t/Refused", grpc.StatusCode.UNAVAILABLE),
            ("/t/Two", grpc.StatusCode.INTERNAL),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await transport.call(path, b"", 5.0)
            assert caught.value.code() is code, path


async def test_what_the_server_will_not_take_now_goes_to_grpc() -> None:
    settings: dict[SettingCodes | int, int] = {
        SettingCodes.INITIAL_WINDOW_SIZE: 1000,
        SettingCodes.MAX_CONCURRENT_STREAMS: 1,
    }
    plugin = _Plugin({"/t/Echo": _echo}, settings)
    async with plugin as transport:
        assert await transport.call("/t/Echo", b"", 5.0) == b"hello"  # settings now known
        assert await transport.call("/t/Echo", b"x" * 2000, 5.0) is None  # over its window
        assert await transport.call("/t/Echo", b"x" * 900, 5.0) == b"hello"
        hung = asyncio.ensure_future(transport.call("/t/Hang", b"", 5.0))
        await async_wait_until(lambda: len(plugin.conns[0].requests) == 3, message="the hang")
        assert await transport.call("/t/Echo", b"", 5.0) is None  # its one stream is taken
        hung.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hung
