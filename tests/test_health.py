"""Health checks and crash recovery.

Real plugin processes (``crasher``, ``hanger``, ``slowstart`` and the file-driven
``ctl`` test plugin) for what is about processes; the in-process backend and a
fake clock for the bookkeeping (attempts, budget window, crash cycles).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fixtures_plugins import (
    Managers,
    Recorder,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    pid_alive,
    plugin_processes,
    read_state,
    root_fixture,  # noqa: F401  (the `root` fixture)
    root_processes,
)
from waiting import async_wait_until

from plughost.errors import PluginLoadError
from plughost.events import EVENT_CRASH, EVENT_CRASH_RECOVERY_FAILED, EVENT_RECOVERED, Event
from plughost.host.manager import PluginManager
from plughost.host.restarter import DEFAULT_CRASH_REASON, HealthChecker
from plughost.phases import Phase
from plughost.process.backend import ExitCallback, LogCallback, PluginBackend
from plughost.records import PluginRecord
from plughost.settings import Settings
from plughost.testing import InProcessBackend, in_process_factory

MakePlugin = Callable[..., Path]
SECRETS = ("hunter2", "s3cr3tvalue")


def ts(event: Event) -> float:
    return event.timestamp.timestamp()


def plugin_events(recorder: Recorder, plugin_id: str, start: int = 0) -> list[str]:
    """The plugin's events from ``start`` as short strings, e.g. 'Running->Recovering'."""
    out = []
    for event in recorder.since(start):
        if event.plugin_id != plugin_id:
            continue
        if event.name == "plugin/state_change":
            out.append(f"{event.payload['from']}->{event.payload['to']}")
        else:
            out.append(event.name)
    return out


async def start_one(
    managers: Managers, example: str, plugin_id: str | None = None, **settings: object
) -> tuple[PluginManager, Recorder]:
    plugin_id = plugin_id or example
    install_example(managers.root, example, plugin_id)
    manager = managers.new(**settings)
    recorder = managers.record(manager)
    infos = await manager.initialize()
    assert [(i.id, i.phase) for i in infos] == [(plugin_id, Phase.RUNNING)], infos
    return manager, recorder


# -- a crash, noticed at once, recovered ------------------------------------------------------
async def test_crash_once_is_recovered_with_the_full_event_sequence(managers: Managers) -> None:
    manager, recorder = await start_one(managers, "ctl")
    location = managers.root / "plugins" / "ctl"
    old_pid = manager.get_plugin("ctl").pid
    mark = recorder.mark()
    (location / "crash").touch()

    recovered = await recorder.wait_for(EVENT_RECOVERED, start=mark)
    assert plugin_events(recorder, "ctl", mark) == [
        EVENT_CRASH,
        "Running->Recovering",
        "Recovering->Validating",
        "Validating->Starting",
        "Starting->Running",
        EVENT_RECOVERED,
    ]
    crash = recorder.named(EVENT_CRASH, "ctl")[0].payload
    assert crash["kind"] == "crashed"
    assert (crash["exitCode"], crash["signal"]) == (7, None)
    assert crash["attempt"] == 1 and crash["maxAttempts"] == 3
    next_retry = datetime.fromisoformat(crash["nextRetryAt"])
    assert next_retry.tzinfo is not None
    assert "lost the database" in crash["reason"] and "[REDACTED]" in crash["reason"]
    assert any("connecting with password=[REDACTED]" in line for line in crash["lines"])
    text = json.dumps(crash)
    assert not any(secret in text for secret in SECRETS), text
    assert recovered.payload == {
        "pluginID": "ctl",
        "attempt": 1,
        "kind": "crashed",
        "stableFor": 0.3,
    }
    running = [e for e in recorder.since(mark) if e.payload.get("to") == "Running"][-1]
    assert ts(recovered) - ts(running) >= 0.3, "recovered only once it stayed up the window"

    info = manager.get_plugin("ctl")
    assert info.phase is Phase.RUNNING and info.pid not in (None, old_pid)
    assert [p.pid for p in plugin_processes(location)] == [info.pid]
    assert not manager.health.is_in_crash_cycle("ctl"), "stable: the cycle is over"
    assert manager.health.state("ctl").attempts == 0


async def test_a_killed_plugin_is_noticed_at_once_not_at_the_next_poll(
    managers: Managers,
) -> None:
    manager, recorder = await start_one(managers, "hello", health_interval=30.0)
    old_pid = manager.get_plugin("hello").pid
    assert old_pid is not None
    mark = recorder.mark()
    killed_at = time.time()
    os.kill(old_pid, signal.SIGKILL)
    recovering = await recorder.wait_phase("hello", Phase.RECOVERING, timeout=5, start=mark)
    latency = ts(recovering) - killed_at
    assert latency < 1.0, f"detection took {latency:.3f} s"
    crash = recorder.named(EVENT_CRASH, "hello")[0].payload
    assert (crash["kind"], crash["exitCode"], crash["signal"]) == ("crashed", None, "SIGKILL")
    assert crash["reason"] == DEFAULT_CRASH_REASON
    await recorder.wait_for(EVENT_RECOVERED, start=mark)
    new_pid = manager.get_plugin("hello").pid
    assert new_pid not in (None, old_pid) and pid_alive(new_pid)


# -- a crash loop: every crash told, backoff growing, never "recovered", then Failed ----------
async def test_crash_loop_reports_every_crash_grows_the_backoff_and_gives_up_with_hints(
    managers: Managers,
) -> None:
    manager, recorder = await start_one(
        managers,
        "crasher",
        backoff_initial=0.05,
        backoff_max=10.0,
        recovery_attempts=4,
        stable_time=5.0,
        extra_env={"CRASHER_AFTER_MS": "200"},
    )
    failed = await recorder.wait_for(EVENT_CRASH_RECOVERY_FAILED, timeout=60)
    await recorder.wait_phase("crasher", Phase.FAILED)
    info = manager.get_plugin("crasher")
    assert "crashed 5 times" in info.last_error and "simulated fatal error" in info.last_error
    crashes = [e.payload for e in recorder.named(EVENT_CRASH, "crasher")]
    assert [c["attempt"] for c in crashes] == [1, 2, 3, 4, 5], "one event per crash"
    assert all(c["maxAttempts"] == 4 for c in crashes)
    waits = [c["nextRetryIn"] for c in crashes[:-1]]
    assert all(a < b for a, b in itertools.pairwise(waits)), f"not growing: {waits}"
    assert crashes[-1]["nextRetryIn"] is None, "no next try after the last"
    assert recorder.named(EVENT_RECOVERED, "crasher") == [], "never stable: never recovered"
    assert failed.payload["reason"] == info.last_error
    assert failed.payload["next"] == [
        "see why: plughost logs crasher",
        "fix it, then start it again: plughost retry crasher",
    ]
    assert any("simulated fatal error" in line for line in failed.payload["lines"])
    assert root_processes(managers.root) == []
    assert not manager.health.is_in_crash_cycle("crasher")
    await async_wait_until(
        lambda: read_state(managers.root)["crasher"]["phase"] == "Failed",
        timeout=5,
        message="crasher Failed in plugin_state.json",
    )
    # Nothing restarts it behind the user's back: settle, then count again.
    await manager.health.wait_idle("crasher")
    await recorder.sync()
    assert len(recorder.named(EVENT_CRASH, "crasher")) == 5
    assert len(recorder.named(EVENT_CRASH_RECOVERY_FAILED, "crasher")) == 1


async def test_the_crash_budget_ends_a_loop_across_cycles(managers: Managers) -> None:
    manager, recorder = await start_one(
        managers,
        "crasher",
        crash_budget=3,
        backoff_initial=0.01,
        stable_time=0.05,  # each restart is "stable" before it crashes: new cycles
        extra_env={"CRASHER_AFTER_MS": "200"},
    )
    failed = await recorder.wait_for(EVENT_CRASH_RECOVERY_FAILED, timeout=30)
    assert "crash budget of 3" in failed.payload["reason"]
    assert len(recorder.named(EVENT_RECOVERED, "crasher")) >= 1
    assert [e.payload["attempt"] for e in recorder.named(EVENT_CRASH, "crasher")] == [1, 1, 1, 1]
    assert manager.get_plugin("crasher").phase is Phase.FAILED


# -- hung is not crashed ----------------------------------------------------------------------
@pytest.mark.parametrize("misses", [1, 3])
async def test_a_hung_plugin_is_detected_within_misses_times_interval_plus_timeout(
    managers: Managers, misses: int
) -> None:
    interval, timeout, hang_after = 0.1, 0.2, 0.2
    _, recorder = await start_one(
        managers,
        "hanger",
        health_interval=interval,
        health_timeout=timeout,
        health_misses=misses,
        extra_env={"HANGER_AFTER_MS": str(int(hang_after * 1000))},
    )
    running = await recorder.wait_phase("hanger", Phase.RUNNING)
    crash = await recorder.wait_for(EVENT_CRASH, lambda e: e.plugin_id == "hanger", timeout=10)
    took = ts(crash) - ts(running)
    budget = hang_after + misses * (interval + timeout) + 1.5  # slack for a loaded machine
    assert took <= budget, f"hang detected after {took:.2f} s (budget {budget:.2f} s)"
    assert crash.payload["kind"] == "hung"
    assert crash.payload["signal"] == "SIGKILL", "a hung plugin is killed before its restart"
    moves = plugin_events(recorder, "hanger")
    first_crash = moves.index(EVENT_CRASH)
    before = moves[:first_crash]
    assert before[-1] == "Running->Degraded", moves
    assert moves[first_crash + 1] == "Degraded->Recovering"
    degraded = recorder.named("plugin/state_change", "hanger")
    reasons = [e.payload["reason"] for e in degraded if e.payload["to"] == "Degraded"]
    assert reasons[0] == f"health check failed (1/{misses})"
    recovered = await recorder.wait_for(EVENT_RECOVERED, timeout=10)
    assert recovered.payload["kind"] == "hung"


async def test_one_good_answer_returns_a_degraded_plugin_to_running(managers: Managers) -> None:
    manager, recorder = await start_one(managers, "ctl", health_misses=3, health_timeout=1.0)
    location = managers.root / "plugins" / "ctl"
    health = manager.health
    pid = manager.get_plugin("ctl").pid

    (location / "sick").touch()
    assert await health.check_plugin("ctl") is False
    assert manager.get_plugin("ctl").phase is Phase.DEGRADED
    assert await health.check_plugin("ctl") is False  # 2 of 3: still Degraded, same process
    (location / "sick").unlink()
    assert await health.check_plugin("ctl") is True
    assert manager.get_plugin("ctl").phase is Phase.RUNNING
    assert manager.get_plugin("ctl").pid == pid, "a miss alone never restarts the plugin"

    # The count starts again: two more misses are not three in a row.
    (location / "sick").touch()
    mark = recorder.mark()
    for _ in range(2):
        assert await health.check_plugin("ctl") is False
    assert manager.get_plugin("ctl").phase is Phase.DEGRADED
    await recorder.sync()
    assert not recorder.named(EVENT_CRASH)
    assert await health.check_plugin("ctl") is False  # the third consecutive miss
    (location / "sick").unlink()
    await recorder.wait_for(EVENT_RECOVERED, start=mark)
    assert plugin_events(recorder, "ctl", mark) == [
        "Running->Degraded",
        EVENT_CRASH,
        "Degraded->Recovering",
        "Recovering->Validating",
        "Validating->Starting",
        "Starting->Running",
        EVENT_RECOVERED,
    ]
    assert recorder.named(EVENT_CRASH)[0].payload["kind"] == "hung"
    assert manager.get_plugin("ctl").pid != pid


# -- cancelling recovery: uninstall, shutdown, the user's retry ------------------------------
async def test_uninstall_during_backoff_cancels_the_reload(managers: Managers) -> None:
    manager, recorder = await start_one(managers, "ctl", backoff_initial=1.0, backoff_max=1.0)
    location = managers.root / "plugins" / "ctl"
    mark = recorder.mark()
    (location / "crash").touch()
    await recorder.wait_phase("ctl", Phase.RECOVERING, start=mark)
    crash = await recorder.wait_for(EVENT_CRASH, start=mark)
    task = manager.health.state("ctl").task
    assert task is not None and not task.done()

    await manager.uninstall_plugin("ctl")
    assert task.cancelled()
    assert not location.exists()
    assert "ctl" not in read_state(managers.root)
    assert not manager.health.is_in_crash_cycle("ctl")
    # Let the moment the reload was due pass, then check that none happened.
    due = datetime.fromisoformat(crash.payload["nextRetryAt"]).timestamp()
    await asyncio.sleep(max(due - time.time(), 0) + 0.3)
    await recorder.sync()
    assert "Recovering->Validating" not in plugin_events(recorder, "ctl", mark)
    assert recorder.named("plugin/state_change", "ctl")[-1].payload["to"] == "Uninstalled"
    assert root_processes(managers.root, anywhere=True) == []
    assert [i.id for i in manager.list_plugins()] == []


async def test_shutdown_during_backoff_leaves_nothing_running(managers: Managers) -> None:
    manager, recorder = await start_one(managers, "ctl", backoff_initial=5.0, backoff_max=5.0)
    mark = recorder.mark()
    (managers.root / "plugins" / "ctl" / "crash").touch()
    await recorder.wait_phase("ctl", Phase.RECOVERING, start=mark)
    task = manager.health.state("ctl").task
    started = time.monotonic()
    await manager.shutdown()
    assert time.monotonic() - started < 3, "shutdown does not wait for the backoff"
    assert task is not None and task.cancelled()
    assert root_processes(managers.root, anywhere=True) == []
    assert manager.get_plugin("ctl").phase is Phase.STOPPED
    await recorder.sync()
    assert "Recovering->Validating" not in plugin_events(recorder, "ctl", mark)


async def test_shutdown_during_a_recovery_restart_leaves_nothing_running(
    managers: Managers,
) -> None:
    manager, recorder = await start_one(managers, "slowstart", extra_env={"SLOWSTART_MS": "1500"})
    old_pid = manager.get_plugin("slowstart").pid
    mark = recorder.mark()
    manager.handle_plugin_crash("slowstart")
    await recorder.wait_for(
        "plugin/state_change",
        lambda e: e.payload["from"] == "Validating" and e.payload["to"] == "Starting",
        start=mark,
    )
    await async_wait_until(
        lambda: not pid_alive(old_pid or 0),
        timeout=5,
        message="old process stopped",
    )
    location = managers.root / "plugins" / "slowstart"
    await async_wait_until(
        lambda: len(plugin_processes(location)) == 1,
        timeout=5,
        message="restart spawned",
    )
    await manager.shutdown()
    assert root_processes(managers.root, anywhere=True) == []
    info = manager.get_plugin("slowstart")
    assert info.phase in (Phase.FAILED, Phase.STOPPED) and info.pid is None
    assert manager.pids.entries() == {}


async def test_retry_after_failed_runs_again_with_a_fresh_budget(managers: Managers) -> None:
    manager, recorder = await start_one(managers, "ctl", crash_budget=1)
    location = managers.root / "plugins" / "ctl"
    (location / "crash").touch()
    await recorder.wait_for(EVENT_RECOVERED)
    (location / "crash").touch()
    await recorder.wait_for(EVENT_CRASH_RECOVERY_FAILED)
    await recorder.wait_phase("ctl", Phase.FAILED)
    assert manager.get_plugin("ctl").phase is Phase.FAILED
    assert len(recorder.named(EVENT_CRASH)) == 2, "every crash is reported"
    assert plugin_processes(location) == []

    info = await manager.retry_failed_plugin("ctl")
    assert info.phase is Phase.RUNNING and info.pid is not None and info.last_error == ""
    assert [p.pid for p in plugin_processes(location)] == [info.pid]
    assert not manager.health.is_in_crash_cycle("ctl")
    assert len(manager.health.state("ctl").crash_times) == 0
    # The budget really is fresh: one more crash is recovered, not fatal.
    mark = recorder.mark()
    (location / "crash").touch()
    await recorder.wait_for(EVENT_RECOVERED, start=mark)
    assert manager.get_plugin("ctl").phase is Phase.RUNNING
    assert len(recorder.named(EVENT_CRASH_RECOVERY_FAILED)) == 1
    assert len(recorder.named(EVENT_CRASH)) == 3


# -- bookkeeping, in process ------------------------------------------------------------------
class FlakyFactory:
    """Starts in process; fails every start after the first ``good`` ones."""

    def __init__(self, good: int = 1) -> None:
        self.good = good
        self.calls = 0
        self.started: list[InProcessBackend] = []
        self._inner = in_process_factory(started=self.started)

    async def __call__(
        self, record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        self.calls += 1
        if self.calls > self.good:
            raise PluginLoadError("start refused", plugin_id=record.id)
        return await self._inner(record, location, on_exit, on_log)


def test_defaults_and_backoff_schedule() -> None:
    s = Settings()
    assert (s.health_interval, s.health_timeout, s.health_misses) == (30.0, 5.0, 3)
    assert (s.recovery_attempts, s.crash_budget, s.crash_window) == (3, 5, 300.0)

    class Fake:  # the table, as far as the backoff schedule needs one
        settings = s

        def on_exit(self, listener: object) -> None:
            pass

        def on_takeover(self, listener: object) -> None:
            pass

    checker = HealthChecker(Fake())  # type: ignore[arg-type]
    assert [checker._delay(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


async def test_at_most_three_attempts_per_crash_then_failed(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    factory = FlakyFactory(good=1)
    manager = managers.new(backend_factory=factory, backoff_initial=0.001)
    recorder = managers.record(manager)
    await manager.initialize()
    for i in range(30):
        manager.logs.write("alpha", f"[INFO] step {i} with token=abc{i}xyz", "stderr")
    factory.started[0].crash(message="boom password=hunter2")
    failed = await recorder.wait_for(EVENT_CRASH_RECOVERY_FAILED)
    crash = recorder.named(EVENT_CRASH)[0].payload
    assert len(crash["lines"]) == 20, "the last 20 log lines"
    assert "boom" in crash["lines"][-1] and "step 29" in crash["lines"][-2]
    assert crash["reason"] == "boom password=[REDACTED]"
    assert not any("abc" in line for line in crash["lines"])
    assert factory.calls == 1 + 3
    info = manager.get_plugin("alpha")
    assert info.phase is Phase.FAILED
    assert info.last_error.startswith("recovery failed after 3 attempts")
    assert failed.payload["reason"] == info.last_error
    assert len(recorder.named(EVENT_CRASH)) == 1 and not recorder.named(EVENT_RECOVERED)
    assert "hunter2" not in json.dumps([e.payload for e in recorder.events])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_crash_budget_window_and_crash_cycles_with_a_fake_clock(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    factory = FlakyFactory(good=100)
    manager = managers.new(
        backend_factory=factory,
        backoff_initial=0.0,
        crash_budget=2,
        crash_window=60.0,
        stable_time=0.2,
    )
    clock = Clock()  # the budget's window; the stability window is real time
    manager.health.clock = clock
    recorder = managers.record(manager)
    await manager.initialize()

    async def crash(wait: str = EVENT_RECOVERED) -> dict[str, Any]:
        mark = recorder.mark()
        factory.started[-1].crash()
        event = await recorder.wait_for((wait, EVENT_CRASH_RECOVERY_FAILED), start=mark)
        if wait != EVENT_CRASH_RECOVERY_FAILED:
            assert event.name == wait, event.payload
        return recorder.named(EVENT_CRASH, "alpha", start=mark)[0].payload

    mark = recorder.mark()
    first = await crash(wait="plugin/state_change")  # crash 1 ...
    await recorder.wait_phase("alpha", Phase.RUNNING, start=mark)
    assert manager.health.is_in_crash_cycle("alpha"), "Running again, not yet stable"
    second = await crash()  # ... and crash 2 inside the window: attempt 2 of the same cycle
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert not manager.health.is_in_crash_cycle("alpha"), "stayed up 0.2 s: recovered"
    clock.now += 61  # the budget window has passed: it refills
    assert (await crash())["attempt"] == 1, "a new cycle"
    clock.now += 1
    assert (await crash())["crashesInWindow"] == 2, "2 crashes in the window: within budget"
    clock.now += 1
    await crash(wait=EVENT_CRASH_RECOVERY_FAILED)  # the third in 60 s
    assert manager.get_plugin("alpha").phase is Phase.FAILED
    assert "crash budget of 2 per 60 s exhausted" in manager.get_plugin("alpha").last_error

    manager.health.reset_budget("alpha")
    assert len(manager.health.state("alpha").crash_times) == 0
    await manager.load_plugin("alpha")
    await crash()  # after reset_budget a crash is recovered again


async def test_cancel_recovery_and_user_retry_during_backoff(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    factory = FlakyFactory(good=100)
    manager = managers.new(backend_factory=factory, backoff_initial=30.0, backoff_max=30.0)
    recorder = managers.record(manager)
    await manager.initialize()
    health = manager.health
    assert not health.is_in_crash_cycle("alpha")

    factory.started[-1].crash()
    assert manager.get_plugin("alpha").phase is Phase.RECOVERING
    assert health.is_in_crash_cycle("alpha")
    task = health.state("alpha").task
    health.cancel_recovery("alpha")
    await asyncio.gather(task, return_exceptions=True)
    assert task is not None and task.cancelled()
    assert not health.is_in_crash_cycle("alpha")
    assert manager.get_plugin("alpha").phase is Phase.RECOVERING, "left for the user to act"
    assert factory.calls == 1
    info = await manager.reload_plugin("alpha")
    assert info.phase is Phase.RUNNING and factory.calls == 2

    # The user's retry during a backoff cancels it and starts at once.
    factory.started[-1].crash()
    task = health.state("alpha").task
    started = time.monotonic()
    info = await manager.retry_failed_plugin("alpha")
    assert time.monotonic() - started < 5
    assert info.phase is Phase.RUNNING and factory.calls == 3
    await asyncio.gather(task, return_exceptions=True)
    assert task is not None and task.cancelled()
    assert not health.is_in_crash_cycle("alpha")
    await recorder.sync()
    forced = [m for m in recorder.transitions("alpha") if m[2].startswith("force:")]
    assert forced == [("Recovering", "Stopped", "force: reload during recovery")], forced


async def test_periodic_checks_skip_plugins_not_running_or_recovering(
    managers: Managers, make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    for plugin_id in ("up", "down", "broken"):
        make_plugin(managers.root / "plugins", plugin_id)
    factory = FlakyFactory(good=100)
    manager = managers.new(backend_factory=factory, backoff_initial=30.0, backoff_max=30.0)
    await manager.initialize()
    await manager.unload_plugin("down")
    manager.handle_plugin_crash("broken")
    assert manager.get_plugin("broken").phase is Phase.RECOVERING
    checked: list[str] = []

    async def check(plugin_id: str) -> bool:
        checked.append(plugin_id)
        return True

    monkeypatch.setattr(manager.health, "check_plugin", check)
    await manager.health.check_all()
    assert checked == ["up"]
