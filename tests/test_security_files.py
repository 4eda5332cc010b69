"""Files, modes and secrets on disk: what another user of the machine may read, change or stall.

A real ``plughost run`` under ``umask 000``, roots that other users may write or
that cannot be written at all (a read-only bind mount, a directory of another
user), ``plughost doctor`` on a root left open, a corrupt state file under a
real manager, and log searches through the real local service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from cli_helpers import PLUGHOST, Host, clean_env, cli
from filemodes import mode, umask
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    root_fixture,  # noqa: F401  (the `root` fixture)
)
from toolchains import unavailable

from plughost.host.manager import PluginManager
from plughost.phases import Phase
from plughost.rootcheck import RootUnsafeError
from plughost.service.api import LocalService
from plughost.settings import SettingsProvider
from plughost.store import STATE_FILE, _parse

NOBODY = 65534


# -- 1. what the host creates is private, whatever the umask --------------------------------
def test_a_host_started_under_umask_000_keeps_everything_to_its_user(tmp_path: Path) -> None:
    root = tmp_path / "r"  # made by the host: a fresh root, with the examples installed
    with umask(0):
        host = Host(root)  # plughost run inherits the umask
    try:
        directories = ["", "plugins", "logs", "run", "registry"]
        files = [
            "plughost.toml",  # written by the host: the local marketplace's URL
            STATE_FILE,
            f"{STATE_FILE}.bak",
            "plugin_pids.json",
            "host.lock",
            "logs/hello.log",
            "registry/registry.key",
        ]
        modes = {name: oct(mode(root / name)) for name in directories + files}
        assert modes == {
            **{name: "0o700" for name in directories},
            **{name: "0o600" for name in files},
        }
        doctor = cli("doctor", "--json", root=root).json()
        permissions = [c for c in doctor["checks"] if c["name"] == "permissions"]
        assert [c["status"] for c in permissions] == ["ok"], permissions
    finally:
        host.stop()


async def test_files_an_older_host_left_open_are_tightened_at_start(
    managers: Managers, root: Path
) -> None:
    (root / "logs").mkdir()
    for directory in (root, root / "plugins", root / "logs"):
        directory.chmod(0o755)
    toml = root / "plughost.toml"
    toml.write_text('service_token = "s3cr3t-token"\n')
    old_log = root / "logs" / "gone.log"
    old_log.write_text("{}\n")
    for path in (toml, old_log):
        path.chmod(0o644)
    manager = managers.new()
    await manager.initialize()
    assert (mode(toml), mode(old_log)) == (0o600, 0o600)
    for directory in (root, root / "plugins", root / "logs"):  # others may pass, no more
        assert mode(directory) == 0o711
    assert mode(root / "run") == 0o700  # new


# -- 2. a root others may write is refused at start, and doctor says so ----------------------
def chown_to_nobody(path: Path) -> None:
    if os.geteuid() != 0:
        unavailable("giving a directory to another user needs root", "run the tests as root")
    os.chown(path, NOBODY, NOBODY)


def open_up(root: Path, case: str) -> Path:
    """Leave ``root`` open to other users as ``case`` says; the directory that is open."""
    culprit = root / "plugins" if case.startswith("plugins") else root
    if case.endswith("another-user"):
        chown_to_nobody(culprit)
    else:
        culprit.chmod(0o770 if case.endswith("group-writable") else 0o777)
    return culprit


@pytest.mark.parametrize(
    "case", ["root-0777", "root-group-writable", "plugins-0777", "plugins-of-another-user"]
)
async def test_a_root_other_users_may_change_is_refused(
    managers: Managers, root: Path, make_plugin: Callable[..., Path], case: str
) -> None:
    make_plugin(root / "plugins", "p")
    root.chmod(0o700)
    culprit = open_up(root, case)
    manager = managers.new()
    with pytest.raises(RootUnsafeError) as info:
        await manager.initialize()
    error = info.value
    assert (error.type, error.status) == ("root_unsafe", 403)
    assert f"{culprit} " in error.detail and f"mode {mode(culprit):o}" in error.detail
    owner = "nobody" if "another-user" in case else pwd.getpwuid(os.geteuid()).pw_name
    assert f"owner {owner})" in error.detail
    fix = "sudo chown" if "another-user" in case else f"chmod 700 {culprit}"
    assert fix in error.suggestions[0]
    assert not (root / "host.lock").exists() and not (root / STATE_FILE).exists()  # untouched


def test_plughost_run_on_an_open_root_says_what_and_how_to_fix_it(tmp_path: Path) -> None:
    root = tmp_path / "open"
    (root / "plugins").mkdir(parents=True)
    root.chmod(0o777)
    result = cli("run", "--no-examples", root=root, timeout=60)
    assert result.returncode == 1, result.out
    out = " ".join(result.out.split())  # the terminal wraps long lines
    assert "Root open to other users" in out
    assert f"{root} is writable by group and others (mode 777" in out
    assert f"chmod 700 {root}" in out
    assert "System error" not in out


def test_doctor_names_every_open_entry_with_the_command_that_closes_it(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for directory in ("plugins", "logs", "registry"):
        (root / directory).mkdir(parents=True)
        (root / directory).chmod(0o755)
    files = {
        "plughost.toml": 'service_token = "s3cr3t"\n[registry_tokens]\nmain = "t0k"\n',
        STATE_FILE: "[]\n",
        "logs/p.log": "{}\n",
        "registry/registry.key": "-----BEGIN PRIVATE KEY-----\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
        (root / name).chmod(0o644)
    root.chmod(0o777)

    def permissions() -> dict[str, dict[str, str]]:
        checks = json.loads(cli("doctor", "--json", root=root).stdout)["checks"]
        return {c["detail"].split(" ")[0]: c for c in checks if c["name"] == "permissions"}

    found = permissions()
    expected = {
        str(root): "problem",
        str(root / "plugins"): "warn",
        str(root / "logs"): "problem",
        str(root / "registry"): "problem",
        str(root / "plughost.toml"): "problem",
        str(root / STATE_FILE): "warn",
        str(root / "logs/p.log"): "problem",
        str(root / "registry/registry.key"): "problem",
    }
    assert {path: check["status"] for path, check in found.items()} == expected
    assert "the host refuses to start" in found[str(root)]["detail"]
    assert (
        "holds registry_tokens.main, service_token" in found[str(root / "plughost.toml")]["detail"]
    )
    assert "readable by group and others (mode 644" in found[str(root / "logs/p.log")]["detail"]
    for check in found.values():  # each fix, run as given, closes what it names
        subprocess.run(check["fix"], shell=True, check=True)
    assert [c["status"] for c in permissions().values()] == ["ok"]


# -- 4. the last good state survives a corrupt state file --------------------------------------
async def test_a_disabled_plugin_stays_disabled_when_the_state_file_is_corrupt(
    managers: Managers, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install_example(root, "hello")
    first = managers.new()
    await first.initialize()
    await first.set_enabled("hello", False)
    await first.shutdown()
    backup = root / f"{STATE_FILE}.bak"
    assert [r.enabled for r in _parse(backup.read_bytes())] == [False]
    (root / STATE_FILE).write_text('[{"id": "hello", "enab')  # a torn write, a bad disk ...
    second = managers.new()
    with caplog.at_level(logging.WARNING, logger="plughost.store"):
        await second.initialize()
    info = second.get_plugin("hello")
    assert (info.enabled, info.phase) == (False, Phase.STOPPED)
    assert f"replaced by the last good state, {backup.name}" in caplog.text
    assert any(p.name.startswith(f"{STATE_FILE}.corrupt-") for p in root.iterdir())


# -- 5. a root that cannot be written says so, and what to do ----------------------------------
def run_plughost_in(prefix: list[str], root: Path) -> str:
    """``plughost run`` on ``root`` behind ``prefix`` (a namespace, another user); its output."""
    argv = [*prefix, *PLUGHOST, "run", "--root", str(root), "--no-examples"]
    result = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    return " ".join((result.stdout + result.stderr).split())


def test_a_read_only_root_says_it_is_read_only(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir(mode=0o700)
    # A bind mount of the root onto itself, read-only, in a mount namespace of its own:
    # it goes away with the process, whatever happens to the test.
    mount = f"mount --bind {root} {root} && mount -o remount,bind,ro {root}"
    namespace = ["unshare", "--mount", "--propagation", "private", "sh", "-c", f'{mount} && exec "$@"', "sh"]  # fmt: skip
    probe = subprocess.run([*namespace, "touch", str(root / "x")], capture_output=True, text=True)
    if "Read-only file system" not in probe.stderr:
        unavailable(f"no read-only bind mount here ({probe.stderr.strip()})", "run as root")
    out = run_plughost_in(namespace, root)
    assert f"{root} is on a read-only file system" in out
    assert f"mount -o remount,rw {root}" in out and "--root DIR" in out
    assert "Errno" not in out and "System error" not in out


def test_a_root_this_user_may_not_write_says_whose_it_is(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        unavailable("running plughost as another user needs root and setpriv", "run as root")
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    if subprocess.run([*as_nobody, *PLUGHOST, "--version"], capture_output=True).returncode:
        unavailable("user nobody cannot run this checkout's plughost", "make it world-readable")
    root = Path(tempfile.mkdtemp(prefix="plughost-theirs-"))  # where nobody may pass, not write
    try:
        root.chmod(0o755)
        out = run_plughost_in(as_nobody, root)
    finally:
        shutil.rmtree(root)
    assert f"{root} is not writable by nobody (uid {NOBODY})" in out
    assert f"sudo chown nobody {root}" in out and "--root DIR" in out
    assert "Errno" not in out and "System error" not in out


# -- 6. log searches: linear time, off the event loop, within a budget ---------------------
@contextlib.asynccontextmanager
async def service_on(root: Path) -> AsyncIterator[tuple[PluginManager, httpx.AsyncClient]]:
    manager = PluginManager(root, settings=SettingsProvider(None), start_plugins=False)
    await manager.initialize()
    service = LocalService(manager)
    await service.start()
    transport = httpx.AsyncHTTPTransport(uds=str(service.socket))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://plughost", timeout=30
        ) as api:
            yield manager, api
    finally:
        await service.stop()
        await manager.shutdown()


async def test_log_searches_never_stall_the_host(
    root: Path, make_plugin: Callable[..., Path]
) -> None:
    make_plugin(root / "plugins", "p")
    logs = "/v1/plugins/p/logs"
    async with service_on(root) as (manager, api):
        dots = "." * 16_000 + "!"  # Python's re needs a second for 22 of these dots
        manager.logs.write("p", dots)
        started = time.monotonic()
        found = await api.get(logs, params={"grep": r"(\.+)+$"})
        assert (found.status_code, found.json()) == (200, [])
        assert time.monotonic() - started < 2.0

        rng = random.Random(7)  # lines that cost even RE2 about 30 ms each for the next pattern
        for _ in range(200):
            manager.logs.write("p", "".join(rng.choices("a-", k=16_000)) + "!")
        search = asyncio.ensure_future(api.get(logs, params={"grep": "(?:a|-)*a(?:a|-){60}!"}))
        answered = 0
        while not search.done():  # the host answers while the search runs
            asked = time.monotonic()
            assert (await api.get("/v1/health")).status_code == 200
            assert time.monotonic() - asked < 1.0
            answered += 1
        response = await search
        assert answered >= 3
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["errorType"] == "log_search_timeout"
        assert "took more than 2 s" in problem["detail"] and "of 201 lines" in problem["detail"]

        invalid = await api.get(logs, params={"grep": "(unclosed"})
        assert invalid.status_code == 400 and "missing )" in invalid.json()["detail"]
        too_long = await api.get(logs, params={"grep": "x" * 1001})
        assert too_long.status_code == 400 and "more than 1000" in too_long.json()["detail"]
