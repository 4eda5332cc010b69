"""plugin.yaml's ``permissions``: strict parsing, grants persisted, updates asking for more held."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import FAST_TOML, Host, cli, new_root
from fixtures_plugins import Managers, managers_fixture, root_fixture
from toolchains import unavailable

from plughost.errors import ValidationError
from plughost.metadata import Permissions, load_meta_from_bytes
from plughost.phases import Phase
from plughost.process.sandbox import probe

__all__ = ["managers_fixture", "root_fixture"]

HOSTILE = Path(__file__).resolve().parent / "plugins" / "hostile"


def meta(permissions: str) -> bytes:
    return f"id: p\nversion: 1.0.0\npermissions:\n{permissions}".encode()


def test_a_full_block_parses_with_home_paths_kept() -> None:
    loaded = load_meta_from_bytes(
        meta(
            "  network: loopback\n  filesystem:\n    ~/.kube: ro\n    /var/data/: rw\n"
            "  env: [KUBECONFIG]\n  exec: true\n  devices: [/dev/fuse]\n"
        )
    )
    assert loaded.permissions == Permissions(
        network="loopback",
        filesystem={"~/.kube": "ro", "/var/data": "rw"},
        env=["KUBECONFIG"],
        exec=True,
        devices=["/dev/fuse"],
    )
    assert load_meta_from_bytes(b"id: p\nversion: 1\n").permissions is None


@pytest.mark.parametrize(
    ("block", "field", "expected"),
    [
        ("  netwrk: all\n", "'permissions'", "expected some of: network, filesystem"),
        ("  network: lan\n", "'permissions.network'", "'none', 'loopback' or 'all'"),
        ("  filesystem: {kube: ro}\n", "'permissions.filesystem'", "absolute path"),
        ("  filesystem: {/a/../etc: ro}\n", "'permissions.filesystem'", "'..'"),
        ("  filesystem: {/a: rwx}\n", "'permissions.filesystem./a'", "'ro' or 'rw'"),
        ("  env: [BAD-NAME]\n", "'permissions.env'", "environment variable names"),
        ("  exec: 'yes'\n", "'permissions.exec'", "valid boolean"),
        ("  devices: [/etc/passwd]\n", "'permissions.devices'", "under /dev/"),
    ],
)
def test_malformed_permissions_name_the_file_field_and_what_was_expected(
    block: str, field: str, expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        load_meta_from_bytes(meta(block), "/plugins/p/plugin.yaml")
    message = str(caught.value)
    assert "/plugins/p/plugin.yaml" in message and f"field {field}" in message
    assert expected in message


def test_a_grant_covers_less_and_names_what_is_more() -> None:
    granted = Permissions(network="loopback", filesystem={"~/.kube": "rw"}, env=["A"])
    assert granted.covers(Permissions(filesystem={"~/.kube/config": "ro"}))
    more = granted.exceeded_by(
        Permissions(network="all", filesystem={"~/.ssh": "ro"}, env=["A", "B"], exec=True)
    )
    assert more == [
        "network: the whole network, internet included",
        "read ~/.ssh",
        "environment variables B",
        "start other programs",
    ]


def package(tmp_path: Path, version: str, permissions: dict[str, Any]) -> Path:
    tree = tmp_path / f"src-{version}"
    shutil.copytree(HOSTILE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    data = yaml.safe_load((tree / "plugin.yaml").read_text())
    data["version"], data["permissions"] = version, permissions
    (tree / "plugin.yaml").write_text(yaml.safe_dump(data))
    archive = tmp_path / f"hostile-{version}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for item in sorted(tree.rglob("*")):
            tar.add(item, arcname=str(item.relative_to(tree)), recursive=False)
    return archive


async def test_an_update_asking_for_more_is_held_until_granted(
    managers: Managers, root: Path, tmp_path: Path
) -> None:
    if not probe().usable:
        unavailable(probe().reason, "run scripts/install_sandbox.sh")
    manager = managers.new(extra_env={"HOSTILE_FORKS": "1"})
    recorder = managers.record(manager)
    await manager.initialize()
    await manager.installer.install_from_path(package(tmp_path, "1.0.0", {"network": "none"}))
    assert manager.get_plugin("hostile").phase == Phase.RUNNING

    start = recorder.mark()
    update = package(tmp_path, "2.0.0", {"network": "loopback", "filesystem": {"~/.kube": "ro"}})
    await manager.installer.install_from_path(update, grant=False)
    held = await recorder.wait_for("plugin/update_held", start=start)
    assert held.payload["more"] == [
        "network: connect to services on this computer (127.0.0.1)",
        "read ~/.kube",
    ]
    info = manager.get_plugin("hostile")
    assert (info.phase, info.version) == (Phase.STOPPED, "2.0.0")
    assert info.last_error.startswith("held: version 2.0.0 asks for more than was granted")
    state = {e["id"]: e for e in json.loads((root / "plugin_state.json").read_text())}
    assert state["hostile"]["grantedPermissions"]["network"] == "none"

    await manager.installer.grant_permissions("hostile")
    info = manager.get_plugin("hostile")
    assert info.phase == Phase.RUNNING
    assert info.to_json_dict()["grantedPermissions"]["network"] == "loopback"
    state = {e["id"]: e for e in json.loads((root / "plugin_state.json").read_text())}
    assert state["hostile"]["grantedPermissions"]["filesystem"] == {"~/.kube": "ro"}


async def test_an_update_within_the_grant_starts_and_keeps_the_grant(
    managers: Managers, root: Path, tmp_path: Path
) -> None:
    if not probe().usable:
        unavailable(probe().reason, "run scripts/install_sandbox.sh")
    manager = managers.new(extra_env={"HOSTILE_FORKS": "1"})
    await manager.initialize()
    await manager.installer.install_from_path(package(tmp_path, "1.0.0", {"network": "loopback"}))
    await manager.installer.install_from_path(
        package(tmp_path, "1.1.0", {"network": "none"}), grant=False
    )
    info = manager.get_plugin("hostile")
    assert (info.phase, info.version) == (Phase.RUNNING, "1.1.0")
    assert info.granted == Permissions(network="loopback")


def test_install_prints_the_permissions_and_needs_a_grant_without_a_terminal(
    tmp_path: Path,
) -> None:
    archive = package(tmp_path, "1.0.0", {"network": "loopback", "filesystem": {"~/.kube": "ro"}})
    root = tmp_path / "root"
    command = [sys.executable, "-m", "plughost", "install", str(archive), "--root", str(root)]
    refused = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0
    assert "connect to services on this computer (127.0.0.1)" in refused.stderr
    assert "read ~/.kube" in refused.stderr and "--yes" in refused.stderr
    assert not (root / "plugins" / "hostile").exists()
    granted = subprocess.run(
        [*command, "--grant"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert granted.returncode == 0, granted.stderr
    assert (root / "plugins" / "hostile" / "plugin.yaml").is_file()


def test_a_marketplace_install_is_held_until_granted_from_the_cli(tmp_path: Path) -> None:
    """``install ID`` shows the permissions once downloaded, before the plugin starts; without
    a terminal it stays held until ``plughost grant``; an update asking more asks again."""
    if not probe().usable:
        unavailable(probe().reason, "run scripts/install_sandbox.sh")
    root = new_root(tmp_path / "root", FAST_TOML + 'HOSTILE_FORKS = "1"\n')
    host = Host(root)
    try:
        for version, asked in (
            ("1.0.0", {"network": "loopback"}),
            ("2.0.0", {"network": "loopback", "filesystem": {"~/.kube": "ro"}}),
            ("3.0.0", {"network": "all"}),
        ):
            cli(
                "registry", "publish", package(tmp_path, version, asked), "--dir", root / "registry"
            )

        held = cli("install", "hostile@1.0.0", root=root)
        assert held.returncode != 0
        assert "hostile 1.0.0 asks to:" in held.stderr
        assert "connect to services on this computer (127.0.0.1)" in held.stderr
        assert "plughost grant hostile" in held.stderr
        with host.api() as api:
            info = api.get("/v1/plugins/hostile").json()
        assert info["phase"] == "Stopped" and info["pid"] is None
        assert info["lastError"].startswith("held: version 1.0.0 asks for more than was granted")

        granted = cli("grant", "hostile", "--yes", root=root).ok()
        assert "granted hostile: Running" in granted.stdout
        assert "connect to services on this computer (127.0.0.1)" in granted.stderr

        updated = cli("install", "hostile@2.0.0", "--yes", root=root).ok()
        assert "granted to hostile 2.0.0:" in updated.stderr
        assert "read ~/.kube" in updated.stderr and "Running" in updated.stdout
        with host.api() as api:
            info = api.get("/v1/plugins/hostile").json()
            again = api.post("/v1/plugins/hostile/grant").json()
        assert info["grantedPermissions"]["filesystem"] == {"~/.kube": "ro"}
        assert again["phase"] == "Running" and again["pid"] == info["pid"]  # nothing to release

        more = cli("install", "hostile@3.0.0", root=root)
        assert more.returncode != 0
        assert "hostile 3.0.0 asks for more than 2.0.0 was granted:" in more.stderr
        assert "the whole network" in more.stderr and "plughost rollback hostile" in more.stderr
    finally:
        host.stop()
