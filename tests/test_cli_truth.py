"""What the CLI says with no host, and what a plugin author sees of a build.

With no host running, ``list`` and ``info`` show the last known phase as such
(``Running (last seen 14:03, no host)``, ``live: false``, ``lastSeen``, no pid),
and a dev install ends Installed or BuildFailed, never Building. ``dev --follow``
streams builds, their errors (``file:line:column``) and reloads until Ctrl-C,
which leaves the plugin installed; ``list``, ``info`` and ``logs`` show the last
build; ``pack --json`` gives build errors as a list; a traceback's lines are
errors in the log. Real hosts, real plugin processes, real builds.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PLUGHOST, Host, clean_env, cli, new_root, root_processes
from waiting import wait_until

pytestmark = pytest.mark.timeout(180)

SLOW_BUILD = """\
id: slowbuild
version: 0.1.0
name: Slow build
capabilities: [exec]
dev:
  build: "sleep 60"
  output: build/bin/plugin
"""


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    running = Host(new_root(tmp_path_factory.mktemp("truth") / "root"), "--no-examples")
    try:
        yield running
    finally:
        running.stop()


def python_source(tmp: Path, name: str) -> Path:
    cli("init", name, "--lang", "python", "--dir", tmp).ok()
    return tmp / name


def api_plugin(host: Host, plugin_id: str) -> dict[str, Any]:
    with host.api() as client:
        found: dict[str, Any] = client.get(f"/v1/plugins/{plugin_id}").json()
        return found


def state_phase(root: Path, plugin_id: str) -> str | None:
    try:
        entries = json.loads((root / "plugin_state.json").read_text())
    except (OSError, ValueError):
        return None
    return next((e["phase"] for e in entries if e["id"] == plugin_id), None)


def break_syntax(plugin: Path) -> tuple[str, int]:
    """Append a syntax error to ``plugin``; (the good text, the broken line's number)."""
    good = plugin.read_text()
    plugin.write_text(good + "def broken(:\n")
    return good, len(good.splitlines()) + 1


# --------------------------------------------------------------------------- no host
def test_list_and_info_after_the_host_was_killed_show_the_last_known_phase(
    tmp_path: Path,
) -> None:
    root = new_root(tmp_path / "root")
    source = python_source(tmp_path, "lastseen")
    running = Host(root, "--no-examples")
    try:
        assert "Running" in cli("dev", source, root=root).ok().stdout
        assert api_plugin(running, "lastseen")["phase"] == "Running"
    finally:
        running.kill()  # SIGKILL: the state file still says Running
    wait_until(lambda: not root_processes(root), timeout=10, message="the plugin to die")

    table = cli("list", root=root).ok().stdout
    assert re.search(r"Running \(last seen \d\d:\d\d, no host\)", table), table
    listed = {p["id"]: p for p in cli("list", "--json", root=root).ok().json()}["lastseen"]
    assert (listed["phase"], listed["live"], listed["pid"]) == ("Running", False, None)
    seen = datetime.fromisoformat(listed["lastSeen"])
    assert timedelta(0) <= datetime.now(UTC) - seen < timedelta(minutes=5)

    info = cli("info", "lastseen", root=root).ok().stdout
    assert re.search(r"phase\s+Running \(last seen \d\d:\d\d, no host\)", info), info
    assert "pid" not in info
    data = cli("info", "lastseen", "--json", root=root).ok().json()
    assert (data["phase"], data["live"], data["pid"]) == ("Running", False, None)
    assert data["lastSeen"] == listed["lastSeen"]
    assert data["lastBuild"]["ok"] is True


def test_dev_without_a_host_ends_installed_or_build_failed_never_building(
    tmp_path: Path,
) -> None:
    root = new_root(tmp_path / "root")
    source = python_source(tmp_path, "offdev")
    out = " ".join(cli("dev", source, root=root).ok().stdout.split())  # no tty: returns at once
    assert re.search(r"built in [\d.]+ m?s, installed, not started", out), out
    data = cli("info", "offdev", "--json", root=root).ok().json()
    assert (data["phase"], data["live"], data["lastBuild"]["ok"]) == ("Installed", False, True)

    _good, line = break_syntax(source / "plugin.py")
    failed = cli("dev", source, root=root)
    assert failed.returncode == 1 and "build failed" in failed.stdout
    data = cli("info", "offdev", "--json", root=root).ok().json()
    assert data["phase"] == "BuildFailed"
    build = data["lastBuild"]
    assert build["ok"] is False and isinstance(build["durationMs"], int | float)
    [error] = build["errors"]
    assert (error["file"], error["line"]) == ("plugin.py", line)
    assert error["column"] > 0 and error["message"].startswith("SyntaxError")
    where = f"plugin.py:{line}:{error['column']}: SyntaxError"
    info = cli("info", "offdev", root=root).ok().stdout
    assert re.search(r"last build\s+failed \(\d\d:\d\d, after [\d.]+ m?s\)", info), info
    assert where in info
    assert "(dev, build failed)" in cli("list", root=root).ok().stdout
    logs = cli("logs", "offdev", root=root).ok()
    assert where in logs.stdout  # the build's lines in the plugin's log ...
    assert "offdev last build: failed" in logs.stderr and where in logs.stderr  # ... and a note

    # Ctrl-C in the middle of a build: BuildFailed (interrupted), not Building.
    slow = tmp_path / "slowbuild"
    slow.mkdir()
    (slow / "plugin.yaml").write_text(SLOW_BUILD)
    proc = subprocess.Popen(
        [*PLUGHOST, "dev", str(slow), "--root", str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(),
    )
    wait_until(lambda: state_phase(root, "slowbuild") == "Building", timeout=30, interval=0.05)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "never retrieved" not in output, output
    data = cli("info", "slowbuild", "--json", root=root).ok().json()
    assert data["phase"] == "BuildFailed", data
    assert "interrupted" in data["lastError"]


# --------------------------------------------------------------------------- with a host
def test_dev_follow_shows_errors_and_reloads_and_ctrl_c_leaves_it_installed(
    host: Host, tmp_path: Path
) -> None:
    source = python_source(tmp_path, "follow")
    log = tmp_path / "follow.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*PLUGHOST, "dev", str(source), "--follow", "--root", str(host.root)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(COLUMNS="1000"),  # no line wrapped, whatever the temp path
        )
    try:
        wait_until(
            lambda: "each save rebuilds" in log.read_text(),
            timeout=60,
            message=lambda: f"the dev install:\n{log.read_text()}",
        )
        assert re.search(r"dev install of follow .*: Running, pid \d+", log.read_text())
        good, line = break_syntax(source / "plugin.py")
        failure = wait_until(
            lambda: re.search(rf"plugin\.py:{line}:\d+: SyntaxError: .+", log.read_text()),
            timeout=30,
            message=lambda: f"the build error:\n{log.read_text()}",
        )
        text = log.read_text()
        assert re.search(r"follow build failed after [\d.]+ m?s", text), text
        assert "the last good build keeps running" in text
        assert api_plugin(host, "follow")["phase"] == "Running"
        info = cli("info", "follow", root=host.root).ok().stdout
        assert failure.group(0).split(": SyntaxError")[0] in info  # info shows the last build
        (source / "plugin.py").write_text(good)
        wait_until(
            lambda: "follow rebuilt" in log.read_text(),
            timeout=30,
            message=lambda: f"the reload after the fix:\n{log.read_text()}",
        )
        assert re.search(
            r"rebuilt \(build [\d.]+ m?s, [\d.]+ m?s in all\): Running", log.read_text()
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "stopped following; follow stays installed" in text
    after = api_plugin(host, "follow")
    assert (after["phase"], after["devMode"], after["lastBuild"]["ok"]) == ("Running", True, True)
    assert after["pid"]


def test_a_traceback_is_logged_as_errors_line_by_line(host: Host, tmp_path: Path) -> None:
    source = python_source(tmp_path, "tbplug")
    plugin = source / "plugin.py"
    text = plugin.read_text()
    start = '    logging.info("tbplug starting")\n'
    assert start in text
    plugin.write_text(
        text.replace(
            start,
            start + "    try:\n        1 / 0\n    except ZeroDivisionError:\n"
            '        logging.exception("startup check failed")\n',
        )
    )
    cli("dev", source, root=host.root).ok()

    def traceback_lines() -> list[dict[str, Any]]:
        out = cli("logs", "tbplug", "--json", "-n", "500", root=host.root).ok().stdout
        entries = [json.loads(line) for line in out.splitlines()]
        starts = [i for i, e in enumerate(entries) if "startup check failed" in e["message"]]
        ends = [i for i, e in enumerate(entries) if e["message"].startswith("ZeroDivisionError")]
        return entries[starts[0] : ends[0] + 1] if starts and ends else []

    lines = wait_until(traceback_lines, timeout=30, message="the traceback in the log")
    assert lines[1]["message"] == "Traceback (most recent call last):"
    assert any(e["message"].lstrip().startswith("File ") for e in lines)
    assert {e["level"] for e in lines} == {"error"}, lines
    errors = cli("logs", "tbplug", "--level", "error", "-n", "500", root=host.root).ok().stdout
    assert "ZeroDivisionError: division by zero" in errors and 'File "' in errors
    cli("uninstall", "tbplug", "--yes", root=host.root).ok()


# --------------------------------------------------------------------------- pack
def test_pack_json_gives_build_errors_as_a_list(tmp_path: Path) -> None:
    source = tmp_path / "badpack"
    source.mkdir()
    (source / "plugin.yaml").write_text(
        "id: badpack\nversion: 0.1.0\ncapabilities: [exec]\ndev:\n"
        "  build: \"echo 'main.go:12:5: undefined: fooBar' >&2; "
        "echo 'pkg/x.go:3:1: syntax error: unexpected }'; exit 1\"\n"
        "  output: build/bin/plugin\n"
    )
    result = cli("pack", source, "-o", tmp_path / "out.tar.gz", "--json")
    assert result.returncode == 1
    error = result.json()["error"]
    assert error["type"] == "plugin_build_failed" and error["pluginID"] == "badpack"
    assert error["errors"] == [
        {"file": "main.go", "line": 12, "column": 5, "message": "undefined: fooBar"},
        {"file": "pkg/x.go", "line": 3, "column": 1, "message": "syntax error: unexpected }"},
    ]
    text = cli("pack", source, "-o", tmp_path / "out.tar.gz")
    assert text.returncode == 1 and "main.go:12:5: undefined: fooBar" in text.stderr
