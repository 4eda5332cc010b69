"""Dev mode with Omniview's real Go SDK (v0.5.0) under the omniview profile.

(a) **Run by hand.** With ``OMNIVIEW_DEV=1`` the SDK's ``Serve`` means to write
``$HOME/.omniview/plugins/<id>/.devinfo`` (``pkg/sdk/devinfo.go``) so that the
IDE attaches to the process the author started (``go run``, a debugger). In
v0.5.0 its ``WriteDevInfo`` wants a 5-field handshake line while go-plugin
v1.7.0 prints 6 (``1|1|unix|/tmp/plugin…|grpc|``), so it only logs ``failed to
write devinfo: invalid handshake line (expected 5 parts, got 6)`` and writes no
file; its signal handler still removes the file on SIGINT/SIGTERM and exits 0.
The test checks exactly that, then writes the file the SDK would have written
(its field names, read from the SDK's own source; Go's ``MarshalIndent``; an
RFC 3339 time with nanoseconds) for the real process, and plughost attaches,
supervises (health, a paused process is reported) and lets go once the author
stops it with Ctrl-C, killing nothing.

(b) **``plughost dev``.** A source tree the way an Omniview plugin is laid out
(plugin.yaml at the top, the main under ``cmd/``), built with ``dev.build``
against the SDK from the Go module proxy (or its source next to the checkout,
as scripts/build_go_plugins.sh does), runs under the profile; a save rebuilds
and reloads it (the new code's settings are served), and a compile error keeps
the previous instance running.

Waits are on bus events or polls with deadlines; Go is required (tests/toolchains.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from devplugins.support import Events, replace_in
from gobuild import REPO, go_plugins
from toolchains import require_go
from waiting import async_wait_until

from plughost.dev.external import DEVINFO_FILE, read_devinfo
from plughost.dev.watch import DevServerManager
from plughost.events import EVENT_DEVSERVER_ERROR, EVENT_RELOAD_COMPLETE, EVENT_RELOAD_ERROR
from plughost.host.manager import PluginManager
from plughost.paths import resolve_root
from plughost.phases import Phase
from plughost.process.attach import AttachedBackend
from plughost.service.calls import call_method
from plughost.settings import SettingsProvider

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(300),
    pytest.mark.usefixtures("go"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

SDK_MODULE = "github.com/omniviewdev/plugin-sdk"
SDK_VERSION = "v0.5.0"
SDK_SOURCE = REPO.parent / "shared" / "third_party" / "omniview-plugin-sdk"
OMNISDK = REPO / "tests" / "goplugins" / "omnisdk"
LIFECYCLE = "omniview.sdk.lifecycle.v1.PluginLifecycle"
SETTINGS = "omniview.sdk.settings.v1.SettingsPlugin"
WAIT = 30.0
BUILD_WAIT = 240.0  # a cold build of the SDK's dependencies on 2 cores
FAST: dict[str, Any] = {
    "start_timeout": WAIT,
    "stop_grace": 5.0,
    "kill_grace": 2.0,
    "health_timeout": 10.0,
}
GO_ENV = ("GOMODCACHE", "GOCACHE", "GOPATH", "GOFLAGS", "GOPROXY", "GOSUMDB", "GOTOOLCHAIN")


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sdk_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built omnihello (tests/goplugins/omnisdk/cmd/omnihello) in a private directory."""
    return go_plugins(tmp_path_factory, ("omnihello",))


@pytest.fixture(scope="module")
def go_settings() -> dict[str, str]:
    """Go's caches and settings as the real HOME has them: the tests give the host another
    HOME, and Go must not start from empty caches there."""
    go = require_go(purpose="the Omniview SDK dev-mode tests")
    out = subprocess.run(
        [go, "env", "-json", *GO_ENV], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {k: v for k, v in json.loads(out).items() if v}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, go_settings: dict[str, str]) -> Path:
    """A temporary HOME whose ``.omniview`` is the profile's root, where the SDK looks."""
    for key, value in go_settings.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    (home / ".omniview" / "plugins").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)
    assert resolve_root(None, "omniview") == home / ".omniview"
    return home


@contextlib.asynccontextmanager
async def omniview_dev_host(
    home: Path,
) -> AsyncIterator[tuple[PluginManager, DevServerManager, Events]]:
    """A manager with the omniview profile on ``$HOME/.omniview`` and a dev server manager
    (fast debounce, .devinfo checked every 0.3 s), initialized."""
    manager = PluginManager(
        home / ".omniview", profile="omniview", settings=SettingsProvider(None, FAST)
    )
    dsm = DevServerManager(manager.table, debounce_ms=300, step_ms=30, devinfo_check_interval=0.3)
    manager.set_dev_server_manager(dsm)
    events = Events(manager)
    try:
        await manager.initialize()
        yield manager, dsm, events
    finally:
        await manager.shutdown()
        await events.close()


async def call(manager: PluginManager, method: str) -> dict[str, Any]:
    answer = await call_method(manager, "omnihello", method, {}, timeout=WAIT)
    response: dict[str, Any] = answer["response"]
    return response


# -- the SDK's .devinfo -------------------------------------------------------------------------
def sdk_devinfo_source(go_settings: dict[str, str]) -> Path:
    """pkg/sdk/devinfo.go of the SDK the plugins were built with."""
    cached = Path(go_settings.get("GOMODCACHE", ""), *SDK_MODULE.split("/"))
    for base in (cached.with_name(f"plugin-sdk@{SDK_VERSION}"), SDK_SOURCE):
        found = base / "pkg" / "sdk" / "devinfo.go"
        if found.is_file():
            return found
    raise AssertionError(f"the SDK's source is neither in Go's module cache nor at {SDK_SOURCE}")


def sdk_devinfo_fields(source: Path) -> list[tuple[str, bool]]:
    """(JSON name, omitempty) of each field of the SDK's ``DevInfo`` struct, in order."""
    body = re.search(r"type DevInfo struct \{(.*?)\n\}", source.read_text(), re.S)
    assert body is not None, f"no DevInfo struct in {source}"
    return [(name, bool(omit)) for name, omit in re.findall(r'json:"(\w+)(,omitempty)?"', body[1])]


def rfc3339nano(ns: int) -> str:
    """Go's ``time.Time`` in JSON: RFC 3339, UTC ``Z``, nanoseconds without trailing zeros."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def write_sdk_devinfo(
    path: Path, fields: list[tuple[str, bool]], *, pid: int, line: str, plugin_id: str, version: str
) -> dict[str, Any]:
    """The file ``WriteDevInfo`` writes (pkg/sdk/devinfo.go): the handshake line's fields
    1, 3 and 4, ``json.MarshalIndent(info, "", "  ")``, to ``.devinfo.tmp`` (0644) and
    renamed into place; ``vitePort`` left out when 0 (omitempty)."""
    parts = line.strip().split("|")
    values: dict[str, Any] = {
        "pid": pid,
        "protocol": parts[4],
        "protocolVersion": int(parts[1]),
        "addr": parts[3],
        "vitePort": 0,
        "pluginId": plugin_id,
        "version": version,
        "startedAt": rfc3339nano(time.time_ns()),
    }
    assert [name for name, _ in fields] == list(values), "the SDK's DevInfo changed"
    info = {name: values[name] for name, omit in fields if not (omit and not values[name])}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.chmod(0o644)
    os.rename(tmp, path)
    return info


# -- (a) run by hand, attached through .devinfo ---------------------------------------------------
def test_plughost_reads_every_field_the_sdk_writes(go_settings: dict[str, str]) -> None:
    """plughost's DevInfo model knows the SDK's field names (its aliases are the JSON names)."""
    from plughost.dev.external import DevInfo

    require_go(purpose="the Omniview SDK dev-mode tests")
    fields = sdk_devinfo_fields(sdk_devinfo_source(go_settings))
    ours = {field.alias or name for name, field in DevInfo.model_fields.items()}
    assert [name for name, _ in fields] == [
        "pid",
        "protocol",
        "protocolVersion",
        "addr",
        "vitePort",
        "pluginId",
        "version",
        "startedAt",
    ]
    assert {name for name, _ in fields} == ours
    assert dict(fields)["vitePort"] is True  # omitted when 0: plughost reads it as None


async def test_sdk_plugin_run_by_hand_attaches_through_devinfo(
    sdk_build: Path, home: Path, go_settings: dict[str, str], tmp_path: Path
) -> None:
    installed = home / ".omniview" / "plugins" / "omnihello"
    installed.mkdir()
    shutil.copy(sdk_build / "omnihello" / "plugin.yaml", installed / "plugin.yaml")
    devinfo = installed / DEVINFO_FILE
    sockets = tmp_path / "s"
    sockets.mkdir()
    binary = sdk_build / "omnihello" / "bin" / "plugin"
    stderr_file = tmp_path / "omnihello.stderr"
    # What the author runs: the cookie the SDK checks, the SDK's dev switch, HOME for plugin.yaml.
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "OMNIVIEW": "omnihello",
        "OMNIVIEW_DEV": "1",
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_UNIX_SOCKET_DIR": str(sockets),
    }
    async with omniview_dev_host(home) as (manager, dsm, events):
        with open(stderr_file, "wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                str(binary),
                cwd=tmp_path,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode().strip()
            assert re.fullmatch(r"1\|1\|unix\|\S+/plugin\d+\|grpc\|", line), line

            # What v0.5.0 really does with it: refuses go-plugin's 6 fields, writes nothing.
            refused = "invalid handshake line (expected 5 parts, got 6)"
            await async_wait_until(
                lambda: refused in stderr_file.read_text(errors="replace"),
                timeout=WAIT,
                message=lambda: f"the SDK's devinfo error on stderr: {stderr_file.read_text()}",
            )
            assert "failed to write devinfo" in stderr_file.read_text()
            assert not devinfo.exists() and not devinfo.with_name(".devinfo.tmp").exists()
            assert manager.backend("omnihello") is None

            # The file the SDK means to write, for this process: plughost attaches to it.
            fields = sdk_devinfo_fields(sdk_devinfo_source(go_settings))
            written = write_sdk_devinfo(
                devinfo, fields, pid=proc.pid, line=line, plugin_id="omnihello", version="0.1.0"
            )
            assert "vitePort" not in written and written["startedAt"].endswith("Z")
            parsed = read_devinfo(devinfo)
            assert (parsed.pid, parsed.addr, parsed.network) == (
                proc.pid,
                line.split("|")[3],
                "unix",
            )
            await events.wait_phase("omnihello", "Running", timeout=WAIT)
            backend = manager.backend("omnihello")
            assert isinstance(backend, AttachedBackend) and backend.pid == proc.pid
            info = manager.get_plugin("omnihello")
            assert info.pid == proc.pid and info.dev_mode
            assert await call(manager, f"{LIFECYCLE}/GetInfo") == {
                "pluginId": "omnihello",
                "version": "0.1.0",
                "sdkProtocolVersion": 1,
            }
            await events.wait(
                "plugin/devserver/status",
                lambda e: (
                    e.payload["pluginID"] == "omnihello"
                    and e.payload["mode"] == "external"
                    and e.payload["grpcConnected"]
                ),
            )
            # Nothing was spawned: the only omnihello process is the author's.
            assert [p.pid for p in psutil.process_iter() if _runs(p, binary)] == [proc.pid]

            # Supervised: paused (a breakpoint) is reported and stays attached; then healthy.
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
                assert manager.get_plugin("omnihello").phase is Phase.RUNNING
            finally:
                proc.send_signal(signal.SIGCONT)
            await events.wait(
                "plugin/devserver/status",
                lambda e: e.payload["pluginID"] == "omnihello" and e.payload["grpcConnected"],
                start=mark,
            )
            assert (await call(manager, f"{LIFECYCLE}/GetInfo"))["pluginId"] == "omnihello"

            # The author presses Ctrl-C: the SDK removes its .devinfo and exits 0; plughost
            # lets go of it (and killed nothing: the exit status is the SDK's own).
            mark = events.mark()
            proc.send_signal(signal.SIGINT)
            assert await asyncio.wait_for(proc.wait(), WAIT) == 0
            await events.wait_phase("omnihello", "Stopped", start=mark)
            assert not devinfo.exists()
            assert manager.backend("omnihello") is None
            await events.wait(
                "plugin/devserver/status",
                lambda e: e.payload["pluginID"] == "omnihello" and e.payload["mode"] == "idle",
                start=mark,
            )
            assert not dsm.is_managed("omnihello")
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()


def _runs(proc: psutil.Process, binary: Path) -> bool:
    with contextlib.suppress(psutil.Error):
        return proc.status() != psutil.STATUS_ZOMBIE and proc.exe() == str(binary)
    return False


# -- (b) plughost dev: build, edit, rebuild, reload ----------------------------------------------
MAIN_WITH_A_SETTING = """\
package main

import (
\t"github.com/omniviewdev/plugin-sdk/pkg/sdk"
\t"github.com/omniviewdev/plugin-sdk/settings"
)

func main() {
\tsdk.NewPlugin(sdk.PluginOpts{
\t\tID: "omnihello",
\t\tSettings: []settings.Setting{
\t\t\t{ID: "greeting", Label: "Greeting", Type: settings.Text, Default: "hello"},
\t\t},
\t}).Serve()
}
"""


def sdk_plugin_source(dest: Path, go: str) -> Path:
    """tests/goplugins/omnisdk with only cmd/omnihello, as a plugin's own source tree:
    plugin.yaml at the top with a ``dev:`` section, the SDK from the Go module proxy (else
    from its source next to the checkout, through a ``replace`` in this copy's go.mod)."""
    (dest / "cmd").mkdir(parents=True)
    for name in ("go.mod", "go.sum"):
        shutil.copy(OMNISDK / name, dest / name)
    shutil.copytree(OMNISDK / "cmd" / "omnihello", dest / "cmd" / "omnihello")
    meta = (dest / "cmd" / "omnihello" / "plugin.yaml").read_text()
    (dest / "cmd" / "omnihello" / "plugin.yaml").unlink()
    (dest / "plugin.yaml").write_text(
        meta
        + "dev:\n"
        + "  build: go build -mod=readonly -trimpath -o build/bin/plugin ./cmd/omnihello\n"
        + "  output: build/bin/plugin\n"
    )
    download = subprocess.run(
        [go, "mod", "download", SDK_MODULE], cwd=dest, capture_output=True, text=True, timeout=600
    )
    if download.returncode != 0:
        if not (SDK_SOURCE / "go.mod").is_file():
            pytest.fail(
                f"go mod download {SDK_MODULE} failed, no SDK source at {SDK_SOURCE}:\n"
                f"{download.stderr}"
            )
        subprocess.run(
            [go, "mod", "edit", "-replace", f"{SDK_MODULE}={SDK_SOURCE}"], cwd=dest, check=True
        )
    return dest


@pytest.mark.usefixtures("sdk_build")  # built with the same flags: Go's cache is warm
async def test_sdk_plugin_under_plughost_dev_rebuilds_and_reloads_on_save(
    home: Path, tmp_path: Path, go: str
) -> None:
    source = sdk_plugin_source(tmp_path / "omnihello-src", go)
    main = source / "cmd" / "omnihello" / "main.go"
    async with omniview_dev_host(home) as (manager, dsm, events):
        info = await asyncio.wait_for(manager.install_in_dev_mode(source), BUILD_WAIT)
        assert info.phase is Phase.RUNNING, info.last_error
        assert info.dev_mode and info.dev_path == str(source.resolve())
        installed = home / ".omniview" / "plugins" / "omnihello"
        # Where the SDK reads it: it started, so it found it.
        assert (installed / "plugin.yaml").read_text() == (source / "plugin.yaml").read_text()
        assert (installed / "bin" / "plugin").read_bytes() == (
            source / "build" / "bin" / "plugin"
        ).read_bytes()
        assert (await call(manager, f"{LIFECYCLE}/GetInfo"))["pluginId"] == "omnihello"
        assert (await call(manager, f"{SETTINGS}/ListSettings")).get("settings", {}) == {}
        first_pid = manager.get_plugin("omnihello").pid
        assert dsm.get_state("omnihello").watching

        # A save: rebuilt, reloaded, and the new code's setting is served.
        mark = events.mark()
        main.write_text(MAIN_WITH_A_SETTING)
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark, timeout=BUILD_WAIT)
        settings = (await call(manager, f"{SETTINGS}/ListSettings"))["settings"]
        assert list(settings) == ["greeting"] and settings["greeting"]["label"] == "Greeting"
        assert manager.get_plugin("omnihello").pid not in (None, first_pid)

        # A compile error: reported where it is; the last good build keeps running.
        mark = events.mark()
        replace_in(main, "sdk.NewPlugin(", "sdk.NewPlugn(")
        error = await events.wait(EVENT_RELOAD_ERROR, start=mark, timeout=BUILD_WAIT)
        [parsed] = error.payload["errors"]
        assert parsed["file"] == "cmd/omnihello/main.go"
        assert parsed["message"] == "undefined: sdk.NewPlugn"
        assert manager.get_plugin("omnihello").phase is Phase.RUNNING
        assert list((await call(manager, f"{SETTINGS}/ListSettings"))["settings"]) == ["greeting"]
