"""Plugins started together share the host's file writes.

The host's start writes plugin_state.json once, with every plugin in it, not
once per plugin; PID file saves that come while one is pending share it, and
none is skipped. Real plugins, a real root, real files.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    read_pid_file,
    read_state,
    root_fixture,  # noqa: F401  (the `root` fixture)
)

from plughost.phases import Phase
from plughost.pids import PidRegistry, PluginPIDTracker
from plughost.store import StateStore

pytestmark = pytest.mark.timeout(60)


class _Counted:
    """Counts calls of a method while still calling it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        self.calls = 0
        real = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


async def test_the_host_start_writes_the_state_once(
    root: Path, managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["hello", "hello2", "hello3"]
    for plugin_id in ids:
        install_example(root, "hello", plugin_id)
    writes = _Counted(monkeypatch, StateStore, "write")
    manager = managers.new()
    infos = await manager.initialize()
    assert {i.id: i.phase for i in infos} == dict.fromkeys(ids, Phase.RUNNING)
    assert writes.calls == 1
    state = read_state(root)
    assert {i: state[i]["phase"] for i in ids} == dict.fromkeys(ids, Phase.RUNNING.value)
    assert set(read_pid_file(root)) == set(ids)  # every start still saved its PID
    await manager.unload_plugin("hello2")  # outside the host's start: written at once
    assert writes.calls == 2
    assert read_state(root)["hello2"]["phase"] == Phase.STOPPED.value


async def test_pid_saves_that_come_together_share_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = _Counted(monkeypatch, PluginPIDTracker, "save")
    registry = PidRegistry(PluginPIDTracker(tmp_path), lambda: True)
    keys = [f"p{i}" for i in range(8)]
    await asyncio.gather(*(registry.record(key, os.getpid()) for key in keys))
    assert saves.calls == 1
    assert set(read_pid_file(tmp_path)) == set(keys)
    await registry.record("late", os.getpid())  # after a save: a save of its own
    assert saves.calls == 2
    assert set(read_pid_file(tmp_path)) == {*keys, "late"}


async def test_a_write_asked_for_during_the_host_start_is_made_at_once(
    root: Path, managers: Managers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the start's own writes wait for its end: anyone else's persist() is on disk
    when it returns, while plugins are still starting."""
    install_example(root, "hello")
    writes = _Counted(monkeypatch, StateStore, "write")
    manager = managers.new()
    recorder = managers.record(manager)
    starting = asyncio.create_task(manager.initialize())
    await recorder.wait_for(
        "plugin/state_change",
        lambda e: e.payload["pluginID"] == "hello" and e.payload["to"] == Phase.STARTING.value,
    )
    assert await manager.persist() is True
    assert writes.calls == 1 and not starting.done()
    assert read_state(root)["hello"]["phase"] == Phase.STARTING.value
    await starting
    assert writes.calls == 2 and read_state(root)["hello"]["phase"] == Phase.RUNNING.value
