"""The ``plughost`` command line, driven as a subprocess.

One host (``plughost run`` on a fresh root, in the background) serves most
tests: it installs the bundled examples from the root's own local registry,
and the commands talk to it through its unix socket. Other tests act on idle
roots directly, restart hosts, or change HOME for ``--profile omniview``.
Nothing is mocked: real roots, real plugin processes, a real registry.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from waiting import wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """``plughost run`` on a fresh root; stopped with SIGTERM at the end (nothing left)."""
    root = new_root(tmp_path_factory.mktemp("cli") / "root")
    running = Host(root)
    pids: list[int] = []
    try:
        yield running
        pids = list(running.plugin_pids().values())
    finally:
        output = running.stop()
    assert "host stopped; no plugin process left running" in output
    assert_nothing_running(root, pids)


def infos(root: Path) -> dict[str, dict[str, Any]]:
    """Installed plugins: from the running host's API (quick), else ``plughost list --json``."""
    if socket_of(root).exists():
        transport = httpx.HTTPTransport(uds=str(socket_of(root)))
        with httpx.Client(transport=transport, base_url="http://plughost") as api:
            return {p["id"]: p for p in api.get("/v1/plugins").json()}
    return {p["id"]: p for p in cli("list", "--json", root=root).ok().json()}


def python_plugin(tmp: Path, name: str) -> Path:
    """``plughost init NAME --lang python`` then ``plughost pack``; the package path."""
    cli("init", name, "--lang", "python", "--dir", tmp).ok()
    out = tmp / f"{name}.tar.gz"
    cli("pack", tmp / name, "-o", out).ok()
    return out


# --------------------------------------------------------------------------- run
def test_run_installs_the_examples_from_the_local_registry(host: Host) -> None:
    plugins = infos(host.root)
    assert {"hello", "slowstart"} <= set(plugins)
    for plugin_id in ("hello", "slowstart"):
        assert plugins[plugin_id]["phase"] == "Running"
        assert plugins[plugin_id]["pid"]
    settings = tomllib.loads((host.root / "plughost.toml").read_text())
    assert settings["marketplace_url"].startswith("http://127.0.0.1:")
    assert len(settings["registry_public_key"]) == 64
    assert settings["extra_env"] == {"SLOWSTART_MS": "200"}  # the test's own keys were kept
    assert (host.root / "registry" / "index.db").is_file()
    output = host.output
    assert "installing example plugin hello" in output
    assert "downloading hello 1.0.0 from the marketplace" in output  # the verified path
    assert "hello Starting → Running" in output
    assert "host running on" in output


def test_list_and_info(host: Host) -> None:
    table = cli("list", root=host.root).ok().stdout
    assert "hello" in table and "Running" in table and "slowstart" in table
    info = cli("info", "hello", root=host.root).ok().stdout
    assert "Greets whoever asks" in info and "Running, pid" in info
    data = cli("info", "hello", "--json", root=host.root).ok().json()
    assert (
        data["id"] == "hello" and data["phase"] == "Running" and data["metadata"]["id"] == "hello"
    )
    # options before the command apply too
    assert cli("--root", host.root, "info", "hello", "--json").ok().json()["id"] == "hello"


def test_errors_print_title_detail_hint_and_exit_1(host: Host, tmp_path: Path) -> None:
    missing = cli("info", "nope", root=host.root)
    assert missing.returncode == 1
    assert "Plugin not found" in missing.stderr
    assert "no plugin with id 'nope'" in missing.stderr
    assert "hint: list installed plugins" in missing.stderr
    as_json = cli("reload", "nope", "--json", root=host.root)
    assert as_json.returncode == 1
    error = as_json.json()["error"]
    assert error["type"] == "plugin_not_found" and error["status"] == 404
    assert error["title"] and error["detail"] and error["suggestions"]
    bad_regex = cli("logs", "hello", "--grep", "(", root=host.root)
    assert bad_regex.returncode == 1 and "Invalid search pattern" in bad_regex.stderr
    bad_profile = cli("list", "--profile", "nonesuch", root=host.root)
    assert bad_profile.returncode == 1 and "Unknown profile" in bad_profile.stderr
    not_a_package = tmp_path / "junk.tar.gz"
    not_a_package.write_text("not gzip")
    junk = cli("install", not_a_package, "--json", root=host.root)
    assert junk.returncode == 1
    assert junk.json()["error"]["type"] in ("plugin_install_failed", "unsafe_archive")


def test_install_packed_path_through_the_service_logs_uninstall(host: Host, tmp_path: Path) -> None:
    package = python_plugin(tmp_path, "pyone")
    installed = cli("install", package, root=host.root).ok()
    assert "installed pyone 0.1.0: Running, pid" in installed.stdout

    last = cli("logs", "pyone", "-n", "1", "--json", root=host.root).ok().stdout.splitlines()
    assert len(last) == 1 and json.loads(last[0])["message"] == "pyone starting"
    grep = cli("logs", "hello", "--grep", "hello plugin", root=host.root).ok().stdout
    assert "hello plugin starting" in grep
    assert cli("logs", "pyone", "--level", "error", root=host.root).ok().stdout == ""

    refused = cli("uninstall", "pyone", root=host.root, input="n\n")
    assert refused.returncode != 0 and "pyone" in infos(host.root)
    cli("uninstall", "pyone", "--yes", root=host.root).ok()
    assert "pyone" not in infos(host.root)
    assert not (host.root / "plugins" / "pyone").exists()


def test_reload_and_retry(host: Host) -> None:
    before = infos(host.root)["hello"]["pid"]
    out = cli("reload", "hello", root=host.root).ok().stdout
    assert "reloaded hello: Running" in out
    after = infos(host.root)["hello"]["pid"]
    assert after and after != before
    retried = cli("retry", "slowstart", "--json", root=host.root).ok().json()
    assert retried["phase"] == "Running"


def test_search_and_show_against_the_local_registry(host: Host) -> None:
    from plughost.registry.index import add_review

    table = cli("search", root=host.root).ok().stdout
    assert "hello" in table and "slowstart" in table and "examples" in table
    found = cli("search", "greets", "--sort", "name", "--json", root=host.root).ok().json()
    assert [p["id"] for p in found] == ["hello"]
    assert found[0]["installed"] is True
    by_category = cli("search", "--category", "examples", "--json", root=host.root).ok().json()
    assert {p["id"] for p in by_category} == {"hello", "slowstart"}
    assert "no plugin matches" in cli("search", "zzzz", root=host.root).ok().stdout
    bad_sort = cli("search", "--sort", "sideways", root=host.root)
    assert bad_sort.returncode == 1 and "Invalid sort" in bad_sort.stderr

    add_review(host.root / "registry", "hello", rating=5, title="Friendly", body="Says hello.")
    shown = cli("show", "hello", root=host.root).ok().stdout
    assert "README" in shown and "Versions" in shown and "1.0.0" in shown
    assert "Friendly" in shown and "Says hello." in shown
    assert "Downloads" in shown and "last 30 days" in shown
    data = cli("show", "hello", "--json", root=host.root).ok().json()
    assert data["plugin"]["readme"] and data["versions"][0]["version"]
    assert data["stats"]["total"] >= 1 and len(data["stats"]["daily"]) == 30
    assert data["reviews"][0]["title"] == "Friendly"
    missing = cli("show", "nope", root=host.root)
    assert missing.returncode == 1 and "Plugin not found" in missing.stderr


def test_update_and_rollback(host: Host, tmp_path: Path) -> None:
    package = example_package(tmp_path, "hello", "1.1.0")
    cli("registry", "publish", package, "--dir", host.root / "registry", "--changelog", "Louder")
    pending = cli("update", root=host.root).ok().stdout
    assert "hello: 1.0.0 → 1.1.0" in pending
    updated = cli("update", "hello", root=host.root).ok().stdout
    assert "updated hello 1.1.0: Running" in updated
    assert infos(host.root)["hello"]["version"] == "1.1.0"
    assert "up to date" in cli("update", "--all", root=host.root).ok().stdout
    assert "up to date" in cli("update", "hello", root=host.root).ok().stdout
    back = cli("rollback", "hello", root=host.root).ok().stdout
    assert "rolled back to hello 1.0.0: Running" in back
    assert infos(host.root)["hello"]["version"] == "1.0.0"


def test_install_by_id_from_the_marketplace(host: Host) -> None:
    cli("uninstall", "slowstart", "--yes", root=host.root).ok()
    info = cli("install", "slowstart@1.0.0", "--json", root=host.root).ok().json()
    assert info["id"] == "slowstart" and info["phase"] == "Running"
    missing = cli("install", "nope", root=host.root)
    assert missing.returncode == 1 and "Plugin not found" in missing.stderr


def test_dev_install_through_the_service(host: Host, tmp_path: Path) -> None:
    cli("init", "devpy", "--lang", "python", "--dir", tmp_path).ok()
    out = cli("dev", tmp_path / "devpy", root=host.root).ok().stdout
    assert "dev install of devpy" in out and "Running" in out
    info = infos(host.root)["devpy"]
    assert info["devMode"] is True and info["phase"] == "Running"
    cli("uninstall", "devpy", "--yes", root=host.root).ok()


def test_doctor_with_a_running_host(host: Host) -> None:
    report = cli("doctor", "--json", root=host.root)
    data = report.json()
    checks = {c["name"]: c for c in data["checks"]}
    assert report.returncode == 0 and data["ok"] is True, data
    assert "running host" in checks["lock"]["detail"]
    assert checks["marketplace"]["status"] == "ok"
    assert checks["registry key"]["status"] == "ok"
    assert checks["go"]["status"] in ("ok", "warn")
    text = cli("doctor", root=host.root).ok().stdout
    assert "ok      root" in text and "no problems" in text


def test_second_host_on_the_same_root_is_refused(host: Host) -> None:
    second = cli("run", "--no-examples", "--exit-after", "1", root=host.root)
    assert second.returncode == 1
    assert "locked by another plughost process" in second.stderr


@pytest.mark.interop
def test_init_go_builds_installs_and_runs(host: Host, tmp_path: Path, go: str) -> None:
    env = clean_env()  # the go fixture put its directory first on PATH
    cli("init", "goplug", "--lang", "go", "--dir", tmp_path, env=env).ok()
    package = tmp_path / "goplug.tar.gz"
    cli("pack", tmp_path / "goplug", "-o", package, env=env, timeout=180).ok()
    installed = cli("install", package, root=host.root, env=env).ok()
    assert "installed goplug 0.1.0: Running" in installed.stdout
    wait_until(
        lambda: "goplug starting" in cli("logs", "goplug", root=host.root).stdout,
        timeout=10,
        interval=0.2,
        message=lambda: (
            "'goplug starting' in its log:\n" + cli("logs", "goplug", root=host.root).out
        ),
    )
    cli("uninstall", "goplug", "--yes", root=host.root).ok()


# --------------------------------------------------------------------------- idle roots
def test_offline_commands_and_enable_disable_persist_across_restarts(tmp_path: Path) -> None:
    root = new_root(tmp_path / "root")
    package = python_plugin(tmp_path, "solo")
    # No host: the CLI works on the root itself and starts nothing.
    out = cli("install", package, root=root).ok().stdout
    assert "not started: no host is running this root" in out
    assert infos(root)["solo"]["phase"] == "Installed"
    assert "disabled solo" in cli("disable", "solo", root=root).ok().stdout
    offline_reload = cli("reload", "solo", root=root)
    assert offline_reload.returncode == 1 and "no host is running root" in offline_reload.stderr

    host = Host(root, "--no-examples")
    try:
        solo = infos(root)["solo"]
        assert solo["enabled"] is False and solo["phase"] == "Stopped" and not solo["pid"]
        assert "enabled solo: Running" in cli("enable", "solo", root=root).ok().stdout
        pids = list(host.plugin_pids().values())
        assert len(pids) == 1
    finally:
        host.stop()
    assert_nothing_running(root, pids)

    host = Host(root, "--no-examples")  # enabled was persisted: it starts again
    followers = []
    try:
        assert infos(root)["solo"]["phase"] == "Running"
        # clients following the host's streams end when it stops, and do not delay it
        for args in (["events"], ["logs", "solo", "-f", "-n", "0"]):
            followers.append(
                subprocess.Popen(
                    [*PLUGHOST, *args, "--root", str(root)],
                    env=clean_env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        cli("disable", "solo", root=root).ok()
        assert infos(root)["solo"]["phase"] == "Stopped"
        assert cli("logs", "solo", "-n", "1", root=root).ok().stdout.strip()
    finally:
        started = time.monotonic()
        host.stop()
        stop_time = time.monotonic() - started
    assert_nothing_running(root)
    assert stop_time < 10, stop_time
    for follower in followers:
        output, _ = follower.communicate(timeout=15)
        assert follower.returncode == 0, output
    after = infos(root)["solo"]
    assert after["enabled"] is False
    # offline logs come from logs/solo.log
    offline = cli("logs", "solo", "--grep", "starting", "--json", root=root).ok().stdout
    assert [json.loads(line)["message"] for line in offline.splitlines()][-1] == "solo starting"
    cli("uninstall", "solo", "--yes", root=root).ok()
    assert infos(root) == {}


def test_pack_keygen_sign_and_require_signature(tmp_path: Path) -> None:
    root = new_root(tmp_path / "root")
    package = python_plugin(tmp_path, "signed")
    key = cli("keygen", "-o", tmp_path / "k.pem").ok().stdout.strip()
    assert len(key) == 64 and (tmp_path / "k.pem").stat().st_mode & 0o077 == 0
    again = cli("keygen", "-o", tmp_path / "k.pem")
    assert again.returncode == 1 and "already exists" in again.stderr
    other = cli("keygen", "-o", tmp_path / "other.pem", "--json").ok().json()["public_key_hex"]

    unsigned = cli("install", package, "--require-signature", "--public-key", key, root=root)
    assert unsigned.returncode == 1 and "has no signature file" in unsigned.stderr
    signed = cli("sign", package, "--key", tmp_path / "k.pem", "--json").ok().json()
    assert signed["public_key_hex"] == key
    assert Path(f"{package}.sig").is_file() and Path(f"{package}.manifest.json").is_file()
    manifest = json.loads(Path(f"{package}.manifest.json").read_text())
    assert manifest["manifest"]["id"] == "signed" and manifest["manifest"]["sha256"]

    wrong = cli("install", package, "--require-signature", "--public-key", other, root=root)
    assert wrong.returncode == 1 and "unknown key" in wrong.stderr
    assert "signed" not in infos(root)
    cli("install", package, "--require-signature", "--public-key", key, root=root).ok()
    assert "signed" in infos(root)


def test_doctor_reports_problems_with_fixes(tmp_path: Path) -> None:
    root = new_root(tmp_path / "root")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        from plughost.pids import process_identity

        entry = process_identity(sleeper.pid)
        assert entry is not None
        (root / "plugin_pids.json").write_text(json.dumps({"ghost": entry.model_dump()}))
        (root / "plughost.toml").write_text('marketplace_url = "http://127.0.0.1:9"\n')
        report = cli("doctor", root=root)
        assert report.returncode == 1
        assert f"ghost (pid {sleeper.pid})" in report.stdout
        assert "problem stale processes" in report.stdout.replace("  ", " ")
        assert "unreachable" in report.stdout and "fix:" in report.stdout
        assert "registry_public_key is not set" in report.stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    (root / "plughost.toml").write_text("not = [valid\n")
    broken = cli("doctor", "--json", root=root)
    checks = {c["name"]: c for c in broken.json()["checks"]}
    assert broken.returncode == 1 and checks["settings"]["status"] == "problem"


def test_profile_omniview_selects_the_omniview_root(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plugin = home / ".omniview" / "plugins" / "omni"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples" / "hello", plugin
    )
    (plugin / "plugin.yaml").write_text(
        (plugin / "plugin.yaml").read_text().replace("id: hello", "id: omni")
    )
    env = clean_env(HOME=str(home))
    listed = cli("list", "--profile", "omniview", "--json", env=env).ok().json()
    assert [p["id"] for p in listed] == ["omni"]
    assert [p["id"] for p in cli("--profile", "omniview", "list", "--json", env=env).json()] == [
        "omni"
    ]
    doctor = cli("doctor", "--profile", "omniview", "--json", env=env).json()
    root_check = next(c for c in doctor["checks"] if c["name"] == "root")
    assert str(home / ".omniview") in root_check["detail"]
    # PLUGHOST_HOME beats the profile's default root; --root beats both
    elsewhere = new_root(tmp_path / "elsewhere")
    env_home = clean_env(HOME=str(home), PLUGHOST_HOME=str(elsewhere))
    assert cli("list", "--profile", "omniview", "--json", env=env_home).ok().json() == []


def test_version_help_and_completion() -> None:
    assert cli("version").ok().stdout.strip()
    help_text = cli("--help").ok().stdout
    for command in ("run", "install", "search", "doctor", "registry", "init"):
        assert command in help_text
    assert "--install-completion" in help_text
    assert "serve" in cli("registry", "--help").ok().stdout


def test_service_socket_is_private(host: Host) -> None:
    assert socket_of(host.root).stat().st_mode & 0o777 == 0o600
