"""The process backend: spawn a plugin executable and speak go-plugin to it.

Start: build the environment, spawn in a new process group that dies with the
host (process/spawn.py), read stdout until the handshake line (logging anything before it),
then open the gRPC channel (mutual TLS when the plugin answered with a
certificate). Every pipe is drained by a tracked task for the plugin's whole
life, so it can never block on a full pipe. Stop is a ladder: Shutdown RPC,
grace, SIGTERM to the group, grace, SIGKILL; the process is always reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .._proto import grpc_stdio_pb2, grpc_stdio_pb2_grpc
from ..errors import HandshakeError, PluginLoadError
from ..hardening import resolve_run_as
from .backend import ExitCallback, LogCallback, PluginBackend, StopPath
from .broker import BrokerConfig
from .handshake import Handshake, build_plugin_env, looks_like_handshake, parse_handshake
from .mtls import CertPair, generate_cert_pair
from .sandbox import Confinement, SandboxPolicy, confine, granted_env
from .sockdir import SocketDir
from .spawn import ChildProcess, spawn
from .tlsrelay import GRPC_OPTIONS, TlsRelay, open_plugin_channel

__all__ = ["LaunchSpec", "ProcessBackend", "start_process"]

log = logging.getLogger(__name__)

_STDERR_TAIL = 20
EXIT_STDERR_WAIT = 0.2  # seconds a crash report waits for the plugin's last stderr lines


@dataclasses.dataclass
class LaunchSpec:
    """Everything needed to start one plugin process."""

    plugin_id: str
    executable: Path
    cwd: Path
    socket_dir: Path  # the plugin's own directory is made in it: <socket_dir>/<plugin_id>
    cookie_key: str = "PLUGHOST"
    protocol_versions: Sequence[int] = (1,)
    min_port: int = 10000
    max_port: int = 25000
    transport: str = "unix"
    auto_mtls: str = "tcp"  # off | tcp | always
    env_allow: Sequence[str] = ()
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    start_timeout: float = 15.0
    stop_grace: float = 2.0
    kill_grace: float = 2.0
    parent_death_signal: bool = True
    run_as: str = ""  # a user name or uid; empty: the host's own user
    sandbox: SandboxPolicy | None = None  # None: unconfined (see process/sandbox.py)

    def wants_mtls(self) -> bool:
        return self.auto_mtls == "always" or (self.auto_mtls == "tcp" and self.transport == "tcp")


class ProcessBackend(PluginBackend):
    """A plugin running as a child process of the host."""

    confinement = Confinement([], enforced=False)
    """Its sandbox and limits (process/sandbox.py); set by start_process."""

    @property
    def oom_killed(self) -> bool:
        """Killed by the kernel for exceeding its memory limit (not a plain crash)."""
        return self.confinement.oom_killed()

    def __init__(
        self,
        spec: LaunchSpec,
        proc: ChildProcess,
        *,
        on_exit: ExitCallback | None,
        on_log: LogCallback | None,
        socket_dir: SocketDir,
        cert: CertPair | None,
    ) -> None:
        super().__init__(spec.plugin_id)
        self.spec = spec
        self._proc = proc
        self._on_exit = on_exit
        self._on_log = on_log
        self._sockets = socket_dir
        self._socket_dir = socket_dir.path
        self._cert = cert
        self._tasks: set[asyncio.Task[None]] = set()
        self._stderr_drain: asyncio.Task[None] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self._stopping = False
        self._started = False
        self._relay: TlsRelay | None = None
        self._stop_path: StopPath | None = None
        self._stop_lock = asyncio.Lock()
        self._exited = asyncio.Event()
        self._exit_waiters: list[Callable[[], None]] = []  # woken the moment it is reaped
        self.handshake: Handshake | None = None
        self.started_at = time.monotonic()
        self.timings: dict[str, float] = {"spawned": time.perf_counter()}
        """perf_counter() at each step of the start (began, spawned, network when pasta
        forwards its loopback, handshake, connected)."""
        self.stop_timings: dict[str, float] = {}
        """perf_counter() at each step of the stop (began, shutdown sent, reply, exited,
        channel closed, cleaned); reply is missing when the plugin left before answering."""
        proc.add_exit_callback(self._process_exited)

    # -- PluginBackend ---------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    @property
    def address(self) -> tuple[str, str] | None:
        hs = self.handshake
        return (hs.network, hs.address) if hs is not None else None

    @property
    def stderr_tail(self) -> list[str]:
        return list(self._stderr_tail)

    async def wait(self) -> int | None:
        await self._exited.wait()
        return self._proc.returncode

    async def stop(self) -> StopPath:
        async with self._stop_lock:
            if self._stop_path is None:
                await self._close_broker()  # as go-plugin's Kill: the broker goes first
                self._stop_path = await self._stop_ladder()
                await self._cleanup()
                self.stop_timings["cleaned"] = time.perf_counter()
            return self._stop_path

    async def kill(self) -> None:
        self._stopping = True
        self._signal_group(signal.SIGKILL)
        await self.stop()

    def _broker_config(self) -> BrokerConfig | None:
        hs = self.handshake
        if hs is None:
            return None
        tls = hs.server_cert is not None and self._cert is not None
        return BrokerConfig(
            plugin_id=self.plugin_id,
            # The host's own brokered servers listen the way the plugin talks, or on
            # tcp when the settings ask for tcp (go-plugin plugins on Linux always
            # answer unix; their broker dials whatever network the host announces).
            network="tcp" if "tcp" in (hs.network, self.spec.transport) else "unix",
            socket_dir=self._socket_dir,
            server_cert=hs.server_cert if tls else None,
            client_cert=self._cert if tls else None,
            report=lambda line: self._emit(line, "stderr"),
        )

    # -- starting --------------------------------------------------------------
    def _spawn_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"plughost:{self.plugin_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _emit(self, line: str, source: str) -> None:
        if source == "stderr":
            self._stderr_tail.append(line)
        if self._on_log is not None:
            try:
                self._on_log(line, source)
            except Exception:
                log.exception("log sink failed for %s", self.plugin_id)

    async def _drain(self, stream: asyncio.StreamReader, source: str) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the limit: take what is there
                raw = await stream.read(64 * 1024)
            if not raw:
                return
            self._emit(raw.decode(errors="replace").rstrip("\r\n"), source)

    def _process_exited(self) -> None:
        """The child was reaped: called from the pidfd's wakeup, so a stop waiting for the
        exit resumes in the loop's next turn."""
        if self._stopping:
            self.stop_timings["exited"] = time.perf_counter()
        # The group goes with its leader, now: later its id could belong to someone else.
        self._signal_group(signal.SIGKILL)
        self._exited.set()
        for wake in list(self._exit_waiters):
            wake()
        # An exit during start is reported by start_process raising, not as a crash.
        if self._started and not self._stopping and self._on_exit is not None:
            self._spawn_task(self._report_exit(self._proc.returncode), "exit")

    async def _report_exit(self, code: int | None) -> None:
        """A crash is reported once the plugin's last stderr lines are in (they say why it
        died; the pipe ends as soon as its group is gone), or after EXIT_STDERR_WAIT."""
        if self._stderr_drain is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_drain), EXIT_STDERR_WAIT)
        if self._stopping or self._on_exit is None:
            return
        try:
            self._on_exit(code)
        except Exception:
            log.exception("exit callback failed for %s", self.plugin_id)

    async def _read_handshake(self) -> str:
        assert self._proc.stdout is not None
        stdout = self._proc.stdout
        while True:
            try:
                raw = await stdout.readline()
            except ValueError:  # a line over the 1 MiB limit: not a handshake
                await stdout.read(1024 * 1024)
                self._emit("[WARN] (an over-long line on stdout was dropped)", "stderr")
                continue
            if not raw:
                await self._exit_settle()  # its last stderr lines say why
                raise self._load_error("the plugin exited before printing its handshake line")
            line = raw.decode(errors="replace").strip()
            if looks_like_handshake(line):
                return line
            if line:
                self._emit(line, "stdout")  # chatter before the handshake is logged

    def _load_error(self, detail: str, cls: type[PluginLoadError] = PluginLoadError) -> Exception:
        tail = self.stderr_tail
        cause, suggestions = diagnose_start_failure(self.spec, tail)
        if cause:
            detail = f"{cause} ({detail})"
        if tail:
            detail += "\nlast stderr lines:\n  " + "\n  ".join(tail[-10:])
        return cls(detail, plugin_id=self.plugin_id, suggestions=suggestions)

    async def _handshake(self) -> Handshake:
        try:
            line = await asyncio.wait_for(self._read_handshake(), self.spec.start_timeout)
        except TimeoutError:
            raise self._load_error(
                f"no handshake line within {self.spec.start_timeout:g} s (start timeout)"
            ) from None
        try:
            return parse_handshake(line, self.spec.protocol_versions)
        except HandshakeError as exc:
            await self._exit_settle()
            raise self._load_error(exc.detail, HandshakeError) from None

    async def _exit_settle(self) -> None:
        """Give a failing plugin a moment to finish writing stderr, for the error message."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), 0.2)

    async def _open_channel(self, hs: Handshake) -> grpc.aio.Channel:
        if hs.server_cert is None:
            if self._cert is not None and hs.network == "tcp":
                raise HandshakeError(
                    "the host asked for AutoMTLS but the plugin answered without a certificate",
                    plugin_id=self.plugin_id,
                    suggestions=["upgrade the plugin's go-plugin/SDK, or set auto_mtls = 'off'"],
                )
            return grpc.aio.insecure_channel(hs.grpc_target, options=GRPC_OPTIONS)
        if self._cert is None:
            raise HandshakeError(
                "the plugin sent a TLS certificate the host did not ask for",
                plugin_id=self.plugin_id,
            )
        channel, self._relay = await open_plugin_channel(
            hs.network, hs.address, hs.server_cert, self._cert, self._socket_dir
        )
        return channel

    async def _connect(self, hs: Handshake, deadline: float) -> None:
        self.handshake = hs
        self.negotiated_version = hs.app_version
        self._channel = await self._open_channel(hs)
        remaining = max(deadline - time.monotonic(), 0.5)
        try:
            await asyncio.wait_for(self._channel.channel_ready(), remaining)
        except TimeoutError:
            raise self._load_error(
                f"plugin announced {hs.network}:{hs.address} but the host could not connect"
            ) from None

    async def _await_handshake(self) -> Handshake:
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._stderr_drain = self._spawn_task(self._drain(self._proc.stderr, "stderr"), "stderr")
        network = self.confinement.network
        if network is not None:  # the plugin waits in its namespace until pasta fills it
            await network.start(
                self._proc,
                plugin_id=self.plugin_id,
                timeout=self.spec.start_timeout,
                die_with_host=self.spec.parent_death_signal,
            )
            self.timings["network"] = time.perf_counter()
        hs = await self._handshake()
        self.timings["handshake"] = time.perf_counter()
        self._spawn_task(self._drain(self._proc.stdout, "stdout"), "stdout")
        return hs

    async def _finish_start(self, hs: Handshake) -> None:
        deadline = self.started_at + self.spec.start_timeout
        await self._connect(hs, deadline)
        self.timings["connected"] = time.perf_counter()
        self._spawn_task(self._stream_stdio(), "stdio")
        self._started = True
        if self.exited:  # died in the instant between connecting and now
            raise self._load_error("the plugin exited right after its handshake")

    # -- services the host consumes --------------------------------------------
    async def _stream_stdio(self) -> None:
        """Read go-plugin's GRPCStdio stream (the plugin's redirected stdout/stderr)."""
        stub = grpc_stdio_pb2_grpc.GRPCStdioStub(self.channel)  # type: ignore[no-untyped-call]
        names = {
            grpc_stdio_pb2.StdioData.STDOUT: "stdout",
            grpc_stdio_pb2.StdioData.STDERR: "stderr",
        }
        try:
            async for chunk in stub.StreamStdio(empty_pb2.Empty()):
                source = names.get(chunk.channel, "stdout")
                for line in chunk.data.decode(errors="replace").splitlines():
                    self._emit(line, source)
        except grpc.aio.AioRpcError:
            return  # not supported by this plugin, or the plugin went away

    # -- stopping --------------------------------------------------------------
    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    async def _wait_exit(self, timeout: float, refused: asyncio.Future[bool] | None = None) -> bool:
        """True once the plugin is gone; False after ``timeout``, or as soon as ``refused``
        (the Shutdown request) ends without the plugin taking it.

        The reap wakes this wait itself: the stop resumes in the loop's next turn.
        """
        if self.exited:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not waiter.done():
                waiter.set_result(None)

        def answered(request: asyncio.Future[bool]) -> None:
            if not _took_it(request):
                wake()

        self._exit_waiters.append(wake)
        timer = loop.call_later(timeout, wake)
        if refused is not None:
            refused.add_done_callback(answered)
        try:
            await waiter
        finally:
            timer.cancel()
            self._exit_waiters.remove(wake)
            if refused is not None:
                refused.remove_done_callback(answered)
        return self.exited

    async def _stop_ladder(self) -> StopPath:
        self._stopping = True
        marks = self.stop_timings
        marks["began"] = time.perf_counter()
        if self.exited:
            return StopPath.ALREADY_EXITED
        grace = self.spec.stop_grace
        shutdown = self._send_shutdown(grace)
        marks["shutdown sent"] = time.perf_counter()
        shutdown.add_done_callback(self._shutdown_answered)
        # The exit ends a graceful stop, not the answer: a plugin often exits before its
        # answer (or the broken connection) reaches the host. A plugin that refused (no
        # controller service) or did not answer in time gets no more grace: straight to
        # SIGTERM, as go-plugin does.
        if await self._wait_exit(grace, refused=shutdown):
            return StopPath.GRACEFUL
        log.warning("plugin %s did not stop on Shutdown; sending SIGTERM", self.plugin_id)
        self._signal_group(signal.SIGTERM)
        if await self._wait_exit(self.spec.kill_grace):
            return StopPath.TERMINATED
        log.warning("plugin %s ignored SIGTERM; sending SIGKILL", self.plugin_id)
        self._signal_group(signal.SIGKILL)
        await self._exited.wait()
        return StopPath.KILLED

    def _shutdown_answered(self, shutdown: asyncio.Future[bool]) -> None:
        if shutdown.cancelled() or self.exited:
            return  # the cleanup closes the channel
        self.stop_timings["reply"] = time.perf_counter()
        # As go-plugin's Kill: the connection closes while the plugin exits, not after.
        # Its socket directory (also its TMPDIR, which it may still write while it
        # exits) goes once it is gone, in _cleanup.
        self._spawn_task(self._close_channel(), "close")

    async def _close_channel(self) -> None:
        await super()._close_channel()
        if self._stopping:
            self.stop_timings.setdefault("channel closed", time.perf_counter())

    async def _cleanup(self) -> None:
        # Anything the plugin left in its process group goes too: no orphans. (After the
        # leader exited, _process_exited already did this.)
        if not self.exited:
            self._signal_group(signal.SIGKILL)
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        await self._close_channel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._relay is not None:
            await self._relay.close()
        self._proc.close_pipes()
        # Its sockets go with the directory; the address it announced is never used as a path.
        self._sockets.remove()
        self.confinement.release()


def _took_it(shutdown: asyncio.Future[bool]) -> bool:
    """The plugin took the Shutdown request (answered it, or left while answering)."""
    return not shutdown.cancelled() and shutdown.result()


def diagnose_start_failure(spec: LaunchSpec, stderr: list[str]) -> tuple[str, list[str]]:
    """Name the usual causes of a plugin that died before its handshake: (cause, next steps)."""
    cookie = f"{spec.cookie_key}={spec.plugin_id}"
    if any("This binary is a plugin" in line for line in stderr):
        return (
            f"the plugin refused the magic cookie plughost sent ({cookie}, the id in its "
            "plugin.yaml): it was built to expect another id or cookie key",
            [
                f"build the plugin with the id {spec.plugin_id!r} (Omniview: PluginOpts.ID), "
                "or set plugin.yaml's id to the one it was built with",
                f"the cookie key comes from the profile ({spec.cookie_key}); "
                "Omniview plugins need --profile omniview",
            ],
        )
    panic = next((line.strip() for line in stderr if line.lstrip().startswith("panic:")), "")
    if not panic:
        return "", ["run the plugin's executable by hand to see what it prints"]
    cause = f"the plugin panicked at start: {panic}"
    steps = ["see the whole trace with 'plughost logs " + spec.plugin_id + "'"]
    if "plugin.yaml not found" in panic:
        home = spec.extra_env.get("HOME") or os.environ.get("HOME", "~")
        expected = Path(home) / ".omniview" / "plugins" / spec.plugin_id / "plugin.yaml"
        cause += (
            f"; the Omniview SDK reads $HOME/.omniview/plugins/<the id compiled into it>/"
            f"plugin.yaml, for {spec.plugin_id!r} {expected}"
        )
        steps.insert(
            0,
            "run it under --profile omniview (root ~/.omniview), and check the id compiled "
            f"into the plugin (PluginOpts.ID) is {spec.plugin_id!r}",
        )
    return cause, steps


async def start_process(
    spec: LaunchSpec,
    *,
    on_exit: ExitCallback | None = None,
    on_log: LogCallback | None = None,
    spawn_limit: asyncio.Semaphore | None = None,
) -> ProcessBackend:
    """Spawn the plugin and complete the handshake; raises PluginLoadError on failure.

    ``spawn_limit`` is held from spawn to the handshake line only: that is where a
    plugin's start burns CPU (a Python plugin's imports); connecting and what the
    caller does next need little and overlap the next plugins' spawns.
    A failed start never leaves the process behind.
    """
    async with spawn_limit or contextlib.nullcontext():
        began = time.perf_counter()
        backend = await _spawn_backend(spec, on_exit, on_log)
        backend.timings["began"] = began
        try:
            hs = await backend._await_handshake()
        except BaseException:
            await asyncio.shield(backend.kill())
            raise
    try:
        await backend._finish_start(hs)
    except BaseException:
        await asyncio.shield(backend.kill())
        raise
    return backend


async def _spawn_backend(
    spec: LaunchSpec, on_exit: ExitCallback | None, on_log: LogCallback | None
) -> ProcessBackend:
    if not os.access(spec.executable, os.X_OK):
        raise PluginLoadError(
            f"{spec.executable} is missing or not executable",
            plugin_id=spec.plugin_id,
            suggestions=[f"build the plugin, or chmod +x {spec.executable}"],
        )
    user = resolve_run_as(spec.run_as, spec.plugin_id, spec.executable)
    cert = generate_cert_pair() if spec.wants_mtls() else None
    sockets = SocketDir(spec.socket_dir, spec.plugin_id, user)
    socket_dir = sockets.path
    try:
        confinement = confine(
            spec.sandbox,
            plugin_id=spec.plugin_id,
            cwd=spec.cwd,
            socket_dir=socket_dir,
            transport=spec.transport,
            executable=spec.executable,
            user=user,
        )
    except PluginLoadError:
        sockets.remove()
        raise
    env = build_plugin_env(
        cookie_key=spec.cookie_key,
        cookie_value=spec.plugin_id,
        plugin_id=spec.plugin_id,
        protocol_versions=spec.protocol_versions,
        min_port=spec.min_port,
        max_port=spec.max_port,
        socket_dir=str(socket_dir),
        client_cert_pem=cert.cert_pem.decode() if cert else None,
        allow=[*spec.env_allow, *granted_env(spec.sandbox)],
        extra={
            "PLUGHOST_PYTHON": sys.executable,
            "PLUGHOST_TRANSPORT": spec.transport,
            "TMPDIR": str(socket_dir),  # where plugins that ignore PLUGIN_UNIX_SOCKET_DIR look
        }
        | dict(spec.extra_env),
    )
    # No supplementary groups: the host's (root's) must not come along.
    as_user: dict[str, Any] = (
        {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    )
    try:
        proc = await spawn(
            [*confinement.prefix, str(spec.executable)],
            cwd=str(spec.cwd),
            env=env,
            die_with_host=spec.parent_death_signal,
            pass_fds=confinement.fds,
            **as_user,
        )
    except OSError as exc:
        sockets.remove()
        confinement.release()
        raise PluginLoadError(
            f"cannot start {spec.executable}: {exc.strerror}",
            plugin_id=spec.plugin_id,
            suggestions=["check the binary is built for this platform and has a valid #! line"],
        ) from exc
    finally:
        confinement.close_fds()
    backend = ProcessBackend(
        spec,
        proc,
        on_exit=on_exit,
        on_log=on_log,
        socket_dir=sockets,
        cert=cert,
    )
    backend.confinement = confinement
    return backend
