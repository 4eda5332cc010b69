"""Dev mode end to end: install from source, edit, rebuild, reload (Python and Go), restart.

Real plugin processes, real files, real Go builds; waits are on bus events.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from devplugins.support import (
    copy_goplugin,
    copy_hello,
    dev_host,
    greet,
    replace_in,
)

from plughost.errors import ValidationError
from plughost.events import (
    EVENT_DEV_INSTALL_COMPLETE,
    EVENT_DEV_INSTALL_ERROR,
    EVENT_DEV_INSTALL_START,
    EVENT_DEVSERVER_ERROR,
    EVENT_RELOAD_COMPLETE,
    EVENT_RELOAD_ERROR,
    EVENT_RELOAD_START,
)
from plughost.phases import Phase
from plughost.validate import binary_path

# The go fixture (tests/toolchains.py): skipped with a how-to locally, a failure in CI.
needs_go = pytest.mark.usefixtures("go")


async def test_python_plugin_edit_reload_syntax_error_and_fix(tmp_path: Path) -> None:
    source = copy_hello(tmp_path / "src")
    async with dev_host(tmp_path / "root") as (manager, dsm, events):
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING, info.last_error
        assert info.dev_mode and info.dev_path == str(source.resolve())
        await events.wait(EVENT_DEV_INSTALL_START, lambda e: e.payload["pluginID"] == "devhello")
        await events.wait(EVENT_DEV_INSTALL_COMPLETE, lambda e: e.payload["pluginID"] == "devhello")
        assert await greet(manager, "devhello") == "hello, x"
        plugin_dir = tmp_path / "root" / "plugins" / "devhello"
        assert os.access(binary_path(plugin_dir), os.X_OK)
        assert (plugin_dir / "plugin.yaml").read_text() == (source / "plugin.yaml").read_text()
        state = dsm.get_state("devhello")
        assert (state.mode, state.status, state.watching) == ("managed", "running", True)
        assert dsm.is_managed("devhello")

        # An edit is picked up, rebuilt and reloaded: the RPC returns the new value.
        first_pid = manager.get_plugin("devhello").pid
        mark = events.mark()
        replace_in(source / "plugin.py", 'GREETING = "hello"', 'GREETING = "howdy"')
        start = await events.wait(EVENT_RELOAD_START, start=mark)
        assert start.payload["changes"] == ["plugin.py"]
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert await greet(manager, "devhello") == "howdy, x"
        assert manager.get_plugin("devhello").pid != first_pid

        # A syntax error: parsed errors, the previous instance keeps running and answering.
        mark = events.mark()
        replace_in(
            source / "plugin.py", "def register(server: Any) -> None:", "def register(server:"
        )
        error = await events.wait(EVENT_RELOAD_ERROR, start=mark)
        [parsed] = error.payload["errors"]
        lines = (source / "plugin.py").read_text().splitlines()
        assert parsed["file"] == "plugin.py"
        assert lines[parsed["line"] - 1].startswith("def register(server:")
        assert "SyntaxError" in parsed["message"]
        devserver_error = await events.wait(EVENT_DEVSERVER_ERROR, start=mark)
        assert devserver_error.payload["errors"] == [parsed]
        info = manager.get_plugin("devhello")
        assert info.phase is Phase.RUNNING
        assert await greet(manager, "devhello") == "howdy, x"
        state = dsm.get_state("devhello")
        assert state.status == "error" and state.build_errors[0].line == parsed["line"]

        # Fixing it reloads with the fixed code.
        mark = events.mark()
        code = (source / "plugin.py").read_text()  # one write: one rebuild
        code = code.replace("def register(server:", "def register(server: Any) -> None:", 1)
        (source / "plugin.py").write_text(code.replace('GREETING = "howdy"', 'GREETING = "fixed"'))
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert await greet(manager, "devhello") == "fixed, x"
        assert dsm.get_state("devhello").build_errors == []
        assert any("changed: plugin.py" in line["message"] for line in dsm.get_logs("devhello"))


async def test_initial_build_failure_leaves_build_failed_and_watches(tmp_path: Path) -> None:
    source = copy_hello(tmp_path / "src", "broken")
    replace_in(source / "plugin.py", "import logging", "import logging +")
    async with dev_host(tmp_path / "root") as (manager, dsm, events):
        info = await manager.install_in_dev_mode(str(source))
        assert info.phase is Phase.BUILD_FAILED
        assert "plugin.py:5" in info.last_error and "SyntaxError" in info.last_error
        error = await events.wait(
            EVENT_DEV_INSTALL_ERROR, lambda e: e.payload["pluginID"] == "broken"
        )
        assert error.payload["errors"][0]["file"] == "plugin.py"
        assert error.payload["errors"][0]["line"] == 5
        state = dsm.get_state("broken")
        assert state.watching and state.status == "error"
        assert manager.backend("broken") is None

        mark = events.mark()
        replace_in(source / "plugin.py", "import logging +", "import logging")
        await events.wait_phase("broken", "Running", start=mark)
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert await greet(manager, "broken") == "hello, x"
        assert manager.get_plugin("broken").last_error == ""


async def test_bad_source_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    async with dev_host(tmp_path / "root") as (manager, _dsm, events):
        with pytest.raises(ValidationError, match=r"plugin\.yaml"):
            await manager.install_in_dev_mode(tmp_path / "empty")
        with pytest.raises(ValidationError, match="not a directory"):
            await manager.install_in_dev_mode(tmp_path / "missing")
        with pytest.raises(ValidationError, match="no directory was chosen"):
            await manager.install_in_dev_mode(lambda: None)
        await events.wait(EVENT_DEV_INSTALL_ERROR)
        assert manager.list_plugins() == []


async def test_chooser_and_uninstall_stops_the_watcher(tmp_path: Path) -> None:
    source = copy_hello(tmp_path / "src", "chosen")

    async def chooser() -> Path:
        return source

    async with dev_host(tmp_path / "root") as (manager, dsm, _events):
        info = await manager.install_in_dev_mode(chooser)
        assert info.phase is Phase.RUNNING
        assert dsm.is_managed("chosen")
        await manager.uninstall_plugin("chosen")
        assert not dsm.is_managed("chosen")
        assert dsm.get_state("chosen").watching is False
        assert not (tmp_path / "root" / "plugins" / "chosen").exists()


async def test_restart_brings_dev_plugin_back_and_rebuilds_missing_binary(tmp_path: Path) -> None:
    source = copy_hello(tmp_path / "src", "comeback")
    root = tmp_path / "root"
    async with dev_host(root) as (manager, _dsm, _events):
        assert (await manager.install_in_dev_mode(source)).phase is Phase.RUNNING

    # The binary is gone (a clean checkout, a wiped build dir): a BuildFailed stub, then a rebuild.
    binary_path(root / "plugins" / "comeback").unlink()
    async with dev_host(root) as (manager, dsm, events):
        await events.wait_phase("comeback", "BuildFailed")
        await events.wait_phase("comeback", "Running")
        await events.wait(EVENT_RELOAD_COMPLETE)  # the rebuild on restart is done
        info = manager.get_plugin("comeback")
        assert info.dev_mode and info.dev_path == str(source.resolve())
        assert await greet(manager, "comeback") == "hello, x"
        assert dsm.get_state("comeback").watching

        # ... and its watcher is back.
        mark = events.mark()
        replace_in(source / "plugin.py", 'GREETING = "hello"', 'GREETING = "again"')
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert await greet(manager, "comeback") == "again, x"

    # With the binary in place it simply runs, and is watched.
    async with dev_host(root) as (manager, dsm, events):
        assert manager.get_plugin("comeback").phase is Phase.RUNNING
        assert dsm.get_state("comeback").watching
        assert await greet(manager, "comeback") == "again, x"


@needs_go
async def test_go_plugin_build_edit_reload_and_compile_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOFLAGS", "-buildvcs=false")
    source = copy_goplugin(tmp_path / "gosrc")
    async with dev_host(tmp_path / "root") as (manager, dsm, events):
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING, info.last_error
        assert await greet(manager, "gohello") == "hello, x"
        assert dsm.get_state("gohello").last_build_duration is not None
        built = source / "build" / "bin" / "plugin"
        installed = binary_path(tmp_path / "root" / "plugins" / "gohello")
        assert installed.read_bytes() == built.read_bytes()
        assert os.access(installed, os.X_OK)

        mark = events.mark()
        replace_in(source / "main.go", '"hello, " + in.GetValue()', '"hi, " + in.GetValue()')
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark, timeout=60)
        assert await greet(manager, "gohello") == "hi, x"

        mark = events.mark()
        replace_in(source / "main.go", "return wrapperspb.String(", "return wrapperspb.Strin(")
        error = await events.wait(EVENT_RELOAD_ERROR, start=mark, timeout=60)
        [parsed] = error.payload["errors"]
        line = (source / "main.go").read_text().splitlines()[parsed["line"] - 1]
        assert parsed["file"] == "main.go"
        assert "wrapperspb.Strin(" in line
        assert line[parsed["column"] - 1 :].startswith("Strin(")
        assert parsed["message"] == "undefined: wrapperspb.Strin"
        assert manager.get_plugin("gohello").phase is Phase.RUNNING
        assert await greet(manager, "gohello") == "hi, x"
