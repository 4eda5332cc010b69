"""Interop with real Go plugins, built from tests/goplugins.

- ``gohello`` is written directly with hashicorp/go-plugin: it is run with the
  process backend alone (``start_process``) to check the handshake, health, a
  gRPC call, both of its output paths (``fmt.Println`` through go-plugin's
  GRPCStdio stream, hclog JSON on the real stderr), a graceful Shutdown, a
  crash, AutoMTLS and version negotiation.
- ``omnihello`` is the smallest plugin written with Omniview's real Go SDK
  (github.com/omniviewdev/plugin-sdk v0.5.0, tests/goplugins/omnisdk). The SDK
  reads ``$HOME/.omniview/plugins/omnihello/plugin.yaml`` and wants the cookie
  ``OMNIVIEW=omnihello``, so it runs under a PluginManager with the Omniview
  profile in a temporary HOME. ``omnilegacy`` stands in for plugins of older
  SDK releases (legacy lifecycle name, or none) for the host's fallbacks.
  tests/test_omniview_sdk.py has the other real-SDK plugins.
- Both Go plugins and the Python ``hello`` example then run side by side under
  one manager, which brings a SIGKILLed Go plugin back.

The plugins are built by scripts/build_go_plugins.sh (tests/gobuild.py). No
Go: skipped with a note on a developer's machine, failed in CI. Nothing here
sleeps in the hope that something happened: waits poll with deadlines or
await the manager's events.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import grpc
import psutil
import pytest
from cryptography import x509
from gobuild import go_plugins
from google.protobuf import empty_pb2, wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import async_wait_until

from plughost._proto import (
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
    hello_pb2_grpc,
    lifecycle_legacy_pb2_grpc,
    lifecycle_pb2_grpc,
)
from plughost.errors import HandshakeError
from plughost.events import EVENT_CRASH, EVENT_RECOVERED, AsyncSubscription, Event
from plughost.host.manager import PluginManager
from plughost.logs import parse_log_line
from plughost.paths import resolve_root
from plughost.phases import Phase
from plughost.process import local as _process
from plughost.process.backend import StopPath
from plughost.process.local import LaunchSpec, ProcessBackend, start_process
from plughost.settings import SettingsProvider

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

REPO = Path(__file__).resolve().parents[1]
HELLO_EXAMPLE = REPO / "src" / "plughost" / "examples" / "hello"

# Generous for a loaded 2-core machine; none of these is waited out on success.
START_TIMEOUT = 30.0
WAIT = 30.0
MANAGER_SETTINGS: dict[str, Any] = {
    "start_timeout": START_TIMEOUT,
    "stop_grace": 10.0,
    "kill_grace": 5.0,
    "health_timeout": 10.0,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
}


# -- helpers ----------------------------------------------------------------------------


class Logs:
    """An on_log sink: every (source, line) the host passed on, in order."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, line: str, source: str) -> None:
        self.lines.append((source, line))

    def find(self, source: str, needle: str) -> str | None:
        return next((ln for src, ln in self.lines if src == source and needle in ln), None)

    async def wait_for(self, source: str, needle: str) -> str:
        return await async_wait_until(
            lambda: self.find(source, needle),
            timeout=WAIT,
            message=lambda: f"{needle!r} on {source}; got {self.lines}",
        )


class Exits:
    """An on_exit sink."""

    def __init__(self) -> None:
        self.codes: list[int | None] = []

    def __call__(self, code: int | None) -> None:
        self.codes.append(code)


def gone(pid: int) -> bool:
    """Neither running nor a zombie: the process was reaped."""
    return not psutil.pid_exists(pid)


def describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"pid {pid} {proc.status()} {proc.cmdline()}"
    except psutil.Error:
        return f"pid {pid} gone"


def children_running(location: Path) -> list[psutil.Process]:
    """This process's descendants running something under ``location``."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if str(location) in " ".join(proc.cmdline()):
                found.append(proc)
    return found


async def greet(backend: Any, name: str) -> str:
    stub = backend.stub(hello_pb2_grpc.GreeterStub)
    reply = await stub.Greet(wrappers_pb2.StringValue(value=name), timeout=WAIT)
    return str(reply.value)


async def next_event(stream: AsyncSubscription, name: str, plugin_id: str) -> Event:
    """The next event ``name`` about ``plugin_id``; fails with what was seen instead."""
    deadline = time.monotonic() + WAIT
    seen: list[str] = []
    while True:
        remaining = deadline - time.monotonic()
        try:
            event = await stream.next(max(remaining, 0.001))
        except TimeoutError:
            raise AssertionError(
                f"no {name} for {plugin_id} within {WAIT:g} s; saw {seen}"
            ) from None
        if event.name == name and event.plugin_id == plugin_id:
            return event
        seen.append(f"{event.name}:{event.plugin_id}:{event.payload.get('to', '')}")


# -- building -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private directory with the built Go plugin directories (gohello/, omnihello/, ...)."""
    return go_plugins(tmp_path_factory, ("gohello", "omnihello", "omnilegacy"))


# -- gohello under the process backend ----------------------------------------------------


class Launch(Protocol):
    def __call__(
        self,
        *,
        logs: Logs | None = None,
        exits: Exits | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> Awaitable[ProcessBackend]: ...


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"


@pytest.fixture
async def launch_gohello(go_build: Path, run_dir: Path) -> AsyncIterator[Launch]:
    """Start gohello with plughost's cookie key; whatever a test leaves running is stopped."""
    location = go_build / "gohello"
    started: list[ProcessBackend] = []

    async def start(
        *,
        logs: Logs | None = None,
        exits: Exits | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> ProcessBackend:
        spec = LaunchSpec(
            plugin_id="gohello",
            executable=location / "bin" / "plugin",
            cwd=location,
            socket_dir=run_dir,
            cookie_key="PLUGHOST",
            extra_env=dict(env or {}),
            **{"start_timeout": START_TIMEOUT, "stop_grace": 10.0, "kill_grace": 5.0, **kw},
        )
        backend = await start_process(spec, on_log=logs, on_exit=exits)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()
        assert backend.pid is not None
        assert gone(backend.pid), describe(backend.pid)


@pytest.fixture
def handshake_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every raw handshake line the process backend parses."""
    lines: list[str] = []
    real = _process.parse_handshake

    def tap(line: str, *args: Any, **kwargs: Any) -> Any:
        lines.append(line)
        return real(line, *args, **kwargs)

    monkeypatch.setattr(_process, "parse_handshake", tap)
    return lines


@pytest.fixture
def stdio_chunks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every StdioData chunk the host reads from plugin.GRPCStdio/StreamStdio."""
    chunks: list[tuple[int, bytes]] = []
    real_stub = grpc_stdio_pb2_grpc.GRPCStdioStub

    class TappedStub:
        def __init__(self, channel: grpc.aio.Channel) -> None:
            self._stub: Any = real_stub(channel)  # type: ignore[no-untyped-call]

        def StreamStdio(self, request: Any, **kwargs: Any) -> AsyncIterator[Any]:
            call = self._stub.StreamStdio(request, **kwargs)

            async def relay() -> AsyncIterator[Any]:
                try:
                    async for chunk in call:
                        chunks.append((chunk.channel, chunk.data))
                        yield chunk
                finally:
                    call.cancel()

            return relay()

    monkeypatch.setattr(grpc_stdio_pb2_grpc, "GRPCStdioStub", TappedStub)
    return chunks


async def test_gohello_handshake_health_greet_and_logs(
    launch_gohello: Launch,
    handshake_lines: list[str],
    stdio_chunks: list[tuple[int, bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In the host's environment, but not on the allow-list: go-plugin must not see it,
    # so it must not answer with the seventh (multiplexing) field.
    monkeypatch.setenv("PLUGIN_MULTIPLEX_GRPC", "true")
    logs = Logs()
    backend = await launch_gohello(logs=logs)
    assert backend.pid is not None

    # go-plugin 1.x's six-field line: CORE|APP|unix|ADDR|grpc| (empty certificate).
    assert len(handshake_lines) == 1
    fields = handshake_lines[0].split("|")
    assert len(fields) == 6, handshake_lines
    assert fields[:3] == ["1", "1", "unix"] and fields[4:] == ["grpc", ""], fields
    hs = backend.handshake
    assert hs is not None
    assert (hs.core_version, hs.app_version, hs.network, hs.protocol) == (1, 1, "unix", "grpc")
    assert hs.server_cert is None and hs.multiplex is False
    assert stat.S_ISSOCK(os.stat(hs.address).st_mode)
    assert backend.negotiated_version == 1

    env = psutil.Process(backend.pid).environ()
    assert env.get("PLUGHOST") == "gohello"
    # go-plugin honoured PLUGIN_UNIX_SOCKET_DIR (<root>/run, or a private dir if too long)
    assert Path(hs.address).parent == Path(env["PLUGIN_UNIX_SOCKET_DIR"])
    assert "PLUGIN_MULTIPLEX_GRPC" not in env

    assert await backend.healthy() is True
    # No lifecycle service: the manager falls back to plugin.yaml's capabilities.
    assert await backend.detect_capabilities() is None
    assert await backend.get_info() is None
    assert await greet(backend, "x") == "hello, x"

    # fmt.Println after plugin.Serve swapped os.Stdout: over GRPCStdio, as stdout.
    await logs.wait_for("stdout", "gohello: started")
    assert (grpc_stdio_pb2.StdioData.STDOUT, b"gohello: started\n") in stdio_chunks

    # hclog JSON on the real stderr, parsed into level, message and fields.
    ready = await logs.wait_for("stderr", "gohello ready")
    entry = parse_log_line(ready, "gohello", "stderr")
    assert (entry.level, entry.message, entry.source) == ("info", "gohello ready", "stderr")
    assert entry.fields["pid"] == backend.pid
    assert entry.fields["@module"] == "gohello"
    address = parse_log_line(await logs.wait_for("stderr", "plugin address"), "gohello")
    assert address.level == "debug"
    assert address.fields["address"] == hs.address and address.fields["network"] == "unix"
    assert not [ln for src, ln in logs.lines if src == "stdout" and ln.startswith("1|")]


async def test_gohello_graceful_stop_leaves_nothing(launch_gohello: Launch) -> None:
    exits = Exits()
    backend = await launch_gohello(exits=exits)
    pid, hs = backend.pid, backend.handshake
    assert pid is not None and hs is not None
    assert Path(hs.address).exists()

    assert await backend.stop() is StopPath.GRACEFUL  # Shutdown RPC; no signal needed
    assert backend.returncode == 0
    assert gone(pid), describe(pid)  # exited and reaped: no zombie
    assert not Path(hs.address).exists()  # socket file removed
    assert exits.codes == []  # a stop the host asked for is not an "exit on its own"
    assert await backend.stop() is StopPath.GRACEFUL  # idempotent
    assert await backend.healthy() is False


async def test_gohello_automtls(launch_gohello: Launch) -> None:
    # On Linux go-plugin always listens on a unix socket, so ask for AutoMTLS there too.
    backend = await launch_gohello(auto_mtls="always", start_timeout=5.0)
    hs = backend.handshake
    assert hs is not None and hs.network == "unix"
    assert hs.server_cert is not None  # field six: go-plugin's own certificate
    cert = x509.load_der_x509_certificate(hs.server_cert)
    assert "localhost" in cert.subject.rfc4514_string()
    env = psutil.Process(backend.pid).environ()
    assert "BEGIN CERTIFICATE" in env["PLUGIN_CLIENT_CERT"]

    # go-plugin's certificate is P-521, which grpcio's TLS refuses: the host must have
    # gone through its OpenSSL relay, and everything works through it.
    assert backend._relay is not None
    assert await backend.healthy() is True
    assert await greet(backend, "tls") == "hello, tls"
    # The server speaks only TLS: a plaintext client gets nowhere.
    async with grpc.aio.insecure_channel(hs.grpc_target) as plain:
        health: Any = health_pb2_grpc.HealthStub(plain)
        with pytest.raises(grpc.aio.AioRpcError):
            await health.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=2.0)


async def test_gohello_crash_reports_exit_code_and_error_line(launch_gohello: Launch) -> None:
    logs, exits = Logs(), Exits()
    # 1 s, not less: the crash must come after the start completed, even on a busy machine.
    backend = await launch_gohello(logs=logs, exits=exits, env={"GOHELLO_CRASH_AFTER_MS": "1000"})
    pid, hs = backend.pid, backend.handshake
    assert pid is not None and hs is not None

    await async_wait_until(lambda: exits.codes, timeout=WAIT, message="the exit callback")
    assert exits.codes == [3]
    assert backend.exited and backend.returncode == 3
    line = await logs.wait_for("stderr", "gohello crashing on purpose")
    entry = parse_log_line(line, "gohello", "stderr")
    assert entry.level == "error"
    assert entry.fields["after_ms"] == 1000
    assert line in backend.stderr_tail
    assert await backend.healthy() is False

    assert await backend.stop() is StopPath.ALREADY_EXITED
    assert exits.codes == [3]  # called once
    assert gone(pid), describe(pid)
    assert not Path(hs.address).exists()  # the crashed plugin's socket is cleaned up


async def test_gohello_rejects_app_version_the_host_did_not_offer(
    launch_gohello: Launch, go_build: Path
) -> None:
    # go-plugin falls back to its lowest version (1) when none offered matches.
    with pytest.raises(HandshakeError) as caught:
        await launch_gohello(protocol_versions=(2,))
    message = str(caught.value)
    assert "app protocol version 1" in message and "offered [2]" in message, message
    assert caught.value.plugin_id == "gohello"
    await async_wait_until(
        lambda: not children_running(go_build / "gohello"),
        timeout=WAIT,
        message="the rejected plugin to be gone",
    )


# -- omnihello under the Omniview compatibility profile ------------------------------------


def omniview_home(
    go_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugin_id: str
) -> Path:
    """A temporary HOME with ``.omniview/plugins/<plugin_id>/{plugin.yaml,bin/plugin}``.

    The host passes HOME through its allow-list, and the SDK reads the plugin's
    plugin.yaml from ``$HOME/.omniview/plugins/<plugin_id>/``.
    """
    home = tmp_path / "home"
    shutil.copytree(go_build / plugin_id, home / ".omniview" / "plugins" / plugin_id)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)  # conftest sets it; the profile decides
    assert resolve_root(None, "omniview") == home / ".omniview"
    return home


@pytest.fixture
def omni_home(go_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME/.omniview holding omnihello, the smallest real-SDK plugin."""
    return omniview_home(go_build, tmp_path, monkeypatch, "omnihello")


@pytest.fixture
def legacy_home(go_build: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$HOME/.omniview holding omnilegacy, a plugin as older SDK releases served it."""
    return omniview_home(go_build, tmp_path, monkeypatch, "omnilegacy")


def also_declare_exec(plugin_dir: Path) -> None:
    """plugin.yaml says [settings, exec], so detected capabilities differ from declared."""
    meta = plugin_dir / "plugin.yaml"
    text = meta.read_text()
    assert "capabilities:\n  - settings\n" in text
    meta.write_text(text.replace("  - settings\n", "  - settings\n  - exec\n"))


@contextlib.asynccontextmanager
async def omniview_manager(home: Path, **overrides: Any) -> AsyncIterator[PluginManager]:
    """An initialized PluginManager on ``$HOME/.omniview``; shut down afterwards."""
    settings = SettingsProvider(None, {**MANAGER_SETTINGS, **overrides})
    manager = PluginManager(home / ".omniview", profile="omniview", settings=settings)
    assert manager.layout.root == resolve_root(None, "omniview")
    await manager.initialize()
    try:
        yield manager
    finally:
        await manager.shutdown()


def read_pid_file(root: Path) -> Any:
    return json.loads((root / "plugin_pids.json").read_text())


async def test_omnihello_runs_under_the_omniview_profile(omni_home: Path) -> None:
    root = omni_home / ".omniview"
    async with omniview_manager(omni_home) as manager:
        info = manager.get_plugin("omnihello")
        assert info.phase is Phase.RUNNING, info.last_error
        backend = manager.backend("omnihello")
        assert backend is not None and backend.pid is not None
        pid = backend.pid
        assert info.pid == pid and info.protocol_version == 1

        env = psutil.Process(pid).environ()
        assert env.get("OMNIVIEW") == "omnihello"  # the profile's cookie key
        assert "PLUGHOST" not in env
        assert env.get("HOME") == str(omni_home)

        assert await backend.get_info() == {
            "pluginID": "omnihello",
            "version": "0.1.0",
            "sdkProtocolVersion": 1,
        }
        assert await backend.detect_capabilities() == ["settings"]
        assert info.capabilities == ["settings"]
        assert await backend.healthy() is True

        # go-plugin's default logger (no Logger in ServeConfig): JSON on stderr.
        def address_logged() -> bool:
            return any(
                e.message == "plugin address" and e.level == "debug"
                for e in manager.logs.get_logs("omnihello", 1000)
            )

        await async_wait_until(
            address_logged,
            timeout=WAIT,
            message="go-plugin's 'plugin address' line in the plugin's log",
        )
        assert read_pid_file(root)["omnihello"]["pid"] == pid

    assert gone(pid), describe(pid)
    assert not children_running(root)
    assert read_pid_file(root) == {}


async def test_legacy_lifecycle_name(legacy_home: Path) -> None:
    also_declare_exec(legacy_home / ".omniview" / "plugins" / "omnilegacy")
    async with omniview_manager(legacy_home) as manager:
        info = manager.get_plugin("omnilegacy")
        assert info.phase is Phase.RUNNING, info.last_error
        backend = manager.backend("omnilegacy")
        assert backend is not None

        # Only com.omniview.pluginsdk.PluginLifecycle is served ...
        current: Any = backend.stub(lifecycle_pb2_grpc.PluginLifecycleStub)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await current.GetInfo(empty_pb2.Empty(), timeout=WAIT)
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        legacy: Any = backend.stub(lifecycle_legacy_pb2_grpc.PluginLifecycleStub)
        assert (await legacy.GetInfo(empty_pb2.Empty(), timeout=WAIT)).plugin_id == "omnilegacy"

        # ... and detection still works, through it.
        assert await backend.detect_capabilities() == ["settings"]
        assert info.capabilities == ["settings"]  # detected, not plugin.yaml's [settings, exec]
        assert await backend.get_info() == {
            "pluginID": "omnilegacy",
            "version": "0.0.9",
            "sdkProtocolVersion": 1,
        }
        assert await backend.healthy() is True
        pid = backend.pid
        assert pid is not None
    assert gone(pid), describe(pid)
    assert read_pid_file(legacy_home / ".omniview") == {}


async def test_without_lifecycle_falls_back_to_plugin_yaml(legacy_home: Path) -> None:
    also_declare_exec(legacy_home / ".omniview" / "plugins" / "omnilegacy")
    async with omniview_manager(legacy_home, extra_env={"OMNILEGACY_LIFECYCLE": "none"}) as manager:
        info = manager.get_plugin("omnilegacy")
        assert info.phase is Phase.RUNNING, info.last_error
        backend = manager.backend("omnilegacy")
        assert backend is not None
        assert await backend.detect_capabilities() is None
        assert await backend.get_info() is None
        assert info.capabilities == ["settings", "exec"]  # from plugin.yaml

        # Health still works: go-plugin's standard health service.
        health: Any = backend.stub(health_pb2_grpc.HealthStub)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=WAIT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert await backend.healthy() is True
        pid = backend.pid
        assert pid is not None
    assert gone(pid), describe(pid)
    assert read_pid_file(legacy_home / ".omniview") == {}


# -- everything side by side under one manager -----------------------------------------------


async def test_go_and_python_plugins_side_by_side_and_crash_recovery(
    omni_home: Path, go_build: Path
) -> None:
    root = omni_home / ".omniview"
    shutil.copytree(go_build / "gohello", root / "plugins" / "gohello")
    shutil.copytree(
        HELLO_EXAMPLE, root / "plugins" / "hello", ignore=shutil.ignore_patterns("__pycache__")
    )
    ids = ("gohello", "hello", "omnihello")
    # Omniview profile: cookie key OMNIVIEW for all three (gohello is told to expect it;
    # plughost's Python SDK accepts it).
    async with omniview_manager(omni_home, extra_env={"GOHELLO_COOKIE_KEY": "OMNIVIEW"}) as mgr:
        for plugin_id in ids:
            info = mgr.get_plugin(plugin_id)
            assert info.phase is Phase.RUNNING, (plugin_id, info.last_error)
        backends = {i: mgr.backend(i) for i in ids}
        pids = {i: b.pid for i, b in backends.items() if b is not None}
        assert len(set(pids.values())) == 3, pids
        assert mgr.get_plugin("gohello").capabilities == ["exec"]  # plugin.yaml: no lifecycle
        assert mgr.get_plugin("omnihello").capabilities == ["settings"]  # detected
        assert await greet(backends["gohello"], "go") == "hello, go"
        assert await greet(backends["hello"], "py") == "hello, py"

        stream = mgr.bus.stream("plugin/*")
        try:
            os.kill(pids["gohello"], signal.SIGKILL)
            crash = await next_event(stream, EVENT_CRASH, "gohello")
            assert crash.payload["signal"] == "SIGKILL"
            await next_event(stream, EVENT_RECOVERED, "gohello")
        finally:
            stream.close()

        info = mgr.get_plugin("gohello")
        assert info.phase is Phase.RUNNING, info.last_error
        revived = mgr.backend("gohello")
        assert revived is not None and revived.pid not in (None, pids["gohello"])
        assert gone(pids["gohello"]), describe(pids["gohello"])
        assert await revived.healthy() is True
        assert await greet(revived, "again") == "hello, again"
        for other in ("hello", "omnihello"):  # untouched by the neighbour's crash
            backend = mgr.backend(other)
            assert backend is not None and backend.pid == pids[other]
            assert mgr.get_plugin(other).phase is Phase.RUNNING
        final = {*pids.values(), revived.pid}

    for pid in final:
        assert pid is not None and gone(pid), describe(pid)
    assert not children_running(root)
    assert read_pid_file(root) == {}
