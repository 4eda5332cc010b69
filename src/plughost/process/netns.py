"""``network: loopback``: the plugin's own network namespace, the host's loopback ports in it.

bubblewrap gives the plugin a network namespace of its own (``--unshare-net``: only
``lo``, no route out), reports the namespace's process on ``--info-fd`` and holds the
plugin back on ``--block-fd``. The host then runs pasta (Debian's ``passt``) into that
namespace: ``-T auto``/``-U auto`` forward each port listening on the host's loopback
into the plugin's, and ``-t none``/``-u none`` forward nothing the other way, so the
plugin's own ports stay out of the host's reach. Only then is the plugin let go. Its
other interfaces stay down: the internet, the LAN and the host's other addresses are
unreachable. (pasta's manual says it rescans the host's ports every second; Debian 12's
pasta rescans only the namespace's, so a host service started after the plugin is
reached once the plugin restarts.)

pasta leaves its foreground process once the forwarding is set up and runs on as a
daemon; it does not notice the plugin's end, so the host kills it then (through a
pidfd: its pid cannot be someone else's by that time), and it carries the host's
death-watch mark, so it dies with a host that crashed. Without pasta the plugin
shares the host's network namespace, as ``sandbox.enforcement()`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from ..errors import PluginLoadError
from .spawn import ChildProcess, death_mark, spawn

__all__ = ["LoopbackForward", "pasta_path"]

_INFO_LIMIT = 4096  # bubblewrap's report is ~250 bytes
_STDERR_LIMIT = 4096
_INSTALL = "install pasta: scripts/install_sandbox.sh (apt-get install passt)"


@functools.cache
def pasta_path() -> str | None:
    """pasta, when this machine has it (Linux only)."""
    return shutil.which("pasta") if sys.platform.startswith("linux") else None


class LoopbackForward:
    """One plugin process's network: made by bubblewrap, filled by pasta, ended with it.

    ``bwrap_args`` go before bubblewrap's ``--``, and ``child_fds`` to the spawned
    prefix (``pass_fds``); ``start()`` runs once the prefix is spawned and returns
    when the plugin may run; ``stop()`` ends pasta (safe at any time, more than once).
    """

    def __init__(self, pasta: str) -> None:
        self._pasta = pasta
        self._info, info_child = os.pipe()
        block_child, self._block = os.pipe()
        self.child_fds = (info_child, block_child)
        self.bwrap_args = ["--info-fd", str(info_child), "--block-fd", str(block_child)]
        self.pid: int | None = None
        """pasta's daemon, once it runs."""
        self._pidfd = -1
        self._starting = False
        self._stopped = False

    async def start(
        self, plugin: ChildProcess, *, plugin_id: str, timeout: float, die_with_host: bool
    ) -> None:
        """Forward the host's loopback into the plugin's namespace, then let it run.

        Raises PluginLoadError naming pasta when that fails or takes over ``timeout``.
        """
        plugin.add_exit_callback(self.stop)
        self._starting = True
        try:
            async with asyncio.timeout(timeout):
                report = await _read_to_end(self._info, _INFO_LIMIT)
                namespace_pid = _namespace_pid(report, plugin_id)
                pid = await self._run_pasta(namespace_pid, plugin_id, die_with_host)
        except TimeoutError:
            raise PluginLoadError(
                f"pasta did not set up plugin {plugin_id!r}'s network within {timeout:g} s",
                plugin_id=plugin_id,
                suggestions=[
                    "check that pasta runs here (plughost doctor)",
                    "raise start_timeout on a slow machine",
                ],
            ) from None
        finally:
            self._starting = False
            self._close_pipes(keep_block=True)
        self._adopt(pid)
        if self._stopped:  # the plugin ended meanwhile: pasta goes with it
            self.stop()
            raise PluginLoadError(
                f"plugin {plugin_id!r} exited while pasta set up its network",
                plugin_id=plugin_id,
                suggestions=[f"see its last lines with 'plughost logs {plugin_id}'"],
            )
        with contextlib.suppress(OSError):  # a bubblewrap gone meanwhile is seen by the host
            os.write(self._block, b"\0")
        self._close_pipes()

    def stop(self) -> None:
        """Kill pasta (the plugin is gone or going) and close what is left."""
        self._stopped = True
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            os.close(self._pidfd)
            self._pidfd = -1
        elif self.pid is not None:  # no pidfd on this kernel: the pid, right after it ran
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        self.pid = None
        if not self._starting:  # start() is reading them: it closes them itself
            self._close_pipes()

    def _close_pipes(self, *, keep_block: bool = False) -> None:
        fds = [self._info] if keep_block else [self._info, self._block]
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._info = -1
        if not keep_block:
            self._block = -1

    def _adopt(self, pid: int) -> None:
        self.pid = pid
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: stop() uses the pid
            self._pidfd = os.pidfd_open(pid)

    async def _run_pasta(self, namespace_pid: int, plugin_id: str, die_with_host: bool) -> int:
        """Start pasta into the namespace of ``namespace_pid``; its daemon's pid."""
        # 0700: the host's alone. Its name carries the host's mark into pasta's command
        # line: the daemon hides its environment, where the death watch looks first.
        mark = f"{death_mark()}-" if die_with_host else ""
        workdir = tempfile.mkdtemp(prefix=f"plughost-pasta-{mark}")
        pid_file = Path(workdir) / "pid"
        argv = [
            self._pasta,
            "--quiet",
            # As root pasta would switch to nobody, who cannot open the namespace.
            "--runas",
            f"{os.getuid()}:{os.getgid()}",
            "--userns",
            f"/proc/{namespace_pid}/ns/user",
            "--netns",
            f"/proc/{namespace_pid}/ns/net",
            # Nothing of the plugin's own is reachable from the host...
            *("--tcp-ports", "none", "--udp-ports", "none"),
            # ...and every port on the host's loopback is, from the plugin's loopback.
            *("--tcp-ns", "auto", "--udp-ns", "auto"),
            "--pid",
            str(pid_file),
        ]
        try:
            try:
                proc = await spawn(argv, cwd="/", env={}, die_with_host=die_with_host)
            except OSError as exc:
                raise _failed(plugin_id, f"pasta cannot run: {exc.strerror}") from exc
            try:
                code = await proc.wait()
                if code != 0:
                    why = await _read_stream(proc.stderr)
                    raise _failed(plugin_id, f"pasta exited with {code}: {why or 'no message'}")
            finally:
                if proc.returncode is None:
                    with contextlib.suppress(OSError):
                        os.killpg(proc.pid, signal.SIGKILL)
                proc.close_pipes()
            try:
                return int(pid_file.read_text())
            except (OSError, ValueError) as exc:
                raise _failed(plugin_id, f"pasta wrote no pid file ({exc})") from None
        except BaseException:  # cancelled or timed out after the daemon started: it goes
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            raise
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def _failed(plugin_id: str, detail: str) -> PluginLoadError:
    return PluginLoadError(
        f"plugin {plugin_id!r} was granted network: loopback, and {detail}",
        plugin_id=plugin_id,
        suggestions=["check 'plughost doctor'", _INSTALL],
    )


def _namespace_pid(report: bytes, plugin_id: str) -> int:
    """The process whose namespaces pasta joins, from bubblewrap's ``--info-fd`` report."""
    try:
        pid = json.loads(report)["child-pid"]
    except (ValueError, TypeError, KeyError):
        pid = None
    if not isinstance(pid, int) or pid <= 0:
        raise PluginLoadError(
            f"bubblewrap gave no namespace for plugin {plugin_id!r}'s network "
            f"(its report: {report[:200]!r})",
            plugin_id=plugin_id,
            suggestions=[f"see bubblewrap's message with 'plughost logs {plugin_id}'"],
        )
    return pid


async def _read_to_end(fd: int, limit: int) -> bytes:
    """What a pipe carries until its writer closes it, at most ``limit`` bytes, without
    blocking the event loop."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    data = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, limit + 1 - len(data))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        data.extend(chunk)
        if (not chunk or len(data) > limit) and not done.done():
            done.set_result(bytes(data[:limit]))

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        return await done
    finally:
        loop.remove_reader(fd)


async def _read_stream(stream: asyncio.StreamReader) -> str:
    """The last of what a process that exited wrote (bounded in size and time)."""
    data = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            while len(data) < _STDERR_LIMIT:
                chunk = await stream.read(_STDERR_LIMIT - len(data))
                if not chunk:
                    break
                data += chunk
    return " ".join(data.decode(errors="replace").split())
