"""Spawn a child with its output as asyncio streams and its exit as an event.

What ``loop.subprocess_exec`` does, without what a plugin start pays for and
does not use: a waitpid thread per child (asyncio's default child watcher),
the subprocess transport and protocol layers, and ``wait()`` waiting for the
pipes to close (a grandchild holding them open would hold the exit up). The
exit is seen through a pidfd in the event loop itself; where there is no
pidfd (not Linux, or a kernel before 5.3) a thread waits instead.

``die_with_host`` children are killed, with their process group, when this
process dies however it dies (see ``_DeathWatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["ChildProcess", "death_mark", "spawn"]

log = logging.getLogger(__name__)

_LINE_LIMIT = 1024 * 1024  # a stdout/stderr line longer than this is read in pieces

# Leaves a watcher behind and exits (so the watcher is no child of the host's). The
# watcher waits for end of input on fd 3 (its host is gone), then kills every process
# whose initial environment, or command line, carries the host's mark ("$1=$2") and
# the group each one leads. (A daemon that makes itself non-dumpable, as pasta does,
# hides its environment from its own user; its command line stays readable.) The mark
# is put together only in grep's input, so no command line of the watcher's holds it.
_WATCH_SCRIPT = """\
exec 3<&0
(
  read -r _ <&3
  marked=$(printf '%s=%s\\n' "$1" "$2" \\
    | grep -l -s -a -F -f - /proc/[0-9]*/environ /proc/[0-9]*/cmdline)
  for f in $marked; do
    pid=${f#/proc/}; pid=${pid%/*}
    kill -s KILL -- "-$pid" "$pid"
  done
) >/dev/null 2>&1 &
"""


class _DeathWatch:
    """Kills this host's children (and their groups) when it dies, even by SIGKILL.

    A shell, started with the first child, blocks reading a pipe whose write end
    only this process holds. The kernel closes it when this process ends, however
    it ends; the shell then kills every process whose initial environment (which
    a process cannot rewrite) carries this host's mark, a variable set for its
    children only. Linux's parent-death signal does this for a direct child alone
    and costs an exec per start (``setpriv``: Python cannot run code between fork
    and exec in a process full of gRPC threads); this costs nothing per start,
    and nothing wakes up until the host is gone.
    """

    VARIABLE = "PLUGHOST_HOST_MARK"

    def __init__(self) -> None:
        self._pipe = -1  # the write end; the watcher holds the read end
        self._mark = ""
        os.register_at_fork(after_in_child=self._forget)

    def mark(self) -> dict[str, str]:
        """The variable to give a child that must die with this host."""
        if not self._mark:
            self._mark = f"{os.getpid()}-{os.urandom(8).hex()}"
        if not self._watching():  # first use, or the watcher was killed
            self._start()
        return {self.VARIABLE: self._mark}

    def _watching(self) -> bool:
        if self._pipe < 0:
            return False
        poller = select.poll()
        poller.register(self._pipe, select.POLLOUT)
        return not any(events & select.POLLERR for _, events in poller.poll(0))

    def _start(self) -> None:
        read, write = os.pipe()
        try:
            outer = subprocess.Popen(
                ["/bin/sh", "-c", _WATCH_SCRIPT, "plughost-deathwatch", self.VARIABLE, self._mark],
                cwd="/",
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C is not for it
            )
            outer.wait()  # it returns as soon as the watcher is on its own
        except BaseException:
            os.close(write)
            raise
        finally:
            os.close(read)
        if self._pipe >= 0:
            os.close(self._pipe)
        self._pipe = write

    def _forget(self) -> None:
        """In a forked child: the watcher watches the parent, not this process."""
        if self._pipe >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pipe)
        self._pipe, self._mark = -1, ""


_death_watch = _DeathWatch()


def death_mark() -> str:
    """The host's mark as text: a child that drops its environment from view (a
    non-dumpable daemon) dies with this host when its command line carries it."""
    ((name, value),) = _death_watch.mark().items()
    return f"{name}={value}"


class ChildProcess:
    """A running child: pid, returncode, stdout/stderr readers and ``gone``."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        pipes: Sequence[asyncio.BaseTransport],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._popen = popen
        self._pipes = pipes
        self.pid = popen.pid
        self.stdout = stdout
        self.stderr = stderr
        self.gone = asyncio.Event()
        """Set once the child has exited and been reaped (its pipes may still be open)."""
        self._exit_callbacks: list[Callable[[], None]] = []
        self._loop = loop
        self._pidfd = -1
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd here: a thread waits instead
            threading.Thread(target=self._wait_thread, name=f"wait-{self.pid}", daemon=True).start()
        else:
            loop.add_reader(self._pidfd, self._reap)

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); None until reaped."""
        return self._popen.returncode

    async def wait(self) -> int | None:
        await self.gone.wait()
        return self._popen.returncode

    def add_exit_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` in the event loop the moment the child is reaped (soon, if it
        already was): straight from the pidfd's wakeup, where waiting on ``gone`` costs a
        task switch more."""
        if self.gone.is_set():
            self._loop.call_soon(callback)
        else:
            self._exit_callbacks.append(callback)

    def close_pipes(self) -> None:
        """Stop reading stdout and stderr (a grandchild may hold them open for ever)."""
        for pipe in self._pipes:
            pipe.close()

    def _reap(self) -> None:
        if self._popen.poll() is None:
            return  # readable before the zombie can be collected: the next wakeup reaps it
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = -1
        self._reaped()

    def _reaped(self) -> None:
        self.gone.set()
        callbacks, self._exit_callbacks = self._exit_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("exit callback of pid %d failed", self.pid)

    def _wait_thread(self) -> None:
        self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(self._reaped)


async def spawn(
    argv: Sequence[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    die_with_host: bool = False,
    **popen: Any,
) -> ChildProcess:
    """Start ``argv`` in a new session with stdin from /dev/null; OSError if it cannot run.

    ``die_with_host``: it and its process group are killed when this process dies.
    ``popen`` passes further ``subprocess.Popen`` arguments (user, group ...).
    """
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env={**env, **_death_watch.mark()} if die_with_host else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **popen,
    )
    assert proc.stdout is not None and proc.stderr is not None
    stdout = asyncio.StreamReader(limit=_LINE_LIMIT, loop=loop)
    stderr = asyncio.StreamReader(limit=_LINE_LIMIT, loop=loop)
    try:
        pipes = await asyncio.gather(
            loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdout), proc.stdout),
            loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stderr), proc.stderr),
        )
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return ChildProcess(proc, stdout, stderr, [t for t, _ in pipes], loop)
