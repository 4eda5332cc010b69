"""The Python SDK (plughost.sdk) seen from outside, as a go-plugin host sees it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import async_wait_until

from plughost._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2_grpc,
    lifecycle_legacy_pb2,
    lifecycle_legacy_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
)
from plughost.errors import PluginLoadError
from plughost.process.backend import StopPath
from plughost.process.local import LaunchSpec, ProcessBackend, start_process

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HELLO = EXAMPLES / "hello"
PROBLEM = Path(__file__).resolve().parent / "plugins" / "problem"
NOT_A_HOST = "This binary is a plugin. These are not meant to be executed directly."


def run_directly(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run hello's plugin.py by hand, the way a curious user would."""
    return subprocess.run(
        [sys.executable, str(HELLO / "plugin.py")],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@contextlib.asynccontextmanager
async def hello(tmp_path: Path, **kw: Any) -> AsyncIterator[ProcessBackend]:
    on_exit = kw.pop("on_exit", None)
    spec = LaunchSpec(
        plugin_id="hello",
        executable=HELLO / "bin" / "plugin",
        cwd=HELLO,
        socket_dir=tmp_path / "run",
        **kw,
    )
    backend = await start_process(spec, on_exit=on_exit)
    try:
        yield backend
    finally:
        await backend.stop()
        assert backend.pid is not None and not psutil.pid_exists(backend.pid)


# -- refusing to run ----------------------------------------------------------------


@pytest.mark.parametrize("cookie", [{}, {"PLUGHOST": "someone-else"}, {"OMNIVIEW": ""}])
def test_run_by_hand_prints_go_plugins_message_and_exits_1(cookie: dict[str, str]) -> None:
    result = run_directly({"PLUGIN_PROTOCOL_VERSIONS": "1", **cookie})
    assert result.returncode == 1
    assert NOT_A_HOST in result.stderr
    assert "Please execute the program that consumes these plugins" in result.stderr
    assert result.stdout == ""  # no handshake line


@pytest.mark.parametrize(("offered", "shown"), [("7,8", "[7, 8]"), ("", "[]"), ("x", "[]")])
def test_no_common_protocol_version_exits_1_clearly(offered: str, shown: str) -> None:
    result = run_directly({"PLUGHOST": "hello", "PLUGIN_PROTOCOL_VERSIONS": offered})
    assert result.returncode == 1
    assert f"plugin protocol versions [1] are not among the host's {shown}" in result.stderr
    assert result.stdout == ""


async def test_no_common_protocol_version_is_a_load_error_for_the_host(tmp_path: Path) -> None:
    spec = LaunchSpec(
        plugin_id="hello",
        executable=HELLO / "bin" / "plugin",
        cwd=HELLO,
        socket_dir=tmp_path / "run",
        protocol_versions=(7,),
    )
    with pytest.raises(PluginLoadError) as info:
        await start_process(spec)
    message = str(info.value)
    assert "exited before printing its handshake line" in message
    assert "plugin protocol versions [1] are not among the host's [7]" in message


async def test_omniview_cookie_key_is_accepted(tmp_path: Path) -> None:
    async with hello(tmp_path, cookie_key="OMNIVIEW") as backend:
        assert await backend.healthy()


# -- the services every SDK plugin serves -------------------------------------------


async def test_both_lifecycle_service_names_answer(tmp_path: Path) -> None:
    async with hello(tmp_path) as backend:
        for grpc_module, pb in (
            (lifecycle_pb2_grpc, lifecycle_pb2),
            (lifecycle_legacy_pb2_grpc, lifecycle_legacy_pb2),
        ):
            stub: Any = grpc_module.PluginLifecycleStub(backend.channel)
            info = await stub.GetInfo(empty_pb2.Empty(), timeout=5)
            assert (info.plugin_id, info.version, info.sdk_protocol_version) == (
                "hello",
                "1.0.0",
                1,
            )
            caps = await stub.GetCapabilities(empty_pb2.Empty(), timeout=5)
            assert list(caps.capabilities) == ["exec"]
            health = await stub.HealthCheck(empty_pb2.Empty(), timeout=5)
            assert health.status == pb.SERVING_STATUS_SERVING
        names = {
            lifecycle_pb2.DESCRIPTOR.services_by_name["PluginLifecycle"].full_name,
            lifecycle_legacy_pb2.DESCRIPTOR.services_by_name["PluginLifecycle"].full_name,
        }
        assert names == {
            "omniview.sdk.lifecycle.v1.PluginLifecycle",
            "com.omniview.pluginsdk.PluginLifecycle",
        }


async def test_grpc_health_under_go_plugins_name(tmp_path: Path) -> None:
    async with hello(tmp_path) as backend:
        stub: Any = health_pb2_grpc.HealthStub(backend.channel)
        for service in ("plugin", ""):
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert info.value.code() is grpc.StatusCode.NOT_FOUND


async def test_stream_stdio_may_be_called_once_only(tmp_path: Path) -> None:
    lines: list[tuple[str, str]] = []
    spec = LaunchSpec(
        plugin_id="problem",
        executable=PROBLEM / "bin" / "plugin",
        cwd=PROBLEM,
        socket_dir=tmp_path / "run",
        extra_env={"PROBLEM_MODE": "stdout_ticks"},
    )
    backend = await start_process(spec, on_log=lambda line, source: lines.append((source, line)))
    try:
        # Once a print() has come through, the host holds the stream ...
        await async_wait_until(
            lambda: ("stdout", "problem: tick 0 via _StreamWriter") in lines,
            timeout=5.0,
            message="the host's stream",
        )
        # ... and a second reader is refused.
        stub: Any = grpc_stdio_pb2_grpc.GRPCStdioStub(backend.channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stub.StreamStdio(empty_pb2.Empty(), timeout=5):
                pass
        assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
        assert "once" in (info.value.details() or "")
        # The host's stream is unaffected.
        count = len(lines)
        await async_wait_until(lambda: len(lines) > count, timeout=5.0, message="more ticks")
    finally:
        await backend.stop()


async def test_controller_shutdown_stops_the_plugin(tmp_path: Path) -> None:
    exits: list[int | None] = []
    async with hello(tmp_path, on_exit=exits.append) as backend:
        assert backend.handshake is not None
        socket_path = Path(backend.handshake.address)
        stub: Any = grpc_controller_pb2_grpc.GRPCControllerStub(backend.channel)  # type: ignore[no-untyped-call]
        await stub.Shutdown(grpc_controller_pb2.Empty(), timeout=5)
        # Not stopped by the host's stop(): the exit watcher reports it.
        await async_wait_until(lambda: exits, timeout=5.0, message="the plugin to exit")
        assert exits == [0]
        assert not socket_path.exists() and not socket_path.parent.exists()
        assert await backend.stop() is StopPath.ALREADY_EXITED


async def test_sigint_is_ignored_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    exits: list[int | None] = []
    async with hello(tmp_path, on_exit=exits.append) as backend:
        assert backend.pid is not None
        os.kill(backend.pid, signal.SIGINT)  # the host owns Ctrl-C, as in go-plugin
        assert await backend.healthy()
        assert not exits
        os.kill(backend.pid, signal.SIGTERM)
        await async_wait_until(lambda: exits, timeout=5.0, message="the plugin to exit on SIGTERM")
        assert exits == [0]


async def test_tcp_port_comes_from_the_hosts_range(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        low = probe.getsockname()[1]
    low = min(low, 65500)
    async with hello(
        tmp_path, transport="tcp", auto_mtls="off", min_port=low, max_port=low + 30
    ) as backend:
        assert backend.handshake is not None
        host, _, port = backend.handshake.address.rpartition(":")
        assert host == "127.0.0.1"
        assert low <= int(port) <= low + 30
        assert await backend.healthy()


# -- what a plugin pays for at start ---------------------------------------------------


def test_the_sdk_imports_only_what_serving_needs() -> None:
    """yaml, pydantic, rich, typer and the host's own modules stay off the plugin's path."""
    code = "import sys, plughost.sdk; print(*sorted(sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=True
    )
    loaded = set(proc.stdout.split())
    assert "plughost.sdk" in loaded
    heavy = {"yaml", "pydantic", "rich", "typer", "cryptography", "psutil"}
    assert not {m.split(".")[0] for m in loaded} & heavy
    assert not {m for m in loaded if m.startswith(("plughost.cli", "plughost.host"))}


_READ_META = (
    "import sys, plughost.sdk as sdk; m = sdk._find_metadata(); "
    "print(m['id'], m['version'], ','.join(m['capabilities']), 'yaml' in sys.modules)"
)


def test_metadata_comes_from_the_host_without_a_yaml_parser(tmp_path: Path) -> None:
    """Started by the host, the SDK reads id, version and capabilities from its environment
    (what the host read from plugin.yaml); run by hand, from the plugin.yaml beside it."""
    from plughost.metadata import PluginMeta
    from plughost.process.handshake import plugin_meta_env

    (tmp_path / "plugin.yaml").write_text("id: byhand\nversion: 2.0.0\ncapabilities:\n  - ui\n")
    meta = PluginMeta.model_validate({"id": "hosted", "version": "1.2.3", "capabilities": ["exec"]})
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_PLUGIN_")}

    def read(extra: dict[str, str]) -> str:
        return subprocess.run(
            [sys.executable, "-c", _READ_META],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
            cwd=tmp_path,
            env=env | extra,
        ).stdout.split("\n")[0]

    hosted = read({"PLUGHOST_PLUGIN_ID": "hosted"} | plugin_meta_env(meta))
    assert hosted == "hosted 1.2.3 exec False"
    assert read({}) == "byhand 2.0.0 ui True"
