"""process/spawn.py: a child's exit is seen at once, its pipes never outlive it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from waiting import async_wait_until

from plughost.process.spawn import spawn

pytestmark = pytest.mark.timeout(20)

ENV = {"PATH": os.environ["PATH"]}


def _alive(pid: int) -> bool:
    """Running (a zombie left to a subreaper that is this test process counts as dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "wait-thread"])
async def test_exit_status_and_output(
    pidfd: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    child = await spawn(["sh", "-c", "echo out; echo err >&2; exit 3"], cwd=str(tmp_path), env=ENV)
    assert await child.stdout.readline() == b"out\n"
    assert await child.stderr.readline() == b"err\n"
    assert await child.wait() == 3
    assert child.gone.is_set() and child.returncode == 3
    child.close_pipes()


async def test_exit_is_seen_while_a_grandchild_holds_the_pipes(tmp_path: Path) -> None:
    before = _open_fds()
    child = await spawn(["sh", "-c", "sleep 30 & echo $!"], cwd=str(tmp_path), env=ENV)
    grandchild = int(await child.stdout.readline())
    try:
        assert await child.wait() == 0  # the grandchild still holds stdout and stderr
        child.close_pipes()
        await async_wait_until(lambda: _open_fds() <= before, 5, message="the pipes stayed open")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
    assert grandchild > 0


async def test_killed_by_a_signal_reports_it(tmp_path: Path) -> None:
    child = await spawn(["sleep", "30"], cwd=str(tmp_path), env=ENV)
    os.kill(child.pid, signal.SIGKILL)
    assert await child.wait() == -signal.SIGKILL
    child.close_pipes()


async def test_missing_executable_raises_oserror(tmp_path: Path) -> None:
    before = _open_fds()
    with pytest.raises(OSError):
        await spawn([str(tmp_path / "nope")], cwd=str(tmp_path), env=ENV)
    assert _open_fds() <= before


HOST = """\
import asyncio, os, sys
import psutil
from plughost.process import spawn as s

async def main():
    first = await s.spawn(["sleep", "60"], cwd="/", env={}, die_with_host=True)
    mark = s._death_watch._mark
    watcher = next(
        p for p in psutil.process_iter(["cmdline"]) if mark in (p.info["cmdline"] or [])
    )
    assert watcher.pid not in [c.pid for c in psutil.Process().children(recursive=True)]
    watcher.kill()  # a watcher that died is replaced, and the new one knows the first child
    while s._death_watch._watching():
        await asyncio.sleep(0.01)
    second = await s.spawn(["sleep", "60"], cwd="/", env={}, die_with_host=True)
    third = await s.spawn(["sleep", "60"], cwd="/", env={}, die_with_host=False)
    # No mark in its environment (as a daemon that hides it): the mark in its command line.
    fourth = await s.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)", s.death_mark()],
        cwd="/", env={}, die_with_host=False,
    )
    print(first.pid, second.pid, third.pid, fourth.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_children_die_with_their_host_unless_asked_not_to(tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    host = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE
    )
    assert host.stdout is not None
    first, second, third, fourth = map(int, (await host.stdout.readline()).split())
    try:
        host.kill()
        await host.wait()
        await async_wait_until(
            lambda: not any(map(_alive, (first, second, fourth))),
            5,
            message="the watched children to die with their host",
        )
        assert _alive(third)
    finally:
        for pid in (first, second, third, fourth):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
