"""PluginManager: API, initialize, per-plugin serialisation, hooks, shutdown, failures.

Bookkeeping is tested with the in-process backend (fast, deterministic);
what is about processes (serialisation, shutdown, stale PIDs) uses real
plugin processes and psutil.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import os
import random
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from fixtures_plugins import (
    Managers,
    install_example,
    invalid_transitions,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    pid_alive,
    plugin_processes,
    read_pid_file,
    read_state,
    root_fixture,  # noqa: F401  (the `root` fixture)
    root_processes,
    write_state,
)
from waiting import async_wait_until

from plughost.errors import PluginLoadError, RootLockedError, ValidationError
from plughost.events import EVENT_INIT_COMPLETE
from plughost.host.manager import LoadPluginOptions, PluginManager
from plughost.logs import PluginLogManager
from plughost.phases import Phase
from plughost.pids import PidEntry, PluginPIDTracker
from plughost.process.backend import ExitCallback, LogCallback, PluginBackend
from plughost.process.local import ProcessBackend
from plughost.records import PluginInfo, PluginRecord
from plughost.testing import InProcessBackend, in_process_factory

MakePlugin = Callable[..., Path]


def plugins(root: Path) -> Path:
    return root / "plugins"


class CountingFactory:
    """An in-process factory that counts starts, can fail chosen plugins, tracks concurrency."""

    def __init__(self, fail: dict[str, str] | None = None) -> None:
        self.started: list[InProcessBackend] = []
        self.calls: list[str] = []
        self.fail = dict(fail or {})
        self.active = 0
        self.max_active = 0
        self.gate: asyncio.Event | None = None
        self._inner = in_process_factory(started=self.started)

    async def __call__(
        self, record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        self.calls.append(record.id)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0.01)  # a start that takes a moment, as a real one does
            if record.id in self.fail:
                raise PluginLoadError(self.fail[record.id], plugin_id=record.id)
            return await self._inner(record, location, on_exit, on_log)
        finally:
            self.active -= 1

    def backend(self, plugin_id: str) -> InProcessBackend:
        return [b for b in self.started if b.plugin_id == plugin_id][-1]


# -- 1. API -----------------------------------------------------------------------------
ASYNC_API = [
    "initialize",
    "run",
    "shutdown",
    "load_plugin",
    "reload_plugin",
    "retry_failed_plugin",
    "unload_plugin",
    "uninstall_plugin",
]
SYNC_API = [
    "get_plugin",
    "list_plugins",
    "get_plugin_meta",
    "list_plugin_metas",
    "handle_plugin_crash",
    "set_dev_server_checker",
    "set_dev_server_manager",
    "set_plugin_log_manager",
]
# The seed's marketplace and install methods.
MARKET_API = [
    "install_in_dev_mode",
    "install_from_path_prompt",
    "install_plugin_from_path",
    "install_plugin_version",
    "list_available_plugins",
    "search_plugins",
    "get_plugin_readme",
    "get_plugin_versions",
    "get_plugin_reviews",
    "get_plugin_download_stats",
    "get_plugin_release_history",
]


def test_manager_api_names_exist() -> None:
    for name in ASYNC_API:
        assert inspect.iscoroutinefunction(getattr(PluginManager, name)), name
    for name in SYNC_API:
        method = getattr(PluginManager, name)
        assert callable(method) and not inspect.iscoroutinefunction(method), name
    params = inspect.signature(PluginManager.load_plugin).parameters
    assert list(params)[1:] == ["plugin_id", "options"]
    options = LoadPluginOptions(dev_mode=True, dev_mode_path="/src/x", existing_state=None)
    assert (options.dev_mode, options.dev_mode_path, options.existing_state) == (
        True,
        "/src/x",
        None,
    )


def test_marketplace_and_install_methods_exist() -> None:
    missing = [name for name in MARKET_API if not hasattr(PluginManager, name)]
    assert not missing, f"PluginManager lacks: {missing}"
    for name in MARKET_API:
        assert inspect.iscoroutinefunction(getattr(PluginManager, name)), name


async def test_marketplace_queries_delegate_to_the_registry_client(root: Path) -> None:
    calls: list[tuple[str, tuple[object, ...]]] = []

    class FakeRegistry:
        def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
            async def method(*args: object) -> object:
                calls.append((name, args))
                return [] if name in ("list_plugins", "search_plugins") else f"{name}-result"

            return method

    manager = PluginManager(root, registry_client=FakeRegistry())
    assert await manager.list_available_plugins() == []
    assert await manager.search_plugins("kube", "cloud", "downloads") == []
    assert await manager.get_plugin_readme("a") == "get_plugin_readme-result"
    assert await manager.get_plugin_versions("a") == "get_plugin_versions-result"
    assert await manager.get_plugin_reviews("a", 2) == "get_plugin_reviews-result"
    assert await manager.get_plugin_download_stats("a") == "get_download_stats-result"
    assert await manager.get_plugin_release_history("a") == "get_release_history-result"
    assert calls == [
        ("list_plugins", ()),
        ("search_plugins", ("kube", "cloud", "downloads")),
        ("get_plugin_readme", ("a",)),
        ("get_plugin_versions", ("a",)),
        ("get_plugin_reviews", ("a", 2)),
        ("get_download_stats", ("a",)),
        ("get_release_history", ("a",)),
    ]


def test_settings_come_from_root_toml(root: Path) -> None:
    (root / "plughost.toml").write_text(
        'marketplace_url = "https://market.example"\nhealth_interval = 7.5\nload_concurrency = 2\n'
    )
    manager = PluginManager(root)
    provider = manager.settings_provider
    assert provider.get_string("marketplace_url") == "https://market.example"
    assert provider.get_float("health_interval") == 7.5
    assert provider.get_int("load_concurrency") == 2
    assert provider.get_bool("parent_death_signal") is True
    assert manager.settings.health_interval == 7.5


async def test_set_plugin_log_manager_and_dev_server_hooks_are_used(
    managers: Managers, make_plugin: MakePlugin, tmp_path: Path
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    manager = managers.new(backend_factory=in_process_factory())
    other_logs = PluginLogManager(tmp_path / "other-logs", manager.bus)
    manager.set_plugin_log_manager(other_logs)
    assert manager.logs is other_logs

    stopped: list[str] = []

    class DevServers:
        def is_managed(self, plugin_id: str) -> bool:
            return True

        async def stop(self, plugin_id: str) -> None:
            stopped.append(plugin_id)

    checker = object()
    manager.set_dev_server_manager(DevServers())
    manager.set_dev_server_checker(checker)
    assert manager.dev_server_checker is checker
    await manager.initialize()
    assert other_logs.get_logs("alpha"), "plugin output should go to the new log manager"
    await manager.uninstall_plugin("alpha")
    assert stopped == ["alpha"], "uninstall stops the plugin's dev server"


# -- 2. initialize ----------------------------------------------------------------------
async def test_second_manager_on_the_same_root_is_refused(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    first = managers.new(backend_factory=in_process_factory())
    await first.initialize()
    second = managers.new(backend_factory=in_process_factory())
    with pytest.raises(RootLockedError) as info:
        await second.initialize()
    assert "locked by another plughost process" in info.value.detail
    assert not second.initialized and not second.root_lock.held
    assert first.get_plugin("alpha").phase is Phase.RUNNING


def _spawn_sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )


async def test_initialize_kills_stale_processes_from_the_pid_file(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    orphan, reused = _spawn_sleeper(), _spawn_sleeper()
    try:
        tracker = PluginPIDTracker(managers.root)
        tracker.record("alpha", orphan.pid)
        tracker.record("beta", reused.pid)
        # beta's pid now belongs to "another" process: recorded start time differs.
        entry = tracker._entries["beta"]
        tracker._entries["beta"] = PidEntry(
            pid=entry.pid, create_time=entry.create_time - 100, exe=entry.exe
        )
        tracker.save()
        manager = managers.new(backend_factory=in_process_factory())
        await manager.initialize()
        assert not pid_alive(orphan.pid), "the orphan matching its recorded identity is killed"
        assert pid_alive(reused.pid), "a process that merely reuses a recorded pid is left alone"
        assert read_pid_file(managers.root) == {}, "in-process plugins have no pid to track"
    finally:
        for proc in (orphan, reused):
            proc.kill()
            proc.wait()


async def test_corrupt_state_file_is_kept_aside_and_state_rebuilt(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    make_plugin(plugins(managers.root), "beta")
    garbage = b'[{"id": "alpha", "phase": '
    (managers.root / "plugin_state.json").write_bytes(garbage)
    manager = managers.new(backend_factory=in_process_factory())
    infos = await manager.initialize()
    assert {i.id: i.phase for i in infos} == {"alpha": Phase.RUNNING, "beta": Phase.RUNNING}
    aside = list(managers.root.glob("plugin_state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == garbage
    assert set(read_state(managers.root)) == {"alpha", "beta"}


async def test_dev_directories_are_migrated(managers: Managers, make_plugin: MakePlugin) -> None:
    make_plugin(plugins(managers.root), "alpha-dev", yaml_id="alpha")
    make_plugin(plugins(managers.root), "beta")
    make_plugin(plugins(managers.root), "beta-dev", yaml_id="beta")  # target exists: left alone
    manager = managers.new(backend_factory=in_process_factory())
    await manager.initialize()
    assert (plugins(managers.root) / "alpha").is_dir()
    assert not (plugins(managers.root) / "alpha-dev").exists()
    assert (plugins(managers.root) / "beta-dev").is_dir()
    assert manager.get_plugin("alpha").phase is Phase.RUNNING
    assert "alpha" in read_state(managers.root)


async def test_dev_plugin_without_binary_gets_a_build_failed_stub(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    location = make_plugin(plugins(managers.root), "devy", binary=False)
    make_plugin(plugins(managers.root), "alpha")
    meta = {"id": "devy", "version": "1.0.0", "name": "devy", "capabilities": ["resource"]}
    write_state(
        managers.root,
        [{"id": "devy", "phase": "Running", "metadata": meta, "devMode": True, "devPath": "/src"}],
    )
    factory = CountingFactory()
    manager = managers.new(backend_factory=factory)
    await manager.initialize()
    info = manager.get_plugin("devy")
    assert info.phase is Phase.BUILD_FAILED
    assert "bin/plugin" in info.last_error and "missing" in info.last_error
    assert "devy" not in factory.calls
    assert not (location / "bin" / "plugin").exists()
    saved = read_state(managers.root)["devy"]
    assert saved["devMode"] is True and saved["phase"] == "BuildFailed"
    assert saved["devPath"] == "/src"
    with pytest.raises(ValidationError, match="build failed"):
        await manager.load_plugin("devy")
    assert manager.get_plugin("alpha").phase is Phase.RUNNING


async def test_disabled_plugins_are_recorded_but_not_started(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    make_plugin(plugins(managers.root), "off")
    meta = {"id": "off", "version": "1.0.0", "name": "off", "capabilities": ["resource"]}
    write_state(
        managers.root, [{"id": "off", "phase": "Stopped", "metadata": meta, "enabled": False}]
    )
    factory = CountingFactory()
    manager = managers.new(backend_factory=factory)
    await manager.initialize()
    off = manager.get_plugin("off")
    assert (off.phase, off.enabled, off.pid) == (Phase.STOPPED, False, None)
    assert factory.calls == ["alpha"]
    assert read_state(managers.root)["off"]["enabled"] is False


async def test_one_broken_plugin_never_stops_the_others(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    ids = [f"p{i}" for i in range(6)]
    for plugin_id in ids:
        make_plugin(plugins(managers.root), plugin_id)
    factory = CountingFactory(fail={"p2": "the plugin printed no handshake"})
    manager = managers.new(backend_factory=factory)
    recorder = managers.record(manager)
    infos = {i.id: i for i in await manager.initialize()}
    assert infos["p2"].phase is Phase.FAILED
    assert "no handshake" in infos["p2"].last_error
    assert all(infos[i].phase is Phase.RUNNING for i in ids if i != "p2")
    done = await recorder.wait_for(EVENT_INIT_COMPLETE)
    assert done.payload == {"plugins": 6, "running": 5, "failed": 1}


async def test_initialize_loads_with_bounded_parallelism(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    for i in range(10):
        make_plugin(plugins(managers.root), f"p{i}")
    factory = CountingFactory()
    manager = managers.new(backend_factory=factory)
    recorder = managers.record(manager)
    await manager.initialize()
    assert 1 < factory.max_active <= 4, factory.max_active
    done = await recorder.wait_for(EVENT_INIT_COMPLETE)
    init_at = recorder.events.index(done)
    running = [e for e in recorder.events[:init_at] if e.payload.get("to") == "Running"]
    assert len(running) == 10, "init_complete comes after every plugin is loaded"


async def test_initialize_limits_only_spawn_to_handshake(managers: Managers) -> None:
    """At load_concurrency 1 no two plugins are ever between spawn and handshake line at
    once (real processes: the start windows each backend recorded never overlap)."""
    ids = ["hello", "hello2", "hello3"]
    for plugin_id in ids:
        install_example(managers.root, "hello", plugin_id)
    manager = managers.new(load_concurrency=1)
    infos = {i.id: i for i in await manager.initialize()}
    assert all(infos[i].phase is Phase.RUNNING for i in ids), infos
    windows = []
    for plugin_id in ids:
        backend = manager.backend(plugin_id)
        assert isinstance(backend, ProcessBackend)
        windows.append((backend.timings["began"], backend.timings["handshake"]))
    windows.sort()
    for (_, ended), (began, _) in itertools.pairwise(windows):
        assert ended <= began, windows


async def test_merge_keeps_persisted_entries_and_drops_ghosts(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    meta = {"id": "ghost", "version": "1.0.0", "name": "ghost", "capabilities": ["resource"]}
    write_state(managers.root, [{"id": "ghost", "phase": "Running", "metadata": meta}])
    manager = managers.new(backend_factory=in_process_factory())
    await manager.initialize()
    assert set(read_state(managers.root)) == {"alpha"}
    assert [i.id for i in manager.list_plugins()] == ["alpha"]


# -- 3. per-plugin serialisation ---------------------------------------------------------
async def test_different_plugins_proceed_in_parallel(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha")
    make_plugin(plugins(managers.root), "beta")
    factory = CountingFactory()
    manager = managers.new(backend_factory=factory)
    factory.gate = asyncio.Event()
    loads = asyncio.gather(manager.load_plugin("alpha"), manager.load_plugin("beta"))
    await async_wait_until(
        lambda: factory.active == 2,
        timeout=5,
        message="both plugins starting at once",
    )
    factory.gate.set()
    await loads
    factory.gate = None
    # One plugin: a second call waits for the first.
    factory.gate = asyncio.Event()
    calls = asyncio.gather(manager.reload_plugin("alpha"), manager.reload_plugin("alpha"))
    await async_wait_until(lambda: factory.active == 1, timeout=5)
    for _ in range(20):
        await asyncio.sleep(0)
        assert factory.active == 1
    factory.gate.set()
    await calls
    assert factory.max_active == 2


async def _hammer(manager: PluginManager, ids: list[str], n: int, seed: int) -> None:
    rng = random.Random(seed)
    ops: list[Awaitable[PluginInfo]] = []
    for _ in range(n):
        plugin_id = rng.choice(ids)
        op = rng.choice(["load", "reload", "unload"])
        if op == "load":
            ops.append(manager.load_plugin(plugin_id))
        elif op == "reload":
            ops.append(manager.reload_plugin(plugin_id))
        else:
            ops.append(manager.unload_plugin(plugin_id))
    results = await asyncio.gather(*ops, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors


class ProcessSampler:
    """Samples, every few ms, how many processes each plugin directory has."""

    def __init__(self, locations: dict[str, Path]) -> None:
        self.locations = locations
        self.max_seen: dict[str, int] = dict.fromkeys(locations, 0)
        self.samples = 0
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            for plugin_id, location in self.locations.items():
                count = len(plugin_processes(location))
                self.max_seen[plugin_id] = max(self.max_seen[plugin_id], count)
            self.samples += 1
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _check_consistent(manager: PluginManager, root: Path, ids: list[str]) -> None:
    saved = read_state(root)
    for plugin_id in ids:
        info = manager.get_plugin(plugin_id)
        location = plugins(root) / plugin_id
        procs = plugin_processes(location)
        if info.phase is Phase.RUNNING:
            assert [p.pid for p in procs] == [info.pid], (plugin_id, info)
        else:
            assert info.phase is Phase.STOPPED, info
            assert procs == [] and info.pid is None, (plugin_id, procs)
        assert saved[plugin_id]["phase"] == info.phase.value
    tracked = {k: v.pid for k, v in manager.pids.entries().items()}
    assert tracked == {i.id: i.pid for i in manager.list_plugins() if i.pid is not None}


@pytest.mark.parametrize("count", [1, 5])
async def test_concurrent_load_reload_unload_are_serialised(managers: Managers, count: int) -> None:
    ids = [f"hello{i}" for i in range(count)]
    locations = {i: install_example(managers.root, "hello", i) for i in ids}
    manager = managers.new()
    recorder = managers.record(manager)
    await manager.initialize()
    sampler = ProcessSampler(locations)
    try:
        await _hammer(manager, ids, 20, seed=count)
    finally:
        await sampler.stop()
    assert sampler.samples > 10
    await recorder.sync()
    assert max(sampler.max_seen.values()) == 1, sampler.max_seen
    bad = invalid_transitions(recorder.transitions())
    assert not bad, bad
    forced = [m for m in recorder.transitions() if m[2].startswith("force:")]
    assert not forced, forced
    await _check_consistent(manager, managers.root, ids)
    before = {p.pid for p in root_processes(managers.root)}
    assert before == {i.pid for i in manager.list_plugins() if i.pid is not None}
    await manager.shutdown()
    assert root_processes(managers.root) == []
    assert all(not pid_alive(pid) for pid in before)


# -- 4. hooks and capability controllers -------------------------------------------------
class Target:
    def __init__(self, name: str, calls: list[str], fail: set[str] | None = None) -> None:
        self.name, self.calls, self.fail = name, calls, fail or set()

    def _call(self, stage: str, info: PluginInfo) -> None:
        self.calls.append(f"{self.name}.{stage}:{info.id}")
        if stage in self.fail:
            raise RuntimeError(f"{self.name} broke at {stage}")

    def on_plugin_init(self, info: PluginInfo) -> None:
        self._call("init", info)

    async def on_plugin_start(self, info: PluginInfo) -> None:
        await asyncio.sleep(0)
        self._call("start", info)

    def on_plugin_stop(self, info: PluginInfo) -> None:
        self._call("stop", info)

    async def on_plugin_shutdown(self, info: PluginInfo) -> None:
        self._call("shutdown", info)

    def on_plugin_destroy(self, info: PluginInfo) -> None:
        self._call("destroy", info)


async def test_hooks_run_in_order_with_the_settings_controller_first(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(plugins(managers.root), "alpha", capabilities=["exec", "settings"])
    make_plugin(plugins(managers.root), "beta", capabilities=["exec"])
    calls: list[str] = []
    manager = managers.new(
        backend_factory=in_process_factory(),
        controllers={"exec": Target("exec", calls), "settings": Target("settings", calls)},
        hooks={"host": Target("host", calls)},
    )
    manager.register_controller("resource", Target("resource", calls))
    manager.register_hook("late", Target("late", calls))
    await manager.load_plugin("alpha")
    assert calls == [
        "settings.init:alpha",
        "exec.init:alpha",
        "host.init:alpha",
        "late.init:alpha",
        "settings.start:alpha",
        "exec.start:alpha",
        "host.start:alpha",
        "late.start:alpha",
    ]
    calls.clear()
    await manager.load_plugin("beta")
    assert calls[:3] == ["exec.init:beta", "host.init:beta", "late.init:beta"]
    calls.clear()
    await manager.unload_plugin("alpha")
    assert calls == ["settings.stop:alpha", "exec.stop:alpha", "host.stop:alpha", "late.stop:alpha"]
    calls.clear()
    await manager.load_plugin("alpha")
    await manager.uninstall_plugin("alpha")
    assert [c for c in calls if "stop" in c or "destroy" in c] == [
        "settings.stop:alpha",
        "exec.stop:alpha",
        "host.stop:alpha",
        "late.stop:alpha",
        "settings.destroy:alpha",
        "exec.destroy:alpha",
        "host.destroy:alpha",
        "late.destroy:alpha",
    ]
    calls.clear()
    await manager.shutdown()
    assert calls == ["exec.shutdown:beta", "host.shutdown:beta", "late.shutdown:beta"]


async def test_a_failing_hook_is_logged_and_skipped(
    managers: Managers, make_plugin: MakePlugin, caplog: pytest.LogCaptureFixture
) -> None:
    make_plugin(plugins(managers.root), "alpha", capabilities=["exec"])
    calls: list[str] = []
    manager = managers.new(
        backend_factory=in_process_factory(),
        controllers={"exec": Target("exec", calls, fail={"init", "stop"})},
        hooks={"first": Target("first", calls, fail={"start"}), "second": Target("second", calls)},
    )
    with caplog.at_level(logging.ERROR, logger="plughost.host.hooks"):
        info = await manager.load_plugin("alpha")
        assert info.phase is Phase.RUNNING and info.last_error == ""
        await manager.unload_plugin("alpha")
    assert "second.init:alpha" in calls and "second.start:alpha" in calls
    assert "second.stop:alpha" in calls
    assert manager.get_plugin("alpha").phase is Phase.STOPPED
    logged = [r.getMessage() for r in caplog.records]
    assert any("controller:exec failed at init" in m for m in logged), logged
    assert any("hook:first failed at start" in m for m in logged), logged
    assert any("controller:exec failed at stop" in m for m in logged), logged


@pytest.mark.parametrize("stage", ["init", "start"])
async def test_a_failing_settings_controller_fails_the_load(
    managers: Managers, make_plugin: MakePlugin, stage: str
) -> None:
    make_plugin(plugins(managers.root), "alpha", capabilities=["settings", "exec"])
    make_plugin(plugins(managers.root), "beta", capabilities=["exec"])
    calls: list[str] = []
    factory = CountingFactory()
    manager = managers.new(
        backend_factory=factory,
        controllers={"settings": Target("settings", calls, fail={stage})},
        hooks={"host": Target("host", calls)},
    )
    infos = {i.id: i for i in await manager.initialize()}
    assert infos["beta"].phase is Phase.RUNNING
    alpha = infos["alpha"]
    assert alpha.phase is Phase.FAILED
    assert f"settings controller failed at {stage}" in alpha.last_error
    assert alpha.pid is None and factory.backend("alpha").exited, "its backend is stopped"
    assert read_state(managers.root)["alpha"]["lastError"] == alpha.last_error
    with pytest.raises(PluginLoadError, match="settings controller"):
        await manager.load_plugin("alpha")
    assert manager.get_plugin("alpha").error_count == 2


# -- 5. shutdown ------------------------------------------------------------------------
async def test_shutdown_leaves_nothing_running_and_releases_the_root(managers: Managers) -> None:
    for i in range(3):
        install_example(managers.root, "hello", f"hello{i}")
    manager = managers.new()
    infos = await manager.initialize()
    pids = [i.pid for i in infos]
    assert all(pids) and len(root_processes(managers.root)) == 3
    assert set(read_pid_file(managers.root)) == {"hello0", "hello1", "hello2"}
    me = psutil.Process()
    log_dir = str(managers.root / "logs")
    assert any(f.path.startswith(log_dir) for f in me.open_files())

    await manager.shutdown()
    assert root_processes(managers.root) == []
    assert not any(pid_alive(pid) for pid in pids if pid)
    assert read_pid_file(managers.root) == {}
    assert json.loads((managers.root / "plugin_pids.json").read_text()) == {}
    assert not any(f.path.startswith(log_dir) for f in me.open_files()), "logs closed"
    assert not manager.root_lock.held
    assert {e["phase"] for e in read_state(managers.root).values()} == {"Stopped"}

    again = managers.new()
    restored = await again.initialize()
    assert [i.phase for i in restored] == [Phase.RUNNING] * 3


@pytest.mark.parametrize("limit", [2, 16])
async def test_shutdown_stops_plugins_in_parallel_bounded(
    managers: Managers, make_plugin: MakePlugin, limit: int
) -> None:
    for i in range(4):
        make_plugin(plugins(managers.root), f"p{i}")
    stopping: list[str] = []
    gate = asyncio.Event()

    class Gate:
        async def on_plugin_shutdown(self, info: PluginInfo) -> None:
            stopping.append(info.id)
            await gate.wait()

    manager = managers.new(
        backend_factory=in_process_factory(), hooks={"gate": Gate()}, shutdown_concurrency=limit
    )
    await manager.initialize()
    shutdown = asyncio.create_task(manager.shutdown())
    expected = min(limit, 4)
    await async_wait_until(
        lambda: len(stopping) == expected,
        timeout=5,
        message=f"{expected} stops at once",
    )
    for _ in range(20):  # give a third stop every chance to begin, if it could
        await asyncio.sleep(0)
    assert len(stopping) == expected
    gate.set()
    await asyncio.wait_for(shutdown, 10)
    assert sorted(stopping) == ["p0", "p1", "p2", "p3"]
    assert {i.phase for i in manager.list_plugins()} == {Phase.STOPPED}


# -- 6. failure records -----------------------------------------------------------------
async def test_every_load_failure_leaves_a_persisted_failed_record(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    root = managers.root
    make_plugin(plugins(root), "noexec", executable=False)
    broken = make_plugin(plugins(root), "dies", capabilities=["exec"])
    (broken / "bin" / "plugin").write_text(
        "#!/bin/sh\necho '[ERROR] cannot open config.toml' >&2\nexit 3\n"
    )
    install_example(root, "hello")
    manager = managers.new()
    infos = {i.id: i for i in await manager.initialize()}
    assert infos["hello"].phase is Phase.RUNNING

    dies = infos["dies"]
    assert dies.phase is Phase.FAILED
    assert "exited before printing its handshake line" in dies.last_error
    assert "cannot open config.toml" in dies.last_error
    noexec = infos["noexec"]
    assert noexec.phase is Phase.FAILED
    assert "bin/plugin is not executable" in noexec.last_error, noexec.last_error
    saved = read_state(root)
    assert saved["dies"]["lastError"] == dies.last_error and saved["dies"]["phase"] == "Failed"
    assert saved["noexec"]["lastError"] == noexec.last_error

    with pytest.raises(ValidationError, match="not an executable file"):
        await manager.load_plugin("noexec")
    info = manager.get_plugin("noexec")
    assert info.phase is Phase.FAILED and "not an executable file" in info.last_error
    listed = {i.id: i for i in manager.list_plugins()}
    assert listed["noexec"].last_error == info.last_error
    assert listed["noexec"].to_json_dict()["lastError"] == info.last_error
    assert read_state(root)["noexec"]["lastError"] == info.last_error
    assert read_state(root)["noexec"]["errorCount"] == info.error_count >= 1
    assert [p.pid for p in root_processes(root)] == [infos["hello"].pid]


async def test_a_plugin_dying_while_its_start_hooks_run_is_not_left_running(
    managers: Managers,
) -> None:
    install_example(managers.root, "hello")

    class Killer:
        async def on_plugin_start(self, info: PluginInfo) -> None:
            assert info.pid is not None
            os.kill(info.pid, signal.SIGKILL)
            backend = manager.backend("hello")
            await async_wait_until(lambda: backend is not None and backend.exited, timeout=5)

    manager = managers.new(hooks={"killer": Killer()})
    with pytest.raises(PluginLoadError, match="exited while it was being started"):
        await manager.load_plugin("hello")
    info = manager.get_plugin("hello")
    assert info.phase is Phase.FAILED and info.pid is None
    assert "SIGKILL" in info.last_error or "-9" in info.last_error
    assert root_processes(managers.root) == []


async def test_load_is_idempotent_when_running(managers: Managers, make_plugin: MakePlugin) -> None:
    make_plugin(plugins(managers.root), "alpha")
    factory = CountingFactory()
    manager = managers.new(backend_factory=factory)
    first = await manager.load_plugin("alpha")
    second = await manager.load_plugin("alpha")
    assert first.phase is second.phase is Phase.RUNNING
    assert factory.calls == ["alpha"]
    await manager.unload_plugin("alpha")
    await manager.unload_plugin("alpha")  # idempotent too
    assert manager.get_plugin("alpha").phase is Phase.STOPPED


async def test_queries_answer_plain_json(managers: Managers, make_plugin: MakePlugin) -> None:
    make_plugin(plugins(managers.root), "alpha")
    manager = managers.new(backend_factory=in_process_factory())
    await manager.initialize()
    info = manager.get_plugin("alpha")
    data: dict[str, Any] = json.loads(json.dumps(info.to_json_dict()))
    assert data["id"] == "alpha" and data["phase"] == "Running"
    assert manager.get_plugin_meta("alpha").id == "alpha"
    assert [m.id for m in manager.list_plugin_metas()] == ["alpha"]
    assert [i.id for i in manager.list_plugins()] == ["alpha"]
