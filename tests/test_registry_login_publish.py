"""The command line against a marketplace server: 'registry user' and 'registry publisher'
make accounts, 'plughost login' signs in through the device flow (approved over HTTP as a
browser would), and 'plughost publish' creates, uploads and submits a submission."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import httpx
import pytest
from cli_helpers import PLUGHOST, clean_env, cli, new_root
from test_registry_server import make_package

from plughost.registry.server import create_app, running_server

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery"


def _read_json_object(stream: object) -> dict[str, object]:
    lines = []
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        lines.append(line)
        if line.rstrip() == "}":
            break
    found: dict[str, object] = json.loads("".join(lines))
    return found


def test_login_then_publish(tmp_path: Path) -> None:
    directory = tmp_path / "registry"
    cli("registry", "user", directory, "admin@example.invalid", "--role", "admin",
        input=PASSWORD + "\n").ok()  # fmt: skip
    dev = cli("registry", "user", directory, "dev@example.invalid", "--api-token", "ci",
              "--json", input=PASSWORD + "\n").ok().json()  # fmt: skip
    cli("registry", "publisher", directory, "acme", "--owner", "dev@example.invalid").ok()
    refused = cli("registry", "user", directory, "dev@example.invalid", input=PASSWORD + "\n")
    assert refused.returncode == 1 and "exists" in refused.out
    root = new_root(tmp_path / "root")
    with running_server(create_app(directory)) as url:
        proc = subprocess.Popen(
            [*PLUGHOST, "login", "--registry", url, "--root", str(root), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            shown = _read_json_object(proc.stdout)
            assert str(shown["verification_uri"]).startswith(url + "/device?code=")
            session = httpx.post(
                url + "/v1/auth/login",
                json={"email": "dev@example.invalid", "password": PASSWORD},
            ).json()["data"]["token"]
            approved = httpx.post(
                url + "/v1/auth/device/approve",
                json={"user_code": shown["user_code"]},
                headers={"Authorization": f"Bearer {session}"},
            )
            assert approved.status_code == 200, approved.text
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err
        signed = json.loads(out)
        assert signed["user"]["email"] == "dev@example.invalid"
        credentials = root / "registry-credentials.json"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert set(json.loads(credentials.read_text())) == {url}

        package = make_package(tmp_path, "clidemo", "1.0.0")
        done = cli("publish", package, "--publisher", "acme", "--registry", url, "--json",
                   root=root).ok().json()  # fmt: skip
        assert done["status"] == "pending_review" and done["plugin_id"] == "clidemo"

        # CI: an API token from the environment, no login; a second version.
        ci_root = new_root(tmp_path / "ci")
        env = clean_env(PLUGHOST_REGISTRY_TOKEN=dev["api_token"])
        package = make_package(tmp_path, "clidemo", "1.1.0")
        ci = cli("publish", package, "--publisher", "acme", "--registry", url, "--json",
                 root=ci_root, env=env).ok().json()  # fmt: skip
        assert ci["version"] == "1.1.0" and ci["submitted_by_id"] == dev["user"]["id"]

        nobody = cli("publish", package, "--publisher", "acme", "--registry", url,
                     root=new_root(tmp_path / "nobody"))  # fmt: skip
        assert nobody.returncode == 1 and "plughost login" in nobody.out
