"""Installing packages into a live manager: from a path, from the marketplace, rollback.

Real tarballs, real plugin processes, a real registry server on 127.0.0.1.
Every hostile package is refused while the installed plugin keeps running,
untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from hostile import HostileCase, build_corpus, case_names

from plughost.errors import (
    ChecksumMismatchError,
    PlughostError,
    PluginInstallError,
    PluginNotFoundError,
    SignatureInvalidError,
    ValidationError,
)
from plughost.events import (
    EVENT_INSTALL_ERROR,
    EVENT_INSTALL_FINISHED,
    EVENT_INSTALL_STARTED,
    EVENT_UPDATE_COMPLETE,
    EVENT_UPDATE_ERROR,
    EVENT_UPDATE_STARTED,
    Event,
)
from plughost.host.manager import PluginManager
from plughost.packages.archive import pack
from plughost.packages.signing import generate_keypair
from plughost.phases import Phase
from plughost.registry import index as registry_index
from plughost.registry.server import create_app, running_server
from plughost.settings import SettingsProvider

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "src" / "plughost" / "examples" / "hello"
FAST = {"start_timeout": 20.0, "stop_grace": 2.0, "kill_grace": 1.0, "stable_time": 0.3}


def tree_digest(directory: Path) -> dict[str, str]:
    """Every file's relative path -> sha256 (and links -> target), to prove 'untouched'."""
    out: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_source(tmp: Path, version: str = "1.0.0", greeting: str = "hello") -> Path:
    """A copy of the hello example with the given version and greeting."""
    src = tmp / f"hello-src-{version}"
    shutil.copytree(HELLO, src, ignore=shutil.ignore_patterns("__pycache__"))
    meta = yaml.safe_load((src / "plugin.yaml").read_text())
    meta["version"] = version
    (src / "plugin.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    code = (src / "plugin.py").read_text().replace('GREETING = "hello"', f'GREETING = "{greeting}"')
    (src / "plugin.py").write_text(code)
    return src


def make_package(tmp: Path, version: str = "1.0.0", greeting: str = "hello") -> Path:
    return pack(make_source(tmp, version, greeting), tmp / f"hello-{version}.tar.gz")


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[PluginManager]:
    m = PluginManager(tmp_path / "root", settings=SettingsProvider(None, FAST))
    await m.initialize()
    try:
        yield m
    finally:
        await m.shutdown()


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def names(self, prefix: str = "plugin/") -> list[str]:
        return [
            e.name
            for e in self.events
            if e.name.startswith(prefix)
            and e.name not in ("plugin/state_change", "plugin/process/log")
        ]


def record(manager: PluginManager) -> Recorder:
    rec = Recorder()
    sub = manager.bus.subscribe("*", rec)
    sub.drain_before_read = True  # type: ignore[attr-defined]
    manager._test_sub = sub  # type: ignore[attr-defined]
    return rec


def drain(manager: PluginManager) -> None:
    sub = manager._test_sub  # type: ignore[attr-defined]
    assert sub.drain(5)


async def greet(manager: PluginManager, plugin_id: str = "hello") -> str:
    from google.protobuf import wrappers_pb2

    from plughost._proto import hello_pb2_grpc

    backend = manager.backend(plugin_id)
    assert backend is not None
    stub: Any = backend.stub(hello_pb2_grpc.GreeterStub)  # type: ignore[no-untyped-call]
    reply = await stub.Greet(wrappers_pb2.StringValue(value="x"), timeout=5)
    return str(reply.value)


# -- from a path ------------------------------------------------------------------


async def test_install_from_path_starts_the_plugin(manager: PluginManager, tmp_path: Path) -> None:
    rec = record(manager)
    meta = await manager.install_plugin_from_path(make_package(tmp_path))
    assert meta.id == "hello" and meta.version == "1.0.0"
    info = manager.get_plugin("hello")
    assert info.phase is Phase.RUNNING and info.pid
    assert await greet(manager) == "hello, x"
    drain(manager)
    assert rec.names() == [EVENT_INSTALL_STARTED, EVENT_INSTALL_FINISHED]
    # Nothing is left in the plugins directory but the plugin itself.
    assert sorted(p.name for p in manager.plugins_dir.iterdir()) == ["hello"]


async def test_update_replaces_the_running_version_and_keeps_the_old_for_rollback(
    manager: PluginManager, tmp_path: Path
) -> None:
    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0", "hello"))
    old_pid = manager.get_plugin("hello").pid
    await manager.install_plugin_from_path(make_package(tmp_path, "2.0.0", "bonjour"))
    info = manager.get_plugin("hello")
    assert info.version == "2.0.0" and info.phase is Phase.RUNNING
    assert info.pid != old_pid and not psutil.pid_exists(old_pid or 0)
    assert await greet(manager) == "bonjour, x"

    meta = await manager.rollback_plugin("hello")
    assert meta.version == "1.0.0"
    assert manager.get_plugin("hello").phase is Phase.RUNNING
    assert await greet(manager) == "hello, x"
    # And forward again: the rolled-back-from version is now the kept one.
    assert (await manager.rollback_plugin("hello")).version == "2.0.0"


async def test_rollback_without_a_previous_version_is_a_clear_error(
    manager: PluginManager, tmp_path: Path
) -> None:
    await manager.install_plugin_from_path(make_package(tmp_path))
    with pytest.raises(PluginNotFoundError, match="no previous version"):
        await manager.rollback_plugin("hello")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileCase]:
    return {c.name: c for c in build_corpus(tmp_path_factory.mktemp("corpus"))}


@pytest.fixture
async def installed(manager: PluginManager, tmp_path: Path) -> PluginManager:
    await manager.install_plugin_from_path(make_package(tmp_path))
    return manager


@pytest.mark.parametrize("name", case_names())
async def test_hostile_package_is_refused_and_the_installation_survives(
    installed: PluginManager, corpus: dict[str, HostileCase], name: str, tmp_path: Path
) -> None:
    manager = installed
    case = corpus[name]
    limits = manager.installer.limits
    limits.max_total = case.limits.get("max_total", limits.max_total)
    limits.max_file = case.limits.get("max_file", limits.max_file)
    limits.max_entries = case.limits.get("max_entries", limits.max_entries)
    before = tree_digest(manager.layout.plugin_dir("hello"))
    pid = manager.get_plugin("hello").pid
    outside = sorted(p.name for p in tmp_path.iterdir())
    rec = record(manager)

    with pytest.raises((PluginInstallError, ValidationError)) as info:
        await manager.install_plugin_from_path(case.path)
    assert case.expect.lower() in str(info.value).lower()

    after = manager.get_plugin("hello")
    assert after.phase is Phase.RUNNING and after.pid == pid  # still running, not restarted
    assert tree_digest(manager.layout.plugin_dir("hello")) == before
    assert sorted(p.name for p in manager.plugins_dir.iterdir()) == ["hello"]  # no temp dir
    assert sorted(p.name for p in tmp_path.iterdir()) == outside  # nothing written beside
    drain(manager)
    assert rec.names() == [EVENT_INSTALL_STARTED, EVENT_INSTALL_ERROR]


async def test_missing_and_non_file_paths_are_clear(manager: PluginManager, tmp_path: Path) -> None:
    with pytest.raises(PluginInstallError, match="no such file"):
        await manager.install_plugin_from_path(tmp_path / "nope.tar.gz")
    with pytest.raises(PluginInstallError, match="not a file"):
        await manager.install_plugin_from_path(tmp_path)


async def test_install_from_path_prompt(manager: PluginManager, tmp_path: Path) -> None:
    package = make_package(tmp_path)
    assert (await manager.install_from_path_prompt(lambda: str(package))).id == "hello"

    async def chooser() -> str:
        return str(package)

    assert (await manager.install_from_path_prompt(chooser)).id == "hello"
    with pytest.raises(PlughostError) as info:
        await manager.install_from_path_prompt(lambda: None)
    assert info.value.type == "cancelled"


async def test_uninstall_removes_everything(manager: PluginManager, tmp_path: Path) -> None:
    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"))
    await manager.install_plugin_from_path(make_package(tmp_path, "1.1.0"))
    pid = manager.get_plugin("hello").pid
    assert manager.layout.log_file("hello").exists()
    await manager.uninstall_plugin("hello")
    assert not manager.layout.plugin_dir("hello").exists()
    assert not psutil.pid_exists(pid or 0)
    assert not list(manager.layout.logs.glob("hello.log*"))
    state = manager.layout.state_file.read_text()
    assert '"hello"' not in state
    with pytest.raises(PluginNotFoundError):
        manager.get_plugin("hello")


async def test_offline_install_changes_disk_but_starts_nothing(tmp_path: Path) -> None:
    m = PluginManager(tmp_path / "root", settings=SettingsProvider(None, FAST), start_plugins=False)
    await m.initialize()
    try:
        await m.install_plugin_from_path(make_package(tmp_path))
        info = m.get_plugin("hello")
        assert info.phase is Phase.INSTALLED and info.pid is None
    finally:
        await m.shutdown()
    m2 = PluginManager(tmp_path / "root", settings=SettingsProvider(None, FAST))
    await m2.initialize()
    try:
        assert m2.get_plugin("hello").phase is Phase.RUNNING
    finally:
        await m2.shutdown()


# -- from the marketplace -------------------------------------------------------------


def tamper_artifact(db_path: Path, how: str) -> None:
    """Corrupt hello 2.0.0's listing the way a compromised mirror would."""
    changes = {
        "checksum": "checksum = '" + "0" * 64 + "'",
        "signature": "signature = 'AAAA' || substr(signature, 5), manifest = NULL",
        "unsigned": "signature = '', manifest = NULL",
        "no-manifest": "manifest = NULL",
        "manifest-signature": 'manifest = replace(manifest, \'"signature":"\', '
        '\'"signature":"AAAA\')',
        "manifest-size": "manifest = replace(manifest, '\"size\":', '\"size\":1')",
    }
    with sqlite3.connect(db_path) as db:
        db.execute(
            f"UPDATE artifacts SET {changes[how]} WHERE plugin_id = 'hello' AND version = '2.0.0'"
        )


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """Our registry server on 127.0.0.1 with hello 1.0.0 and 2.0.0 published."""
    directory = tmp_path / "registry"
    result = None
    for version, greeting in (("1.0.0", "hello"), ("2.0.0", "bonjour")):
        result = registry_index.publish(directory, make_package(tmp_path, version, greeting))
    assert result is not None
    with running_server(create_app(directory)) as url:
        yield url, result.public_key_hex, directory


@pytest.fixture
async def market(tmp_path: Path, registry: tuple[str, str, Path]) -> AsyncIterator[PluginManager]:
    url, key, _ = registry
    settings = SettingsProvider(None, {**FAST, "marketplace_url": url, "registry_public_key": key})
    m = PluginManager(tmp_path / "root", settings=settings)
    await m.initialize()
    try:
        yield m
    finally:
        await m.shutdown()


async def test_install_plugin_version_downloads_verifies_and_runs(market: PluginManager) -> None:
    rec = record(market)
    seen: list[tuple[int, int | None]] = []
    meta = await market.install_plugin_version(
        "hello", "1.0.0", progress=lambda d, t: seen.append((d, t))
    )
    assert meta.version == "1.0.0"
    assert market.get_plugin("hello").phase is Phase.RUNNING
    assert await greet(market) == "hello, x"
    assert seen and seen[-1][0] > 0
    drain(market)
    names = rec.names()
    assert names[0] == EVENT_UPDATE_STARTED and names[-1] == EVENT_UPDATE_COMPLETE
    assert EVENT_INSTALL_FINISHED in names

    available = {p.id: p for p in await market.list_available_plugins()}
    assert available["hello"].installed and available["hello"].installed_version == "1.0.0"
    assert available["hello"].update_available

    await market.install_plugin_version("hello", "2.0.0")
    assert await greet(market) == "bonjour, x"
    assert not {p.id: p for p in await market.list_available_plugins()}["hello"].update_available
    stats = await market.get_plugin_download_stats("hello")
    assert stats.total_count == 2


async def test_marketplace_version_overrides_the_packages_own(
    tmp_path: Path, registry: tuple[str, str, Path]
) -> None:
    url, key, directory = registry
    # Publish a package whose plugin.yaml says 0.0.1 under the listed version 3.0.0.
    package = make_package(tmp_path, "0.0.1", "hi")
    registry_index.RegistryIndex(directory).publish(package)
    settings = SettingsProvider(None, {**FAST, "marketplace_url": url, "registry_public_key": key})
    m = PluginManager(tmp_path / "root2", settings=settings)
    await m.initialize()
    try:
        meta = await m.install_plugin_version("hello", "0.0.1")
        assert meta.version == "0.0.1"
    finally:
        await m.shutdown()


@pytest.mark.parametrize(
    ("tamper", "legacy"),
    [
        ("checksum", False),
        ("manifest-signature", False),
        ("manifest-size", False),
        ("no-manifest", False),  # checksum-only signatures are refused by default
        ("unsigned", True),
        ("signature", True),
        ("wrong-key", False),
        ("wrong-key", True),
    ],
)
async def test_a_bad_download_is_refused_and_nothing_is_installed(
    market: PluginManager, registry: tuple[str, str, Path], tamper: str, legacy: bool
) -> None:
    _url, _key, directory = registry
    if legacy:
        market.settings_provider.override(accept_checksum_signatures=True)
        tamper_artifact(registry_index.RegistryIndex(directory).db_path, "no-manifest")
    await market.install_plugin_version("hello", "1.0.0")
    before = tree_digest(market.layout.plugin_dir("hello"))
    pid = market.get_plugin("hello").pid
    if tamper == "wrong-key":
        market.settings_provider.override(registry_public_key=generate_keypair()[1])
    else:
        tamper_artifact(registry_index.RegistryIndex(directory).db_path, tamper)
    rec = record(market)
    with pytest.raises((ChecksumMismatchError, SignatureInvalidError)):
        await market.install_plugin_version("hello", "2.0.0")
    assert market.get_plugin("hello").version == "1.0.0"
    assert market.get_plugin("hello").pid == pid
    assert tree_digest(market.layout.plugin_dir("hello")) == before
    assert sorted(p.name for p in market.plugins_dir.iterdir()) == ["hello"]
    drain(market)
    assert rec.names()[0] == EVENT_UPDATE_STARTED and rec.names()[-1] == EVENT_UPDATE_ERROR


async def test_missing_platform_is_refused(market: PluginManager) -> None:
    with pytest.raises(PluginNotFoundError):
        await market.install_plugin_version("hello", "9.9.9")
    assert sorted(p.name for p in market.plugins_dir.iterdir()) == []


async def test_a_failed_directory_swap_restores_and_restarts_the_old_version(
    manager: PluginManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from plughost.host import installer as install_module

    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"))
    before = tree_digest(manager.layout.plugin_dir("hello"))
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        if ".install-" in str(src):  # the staged new version going into place
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(install_module.os, "replace", failing_replace)
    rec = record(manager)
    with pytest.raises(PluginInstallError, match="No space left"):
        await manager.install_plugin_from_path(make_package(tmp_path, "2.0.0", "bonjour"))
    info = manager.get_plugin("hello")
    assert info.version == "1.0.0" and info.phase is Phase.RUNNING
    assert tree_digest(manager.layout.plugin_dir("hello")) == before
    assert await greet(manager) == "hello, x"
    drain(manager)
    assert rec.names()[-1] == EVENT_INSTALL_ERROR


async def test_a_package_cannot_bring_a_devinfo(manager: PluginManager, tmp_path: Path) -> None:
    import io
    import json
    import tarfile

    src = make_source(tmp_path)
    package = tmp_path / "with-devinfo.tar.gz"
    devinfo = json.dumps({"pid": 1, "addr": "evil.example:443", "pluginId": "hello"}).encode()
    with tarfile.open(package, "w:gz") as tar:
        tar.add(src, arcname=".")
        info = tarfile.TarInfo(".devinfo")
        info.size = len(devinfo)
        tar.addfile(info, io.BytesIO(devinfo))
    await manager.install_plugin_from_path(package)
    assert not (manager.layout.plugin_dir("hello") / ".devinfo").exists()
    assert manager.get_plugin("hello").phase is Phase.RUNNING
    assert manager.get_plugin("hello").pid != 1
