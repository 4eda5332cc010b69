"""The UI dev server of one plugin (Vite's ``pnpm run dev`` in ``ui/``).

It gets a port of its own from a fixed range (so the host can proxy to it
and the plugin author can bookmark it), is only reported ready once it
answers HTTP, and is stopped with its whole process group: pnpm starts node,
node starts esbuild, and none of them may outlive the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shlex
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import psutil

from ..errors import PlughostError
from .toolchain import BuildOpts, hydrate_build_opts, prepare_command_with_binaries

__all__ = [
    "DEFAULT_UI_DEV_COMMAND",
    "UI_PORT_RANGE",
    "UiDevServer",
    "UiDevServerError",
    "free_port",
]

DEFAULT_UI_DEV_COMMAND = "pnpm run dev"
UI_PORT_RANGE = (15173, 15273)
LineCallback = Callable[[str], None]
Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Future[Any]"]


class UiDevServerError(PlughostError):
    type = "ui_dev_server_failed"
    status = 500
    default_title = "UI dev server failed"


_claimed: set[int] = set()  # ports handed out in this process and not yet released


def _port_free(port: int) -> bool:
    """Nobody listens on the port, on the IPv4 or (where there is one) IPv6 loopback."""
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 on this machine
        with probe:
            try:
                probe.bind((host, port))
            except OSError as exc:
                if family == socket.AF_INET6 and exc.errno == errno.EADDRNOTAVAIL:
                    continue
                return False
    return True


def free_port(port_range: tuple[int, int] = UI_PORT_RANGE) -> int:
    """The first port of the range that nobody listens on and we have not handed out."""
    lo, hi = port_range
    for port in range(lo, hi + 1):
        if port not in _claimed and _port_free(port):
            _claimed.add(port)
            return port
    raise UiDevServerError(
        f"no free port between {lo} and {hi} for the UI dev server",
        suggestions=["stop other UI dev servers (or whatever listens on those ports)"],
    )


async def _answers_http(port: int, timeout: float = 1.0) -> bool:
    """True when something on localhost:port replies with an HTTP status line."""
    for host in ("127.0.0.1", "::1"):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError):
            continue
        try:
            writer.write(
                f"GET / HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
            if line.startswith(b"HTTP/"):
                return True
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return False


class UiDevServer:
    """One running UI dev server: ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        ui_dir: Path,
        *,
        command: str | Sequence[str] = DEFAULT_UI_DEV_COMMAND,
        port_range: tuple[int, int] = UI_PORT_RANGE,
        ready_timeout: float = 30.0,
        stop_grace: float = 3.0,
        settings: object = None,
        on_line: LineCallback | None = None,
        on_exit: Callable[[int | None], None] | None = None,
        spawn: Spawn | None = None,
    ) -> None:
        self.ui_dir = ui_dir
        self.command = command
        self.port_range = port_range
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.settings = settings
        self.on_line = on_line
        self.on_exit = on_exit
        """Called with the exit status when the server dies on its own (not by ``stop``)."""
        self._start_task: Spawn = spawn or asyncio.ensure_future
        """Starts the output reader: the host's task group when the dev servers pass theirs."""
        self._ready = False
        self.port: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Future[Any] | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{self.port}" if self.port else ""

    @property
    def pgid(self) -> int | None:
        """The process group of the server (its pid: it leads a new session)."""
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def _argv(self, port: int) -> list[str]:
        cmd = self.command
        argv = shlex.split(cmd) if isinstance(cmd, str) else list(cmd)
        if any("{port}" in a for a in argv):
            return [a.replace("{port}", str(port)) for a in argv]
        return [*argv, "--port", str(port)]

    async def start(self) -> int:
        """Start the server and wait until it answers HTTP; returns its port."""
        if self.running:
            assert self.port is not None
            return self.port
        port = free_port(self.port_range)
        try:
            await self._spawn(port)
            await self._wait_ready()
            self._ready = True  # from now on, dying on its own is reported through on_exit
        except BaseException:
            await self.stop()
            raise
        return port

    async def _spawn(self, port: int) -> None:
        argv = self._argv(port)
        tools = [t for t in ("pnpm", "node") if t == argv[0]]
        opts = hydrate_build_opts(
            BuildOpts(), require=tools, optional=("node", "pnpm"), settings=self.settings
        )
        argv[0] = {"pnpm": opts.pnpm_path, "node": opts.node_path}.get(argv[0]) or argv[0]
        prepared = prepare_command_with_binaries(
            argv[0], argv[1:], *opts.binaries(), cwd=self.ui_dir
        )
        env = {**prepared.env, "PORT": str(port), "BROWSER": "none"}
        self.port = port
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *prepared.argv,
                cwd=prepared.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise UiDevServerError(f"cannot start the UI dev server {argv}: {exc}") from exc
        self._pump = self._start_task(self._read_output(self.proc))

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            if self.on_line is not None:
                self.on_line(raw.decode(errors="replace").rstrip("\r\n"))
        code = await proc.wait()
        if self._ready and self.proc is proc and self.on_exit is not None:  # not stopped by us
            self.on_exit(code)

    async def _wait_ready(self) -> None:
        assert self.proc is not None and self.port is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_timeout
        delay = 0.02
        while not await _answers_http(self.port):
            if self.proc.returncode is not None:
                raise UiDevServerError(
                    f"the UI dev server exited with status {self.proc.returncode} before answering",
                    suggestions=["see the dev server log for its output"],
                )
            if loop.time() > deadline:
                raise UiDevServerError(
                    f"the UI dev server did not answer on port {self.port} "
                    f"within {self.ready_timeout:g} s"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after the grace time.

        Returns once no process of the group is alive (so its port is free again).
        """
        proc, self.proc = self.proc, None
        self._ready = False
        if proc is not None:
            pgid = proc.pid
            _signal_group(pgid, signal.SIGTERM)
            if not await _group_gone(pgid, self.stop_grace):
                _signal_group(pgid, signal.SIGKILL)
                await _group_gone(pgid, 5.0)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if self._pump is not None:
            pump, self._pump = self._pump, None
            with contextlib.suppress(asyncio.CancelledError, OSError, TimeoutError):
                await asyncio.wait_for(pump, 1.0)
        if self.port is not None:
            _claimed.discard(self.port)
            self.port = None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Is any process of the group still alive (zombies waiting to be reaped do not count)?"""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


async def _group_gone(pgid: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while _group_alive(pgid):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
