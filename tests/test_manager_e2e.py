"""End to end with real plugin processes.

A root with 10 installed plugins: 8 good copies of the hello example, one
broken (its program dies before the handshake) and one disabled in a
pre-written plugin_state.json. Initialize, reload one, uninstall one, shut
down, and restore the same set with a second manager on the same root.
"""

from __future__ import annotations

import json
from pathlib import Path

from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    pid_alive,
    plugin_processes,
    read_pid_file,
    read_state,
    root_fixture,  # noqa: F401  (the `root` fixture)
    root_processes,
)

from plughost.events import EVENT_INIT_COMPLETE
from plughost.phases import Phase
from plughost.records import PluginInfo

GOOD = [f"hello{i}" for i in range(8)]


def build_root(root: Path) -> None:
    for plugin_id in GOOD:
        install_example(root, "hello", plugin_id)
    broken = install_example(root, "hello", "broken")
    (broken / "plugin.py").write_text(
        "import sys\n"
        "sys.stderr.write('[ERROR] broken: cannot import greeter_lib\\n')\n"
        "sys.exit(2)\n"
    )
    install_example(root, "hello", "disabled")
    state = {
        "id": "disabled",
        "phase": "Stopped",
        "enabled": False,
        "metadata": {"id": "disabled", "version": "1.0.0", "capabilities": ["exec"]},
    }
    (root / "plugin_state.json").write_text(json.dumps([state]))


def check_processes(root: Path, infos: list[PluginInfo]) -> None:
    """One live process per Running plugin, with the recorded pid; none for the others."""
    for info in infos:
        procs = [p.pid for p in plugin_processes(root / "plugins" / info.id)]
        if info.phase is Phase.RUNNING:
            assert procs == [info.pid], (info.id, procs, info.pid)
        else:
            assert procs == [] and info.pid is None, (info.id, procs)


async def test_ten_plugins_initialize_reload_uninstall_shutdown_and_restore(
    managers: Managers,
) -> None:
    root = managers.root
    build_root(root)
    first = managers.new()
    recorder = managers.record(first)

    infos = await first.initialize()
    phases = {i.id: i.phase for i in infos}
    assert phases == {
        **dict.fromkeys(GOOD, Phase.RUNNING),
        "broken": Phase.FAILED,
        "disabled": Phase.STOPPED,
    }
    by_id = {i.id: i for i in infos}
    broken = by_id["broken"]
    assert "exited before printing its handshake line" in broken.last_error
    assert "cannot import greeter_lib" in broken.last_error
    assert by_id["disabled"].enabled is False
    check_processes(root, infos)
    assert len(root_processes(root)) == 8
    done = await recorder.wait_for(EVENT_INIT_COMPLETE)
    assert done.payload == {"plugins": 10, "running": 8, "failed": 1}
    saved = read_state(root)
    assert {k: v["phase"] for k, v in saved.items()} == {k: v.value for k, v in phases.items()}
    assert saved["broken"]["lastError"] == broken.last_error
    assert set(read_pid_file(root)) == set(GOOD)

    # Reload one: a new process replaces the old one.
    old_pid = by_id["hello3"].pid
    assert old_pid is not None
    reloaded = await first.reload_plugin("hello3")
    assert reloaded.phase is Phase.RUNNING and reloaded.pid not in (None, old_pid)
    assert not pid_alive(old_pid)
    assert read_pid_file(root)["hello3"]["pid"] == reloaded.pid

    # Uninstall one: process, directory, state entry and PID entry all gone.
    gone_pid = by_id["hello7"].pid
    assert gone_pid is not None
    await first.uninstall_plugin("hello7")
    assert not (root / "plugins" / "hello7").exists()
    assert not pid_alive(gone_pid)
    assert "hello7" not in read_state(root)
    assert "hello7" not in read_pid_file(root)
    assert "hello7" not in {i.id for i in first.list_plugins()}

    before = {i.id: (i.phase, i.enabled) for i in first.list_plugins()}
    check_processes(root, first.list_plugins())
    await first.shutdown()
    assert root_processes(root) == []
    assert read_pid_file(root) == {}

    # A second manager on the same root restores the same set.
    second = managers.new()
    restored = await second.initialize()
    assert {i.id: (i.phase, i.enabled) for i in restored} == before
    assert len(before) == 9
    again = {i.id: i for i in restored}
    assert "cannot import greeter_lib" in again["broken"].last_error
    check_processes(root, restored)
    await second.shutdown()
    assert root_processes(root) == []
