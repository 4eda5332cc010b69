"""The command line's basics, driven as real processes.

``--version``; flags without a type and one upper-case metavar style in every
``--help``; plugin ids completed by the shell from the root's installed plugins;
``--json`` on every command; ``plughost --root R ui`` serving R's host; ``run``
exiting at once on SIGTERM, also while a plugin is still starting; and the
commands that go through the running host importing none of the host's heavy
modules. How fast the commands are is measured by ``python -m bench cli``, not here.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import typer.main
from cli_helpers import (
    PLUGHOST,
    Host,
    assert_nothing_running,
    clean_env,
    cli,
    example_package,
    new_root,
    socket_of,
)
from dashboard_client import page_token
from waiting import wait_until

import plughost
from plughost.cli import app
from plughost.cli._common import complete_plugin_id
from plughost.service.dashboard.serve import SESSION_HEADER

pytestmark = pytest.mark.timeout(180)


def _command_paths() -> list[tuple[str, ...]]:
    """Every command of the app, as the words that run it (``("registry", "serve")``)."""
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*path, name))
        else:
            found.append(path)

    walk(typer.main.get_command(app), ())
    return sorted(found)


COMMANDS = _command_paths()
GROUPS = sorted({path[:1] for path in COMMANDS if len(path) > 1})
# Typer's type labels; the help shows metavars (ID, DIR, SECONDS ...) instead.
TYPE_LABEL = re.compile(r"<(bool|str|path|file|directory|int|float|int range|float range)>")


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """``plughost run --no-examples`` on a root holding only ``hello``."""
    tmp = tmp_path_factory.mktemp("basics")
    root = new_root(tmp / "root")
    cli("install", example_package(tmp, "hello"), root=root).ok()
    running = Host(root, "--no-examples")
    try:
        yield running
    finally:
        running.stop()


# --------------------------------------------------------------------------- version, help
def test_version() -> None:
    assert cli("--version").ok().stdout == f"plughost {plughost.__version__}\n"
    assert cli("version").ok().stdout.strip() == plughost.__version__
    assert cli("version", "--json").ok().json() == {"version": plughost.__version__}


@pytest.mark.parametrize("path", [(), *GROUPS, *COMMANDS], ids=lambda p: " ".join(p) or "app")
def test_help_shows_flags_without_a_type_and_upper_case_metavars(path: tuple[str, ...]) -> None:
    text = cli(*path, "--help").ok().stdout
    assert "Usage: plughost" in text
    assert not TYPE_LABEL.findall(text), text  # no "<bool>" beside --json, no "<path>" ...
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    for name in re.findall(r"[{\[]([^{}\[\]]+)[}\]]", usage):
        assert name == name.upper(), f"metavar {name!r} in: {usage}"


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_takes_json(path: tuple[str, ...]) -> None:
    assert "--json" in cli(*path, "--help").ok().stdout


def test_json_output_of_the_commands_through_the_host(host: Host) -> None:
    listed = cli("list", "--json", root=host.root).ok().json()
    assert [p["id"] for p in listed] == ["hello"]
    assert cli("info", "hello", "--json", root=host.root).ok().json()["phase"] == "Running"
    lines = cli("logs", "hello", "-n", "5", "--json", root=host.root).ok().stdout.splitlines()
    assert lines and all(json.loads(line)["message"] for line in lines)
    missing = cli("info", "nope", "--json", root=host.root)
    assert missing.returncode == 1
    error = missing.json()["error"]
    assert "'nope'" in error["detail"] and error["suggestions"]


# --------------------------------------------------------------------------- completion
def _complete(root: Path, words: str, env_root: bool = False) -> list[str]:
    """What bash completion offers for the last word of ``words`` (as the shell asks)."""
    env = clean_env(_PLUGHOST_COMPLETE="complete_bash", COMP_WORDS=words)
    env["COMP_CWORD"] = str(len(words.split()) - (0 if words.endswith(" ") else 1))
    if env_root:
        env["PLUGHOST_HOME"] = str(root)
    result = cli(env=env)
    assert result.returncode == 0, result.out
    return result.stdout.split()


def _id_commands() -> list[tuple[str, ...]]:
    """The commands whose first argument is a plugin ID."""
    found = []
    for path in COMMANDS:
        command: Any = typer.main.get_command(app)
        for word in path:
            command = command.commands[word]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        if arguments and arguments[0].metavar == "ID":
            found.append(path)
    return found


@pytest.fixture(scope="module")
def plugins_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_root(tmp_path_factory.mktemp("complete") / "root")
    for name in ("alpha", "alpine", "beta"):
        (root / "plugins" / name).mkdir(parents=True)
        (root / "plugins" / name / "plugin.yaml").write_text(f"id: {name}\nversion: 1.0.0\n")
    (root / "plugins" / ".staging-x").mkdir()  # an install in progress is no plugin
    (root / "plugins" / "nometa").mkdir()  # nor a directory without plugin.yaml
    return root


@pytest.mark.parametrize("path", _id_commands(), ids=" ".join)
def test_every_id_argument_completes_installed_ids(
    plugins_root: Path, path: tuple[str, ...]
) -> None:
    assert _complete(plugins_root, f"plughost --root {plugins_root} {' '.join(path)} al") == [
        "alpha",
        "alpine",
    ]


def test_completion_reads_the_root_of_any_option_and_starts_nothing(
    plugins_root: Path, tmp_path: Path
) -> None:
    root = plugins_root
    assert _complete(root, f"plughost logs --root {root} ") == ["alpha", "alpine", "beta"]
    assert _complete(root, "plughost uninstall b", env_root=True) == ["beta"]
    assert _complete(root, f"plughost --root {root} info x") == []
    assert not socket_of(root).exists() and not (root / "host.lock").exists()

    # what the shell calls, directly: the root from the command, else from around it
    outer = SimpleNamespace(params={"root": root}, parent=None)
    ctx: Any = SimpleNamespace(params={}, parent=outer)
    assert complete_plugin_id(ctx, "alph") == ["alpha"]
    nowhere: Any = SimpleNamespace(params={"root": tmp_path / "none"}, parent=None)
    assert complete_plugin_id(nowhere, "") == []


# --------------------------------------------------------------------------- ui
def test_ui_serves_the_host_of_the_global_root(host: Host) -> None:
    # --root before the command, no --open: nothing opens a browser
    with subprocess.Popen(
        [*PLUGHOST, "--root", str(host.root), "ui", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            assert ready, "plughost ui printed no sign-in link"
            link = json.loads(proc.stdout.readline())
            assert link["root"] == str(host.root)
            assert link["socket"] == str(socket_of(host.root))
            with httpx.Client(follow_redirects=True, timeout=30) as browser:
                signed = browser.get(link["url"])
                assert signed.status_code == 200  # signed in
                session = {SESSION_HEADER: page_token(signed.history[0].headers["location"])}
                base = link["url"].split("/ui/")[0]
                plugins = browser.get(f"{base}/v1/plugins", headers=session).json()
                assert [p["id"] for p in plugins] == ["hello"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_ui_without_a_host_names_the_root(tmp_path: Path) -> None:
    root = new_root(tmp_path / "idle")
    result = cli("--root", root, "ui")
    assert result.returncode == 1
    assert str(socket_of(root)) in result.stderr
    assert f"plughost run --root {root}" in result.stderr


# --------------------------------------------------------------------------- exit
def test_run_exits_at_once_on_sigterm(tmp_path: Path) -> None:
    running = Host(new_root(tmp_path / "root"), "--no-examples")
    started = time.monotonic()
    running.proc.send_signal(signal.SIGTERM)
    running.proc.wait(30)
    took = time.monotonic() - started
    output = running.stop()
    assert "host stopped" in output
    # Stopping the API and an empty manager takes ~0.2 s; nothing is waited for after that.
    assert took < 1.5, f"plughost run took {took:.2f} s to exit:\n{output}"


def test_run_stops_while_a_plugin_is_still_starting(tmp_path: Path) -> None:
    slow_ms = 8000
    root = new_root(
        tmp_path / "root", f'start_timeout = 30.0\n\n[extra_env]\nSLOWSTART_MS = "{slow_ms}"\n'
    )
    cli("install", example_package(tmp_path, "slowstart"), root=root).ok()
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*PLUGHOST, "run", "--root", str(root), "--no-examples"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
        )
        try:
            wait_until(
                lambda: "slowstart Validating → Starting" in log.read_text(),
                timeout=60,
                interval=0.05,
                message=lambda: f"slowstart to be starting:\n{log.read_text()}",
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log.read_text()
    assert proc.returncode == 0, output
    # Before: the host waited for the plugin's whole start (8 s) before stopping it.
    assert took < slow_ms / 1000 / 2, f"plughost run took {took:.2f} s to stop:\n{output}"
    assert "host stopped; no plugin process left running" in output
    assert_nothing_running(root)


# --------------------------------------------------------------------------- light imports
HEAVY = (
    "asyncio",
    "cryptography",
    "fastapi",
    "grpc",
    "httpx",
    "plughost.host.manager",
    "plughost.records",
    "pydantic",
    # not "ssl": the service client speaks HTTP with http.client, which imports it (accepted)
    "starlette",
    "uvicorn",
    "watchfiles",
)
_REPORT_MODULES = f"""
import atexit, sys
heavy = {HEAVY!r}
atexit.register(lambda: print("HEAVY=" + ",".join(m for m in heavy if m in sys.modules)))
sys.argv = ["plughost", *sys.argv[1:]]
from plughost.cli import main
main()
"""


@pytest.mark.parametrize(
    "args", [("list",), ("info", "hello"), ("logs", "hello", "-n", "20")], ids=lambda a: a[0]
)
def test_commands_through_the_host_import_nothing_heavy(host: Host, args: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _REPORT_MODULES, *args, "--root", str(host.root)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == "HEAVY=", result.stdout


def test_the_cli_benchmark_measures_against_a_host(
    host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m bench cli``'s machinery, one run of each case (the figures are not checked)."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    bench_cli = importlib.import_module("bench.cli")
    timings = bench_cli.measure(host.root, runs=1)
    assert set(timings) == {*bench_cli.COMMANDS, *bench_cli.FLOORS}
    summary = bench_cli.summarize(timings)
    assert summary["python -c pass"]["x_python"] == 1.0
    assert all(isinstance(summary[name]["goal_met"], bool) for name in bench_cli.COMMANDS)
    bench_cli.report(summary, 1)
    assert importlib.import_module("bench.__main__").BENCHMARKS["cli"] is bench_cli.main
