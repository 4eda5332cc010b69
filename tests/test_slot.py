"""PluginSlot and PluginTable: one owner per plugin, one way to change a phase.

Plus the bugs the move exposed, each with its regression test: disabling a Failed
plugin, a dev install touching a plugin before holding its lock, and an install with
the marketplace's version rewriting the rest of plugin.yaml.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from devplugins.support import copy_hello, dev_host
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    read_state,
    root_fixture,  # noqa: F401  (the `root` fixture)
)

from plughost.errors import InvalidTransitionError, PluginNotFoundError
from plughost.events import EVENT_DEV_INSTALL_START
from plughost.packages.archive import pack
from plughost.phases import Phase
from plughost.testing import in_process_factory

MakePlugin = Callable[..., Path]


# -- the slot ---------------------------------------------------------------------------
async def test_change_follows_the_table_and_force_is_recorded_as_forced(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    manager = managers.new(backend_factory=in_process_factory())
    recorder = managers.record(manager)
    await manager.initialize()
    slot = manager.table.get("alpha")
    assert slot.phase is Phase.RUNNING
    with pytest.raises(InvalidTransitionError, match="cannot move from Running to Installed"):
        slot.change(Phase.INSTALLED, "not allowed")
    assert slot.phase is Phase.RUNNING, "an illegal move changes nothing"
    assert slot.change(Phase.RUNNING) is None, "already there: nothing recorded"
    slot.change(Phase.DEGRADED, "slow answer")
    slot.force(Phase.RUNNING, "a test says so")
    await recorder.sync()
    moves = recorder.transitions("alpha")[-2:]
    assert moves == [
        ("Running", "Degraded", "slow answer"),
        ("Degraded", "Running", "force: a test says so"),
    ]


async def test_exclusive_serialises_one_plugin_and_not_the_others(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    for plugin_id in ("alpha", "beta"):
        make_plugin(managers.root / "plugins", plugin_id)
    manager = managers.new(backend_factory=in_process_factory())
    await manager.initialize()
    table = manager.table
    async with table.exclusive("alpha") as held:
        assert held.slot is table.get("alpha") and not held.created
        waiting = asyncio.create_task(manager.unload_plugin("alpha"))
        other = await manager.unload_plugin("beta")  # a different plugin is not held up
        assert other.phase is Phase.STOPPED
        await asyncio.sleep(0)
        assert not waiting.done() and table.get("alpha").phase is Phase.RUNNING
    assert (await waiting).phase is Phase.STOPPED


async def test_exclusive_on_an_unknown_plugin_is_not_found_and_creates_only_when_asked(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    manager = managers.new(backend_factory=in_process_factory())
    await manager.initialize()
    with pytest.raises(PluginNotFoundError, match="no plugin with id 'ghost'"):
        async with manager.table.exclusive("ghost"):
            pass
    assert "ghost" not in manager.table
    make_plugin(managers.root / "plugins", "late")
    info = await manager.load_plugin("late")  # on disk, not yet in the table: created
    assert info.phase is Phase.RUNNING and "late" in manager.table


async def test_a_users_action_ends_a_pending_recovery_once(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    manager = managers.new(backend_factory=in_process_factory(), backoff_initial=30.0)
    await manager.initialize()
    manager.handle_plugin_crash("alpha")
    task = manager.health.state("alpha").task
    assert task is not None and manager.get_plugin("alpha").phase is Phase.RECOVERING
    info = await manager.load_plugin("alpha")
    assert info.phase is Phase.RUNNING
    assert task.cancelled() or task.done()
    assert not manager.health.is_in_crash_cycle("alpha")


async def test_background_work_lives_in_one_task_group_closed_by_shutdown(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "alpha")
    manager = managers.new(backend_factory=in_process_factory(), backoff_initial=30.0)
    await manager.initialize()
    assert manager.tasks.is_open
    manager.handle_plugin_crash("alpha")  # a recovery waiting 30 s, owned by the group
    owned = manager.tasks.tasks()
    names = {t.get_name() for t in owned}
    assert {"plughost:health", "plughost:retry", "plughost:alpha:recover"} <= names
    await manager.shutdown()
    assert all(t.done() for t in owned) and manager.tasks.tasks() == []
    assert not manager.tasks.is_open


# -- regressions ------------------------------------------------------------------------
async def test_disabling_a_failed_plugin_stops_it_through_the_table(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "broken", executable=False)
    manager = managers.new()
    recorder = managers.record(manager)
    await manager.initialize()
    assert manager.get_plugin("broken").phase is Phase.FAILED
    info = await manager.set_enabled("broken", False)
    assert (info.phase, info.enabled) == (Phase.STOPPED, False)
    assert read_state(managers.root)["broken"]["enabled"] is False
    await recorder.sync()
    moves = [m for m in recorder.transitions("broken") if m[2] == "disabled"]
    assert moves == [("Failed", "Installed", "disabled"), ("Installed", "Stopped", "disabled")]


async def test_a_dev_install_touches_nothing_until_it_holds_the_plugins_lock(
    tmp_path: Path,
) -> None:
    source = copy_hello(tmp_path / "src")
    async with dev_host(tmp_path / "root") as (manager, _dsm, events):
        installed = tmp_path / "root" / "plugins" / "devhello"
        shutil.copytree(source, installed)
        (installed / "plugin.yaml").write_text(
            (installed / "plugin.yaml").read_text().replace("name:", "name: old-", 1)
        )
        await manager.load_plugin("devhello")
        before = (installed / "plugin.yaml").read_text()
        async with manager.table.exclusive("devhello") as held:
            task = asyncio.create_task(manager.install_in_dev_mode(source))
            await events.wait(
                EVENT_DEV_INSTALL_START, lambda e: e.payload["pluginID"] == "devhello"
            )
            record = held.record
            assert not record.dev_mode and record.phase is Phase.RUNNING
            assert (installed / "plugin.yaml").read_text() == before, "synced under the lock only"
        info = await task
        assert info.dev_mode and info.phase is Phase.RUNNING, info.last_error
        assert (installed / "plugin.yaml").read_text() == (source / "plugin.yaml").read_text()


ODD_YAML = """\
# a plugin whose plugin.yaml a marketplace install must not rewrite
id: hello
version: "0.0.1"   # the package's own
name: off
description: 1.10
"""


async def test_an_install_with_the_marketplaces_version_changes_only_the_version(
    managers: Managers, tmp_path: Path
) -> None:
    source = install_example(tmp_path / "src", "hello")
    original = (source / "plugin.yaml").read_text()
    rest = "".join(
        line + "\n"
        for line in original.splitlines()
        if line.split(":")[0] not in ("id", "version", "name", "description")
    )
    (source / "plugin.yaml").write_text(ODD_YAML + rest)
    package = pack(source, tmp_path / "hello.tar.gz")
    manager = managers.new()
    await manager.initialize()
    meta = await manager.installer.install_from_path(package, version="3.0.0")
    assert (meta.version, meta.name, meta.description) == ("3.0.0", "off", "1.10")
    written = (managers.root / "plugins" / "hello" / "plugin.yaml").read_text()
    assert written == (ODD_YAML + rest).replace('"0.0.1"', '"3.0.0"')
    assert manager.get_plugin("hello").phase is Phase.RUNNING
