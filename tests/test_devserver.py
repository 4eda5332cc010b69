"""The dev server manager and the UI dev server: real node processes, ports and process groups."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import httpx
import psutil
import pytest
from devplugins.support import DEVPLUGINS, copy_hello, dev_host, greet

from plughost.dev.vite import UI_PORT_RANGE, UiDevServer, UiDevServerError
from plughost.dev.watch import DevServerChecker, DevServerManager, DevServerState
from plughost.errors import ValidationError
from plughost.events import (
    EVENT_DEVSERVER_ERROR,
    EVENT_DEVSERVER_LOG,
    EVENT_DEVSERVER_STATUS,
    EVENT_RELOAD_COMPLETE,
    EVENT_RELOAD_START,
)
from plughost.phases import Phase

# Every test runs node (tests/toolchains.py: skipped with a how-to locally, a failure in CI).
pytestmark = pytest.mark.usefixtures("node")

HTTP_OK = "require('http').createServer((q,s)=>s.end('ok')).listen(process.env.PORT)"
WITH_CHILD = (
    "require('child_process').spawn(process.execPath, ['-e', 'setInterval(()=>{}, 1000)'],"
    " {stdio: 'ignore'});" + HTTP_OK
)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (not zombie) processes of a process group."""
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


async def http_get(port: int) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"http://127.0.0.1:{port}/", timeout=5)).text


async def test_ui_dev_server_port_ready_and_group_stop(tmp_path: Path) -> None:
    lines: list[str] = []
    server = UiDevServer(tmp_path, command=["node", "-e", WITH_CHILD, "--"], on_line=lines.append)
    port = await server.start()
    try:
        lo, hi = UI_PORT_RANGE
        assert lo <= port <= hi and server.url == f"http://localhost:{port}"
        assert await http_get(port) == "ok"
        pgid = server.pgid
        assert pgid is not None
        assert len(group_members(pgid)) == 2  # node and the child it started
    finally:
        await server.stop()
    assert group_members(pgid) == []
    assert not server.running and server.port is None


async def test_ui_dev_server_ports_are_distinct_and_skip_busy_ones(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy_port = busy.getsockname()[1]
        busy.listen()
        range_ = (busy_port, busy_port + 20)
        a = UiDevServer(tmp_path, command=["node", "-e", HTTP_OK, "--"], port_range=range_)
        b = UiDevServer(tmp_path, command=["node", "-e", HTTP_OK, "--"], port_range=range_)
        try:
            port_a, port_b = await a.start(), await b.start()
            assert busy_port not in (port_a, port_b) and port_a != port_b
            assert await http_get(port_a) == await http_get(port_b) == "ok"
        finally:
            await a.stop()
            await b.stop()


async def test_ui_dev_server_that_exits_or_never_answers_fails_clearly(tmp_path: Path) -> None:
    exits = UiDevServer(tmp_path, command=["node", "-e", "process.exit(3)", "--"])
    with pytest.raises(UiDevServerError, match="exited with status 3"):
        await exits.start()
    silent = UiDevServer(
        tmp_path, command=["node", "-e", "setInterval(()=>{}, 1000)", "--"], ready_timeout=0.5
    )
    with pytest.raises(UiDevServerError, match="did not answer"):
        await silent.start()
    assert not silent.running


async def test_ui_plugin_dev_install_builds_assets_and_serves_ui(tmp_path: Path) -> None:
    source = tmp_path / "uisrc"
    shutil.copytree(DEVPLUGINS / "uionly", source)
    options = {"ui_command": ["node", "server.js"], "ui_build_command": ["node", "build.js"]}
    async with dev_host(tmp_path / "root", **options) as (manager, dsm, events):
        assert isinstance(dsm, DevServerChecker)
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING, info.last_error
        assets = tmp_path / "root" / "plugins" / "uionly" / "assets"
        assert (assets / "index.js").read_text().startswith("export const built")

        state = dsm.get_state("uionly")
        assert state.vite_status == "ready" and state.mode == "managed"
        assert (
            state.vite_port is not None and UI_PORT_RANGE[0] <= state.vite_port <= UI_PORT_RANGE[1]
        )
        assert await http_get(state.vite_port) == "ok"
        status = await events.wait(
            EVENT_DEVSERVER_STATUS, lambda e: e.payload["viteStatus"] == "ready"
        )
        assert status.payload["vitePort"] == state.vite_port
        await events.wait(EVENT_DEVSERVER_LOG, lambda e: "ready on" in e.payload["message"])
        messages = [line["message"] for line in dsm.get_logs("uionly")]
        assert "built dist/index.js" in messages
        assert [s.plugin_id for s in dsm.list_states()] == ["uionly"]

        server = dsm.ui_server("uionly")
        assert server is not None and server.pgid is not None
        old_group = server.pgid
        restarted = await dsm.restart("uionly")
        assert restarted.vite_status == "ready" and restarted.vite_port is not None
        assert await http_get(restarted.vite_port) == "ok"
        assert group_members(old_group) == []

        new_server = dsm.ui_server("uionly")
        assert new_server is not None and new_server.pgid is not None
        group = new_server.pgid
        stopped = await dsm.stop("uionly")
        assert (stopped.mode, stopped.status, stopped.vite_status) == ("idle", "stopped", "stopped")
        assert not stopped.watching and not dsm.is_managed("uionly")
        assert group_members(group) == []
        assert manager.get_plugin("uionly").phase is Phase.RUNNING  # the plugin itself stays


async def test_ui_dev_server_failure_does_not_fail_the_install(tmp_path: Path) -> None:
    source = tmp_path / "uisrc"
    shutil.copytree(DEVPLUGINS / "uionly", source)
    options = {
        "ui_command": ["node", "-e", "process.exit(3)", "--"],
        "ui_build_command": ["node", "build.js"],
    }
    async with dev_host(tmp_path / "root", **options) as (manager, dsm, events):
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING
        assert dsm.get_state("uionly").vite_status == "error"
        error = await events.wait(EVENT_DEVSERVER_ERROR, lambda e: e.payload["source"] == "vite")
        assert "exited with status 3" in error.payload["error"]


async def test_manual_rebuild_reloads_and_state_serialises(tmp_path: Path) -> None:
    source = copy_hello(tmp_path / "src", "manual")
    async with dev_host(tmp_path / "root") as (manager, dsm, events):
        await manager.install_in_dev_mode(source)
        pid = manager.get_plugin("manual").pid
        mark = events.mark()
        result = await dsm.rebuild("manual")
        assert result.ok and result.errors == []
        start = await events.wait(EVENT_RELOAD_START, start=mark)
        assert start.payload["trigger"] == "manual"
        done = await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert done.payload["phase"] == "Running" and done.payload["duration"] > 0
        assert manager.get_plugin("manual").pid != pid
        assert await greet(manager, "manual") == "hello, x"
        state = dsm.get_state("manual").to_dict()
        assert set(state) >= {
            "pluginID", "mode", "status", "vitePort", "lastBuildDuration",
            "lastBuildError", "buildErrors", "lastReloadAt",
        }  # fmt: skip
        assert state["grpcConnected"] is True and state["lastReloadAt"] is not None
        assert dsm.get_state("unknown") == DevServerState("unknown")


async def test_dev_server_manager_without_devinfo_watch(tmp_path: Path) -> None:
    async with dev_host(tmp_path / "root", watch_devinfo=False) as (manager, dsm, _events):
        assert dsm.devinfo is None
        assert isinstance(manager.dev_server_manager, DevServerManager)
        with pytest.raises(ValidationError, match="no dev source path"):
            await dsm.start("nothing")


async def test_ui_dev_server_that_dies_is_reported(tmp_path: Path) -> None:
    source = tmp_path / "uisrc"
    shutil.copytree(DEVPLUGINS / "uionly", source)
    quits = "require('http').createServer((q,s)=>{s.end('ok'); if (q.url==='/quit') process.exit(4)}).listen(process.env.PORT)"
    options = {"ui_command": ["node", "-e", quits, "--"], "ui_build_command": ["node", "build.js"]}
    async with dev_host(tmp_path / "root", **options) as (manager, dsm, events):
        await manager.install_in_dev_mode(source)
        port = dsm.get_state("uionly").vite_port
        assert port is not None
        mark = events.mark()
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/quit", timeout=5)
        error = await events.wait(EVENT_DEVSERVER_ERROR, start=mark)
        assert error.payload["source"] == "vite" and "status 4" in error.payload["error"]
        state = dsm.get_state("uionly")
        assert (state.vite_status, state.vite_port) == ("error", None)
        assert dsm.ui_server("uionly") is None
        restarted = await dsm.start_ui("uionly")
        assert restarted.vite_status == "ready" and restarted.vite_port is not None
