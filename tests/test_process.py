"""The process backend with real plugin processes, sockets and signals.

Every test spawns real executables: the examples (hello, crasher, hanger) and
``tests/plugins/problem``, a plugin that misbehaves as ``PROBLEM_MODE`` says.
Nothing sleeps in the hope that something happened: tests poll with deadlines
(tests/waiting.py).
Orphans (a plugin's own child, a plugin whose host died) are reparented to this
test process, made a child subreaper for the test, so they can be reaped and
their death checked rather than left as zombies.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import re
import signal
import stat
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any, Protocol

import grpc
import psutil
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import async_wait_until

from plughost._proto import hello_pb2_grpc
from plughost.errors import HandshakeError, PluginLoadError
from plughost.process.backend import StopPath
from plughost.process.local import LaunchSpec, ProcessBackend, start_process
from plughost.process.mtls import der_to_pem, generate_cert_pair

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
PROBLEM = Path(__file__).resolve().parent / "plugins" / "problem"
PR_SET_CHILD_SUBREAPER = 36


# -- helpers ----------------------------------------------------------------------


class Logs:
    """An on_log sink that remembers (source, line) pairs and when each arrived."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.times: dict[str, float] = {}

    def __call__(self, line: str, source: str) -> None:
        self.lines.append((source, line))
        self.times.setdefault(line, time.monotonic())

    def of(self, source: str) -> list[str]:
        return [line for src, line in self.lines if src == source]


class Exits:
    """An on_exit sink that remembers codes and when they arrived."""

    def __init__(self) -> None:
        self.codes: list[int | None] = []
        self.at: float | None = None

    def __call__(self, code: int | None) -> None:
        self.codes.append(code)
        self.at = time.monotonic()


def describe(pid: int) -> str:
    try:
        proc = psutil.Process(pid)
        return f"pid {pid} {proc.status()} ppid={proc.ppid()} {proc.cmdline()}"
    except psutil.NoSuchProcess:
        return f"pid {pid} gone"


def assert_gone(pid: int) -> None:
    """Neither running nor a zombie: the host reaped it."""
    assert not psutil.pid_exists(pid), describe(pid)


async def wait_reaped(pid: int, timeout: float = 5.0) -> int | None:
    """Wait for an orphan reparented to this (subreaper) process to die and reap it.

    Returns its wait status, or None if it was gone without passing through us.
    """

    def reaped() -> tuple[int | None] | None:
        with contextlib.suppress(ChildProcessError):
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == pid:
                return (status,)
        return None if psutil.pid_exists(pid) else (None,)

    (status,) = await async_wait_until(
        reaped, timeout=timeout, message=lambda: f"pid {pid} to be reaped: {describe(pid)}"
    )
    return status


def pid_in(text: str, label: str = "pid") -> int:
    match = re.search(rf"\b{label}=(\d+)", text)
    assert match, f"no {label}= in {text!r}"
    return int(match.group(1))


def make_spec(
    name: str, socket_dir: Path, *, env: dict[str, str] | None = None, **kw: Any
) -> LaunchSpec:
    location = PROBLEM if name == "problem" else EXAMPLES / name
    return LaunchSpec(
        plugin_id=name,
        executable=location / "bin" / "plugin",
        cwd=location,
        socket_dir=socket_dir,
        extra_env=dict(env or {}),
        **kw,
    )


class Launch(Protocol):
    def __call__(
        self,
        name: str,
        *,
        logs: Logs | None = None,
        exits: Exits | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> Awaitable[ProcessBackend]: ...


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """``<root>/run``; short enough under pytest's tmp_path for a unix socket path."""
    return tmp_path / "run"


@pytest.fixture
async def launch(run_dir: Path) -> AsyncIterator[Launch]:
    """Start plugins; whatever a test leaves running is stopped afterwards."""
    started: list[ProcessBackend] = []

    async def start(
        name: str,
        *,
        logs: Logs | None = None,
        exits: Exits | None = None,
        env: dict[str, str] | None = None,
        **kw: Any,
    ) -> ProcessBackend:
        spec = make_spec(name, run_dir, env=env, **kw)
        backend = await start_process(spec, on_log=logs, on_exit=exits)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()
        assert backend.pid is not None
        assert_gone(backend.pid)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this process the reaper of its descendants' orphans for one test."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    before = {child.pid for child in psutil.Process().children()}
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        # Orphans adopted meanwhile (a killed host's death watcher) stay this process's
        # children: reaped here, or they would be zombies under the tests that follow.
        for child in psutil.Process().children():
            if child.pid not in before:
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    try:
                        child.wait(timeout=5)
                    except psutil.TimeoutExpired:
                        child.kill()
                        child.wait(timeout=5)


async def check_health(channel: grpc.aio.Channel) -> Any:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=3)


# -- a good plugin, start to stop ---------------------------------------------------


async def test_hello_serves_and_stops_gracefully(launch: Launch) -> None:
    logs, exits = Logs(), Exits()
    backend = await launch("hello", logs=logs, exits=exits)
    pid = backend.pid
    assert pid is not None and psutil.Process(pid).is_running()
    # Its own process group (and session), so signals reach its whole tree.
    assert os.getpgid(pid) == pid
    assert os.getsid(pid) == pid
    hs = backend.handshake
    assert hs is not None
    assert (hs.core_version, hs.app_version, hs.network, hs.protocol) == (1, 1, "unix", "grpc")
    assert hs.server_cert is None  # no AutoMTLS on a unix socket by default
    assert backend.negotiated_version == 1
    assert not backend.exited and backend.returncode is None

    assert await backend.healthy()
    assert await backend.detect_capabilities() == ["exec"]
    assert await backend.get_info() == {
        "pluginID": "hello",
        "version": "1.0.0",
        "sdkProtocolVersion": 1,
    }
    greeter = backend.stub(hello_pb2_grpc.GreeterStub)
    reply = await greeter.Greet(wrappers_pb2.StringValue(value="bob"), timeout=5)
    assert reply.value == "hello, bob"
    # The plugin's stderr (its logging) reaches the log with source "stderr".
    await async_wait_until(
        lambda: "[INFO] greeting bob" in logs.of("stderr"),
        timeout=5.0,
        message="the greeting log line",
    )
    assert "[INFO] hello plugin starting" in logs.of("stderr")

    socket = Path(hs.address)
    assert socket.exists()
    assert await backend.stop() is StopPath.GRACEFUL
    assert await backend.stop() is StopPath.GRACEFUL  # idempotent
    assert backend.exited and backend.returncode == 0
    assert exits.codes == []  # the host stopped it: not a crash
    assert_gone(pid)
    assert not socket.exists()
    assert not socket.parent.exists()
    assert not await backend.healthy()
    with pytest.raises(RuntimeError):
        _ = backend.channel


async def test_socket_dir_is_private(launch: Launch, run_dir: Path) -> None:
    assert len(str(run_dir)) <= 80, "pytest's tmp_path is too long for this test"
    assert not run_dir.exists()
    backend = await launch("hello")
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "hello").stat().st_mode) == 0o700  # its own directory
    assert backend.handshake is not None
    assert Path(backend.handshake.address).parent.parent == run_dir / "hello"
    assert await backend.stop() is StopPath.GRACEFUL
    assert list(run_dir.iterdir()) == []


async def test_too_long_socket_dir_falls_back_to_a_private_tmp_dir(tmp_path: Path) -> None:
    long_dir = tmp_path / ("r" * 90) / "run"
    backend = await start_process(make_spec("hello", long_dir))
    try:
        assert backend.handshake is not None
        address = Path(backend.handshake.address)
        assert len(str(address)) < 108
        assert not str(address).startswith(str(long_dir))
        fallback = address.parent.parent
        assert stat.S_IMODE(fallback.stat().st_mode) == 0o700
        assert await backend.healthy()
    finally:
        assert await backend.stop() is StopPath.GRACEFUL
    assert not fallback.exists()


async def test_negotiates_the_highest_common_protocol_version(launch: Launch) -> None:
    backend = await launch(
        "problem", env={"PROBLEM_PROTOCOLS": "1,2,5"}, protocol_versions=(1, 2, 3)
    )
    assert backend.negotiated_version == 2
    assert backend.handshake is not None and backend.handshake.app_version == 2
    assert await backend.healthy()


# -- environment --------------------------------------------------------------------


async def test_plugin_sees_only_the_allow_listed_environment(
    launch: Launch, monkeypatch: pytest.MonkeyPatch, run_dir: Path
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-do-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fakefakefake")
    monkeypatch.setenv("LC_PLUGHOST_TEST", "locale-ok")
    monkeypatch.setenv("EXTRA_ALLOWED", "allowed-by-settings")
    logs = Logs()
    backend = await launch(
        "problem",
        logs=logs,
        env={"PROBLEM_MODE": "print_env", "PLUGHOST": "spoofed-cookie"},
        env_allow=("EXTRA_ALLOWED",),
    )
    await async_wait_until(
        lambda: any(line.startswith("problem: env=") for line in logs.of("stderr")),
        timeout=5.0,
        message="the plugin's environment",
    )
    line = next(line for line in logs.of("stderr") if line.startswith("problem: env="))
    env = json.loads(line.removeprefix("problem: env="))
    assert "fake-secret-do-not-leak" not in line
    assert "ghp_fakefakefake" not in line
    assert "AWS_SECRET_ACCESS_KEY" not in env and "GITHUB_TOKEN" not in env
    assert env["PATH"] == os.environ["PATH"]
    assert env["LC_PLUGHOST_TEST"] == "locale-ok"
    assert env["EXTRA_ALLOWED"] == "allowed-by-settings"
    assert env["PLUGHOST"] == "problem"  # the cookie; extra_env cannot spoof it
    assert env["PLUGHOST_PLUGIN_ID"] == "problem"
    assert env["PLUGIN_PROTOCOL_VERSIONS"] == "1"
    assert (env["PLUGIN_MIN_PORT"], env["PLUGIN_MAX_PORT"]) == ("10000", "25000")
    assert env["PLUGIN_UNIX_SOCKET_DIR"] == env["TMPDIR"] == str(run_dir / "problem")
    assert env["PROBLEM_MODE"] == "print_env"
    assert "PLUGIN_CLIENT_CERT" not in env  # no AutoMTLS on unix by default
    allowed_prefixes = ("PLUGIN_", "PLUGHOST", "PROBLEM_", "LC_")
    allowed = {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "TERM", "EXTRA_ALLOWED"}
    # Whatever the interpreter adds on its own start (none expected, but harmless).
    unexpected = {k for k in env if k not in allowed and not k.startswith(allowed_prefixes)}
    assert unexpected <= {"PWD", "SHLVL", "_", "LC_CTYPE"}, unexpected
    assert backend.handshake is not None


# -- load failures ------------------------------------------------------------------

LOAD_FAILURES = [
    # mode, error class, what the message says, the plugin's last stderr line
    ("bad_core", HandshakeError, "incompatible core API version 2", "bad handshake (bad_core)"),
    (
        "bad_app_version",
        HandshakeError,
        "app protocol version 99, but the host offered [1]",
        "bad handshake (bad_app_version)",
    ),
    ("netrpc", HandshakeError, "protocol 'netrpc'", "bad handshake (netrpc)"),
    ("no_protocol", HandshakeError, "protocol 'netrpc'", "bad handshake (no_protocol)"),
    ("malformed", HandshakeError, "'one' is not a number", "bad handshake (malformed)"),
    ("bad_network", HandshakeError, "network type 'pigeon'", "bad handshake (bad_network)"),
    (
        "exit_before",
        PluginLoadError,
        "exited before printing its handshake line",
        "fatal: cannot read my configuration",
    ),
    ("never", PluginLoadError, "within 1 s (start timeout)", "waiting for something"),
]


@pytest.mark.parametrize(
    ("mode", "error", "detail", "stderr_line"),
    LOAD_FAILURES,
    ids=[case[0] for case in LOAD_FAILURES],
)
async def test_load_failure_is_clear_and_leaves_nothing_behind(
    run_dir: Path, mode: str, error: type[PluginLoadError], detail: str, stderr_line: str
) -> None:
    exits = Exits()
    spec = make_spec("problem", run_dir, env={"PROBLEM_MODE": mode}, start_timeout=1)
    started = time.monotonic()
    with pytest.raises(PluginLoadError) as info:
        await start_process(spec, on_exit=exits)
    elapsed = time.monotonic() - started
    err = info.value
    assert type(err) is error
    assert err.plugin_id == "problem"
    message = str(err)
    assert detail in message
    assert "last stderr lines:" in message
    assert stderr_line in message
    assert f"mode={mode}" in message
    assert err.suggestions
    assert elapsed < 5
    assert exits.codes == []
    assert_gone(pid_in(message))
    assert not run_dir.exists() or list(run_dir.iterdir()) == []


async def test_load_error_quotes_the_last_stderr_lines(tmp_path: Path, run_dir: Path) -> None:
    pid_file = tmp_path / "pid"
    env = {
        "PROBLEM_MODE": "stderr_spam,bad_core",
        "PROBLEM_SPAM_LINES": "500",
        "PROBLEM_PID_FILE": str(pid_file),
    }
    with pytest.raises(HandshakeError) as info:
        await start_process(make_spec("problem", run_dir, env=env))
    message = str(info.value)
    assert "problem: spam line 499 " in message
    assert "problem: about to print a bad handshake (bad_core)" in message
    assert "problem: spam line 0 " not in message
    assert_gone(int(pid_file.read_text()))


async def test_missing_executable_is_a_load_error(tmp_path: Path) -> None:
    spec = LaunchSpec(
        plugin_id="ghost",
        executable=tmp_path / "bin" / "plugin",
        cwd=tmp_path,
        socket_dir=tmp_path / "run",
    )
    with pytest.raises(PluginLoadError, match="missing or not executable"):
        await start_process(spec)


async def test_chatter_before_the_handshake_is_logged_not_fatal(launch: Launch) -> None:
    logs = Logs()
    backend = await launch("problem", logs=logs, env={"PROBLEM_MODE": "chatty_then_ok"})
    assert await backend.healthy()
    assert logs.of("stdout")[:2] == ["problem: warming up", "loading | 3 | modules"]


async def test_a_flood_of_stderr_never_blocks_the_plugin(launch: Launch) -> None:
    logs = Logs()
    backend = await launch("problem", logs=logs, env={"PROBLEM_MODE": "stderr_spam"})
    assert await backend.healthy()
    await async_wait_until(
        lambda: len([x for x in logs.of("stderr") if "spam line" in x]) == 3000,
        timeout=5.0,
        message="all spam lines",
    )
    assert backend.stderr_tail[-1].startswith("problem: spam line 2999 ")
    assert len(backend.stderr_tail) <= 20


# -- output after the handshake --------------------------------------------------------


async def test_stdout_after_the_handshake_reaches_the_log(launch: Launch) -> None:
    logs = Logs()
    await launch("problem", logs=logs, env={"PROBLEM_MODE": "stdout_ticks"})
    # print() goes through the SDK's GRPCStdio stream, raw fd 1 through the pipe.
    await async_wait_until(
        lambda: (
            {"problem: tick 0 via _StreamWriter", "problem: tick 1 via _StreamWriter"}
            <= set(logs.of("stdout"))
        ),
        timeout=5.0,
        message="ticks through GRPCStdio",
    )
    await async_wait_until(
        lambda: "problem: raw fd1 line after the handshake" in logs.of("stdout"),
        timeout=5.0,
        message="the raw stdout line",
    )
    assert "problem: pid=" in logs.of("stderr")[0]
    assert not any(" via " in line for line in logs.of("stderr"))


# -- stopping ------------------------------------------------------------------------


async def test_plugin_ignoring_shutdown_is_terminated(launch: Launch) -> None:
    logs, exits = Logs(), Exits()
    backend = await launch(
        "problem",
        logs=logs,
        exits=exits,
        env={"PROBLEM_MODE": "ignore_shutdown"},
        stop_grace=0.3,
        kill_grace=5,
    )
    pid = backend.pid
    assert pid is not None
    started = time.monotonic()
    assert await backend.stop() is StopPath.TERMINATED
    assert time.monotonic() - started < 3
    assert "problem: Shutdown received and ignored" in logs.of("stderr")
    assert exits.codes == []
    assert_gone(pid)


async def test_plugin_ignoring_sigterm_is_killed(launch: Launch, run_dir: Path) -> None:
    exits = Exits()
    backend = await launch(
        "problem",
        exits=exits,
        env={"PROBLEM_MODE": "ignore_sigterm"},
        stop_grace=0.3,
        kill_grace=0.3,
    )
    pid = backend.pid
    assert pid is not None
    started = time.monotonic()
    assert await backend.stop() is StopPath.KILLED
    assert time.monotonic() - started < 3
    assert backend.returncode == -signal.SIGKILL
    assert exits.codes == []
    assert_gone(pid)
    assert list(run_dir.iterdir()) == []  # the socket (and its directory) went with it


async def test_kill_is_immediate_and_not_reported_as_a_crash(launch: Launch) -> None:
    exits = Exits()
    backend = await launch("problem", exits=exits, env={"PROBLEM_MODE": "ignore_sigterm"})
    pid = backend.pid
    assert pid is not None
    started = time.monotonic()
    await backend.kill()
    assert time.monotonic() - started < 2
    assert backend.returncode == -signal.SIGKILL
    assert exits.codes == []
    assert_gone(pid)


@pytest.mark.usefixtures("subreaper")
async def test_stop_leaves_no_child_of_the_plugin_behind(launch: Launch) -> None:
    logs = Logs()
    backend = await launch("problem", logs=logs, env={"PROBLEM_MODE": "spawn_child"})
    await async_wait_until(
        lambda: any("child pid=" in line for line in logs.of("stderr")),
        timeout=5.0,
        message="the child's pid",
    )
    child = pid_in("\n".join(logs.of("stderr")), "child pid")
    assert psutil.Process(child).ppid() == backend.pid
    assert os.getpgid(child) == backend.pid  # in the plugin's process group
    assert await backend.stop() is StopPath.GRACEFUL
    status = await wait_reaped(child)
    assert status is None or os.WIFSIGNALED(status)
    assert not psutil.pid_exists(child)


# -- the exit watcher -----------------------------------------------------------------


async def test_exit_watcher_reports_a_crash_at_once(launch: Launch, run_dir: Path) -> None:
    logs, exits = Logs(), Exits()
    backend = await launch("crasher", logs=logs, exits=exits, env={"CRASHER_AFTER_MS": "200"})
    pid = backend.pid
    assert pid is not None
    crash_line = "[ERROR] crasher: simulated fatal error, exiting with status 3"
    await async_wait_until(lambda: exits.codes, timeout=5, message="on_exit")
    assert exits.codes == [3]
    assert backend.exited and backend.returncode == 3
    await async_wait_until(
        lambda: crash_line in logs.of("stderr"),
        timeout=5.0,
        message="the crash line",
    )
    assert exits.at is not None
    assert abs(exits.at - logs.times[crash_line]) < 0.5  # reported at once
    assert not await backend.healthy()
    assert await backend.stop() is StopPath.ALREADY_EXITED
    assert exits.codes == [3]  # once only
    assert_gone(pid)
    assert list(run_dir.iterdir()) == []  # its socket was cleaned up after it


@pytest.mark.usefixtures("subreaper")
async def test_exit_watcher_fires_even_if_a_child_holds_the_pipes(launch: Launch) -> None:
    logs, exits = Logs(), Exits()
    backend = await launch(
        "problem", logs=logs, exits=exits, env={"PROBLEM_MODE": "spawn_child,exit_soon"}
    )
    await async_wait_until(
        lambda: exits.codes,
        timeout=5,
        message="on_exit while the child still runs",
    )
    assert exits.codes == [5]
    assert backend.returncode == 5
    child = pid_in("\n".join(logs.of("stderr")), "child pid")
    assert psutil.pid_exists(child)  # still running: it is the one holding the pipes
    assert await backend.stop() is StopPath.ALREADY_EXITED
    status = await wait_reaped(child)
    assert status is None or os.WIFSIGNALED(status)


async def test_exit_watcher_is_silent_when_the_host_stops_the_plugin(launch: Launch) -> None:
    exits = Exits()
    backend = await launch("crasher", exits=exits, env={"CRASHER_AFTER_MS": "-1"})
    assert await backend.stop() is StopPath.GRACEFUL
    assert backend.returncode == 0
    assert exits.codes == []


HOST_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from plughost.process.local import LaunchSpec, start_process

    async def main() -> None:
        plugin, run = Path(sys.argv[1]), Path(sys.argv[2])
        spec = LaunchSpec(
            plugin_id="hello", executable=plugin / "bin" / "plugin", cwd=plugin, socket_dir=run
        )
        backend = await start_process(spec)
        print(backend.pid, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


@pytest.mark.usefixtures("subreaper")
async def test_plugin_dies_with_its_host(tmp_path: Path, run_dir: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST_SCRIPT)
    host_stderr = tmp_path / "host.stderr"
    with host_stderr.open("wb") as err:
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(EXAMPLES / "hello"),
            str(run_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    plugin: int | None = None
    try:
        assert host.stdout is not None
        line = await asyncio.wait_for(host.stdout.readline(), 20)
        assert line.strip().isdigit(), host_stderr.read_text()
        plugin = int(line)
        assert psutil.Process(plugin).ppid() == host.pid
        host.kill()  # SIGKILL: the host gets no chance to stop its plugins
        assert await asyncio.wait_for(host.wait(), 5) == -signal.SIGKILL
        status = await wait_reaped(plugin, timeout=5)
        assert status is None or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL)
        assert not psutil.pid_exists(plugin)
    finally:
        if host.returncode is None:
            host.kill()
            await host.wait()
        if plugin is not None and psutil.pid_exists(plugin):  # the test failed: clean up
            with contextlib.suppress(ProcessLookupError):
                os.kill(plugin, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(plugin, 0)


# -- transports and AutoMTLS ------------------------------------------------------------


async def test_tcp_uses_mutual_tls(launch: Launch) -> None:
    backend = await launch("hello", transport="tcp")  # auto_mtls defaults to "tcp"
    hs = backend.handshake
    assert hs is not None and hs.network == "tcp"
    host, _, port = hs.address.rpartition(":")
    assert host == "127.0.0.1" and 10000 <= int(port) <= 25000
    assert hs.server_cert is not None
    cert = x509.load_der_x509_certificate(hs.server_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert await backend.healthy()
    reply = await backend.stub(hello_pb2_grpc.GreeterStub).Greet(
        wrappers_pb2.StringValue(value="tls"), timeout=5
    )
    assert reply.value == "hello, tls"

    async def refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await check_health(channel)
        return info.value.code()

    # Plain text is refused ...
    assert await refused(grpc.aio.insecure_channel(hs.address)) is grpc.StatusCode.UNAVAILABLE
    # ... and so is TLS that trusts the plugin but has no client certificate, or a stranger's.
    override = [("grpc.ssl_target_name_override", "localhost")]
    server_root = der_to_pem(hs.server_cert)
    anonymous = grpc.ssl_channel_credentials(root_certificates=server_root)
    assert (
        await refused(grpc.aio.secure_channel(hs.address, anonymous, options=override))
        is grpc.StatusCode.UNAVAILABLE
    )
    stranger = generate_cert_pair()
    foreign = grpc.ssl_channel_credentials(
        root_certificates=server_root,
        private_key=stranger.key_pem,
        certificate_chain=stranger.cert_pem,
    )
    assert (
        await refused(grpc.aio.secure_channel(hs.address, foreign, options=override))
        is grpc.StatusCode.UNAVAILABLE
    )
    assert await backend.healthy()  # the host's own channel is unaffected


async def test_tcp_without_mtls_when_turned_off(launch: Launch) -> None:
    backend = await launch("hello", transport="tcp", auto_mtls="off")
    assert backend.handshake is not None and backend.handshake.server_cert is None
    assert await backend.healthy()


async def test_auto_mtls_always_works_over_unix(launch: Launch) -> None:
    backend = await launch("hello", auto_mtls="always")
    hs = backend.handshake
    assert hs is not None and hs.network == "unix" and hs.server_cert is not None
    reply = await backend.stub(hello_pb2_grpc.GreeterStub).Greet(
        wrappers_pb2.StringValue(value="unix"), timeout=5
    )
    assert reply.value == "hello, unix"
    async with grpc.aio.insecure_channel(hs.grpc_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError):
            await check_health(channel)


# -- health ------------------------------------------------------------------------------


async def test_hanger_becomes_unhealthy_within_the_timeout(launch: Launch) -> None:
    backend = await launch("hanger", env={"HANGER_AFTER_MS": "1000"}, stop_grace=3)
    assert await backend.healthy(timeout=0.5)

    async def unhealthy() -> bool:
        before = time.monotonic()
        ok = await backend.healthy(timeout=0.3)
        assert time.monotonic() - before < 1.5  # never hangs the host
        return not ok

    await async_wait_until(
        unhealthy, timeout=5, interval=0.05, message="the hanger to stop answering"
    )
    assert not backend.exited  # hung, not dead


# -- plugins without the SDK's services ----------------------------------------------------


async def test_plugin_without_lifecycle_falls_back(launch: Launch, run_dir: Path) -> None:
    backend = await launch("problem", env={"PROBLEM_MODE": "bare"}, stop_grace=0.2)
    assert await backend.healthy()  # grpc.health.v1, service "plugin"
    assert await backend.detect_capabilities() is None  # the manager uses plugin.yaml's
    assert await backend.get_info() is None
    # No GRPCController: the ladder goes on to SIGTERM.
    assert await backend.stop() is StopPath.TERMINATED
    assert list(run_dir.iterdir()) == []


async def test_plugin_without_any_health_service_is_healthy_while_alive(launch: Launch) -> None:
    exits = Exits()
    backend = await launch(
        "problem", exits=exits, env={"PROBLEM_MODE": "bare_no_health"}, stop_grace=0.2
    )
    assert await backend.healthy()  # process liveness
    assert backend.pid is not None
    os.kill(backend.pid, signal.SIGKILL)
    await async_wait_until(lambda: exits.codes, timeout=5.0, message="on_exit")
    assert exits.codes == [-signal.SIGKILL]
    assert not await backend.healthy()
