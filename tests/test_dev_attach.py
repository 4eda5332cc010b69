"""``plughost attach ID -- CMD``: a plugin run by hand, announced for it, attached by the host.

The plugin's SDK writes no ``.devinfo`` itself (Omniview's Go SDK v0.5.0 cannot:
its WriteDevInfo wants 5 handshake fields, go-plugin prints 6). ``plughost
attach`` runs the command in the foreground with the host's environment, writes
the file from the handshake line, and removes it on Ctrl-C / exit. Real
processes: the real ``plughost attach`` command, the real SDK's omnihello (and
the hello example through ``run_attached`` itself), a real manager with a dev
server manager; waits are on bus events or polls with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
from cli_helpers import PLUGHOST, clean_env, cli
from devplugins.support import EXAMPLES, dev_host
from google.protobuf import empty_pb2
from test_omniview_dev import (  # noqa: F401 (fixtures)
    WAIT,
    go_settings,
    home,
    omniview_dev_host,
    sdk_build,
)
from waiting import async_wait_until

from plughost._proto import lifecycle_pb2_grpc
from plughost.dev.external import (
    ATTACHED_LINE,
    DEVINFO_FILE,
    DevInfoError,
    check_attachable,
    read_devinfo,
    run_attached,
)
from plughost.errors import PluginNotFoundError
from plughost.paths import RootLayout
from plughost.phases import Phase
from plughost.process.attach import AttachedBackend
from plughost.settings import Settings

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]


def _runs(proc: psutil.Process, binary: Path) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE and proc.exe() == str(binary)
    return False


@pytest.mark.interop
@pytest.mark.usefixtures("go")
async def test_attach_runs_the_sdk_plugin_and_the_host_attaches(
    sdk_build: Path,  # noqa: F811
    home: Path,  # noqa: F811
    go_settings: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    installed = home / ".omniview" / "plugins" / "omnihello"
    installed.mkdir()
    shutil.copy(sdk_build / "omnihello" / "plugin.yaml", installed / "plugin.yaml")
    devinfo = installed / DEVINFO_FILE
    binary = sdk_build / "omnihello" / "bin" / "plugin"
    out_file, err_file = tmp_path / "attach.out", tmp_path / "attach.err"
    env = clean_env(HOME=str(home), **go_settings)

    async with omniview_dev_host(home) as (manager, _dsm, events):
        with open(out_file, "wb") as out, open(err_file, "wb") as err:
            attach = subprocess.Popen(
                [*PLUGHOST, "--profile", "omniview", "attach", "omnihello", "--", str(binary)],
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        try:
            await events.wait_phase("omnihello", "Running", timeout=WAIT)
            [child] = psutil.Process(attach.pid).children()
            assert child.exe() == str(binary)
            assert ATTACHED_LINE in err_file.read_text()
            announced = read_devinfo(devinfo)
            assert (announced.pid, announced.plugin_id, announced.version) == (
                child.pid,
                "omnihello",
                "0.1.0",
            )
            # The SDK's own WriteDevInfo still refuses go-plugin's line: the file is ours.
            assert "expected 5 parts, got 6" in err_file.read_text()

            backend = manager.backend("omnihello")
            assert isinstance(backend, AttachedBackend) and backend.pid == child.pid
            stub: Any = manager.client("omnihello").stub(lifecycle_pb2_grpc.PluginLifecycleStub)
            answer = await stub.GetInfo(empty_pb2.Empty(), timeout=WAIT)
            assert (answer.plugin_id, answer.version) == ("omnihello", "0.1.0")
            # Nothing spawned by the host: the only omnihello is the attach command's child.
            assert [p.pid for p in psutil.process_iter() if _runs(p, binary)] == [child.pid]

            # Ctrl-C to the attach command: the child stops (the SDK exits 0), the file goes,
            # the host lets go of it.
            mark = events.mark()
            attach.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(attach.wait, WAIT) == 0, err_file.read_text()
            await events.wait_phase("omnihello", "Stopped", start=mark)
            assert not devinfo.exists()
            assert manager.backend("omnihello") is None
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
            assert manager.get_plugin("omnihello").phase is Phase.STOPPED
        finally:
            if attach.poll() is None:
                os.killpg(attach.pid, signal.SIGKILL)
                attach.wait()


def install_hello(root: Path) -> Path:
    """The hello example installed in ``root`` (only its plugin.yaml: the code runs by hand)."""
    plugin_dir = root / "plugins" / "hello"
    plugin_dir.mkdir(parents=True)
    shutil.copy(EXAMPLES / "hello" / "plugin.yaml", plugin_dir / "plugin.yaml")
    return plugin_dir


async def test_run_attached_python_plugin_attaches_and_is_let_go(tmp_path: Path) -> None:
    root = tmp_path / "root"
    devinfo = install_hello(root) / DEVINFO_FILE
    said: list[str] = []
    stop = asyncio.Event()
    async with dev_host(root) as (manager, _dsm, events):
        run = asyncio.create_task(
            run_attached(
                RootLayout(root),
                "hello",
                [str(EXAMPLES / "hello" / "bin" / "plugin")],
                Settings(profile="plughost"),
                say=said.append,
                stdout=io.BytesIO(),
                interrupt=stop,
                handle_signals=False,
            )
        )
        try:
            await events.wait_phase("hello", "Running", timeout=WAIT)
            backend = manager.backend("hello")
            info = json.loads(devinfo.read_text())
            assert isinstance(backend, AttachedBackend) and backend.pid == info["pid"]
            assert any(ATTACHED_LINE in line for line in said)
            # A second attach of the same plugin is refused while this one lives.
            with pytest.raises(DevInfoError, match="already announced"):
                check_attachable(RootLayout(root), "hello")

            mark = events.mark()
            stop.set()  # Ctrl-C
            assert await asyncio.wait_for(run, WAIT) == 0
            await events.wait_phase("hello", "Stopped", start=mark)
            assert not devinfo.exists()
            await async_wait_until(lambda: not psutil.pid_exists(info["pid"]), timeout=WAIT)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(run, WAIT)


def test_attach_refuses_a_plugin_that_is_not_installed(tmp_path: Path) -> None:
    with pytest.raises(PluginNotFoundError) as caught:
        check_attachable(RootLayout(tmp_path), "nothere")
    assert any("plughost dev PATH" in s for s in caught.value.suggestions)
    result = cli("--root", tmp_path, "attach", "nothere", "--", "true")  # --root before --
    assert result.returncode == 1
    assert "not installed" in result.out and "plughost install" in result.out
    as_json = cli("--root", tmp_path, "attach", "nothere", "--json", "--", "true")
    assert as_json.returncode == 1
    assert as_json.json()["error"]["type"] == "plugin_not_found"


def test_attach_exits_with_the_command_status_and_leaves_no_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    devinfo = install_hello(root) / DEVINFO_FILE
    result = cli("--root", root, "attach", "hello", "--", sys.executable, "-c", "exit(3)")
    assert result.returncode == 3, result.out
    assert "exited before its handshake (status 3)" in result.out
    assert not devinfo.exists()
