"""A host killed with SIGKILL leaves no plugin behind.

The host runs in a subprocess (tests/helpers/host_with_plugins.py) with five
real plugins. With the parent-death signal (the default) the kernel kills the
plugins with the host. With it disabled they survive, and the next host's
initialize() kills them through the PID file, which the manager keeps current
whenever a plugin starts or stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    pid_alive,
    read_pid_file,
    root_fixture,  # noqa: F401  (the `root` fixture)
    root_processes,
)
from waiting import async_wait_until

from plughost.phases import Phase

HELPER = Path(__file__).resolve().parent / "helpers" / "host_with_plugins.py"
IDS = [f"hello{i}" for i in range(5)]


async def run_host_then_kill(root: Path, *args: str) -> dict[str, int]:
    """Start the helper host, wait for its report, SIGKILL it; returns the plugins' pids."""
    for plugin_id in IDS:
        install_example(root, "hello", plugin_id)
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(root),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert host.stdout is not None
        line = await asyncio.wait_for(host.stdout.readline(), 60)
        report: dict[str, Any] = json.loads(line)
    except BaseException:
        host.kill()
        await host.wait()
        raise
    assert report["ready"] is True
    assert report["phases"] == dict.fromkeys(IDS, "Running")
    pids: dict[str, int] = report["pids"]
    assert all(pid_alive(pid) for pid in pids.values())
    # The PID file is current while the host runs, not only written at shutdown.
    assert {k: v["pid"] for k, v in read_pid_file(root).items()} == pids
    os.kill(host.pid, signal.SIGKILL)
    assert await host.wait() == -signal.SIGKILL
    return pids


async def test_plugins_die_with_a_killed_host(managers: Managers) -> None:
    pids = await run_host_then_kill(managers.root)
    await async_wait_until(
        lambda: not any(pid_alive(pid) for pid in pids.values()),
        timeout=5,
        message="every plugin to die with its host",
    )
    assert root_processes(managers.root, anywhere=True) == []


async def test_surviving_plugins_are_killed_by_the_next_initialize(
    managers: Managers, caplog: pytest.LogCaptureFixture
) -> None:
    pids = await run_host_then_kill(managers.root, "--no-parent-death-signal")
    # Without the parent-death signal nothing kills them: give the kernel ample
    # time to prove it (with the signal they are gone within milliseconds).
    await asyncio.sleep(0.5)
    assert all(pid_alive(pid) for pid in pids.values()), "orphans should have survived"
    assert len(root_processes(managers.root, anywhere=True)) == 5

    manager = managers.new()
    with caplog.at_level(logging.WARNING, logger="plughost.host.manager"):
        infos = await manager.initialize()
    assert not any(pid_alive(pid) for pid in pids.values()), "orphans killed via the PID file"
    assert any(
        "killed orphaned processes of" in r.getMessage() and all(i in r.getMessage() for i in IDS)
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]
    assert [i.phase for i in infos] == [Phase.RUNNING] * 5
    new_pids = {i.id: i.pid for i in infos}
    assert not set(new_pids.values()) & set(pids.values())
    assert sorted(p.pid for p in root_processes(managers.root, anywhere=True)) == sorted(
        pid for pid in new_pids.values() if pid is not None
    )
    await manager.shutdown()
    assert root_processes(managers.root, anywhere=True) == []
