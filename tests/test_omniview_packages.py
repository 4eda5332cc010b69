"""Omniview's own packages, ``install DIR`` and ``doctor`` under the omniview profile.

Omniview packs a plugin with ``tar -czf NAME.tar.gz -C .package .``: every entry
starts with ``./`` (the first is ``./`` itself), plugin.yaml at the top,
``bin/plugin``, ``assets/``. Here such a package, holding a plugin built with the
real SDK (omnihello, tests/goplugins/omnisdk), is installed with the command line
from the file, from a directory, and by id from ``plughost registry`` (published
with ``registry publish``, served with ``registry serve``), and runs under
``plughost run --profile omniview`` on ``$HOME/.omniview`` of a temporary HOME,
where the SDK reads its plugin.yaml. Nothing is mocked.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import EXAMPLES, FAST_TOML, PLUGHOST, Host, clean_env, cli
from gobuild import REPO, go_plugins
from waiting import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="Linux process semantics"
)

LIFECYCLE = "omniview.sdk.lifecycle.v1.PluginLifecycle"
GET_INFO = {"pluginId": "omnihello", "version": "0.1.0", "sdkProtocolVersion": 1}


@pytest.fixture(scope="module")
def sdk_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_plugins(tmp_path_factory, ("omnihello",))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / ".omniview").mkdir(parents=True)
    return home


def omniview_package(sdk_build: Path, work: Path) -> Path:
    """omnihello packed the way Omniview packs a plugin: ``tar -czf … -C .package .``."""
    tree = work / ".package"
    (tree / "bin").mkdir(parents=True)
    (tree / "assets").mkdir()
    shutil.copy(sdk_build / "omnihello" / "plugin.yaml", tree / "plugin.yaml")
    shutil.copy2(sdk_build / "omnihello" / "bin" / "plugin", tree / "bin" / "plugin")
    (tree / "assets" / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    package = work / "omnihello.tar.gz"
    subprocess.run(["tar", "-czf", str(package), "-C", str(tree), "."], check=True)
    listing = subprocess.run(
        ["tar", "-tzf", str(package)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing[0] == "./" and "./plugin.yaml" in listing and "./bin/plugin" in listing
    return package


def omniview(*args: str | Path, env: dict[str, str], cwd: Path | None = None) -> Any:
    """``plughost --profile omniview ARGS`` (the global option, before the command)."""
    return cli("--profile", "omniview", *args, env=env, cwd=cwd)


def get_info(env: dict[str, str]) -> Any:
    answer = omniview("call", "omnihello", f"{LIFECYCLE}/GetInfo", "--json", env=env).ok().json()
    return answer.get("response", answer)


def phases(host: Host) -> dict[str, str]:
    with host.api() as client:
        return {p["id"]: p["phase"] for p in client.get("/v1/plugins").json()}


def wait_running(host: Host, plugin_id: str) -> None:
    wait_until(
        lambda: phases(host).get(plugin_id) == "Running",
        timeout=60,
        interval=0.05,
        message=lambda: f"{plugin_id} Running: {phases(host)}\n{host.output}",
    )


@contextlib.contextmanager
def omniview_host(home: Path, env: dict[str, str]) -> Iterator[Host]:
    host = Host(home / ".omniview", "--profile", "omniview", "--no-examples", env=env)
    try:
        yield host
    finally:
        output = host.stop()
    assert "no plugin process left running" in output


def installed_files(home: Path) -> dict[str, bool]:
    plugin = home / ".omniview" / "plugins" / "omnihello"
    return {
        "plugin.yaml": (plugin / "plugin.yaml").is_file(),
        "bin/plugin": (plugin / "bin" / "plugin").stat().st_mode & 0o111 != 0,
        "assets/icon.svg": (plugin / "assets" / "icon.svg").is_file(),
    }


# -- point 4: the original's packages ------------------------------------------------------------
@pytest.mark.interop
@pytest.mark.usefixtures("go")
def test_omniview_package_from_a_file_and_a_directory_runs_under_the_profile(
    sdk_build: Path, home: Path, tmp_path: Path
) -> None:
    package = omniview_package(sdk_build, tmp_path)
    env = clean_env(HOME=str(home))
    (home / ".omniview" / "plughost.toml").write_text(FAST_TOML)

    offline = omniview("install", package, env=env).ok()
    assert "installed omnihello 0.1.0" in offline.stdout and "not started" in offline.stdout
    assert installed_files(home) == dict.fromkeys(installed_files(home), True)

    with omniview_host(home, env) as host:
        wait_running(host, "omnihello")
        assert get_info(env) == GET_INFO
        # The tree itself: packed as 'plughost pack' packs it, then installed (an update).
        again = omniview("install", ".", env=env, cwd=tmp_path / ".package").ok()
        assert "packed" in again.stderr and "omnihello-0.1.0.tar.gz" in again.stderr
        assert "installed omnihello 0.1.0: Running" in again.stdout
        assert get_info(env) == GET_INFO
        assert installed_files(home) == dict.fromkeys(installed_files(home), True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def served_registry(directory: Path, env: dict[str, str]) -> Iterator[str]:
    """``plughost registry serve DIR`` in the background; its URL once it answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory.parent / "registry-serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*PLUGHOST, "registry", "serve", str(directory), "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"registry serve exited {proc.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/v1/health", timeout=1).status_code == 200
        return False

    try:
        wait_until(answers, timeout=30, interval=0.05, message="the registry to answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.interop
@pytest.mark.usefixtures("go")
def test_omniview_package_published_served_and_installed_by_id(
    sdk_build: Path, home: Path, tmp_path: Path
) -> None:
    package = omniview_package(sdk_build, tmp_path)
    env = clean_env(HOME=str(home))
    registry = tmp_path / "registry"
    published = cli("registry", "publish", package, "--dir", registry, "--json", env=env)
    record = published.ok().json()
    assert (record["id"], record["version"]) == ("omnihello", "0.1.0")
    assert record["platform"].startswith("linux_")

    with served_registry(registry, env) as url:
        (home / ".omniview" / "plughost.toml").write_text(
            f'marketplace_url = "{url}"\nregistry_public_key = "{record["public_key_hex"]}"\n'
            + FAST_TOML
        )
        listed = omniview("search", "--json", env=env).ok().json()
        assert "omnihello" in json.dumps(listed)
        with omniview_host(home, env) as host:
            installed = omniview("install", "omnihello", env=env).ok()
            assert "installed omnihello 0.1.0: Running" in installed.stdout
            wait_running(host, "omnihello")
            assert get_info(env) == GET_INFO
            assert installed_files(home) == dict.fromkeys(installed_files(home), True)


# -- install DIR ---------------------------------------------------------------------------------
def test_install_a_directory_packs_it_or_names_the_build_commands(tmp_path: Path) -> None:
    root = tmp_path / "root"
    env = clean_env()
    hello = tmp_path / "hello"
    shutil.copytree(EXAMPLES / "hello", hello, ignore=shutil.ignore_patterns("__pycache__"))
    done = cli("install", hello, "--root", root, env=env).ok()
    assert "installed hello 1.0.0" in done.stdout and "packed" in done.stderr
    assert (root / "plugins" / "hello" / "plugin.py").is_file()
    assert not (root / "plugins" / "hello" / "__pycache__").exists()

    gosrc = tmp_path / "gosrc"
    shutil.copytree(REPO / "tests" / "goplugins" / "goplugin", gosrc)
    refused = cli("install", "./gosrc", "--root", root, env=env, cwd=tmp_path)
    assert refused.returncode == 1
    assert "Plugin needs a build" in refused.stderr and "go build" in refused.stderr
    flat = " ".join(refused.stderr.split())
    assert f"plughost pack {gosrc} -o gohello-0.1.0.tar.gz --root {root}" in flat
    assert f"plughost install ./gohello-0.1.0.tar.gz --root {root}" in flat
    assert not (root / "plugins" / "gohello").exists()

    (tmp_path / "empty").mkdir()
    empty = cli("install", "./empty", "--root", root, env=env, cwd=tmp_path)
    assert empty.returncode == 1 and "Not a plugin directory" in empty.stderr
    signed = cli("install", hello, "--require-signature", "--root", root, env=env)
    assert signed.returncode == 1 and "no signature" in signed.stderr


# -- point 5: doctor under the profile ---------------------------------------------------------------
def checks_of(result: Any) -> dict[str, dict[str, str]]:
    return {c["name"]: c for c in result.json()["checks"]}


def test_doctor_reports_the_omniview_profile_and_the_sdks_expectations(
    tmp_path: Path, home: Path
) -> None:
    env = clean_env(HOME=str(home))
    for args in (("--profile", "omniview", "doctor"), ("doctor", "--profile", "omniview")):
        report = cli(*args, "--json", env=env)
        checks = checks_of(report)
        assert "profile omniview, cookie key OMNIVIEW" in checks["settings"]["detail"], args
        assert checks["cookie key"]["status"] == "ok"
        assert checks["omniview root"]["status"] == "ok"
        assert checks["plugin.yaml"]["status"] == "ok"
    plain = checks_of(cli("doctor", "--json", "--root", tmp_path / "plain", env=env))
    assert "profile plughost, cookie key PLUGHOST" in plain["settings"]["detail"]
    assert "cookie key" not in plain and "omniview root" not in plain

    plugins = home / ".omniview" / "plugins"
    shutil.copytree(EXAMPLES / "hello", plugins / "hello", ignore=shutil.ignore_patterns("__*"))
    (plugins / "nometa" / "bin").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "hello", plugins / "renamed", ignore=shutil.ignore_patterns("__*"))
    (home / ".omniview" / "plughost.toml").write_text('cookie_key = "PLUGHOST"\n')
    report = cli("--profile", "omniview", "doctor", "--json", env=env)
    checks = checks_of(report)
    assert report.returncode == 1
    assert checks["cookie key"]["status"] == "problem"
    assert "cookie_key = 'PLUGHOST'" in checks["cookie key"]["detail"]
    assert "remove cookie_key" in checks["cookie key"]["fix"]
    yaml_check = checks["plugin.yaml"]
    assert yaml_check["status"] == "problem" and "install" in yaml_check["fix"]
    assert "nometa: no plugin.yaml" in yaml_check["detail"]
    assert "renamed: its plugin.yaml says id 'hello'" in yaml_check["detail"]
    assert "hello:" not in yaml_check["detail"].replace("'hello'", "")

    text = cli("--profile", "omniview", "doctor", env=env)
    assert text.returncode == 1 and "problem plugin.yaml" in " ".join(text.stdout.split())
    assert "fix:" in text.stdout

    # Another root under the profile: the SDK still reads $HOME/.omniview.
    elsewhere = tmp_path / "other" / ".omniview"
    (elsewhere / "plugins").mkdir(parents=True)
    shutil.copytree(EXAMPLES / "hello", elsewhere / "plugins" / "solo")
    moved = checks_of(
        cli("--profile", "omniview", "--root", elsewhere, "doctor", "--json", env=env)
    )
    root_check = moved["omniview root"]
    assert root_check["status"] == "warn"
    assert f"{home / '.omniview'}/plugins/<id>/plugin.yaml" in root_check["detail"]
    assert "without it there: solo" in root_check["detail"]
    assert f"HOME={tmp_path / 'other'}" in root_check["fix"]
