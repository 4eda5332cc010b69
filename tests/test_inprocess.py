"""InProcessBackend: the SDK's services served inside the host, for the manager's unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2, wrappers_pb2

from plughost._proto import hello_pb2_grpc, lifecycle_legacy_pb2, lifecycle_legacy_pb2_grpc
from plughost.metadata import load_meta
from plughost.process.backend import PluginBackend, StopPath
from plughost.records import PluginRecord
from plughost.sdk import PluginServer
from plughost.testing import InProcessBackend, in_process_factory

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class Greeter(hello_pb2_grpc.GreeterServicer):
    def Greet(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wrappers_pb2.StringValue(value=f"hi, {request.value}")


def add_greeter(server: grpc.Server) -> None:
    hello_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)  # type: ignore[no-untyped-call]


class Sink:
    def __init__(self) -> None:
        self.logs: list[tuple[str, str]] = []
        self.exits: list[int | None] = []

    def log(self, line: str, source: str) -> None:
        self.logs.append((source, line))

    def exit(self, code: int | None) -> None:
        self.exits.append(code)


@pytest.fixture
async def sink_and_backend() -> AsyncIterator[tuple[Sink, InProcessBackend]]:
    sink = Sink()
    plugin = PluginServer(
        id="inproc", version="2.1.0", capabilities=["exec", "resource"], services=[add_greeter]
    )
    backend = await InProcessBackend(plugin, on_exit=sink.exit, on_log=sink.log).start()
    yield sink, backend
    await backend.stop()


async def test_start_serves_like_a_plugin(sink_and_backend: tuple[Sink, InProcessBackend]) -> None:
    sink, backend = sink_and_backend
    assert isinstance(backend, PluginBackend)
    assert backend.pid is None
    assert not backend.exited and backend.returncode is None
    assert backend.negotiated_version == 1
    assert await backend.healthy()
    assert await backend.detect_capabilities() == ["exec", "resource"]
    assert await backend.get_info() == {
        "pluginID": "inproc",
        "version": "2.1.0",
        "sdkProtocolVersion": 1,
    }
    reply = await backend.stub(hello_pb2_grpc.GreeterStub).Greet(
        wrappers_pb2.StringValue(value="ann"), timeout=5
    )
    assert reply.value == "hi, ann"
    legacy: Any = lifecycle_legacy_pb2_grpc.PluginLifecycleStub(backend.channel)  # type: ignore[no-untyped-call]
    health = await legacy.HealthCheck(empty_pb2.Empty(), timeout=5)
    assert health.status == lifecycle_legacy_pb2.SERVING_STATUS_SERVING
    assert sink.logs == [("stderr", "[INFO] in-process plugin inproc started")]
    assert sink.exits == []


async def test_crash_reports_the_exit(sink_and_backend: tuple[Sink, InProcessBackend]) -> None:
    sink, backend = sink_and_backend
    backend.crash(3, "boom")
    assert sink.exits == [3]
    assert ("stderr", "[ERROR] boom") in sink.logs
    assert backend.exited and backend.returncode == 3
    assert not await backend.healthy()
    backend.crash(4)  # already dead: nothing more happens
    assert sink.exits == [3]
    assert await backend.stop() is StopPath.ALREADY_EXITED
    assert sink.exits == [3]


async def test_stop_is_graceful_and_not_a_crash(
    sink_and_backend: tuple[Sink, InProcessBackend],
) -> None:
    sink, backend = sink_and_backend
    assert await backend.stop() is StopPath.GRACEFUL
    assert await backend.stop() is StopPath.GRACEFUL
    await backend.kill()
    assert backend.exited and backend.returncode == 0
    assert sink.exits == []
    assert not await backend.healthy()
    with pytest.raises(RuntimeError):
        _ = backend.channel


async def test_health_hook_false_is_unhealthy() -> None:
    plugin = PluginServer(id="sick", health=lambda: False)
    backend = await InProcessBackend(plugin).start()
    try:
        assert not await backend.healthy()
        assert backend.exited is False
    finally:
        assert await backend.stop() is StopPath.GRACEFUL


async def test_factory_serves_a_record_and_hands_out_the_backend() -> None:
    record = PluginRecord.new(load_meta(EXAMPLES / "hello"))
    started: list[InProcessBackend] = []
    sink = Sink()
    factory = in_process_factory(services=[add_greeter], started=started)
    backend = await factory(record, EXAMPLES / "hello", sink.exit, sink.log)
    try:
        assert started == [backend]
        assert await backend.healthy()
        assert await backend.get_info() == {
            "pluginID": "hello",
            "version": "1.0.0",
            "sdkProtocolVersion": 1,
        }
        assert await backend.detect_capabilities() == ["exec"]
        started[0].crash(2)
        assert sink.exits == [2]
    finally:
        await backend.stop()
