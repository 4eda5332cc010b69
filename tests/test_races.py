"""Races and edge cases a review found: each test is the scenario that went wrong."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from waiting import async_wait_until

from plughost.errors import PluginConflictError
from plughost.host.manager import LoadPluginOptions, PluginManager
from plughost.phases import Phase
from plughost.process.attach import AttachedBackend, ReattachConfig
from plughost.sdk import PluginServer, _register_standard
from plughost.settings import SettingsProvider
from plughost.testing import InProcessBackend, in_process_factory

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples"
FAST: dict[str, Any] = {
    "health_interval": 30.0,
    "stable_time": 0.3,
    "health_timeout": 0.5,
    "backoff_initial": 0.3,
    "backoff_max": 1.0,
    "stop_grace": 0.3,
    "kill_grace": 0.3,
    "start_timeout": 10,
}


def install(root: Path, example: str, plugin_id: str | None = None) -> Path:
    plugin_id = plugin_id or example
    target = root / "plugins" / plugin_id
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns("__pycache__"))
    if plugin_id != example:
        meta = target / "plugin.yaml"
        meta.write_text(re.sub(r"(?m)^id: .*$", f"id: {plugin_id}", meta.read_text()))
    return target


def manager(
    root: Path, started: list[InProcessBackend] | None = None, **over: Any
) -> PluginManager:
    factory = in_process_factory(started=started) if started is not None else None
    return PluginManager(
        root, settings=SettingsProvider(None, {**FAST, **over}), backend_factory=factory
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / "plugins").mkdir(parents=True)
    return tmp_path / "root"


async def test_a_user_load_during_recovery_backoff_wins(root: Path) -> None:
    install(root, "hello")
    started: list[InProcessBackend] = []
    m = manager(root, started, backoff_initial=0.5, backoff_max=0.5, recovery_attempts=2)
    await m.initialize()
    try:
        started[-1].crash(1)
        assert m.get_plugin("hello").phase is Phase.RECOVERING
        assert (await m.load_plugin("hello")).phase is Phase.RUNNING
        assert not m.health.is_in_crash_cycle("hello")
        await asyncio.sleep(1.2)  # past every backoff the cancelled recovery would have used
        info = m.get_plugin("hello")
        assert info.phase is Phase.RUNNING and info.last_error == ""
    finally:
        await m.shutdown()


async def test_an_id_that_really_ends_in_dev_is_not_migrated(root: Path) -> None:
    install(root, "hello", "tools-dev")
    m = manager(root, [])
    infos = await m.initialize()
    try:
        assert [(i.id, i.phase) for i in infos] == [("tools-dev", Phase.RUNNING)]
    finally:
        await m.shutdown()
    assert sorted(p.name for p in (root / "plugins").iterdir()) == ["tools-dev"]


async def test_a_hung_attached_plugin_stays_degraded_and_is_never_replaced(root: Path) -> None:
    install(root, "hello")
    server = grpc.server(futures.ThreadPoolExecutor(4))
    paused = PluginServer(id="hello", capabilities=["exec"], health=lambda: False)
    _register_standard(server, paused, lambda: None)
    sock = Path(tempfile.mkdtemp(prefix="att")) / "s"
    server.add_insecure_port(f"unix:{sock}")
    server.start()
    m = manager(root, [], health_misses=2)
    await m.initialize()
    try:
        await m.unload_plugin("hello")
        reattach = ReattachConfig(pid=os.getpid(), addr=str(sock))
        await m.load_plugin("hello", LoadPluginOptions(dev_mode=True, reattach=reattach))
        for _ in range(3):
            await m.health.check_plugin("hello")
        assert m.get_plugin("hello").phase is Phase.DEGRADED
        assert isinstance(m.backend("hello"), AttachedBackend)
        assert not m.health.is_in_crash_cycle("hello")
    finally:
        await m.shutdown()
        server.stop(None)


async def test_a_stale_hung_report_does_not_restart_a_reloaded_plugin(root: Path) -> None:
    install(root, "hello")
    started: list[InProcessBackend] = []
    m = manager(root, started)
    await m.initialize()
    try:
        old = m.backend("hello")
        await m.reload_plugin("hello")
        new = m.backend("hello")
        assert new is not old
        m.health.handle_crash("hello", kind="hung", backend=old)  # arrives late
        assert m.get_plugin("hello").phase is Phase.RUNNING
        assert m.backend("hello") is new and not new.exited
    finally:
        await m.shutdown()


async def test_a_handshake_address_outside_the_socket_dir_is_never_deleted(
    root: Path, tmp_path: Path
) -> None:
    target = install(root, "hello")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (target / "bin" / "plugin").write_text(f'#!/bin/sh\necho "1|1|unix|{victim}|grpc"\nsleep 30\n')
    m = manager(root, None, start_timeout=1.0)
    infos = await m.initialize()
    try:
        assert infos[0].phase is Phase.FAILED
        assert victim.read_text() == "precious"
    finally:
        await m.shutdown()


async def test_a_cancelled_unload_still_stops_the_process_before_shutdown_returns(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = install(root, "hello")
    binary = target / "bin" / "plugin"
    binary.rename(target / "bin" / "real")
    # A launcher that ignores SIGTERM, so the stop ladder runs all the way to SIGKILL.
    binary.write_text('#!/bin/bash\ntrap "" TERM\n"$(dirname "$0")/real" &\nwait\nsleep 60\n')
    binary.chmod(0o755)
    m = manager(root, None, stop_grace=0.5, kill_grace=0.5)
    await m.initialize()
    pid = m.get_plugin("hello").pid
    assert pid
    caplog.set_level(logging.WARNING, logger="plughost")
    task = asyncio.create_task(m.unload_plugin("hello"))

    def mid_ladder() -> bool:  # Stopping, and the ladder is past Shutdown: SIGTERM was sent
        sigterm = any("sending SIGTERM" in r.getMessage() for r in caplog.records)
        return m.get_plugin("hello").phase is Phase.STOPPING and sigterm

    await async_wait_until(
        lambda: task.done() or mid_ladder(),
        timeout=10,
        message=lambda: (
            f"hello mid stop-ladder: {m.get_plugin('hello').phase}, "
            f"log: {[r.getMessage() for r in caplog.records]}"
        ),
    )
    assert not task.done(), "the unload finished before it could be cancelled mid-ladder"
    task.cancel()  # e.g. the service cancelling an in-flight request as it stops
    await asyncio.gather(task, return_exceptions=True)
    await m.shutdown()
    gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert gone
    assert (root / "plugin_pids.json").read_text().strip() == "{}"


async def test_nothing_starts_once_shutdown_has_begun(root: Path) -> None:
    install(root, "hello")
    m = manager(root, [])
    await m.initialize()
    await m.unload_plugin("hello")
    m.table.closing = True  # as shutdown() sets it first
    with pytest.raises(PluginConflictError, match="shutting down"):
        await m.load_plugin("hello")
    m.table.closing = False
    await m.shutdown()


async def test_a_manager_can_be_initialized_again_after_shutdown(root: Path) -> None:
    install(root, "hello")
    started: list[InProcessBackend] = []
    m = manager(root, started, backoff_initial=0.01)
    await m.initialize()
    await m.shutdown()
    await m.initialize()
    try:
        stream = m.bus.stream("plugin/recovered")
        started[-1].crash(1)  # crashes are handled again, not ignored
        event = await asyncio.wait_for(stream.__anext__(), 10)
        assert event.payload["pluginID"] == "hello"
    finally:
        await m.shutdown()


async def test_failed_recovery_attempts_stay_recovering_until_the_last(root: Path) -> None:
    from plughost.errors import PluginLoadError
    from plughost.events import EVENT_CRASH_RECOVERY_FAILED, EVENT_STATE_CHANGE

    install(root, "hello")
    started: list[InProcessBackend] = []
    works = in_process_factory(started=started)
    calls = 0

    async def factory(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise PluginLoadError("cannot start: simulated")
        return await works(*args)

    m = PluginManager(
        root,
        settings=SettingsProvider(
            None, {**FAST, "backoff_initial": 0.01, "backoff_max": 0.01, "recovery_attempts": 3}
        ),
        backend_factory=factory,
    )
    await m.initialize()
    try:
        stream = m.bus.stream("plugin/*")
        started[-1].crash(1)
        moves: list[str] = []
        async for event in stream:
            if event.name == EVENT_STATE_CHANGE:
                moves.append(event.payload["to"])
            if event.name == EVENT_CRASH_RECOVERY_FAILED:
                break
        assert moves.count("Failed") == 1 and moves[-1] == "Failed", moves
        assert moves.count("Validating") == 3  # three attempts, each from Recovering
        assert m.get_plugin("hello").phase is Phase.FAILED
        assert "simulated" in m.get_plugin("hello").last_error
    finally:
        await m.shutdown()
