"""External dev mode: plugins started by the test announce themselves in .devinfo; the host attaches."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
from devplugins.support import REPO, copy_hello, dev_host, greet
from toolchains import require_go

from plughost.dev.external import (
    DEVINFO_FILE,
    DevInfo,
    DevInfoError,
    StaleDevInfoError,
    devinfo_from_handshake,
    read_devinfo,
    write_devinfo,
    write_devinfo_from_handshake,
)
from plughost.events import EVENT_DEVSERVER_ERROR
from plughost.phases import Phase
from plughost.process.attach import AttachedBackend

ORIGINAL_SAMPLE = {  # as the original SDK writes it (Go's time format, nanoseconds)
    "pid": 0,
    "protocol": "grpc",
    "protocolVersion": 1,
    "addr": "127.0.0.1:42367",
    "vitePort": 15173,
    "pluginId": "kubernetes",
    "version": "0.1.0",
    "startedAt": "2025-03-01T10:00:00.123456789Z",
}


META = "id: {id}\nversion: 1.0.0\ncapabilities: [exec]\n"


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# -- the file ------------------------------------------------------------------------------
def test_read_original_format_and_reattach_config(tmp_path: Path) -> None:
    path = tmp_path / DEVINFO_FILE
    path.write_text(json.dumps({**ORIGINAL_SAMPLE, "pid": os.getpid()}))
    info = read_devinfo(path)
    assert (info.plugin_id, info.version, info.vite_port) == ("kubernetes", "0.1.0", 15173)
    assert info.started_at is not None and info.started_at.microsecond == 123456
    config = info.reattach_config()
    assert (config.network, config.addr, config.pid) == ("tcp", "127.0.0.1:42367", os.getpid())
    unix = DevInfo(pid=1, addr="/tmp/plugin123/sock")
    assert unix.reattach_config().network == "unix"
    assert DevInfo(pid=1, addr="unix:/tmp/s").reattach_config().addr == "/tmp/s"
    assert DevInfo.model_validate({"pid": 1, "addr": "/s", "vitePort": 0}).vite_port is None


def test_malformed_and_stale_files_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / DEVINFO_FILE
    path.write_text("{not json")
    with pytest.raises(DevInfoError, match="not valid JSON"):
        read_devinfo(path)
    path.write_text(json.dumps({"pid": "abc", "addr": ""}))
    with pytest.raises(DevInfoError, match="'pid'") as info:
        read_devinfo(path)
    assert "'addr'" in info.value.detail
    path.write_text("[]")
    with pytest.raises(DevInfoError, match="expected a JSON object"):
        read_devinfo(path)
    path.write_text(json.dumps({**ORIGINAL_SAMPLE, "pid": dead_pid()}))
    with pytest.raises(StaleDevInfoError, match="is not running") as stale:
        read_devinfo(path)
    assert stale.value.type == "devinfo_stale"
    assert read_devinfo(path, check_pid=False).addr == "127.0.0.1:42367"
    with pytest.raises(DevInfoError, match="no such file"):
        read_devinfo(tmp_path / "missing")


@pytest.mark.parametrize(
    "line",
    [
        "1|1|unix|/tmp/plugin1|grpc",  # 5 fields: what Omniview's SDK expects
        "1|1|unix|/tmp/plugin1|grpc|",  # 6 fields: go-plugin 1.x without AutoMTLS
        "1|1|unix|/tmp/plugin1|grpc||true",  # 7 fields: with multiplexing
    ],
)
def test_devinfo_from_handshake_lines(tmp_path: Path, line: str) -> None:
    path = tmp_path / "p" / DEVINFO_FILE
    info = write_devinfo_from_handshake(path, line, pid=os.getpid(), plugin_id="p", version="1")
    assert (info.addr, info.protocol, info.protocol_version) == ("/tmp/plugin1", "grpc", 1)
    raw = json.loads(path.read_text())
    assert set(raw) == {
        "pid",
        "protocol",
        "protocolVersion",
        "addr",
        "pluginId",
        "version",
        "startedAt",
    }
    assert raw["startedAt"].endswith("Z")
    assert read_devinfo(path) == info.model_copy(
        update={"started_at": read_devinfo(path).started_at}
    )
    with pytest.raises(Exception, match="core API version"):
        devinfo_from_handshake("2|1|unix|/x|grpc|", pid=1, plugin_id="p")


def test_write_devinfo_is_atomic_and_round_trips(tmp_path: Path) -> None:
    info = DevInfo.model_validate({**ORIGINAL_SAMPLE, "pid": os.getpid()})
    path = write_devinfo(tmp_path / "x" / DEVINFO_FILE, info)
    assert read_devinfo(path) == info
    assert [p.name for p in path.parent.iterdir()] == [DEVINFO_FILE]


# -- plugins started by the test --------------------------------------------------------------
async def start_plugin(
    argv: list[str], env: dict[str, str], cwd: Path
) -> tuple[asyncio.subprocess.Process, str]:
    """Start a plugin by hand (as a developer would) and return it with its handshake line."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
    assert line.startswith("1|"), line
    return proc, line


@pytest.fixture
async def cleanup() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs: list[asyncio.subprocess.Process] = []
    yield procs
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def hand_env(plugin_id: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PLUGHOST": plugin_id,
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_MIN_PORT": "10000",
        "PLUGIN_MAX_PORT": "25000",
        **extra,
    }


async def test_python_plugin_run_by_hand_is_attached_then_detached(
    tmp_path: Path, cleanup: list[asyncio.subprocess.Process]
) -> None:
    root = tmp_path / "root"
    source = copy_hello(tmp_path / "src", "exthello")
    async with dev_host(root) as (manager, dsm, events):
        installed = root / "plugins" / "exthello"
        installed.mkdir(parents=True)
        shutil.copy(source / "plugin.yaml", installed / "plugin.yaml")

        env = hand_env("exthello", PLUGHOST_DEV="1", PLUGHOST_HOME=str(root))
        proc, _line = await start_plugin([sys.executable, "plugin.py"], env, source)
        cleanup.append(proc)
        await events.wait_phase("exthello", "Running")
        info = manager.get_plugin("exthello")
        assert info.pid == proc.pid and info.dev_mode
        backend = manager.backend("exthello")
        assert isinstance(backend, AttachedBackend) and backend.pid == proc.pid
        assert await greet(manager, "exthello", "dev") == "hello, dev"
        # Nothing was spawned: the only plugin.py process is the one the test started.
        children = psutil.Process().children(recursive=True)
        assert [c.pid for c in children if "plugin.py" in " ".join(c.cmdline())] == [proc.pid]
        devinfo = json.loads((installed / DEVINFO_FILE).read_text())
        assert devinfo["pid"] == proc.pid and devinfo["pluginId"] == "exthello"
        await events.wait(
            "plugin/devserver/status",
            lambda e: e.payload["pluginID"] == "exthello" and e.payload["mode"] == "external",
        )
        state = dsm.get_state("exthello")
        assert (state.mode, state.external_pid, state.grpc_connected) == (
            "external",
            proc.pid,
            True,
        )
        assert dsm.is_managed("exthello")

        # Paused (as at a breakpoint): reported, still attached; answering again: connected.
        assert dsm.devinfo is not None
        dsm.devinfo.health_timeout = 0.3
        mark = events.mark()
        proc.send_signal(signal.SIGSTOP)
        try:
            paused = await events.wait(
                EVENT_DEVSERVER_ERROR,
                lambda e: e.payload.get("type") == "plugin_not_answering",
                start=mark,
            )
            assert "does not answer" in paused.payload["error"]
            assert manager.get_plugin("exthello").phase is Phase.RUNNING
            assert dsm.get_state("exthello").grpc_connected is False
        finally:
            proc.send_signal(signal.SIGCONT)
        await events.wait(
            "plugin/devserver/status",
            lambda e: e.payload["pluginID"] == "exthello" and e.payload["grpcConnected"],
            start=mark,
        )
        assert await greet(manager, "exthello", "again") == "hello, again"

        mark = events.mark()
        proc.send_signal(signal.SIGTERM)  # the developer stops it: the SDK removes its file
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await events.wait_phase("exthello", "Stopped", start=mark)
        assert not (installed / DEVINFO_FILE).exists()
        assert manager.backend("exthello") is None
        await events.wait(
            "plugin/devserver/status",
            lambda e: e.payload["pluginID"] == "exthello" and e.payload["mode"] == "idle",
            start=mark,
        )
        assert not dsm.is_managed("exthello")


@pytest.fixture(scope="module")
def gohello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = require_go(purpose="the Go dev-mode attach test")
    out = tmp_path_factory.mktemp("goplugins")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "build_go_plugins.sh"), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "GO": go},
    )
    return out / "gohello"


async def test_go_plugin_attached_from_its_handshake_line(
    tmp_path: Path, gohello: Path, cleanup: list[asyncio.subprocess.Process]
) -> None:
    root = tmp_path / "root"
    sockets = tmp_path / "s"
    sockets.mkdir()
    async with dev_host(root) as (manager, dsm, events):
        installed = root / "plugins" / "gohello"
        installed.mkdir(parents=True)
        shutil.copy(gohello / "plugin.yaml", installed / "plugin.yaml")
        env = hand_env("gohello", PLUGIN_UNIX_SOCKET_DIR=str(sockets))
        proc, line = await start_plugin([str(gohello / "bin" / "plugin")], env, tmp_path)
        cleanup.append(proc)
        assert len(line.split("|")) == 6  # go-plugin 1.x: the field Omniview's SDK chokes on
        write_devinfo_from_handshake(
            installed / DEVINFO_FILE, line, pid=proc.pid, plugin_id="gohello", version="0.1.0"
        )
        await events.wait_phase("gohello", "Running")
        assert manager.get_plugin("gohello").pid == proc.pid
        assert await greet(manager, "gohello", "go") == "hello, go"
        await events.wait(
            "plugin/devserver/status",
            lambda e: e.payload["pluginID"] == "gohello" and e.payload["mode"] == "external",
        )

        mark = events.mark()
        proc.kill()  # killed: its .devinfo stays behind and is stale from now on
        await proc.wait()
        await events.wait_phase("gohello", "Stopped", start=mark)
        stale = await events.wait(
            EVENT_DEVSERVER_ERROR, lambda e: e.payload.get("type") == "devinfo_stale", start=mark
        )
        assert stale.payload["pluginID"] == "gohello"
        assert manager.get_plugin("gohello").phase is Phase.STOPPED
        assert dsm.get_state("gohello").mode == "idle"


async def test_spawned_dev_instance_is_replaced_by_the_attached_one(
    tmp_path: Path, cleanup: list[asyncio.subprocess.Process]
) -> None:
    root = tmp_path / "root"
    source = copy_hello(tmp_path / "src", "swap")
    async with dev_host(root) as (manager, _dsm, events):
        info = await manager.install_in_dev_mode(source)
        spawned = info.pid
        assert info.phase is Phase.RUNNING and spawned is not None
        env = hand_env("swap", PLUGHOST_DEV="1", PLUGHOST_HOME=str(root))
        mark = events.mark()
        proc, _line = await start_plugin([sys.executable, "plugin.py"], env, source)
        cleanup.append(proc)
        await events.wait(
            "plugin/state_change",
            lambda e: e.plugin_id == "swap" and e.payload["to"] == "Running",
            start=mark,
        )
        assert manager.get_plugin("swap").pid == proc.pid
        assert not psutil.pid_exists(spawned) or psutil.Process(spawned).status() == "zombie"
        assert await greet(manager, "swap") == "hello, x"


async def test_malformed_and_stale_devinfo_are_reported_never_fatal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stale_dir = root / "plugins" / "stale"
    stale_dir.mkdir(parents=True)
    (stale_dir / "plugin.yaml").write_text(META.format(id="stale"))
    (stale_dir / DEVINFO_FILE).write_text(
        json.dumps({**ORIGINAL_SAMPLE, "pid": dead_pid(), "pluginId": "stale"})
    )
    async with dev_host(root) as (manager, dsm, events):
        stale = await events.wait(
            EVENT_DEVSERVER_ERROR, lambda e: e.payload.get("pluginID") == "stale"
        )
        assert stale.payload["type"] == "devinfo_stale"
        assert manager.get_plugin("stale").phase is not Phase.RUNNING

        bad_dir = root / "plugins" / "bad"
        bad_dir.mkdir()
        (bad_dir / "plugin.yaml").write_text(META.format(id="bad"))
        mark = events.mark()
        (bad_dir / DEVINFO_FILE).write_text("{not json")
        bad = await events.wait(
            EVENT_DEVSERVER_ERROR, lambda e: e.payload.get("pluginID") == "bad", start=mark
        )
        assert bad.payload["type"] == "devinfo_invalid" and "not valid JSON" in bad.payload["error"]

        mark = events.mark()
        (bad_dir / DEVINFO_FILE).write_text(
            json.dumps({"pid": os.getpid(), "addr": "/x", "pluginId": "other"})
        )
        mismatch = await events.wait(
            EVENT_DEVSERVER_ERROR, lambda e: e.payload.get("pluginID") == "bad", start=mark
        )
        assert "does not match" in mismatch.payload["error"]

        (root / "plugins" / "ghost").mkdir()
        mark = events.mark()
        (root / "plugins" / "ghost" / DEVINFO_FILE).write_text(
            json.dumps({"pid": os.getpid(), "addr": "/x"})
        )
        ghost = await events.wait(
            EVENT_DEVSERVER_ERROR, lambda e: e.payload.get("pluginID") == "ghost", start=mark
        )
        assert "not installed" in ghost.payload["error"]

        assert dsm.devinfo is not None and dsm.devinfo.running
        assert manager.backend("bad") is None and manager.backend("stale") is None


async def test_sdk_writes_devinfo_to_an_explicit_path_and_removes_it(
    tmp_path: Path, cleanup: list[asyncio.subprocess.Process]
) -> None:
    source = copy_hello(tmp_path / "src", "explicit")
    target = tmp_path / "announce" / "explicit.devinfo"
    env = hand_env(
        "explicit", PLUGHOST_DEV="1", PLUGHOST_DEVINFO=str(target), PLUGHOST_VITE_PORT="15199"
    )
    proc, line = await start_plugin([sys.executable, "plugin.py"], env, source)
    cleanup.append(proc)
    info = read_devinfo(target)
    assert (info.pid, info.plugin_id, info.version, info.vite_port) == (
        proc.pid,
        "explicit",
        "1.0.0",
        15199,
    )
    assert info.addr == line.split("|")[3] and info.network == "unix"
    proc.send_signal(signal.SIGINT)  # run by hand, Ctrl-C stops it (and the file goes)
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert not target.exists()
