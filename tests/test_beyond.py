"""On real plugins: rollback of bad updates, key rotation, slow retry of Failed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_install import FAST, greet, make_package, make_source
from waiting import async_wait_until

from plughost.errors import PluginInstallError
from plughost.events import EVENT_FAILED_RETRY, EVENT_ROLLED_BACK, EVENT_STATE_CHANGE
from plughost.host.manager import PluginManager
from plughost.packages.archive import pack
from plughost.packages.signing import (
    RetiredKeyError,
    UnknownKeyError,
    generate_keypair,
    key_id_for,
)
from plughost.phases import Phase
from plughost.registry import index as registry_index
from plughost.registry.server import create_app, running_server
from plughost.settings import SettingsProvider


def broken_package(tmp: Path, version: str, code: str) -> Path:
    """hello at ``version`` whose plugin.py runs ``code`` first."""
    src = make_source(tmp, version, "broken")
    text = (src / "plugin.py").read_text()
    (src / "plugin.py").write_text(
        text.replace("def main() -> None:\n", f"def main() -> None:\n    {code}\n", 1)
    )
    return pack(src, tmp / f"hello-{version}-broken.tar.gz")


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[PluginManager]:
    settings = SettingsProvider(None, {**FAST, "rollback_window": 30.0, "backoff_initial": 0.01})
    m = PluginManager(tmp_path / "root", settings=settings)
    await m.initialize()
    try:
        yield m
    finally:
        await m.shutdown()


async def next_event(stream: Any, name: str, timeout: float = 30) -> Any:
    async def find() -> Any:
        async for event in stream:
            if event.name == name:
                return event
        raise AssertionError("stream ended")

    return await asyncio.wait_for(find(), timeout)


async def test_update_that_fails_to_start_is_rolled_back(
    manager: PluginManager, tmp_path: Path
) -> None:
    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"))
    stream = manager.bus.stream(EVENT_ROLLED_BACK)
    bad = broken_package(tmp_path, "2.0.0", "raise SystemExit('boom: cannot start')")
    with pytest.raises(PluginInstallError, match=r"rolled back to 1\.0\.0") as info:
        await manager.install_plugin_from_path(bad)
    assert info.value.title == "Update rolled back"
    event = await next_event(stream, EVENT_ROLLED_BACK)
    assert event.payload["from"] == "2.0.0" and event.payload["to"] == "1.0.0"
    assert "failed to start" in event.payload["reason"]
    info2 = manager.get_plugin("hello")
    assert info2.version == "1.0.0" and info2.phase is Phase.RUNNING
    assert await greet(manager) == "hello, x"


async def test_update_that_crashes_inside_the_window_is_rolled_back(
    manager: PluginManager, tmp_path: Path
) -> None:
    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"))
    stream = manager.bus.stream(EVENT_ROLLED_BACK)
    crashy = broken_package(
        tmp_path,
        "2.0.0",
        "import threading, os; threading.Timer(1.0, lambda: os._exit(5)).start()",
    )
    await manager.install_plugin_from_path(crashy)  # starts fine ...
    event = await next_event(stream, EVENT_ROLLED_BACK)  # ... then crashes: back to 1.0.0
    assert event.payload["to"] == "1.0.0" and "crashed" in event.payload["reason"]
    await async_wait_until(
        lambda: manager.get_plugin("hello").phase is Phase.RUNNING,
        timeout=20,
        interval=0.05,
        message=lambda: f"hello Running again: {manager.get_plugin('hello')}",
    )
    assert manager.get_plugin("hello").version == "1.0.0"
    assert await greet(manager) == "hello, x"


async def test_a_crash_after_the_window_is_recovered_not_rolled_back(
    manager: PluginManager, tmp_path: Path
) -> None:
    manager.settings_provider.override(rollback_window=0.0)  # window closed
    await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"))
    await manager.install_plugin_from_path(make_package(tmp_path, "2.0.0", "bonjour"))
    stream = manager.bus.stream("plugin/*")
    pid = manager.get_plugin("hello").pid
    assert pid
    import os
    import signal

    os.kill(pid, signal.SIGKILL)
    await next_event(stream, "plugin/recovered")
    assert manager.get_plugin("hello").version == "2.0.0"


# -- signed manifests and key rotation ---------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    directory = tmp_path / "registry"
    result = registry_index.publish(directory, make_package(tmp_path, "1.0.0"))
    with running_server(create_app(directory)) as url:
        yield url, result.public_key_hex, directory


async def install_with(tmp_path: Path, url: str, **settings: Any) -> PluginManager:
    m = PluginManager(
        tmp_path / "root-keys",
        settings=SettingsProvider(None, {**FAST, "marketplace_url": url, **settings}),
        start_plugins=False,
    )
    await m.initialize()
    try:
        await m.install_plugin_version("hello", "1.0.0")
    finally:
        await m.shutdown()
    return m


async def test_key_rotation_new_key_added_old_key_still_trusted(
    tmp_path: Path, registry: tuple[str, str, Path]
) -> None:
    url, key, _ = registry
    new_key = generate_keypair()[1]
    trusted = [{"public_key_hex": new_key}, {"public_key_hex": key, "key_id": key_id_for(key)}]
    m = await install_with(tmp_path, url, trusted_keys=trusted)
    assert (m.layout.plugin_dir("hello") / "plugin.yaml").exists()


async def test_retired_key_is_refused(tmp_path: Path, registry: tuple[str, str, Path]) -> None:
    url, key, _ = registry
    with pytest.raises(RetiredKeyError) as info:
        await install_with(tmp_path, url, trusted_keys=[{"public_key_hex": key, "retired": True}])
    assert info.value.type == "signature_retired_key"
    assert not (tmp_path / "root-keys" / "plugins" / "hello").exists()


async def test_unknown_key_is_refused(tmp_path: Path, registry: tuple[str, str, Path]) -> None:
    url, _key, _ = registry
    with pytest.raises(UnknownKeyError) as info:
        await install_with(tmp_path, url, trusted_keys=[{"public_key_hex": generate_keypair()[1]}])
    assert info.value.type == "signature_unknown_key"
    assert info.value.suggestions


# -- failed is not forever -----------------------------------------------------------------


async def test_slow_retry_brings_a_failed_plugin_back(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples" / "hello",
        root / "plugins" / "hello",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    binary = root / "plugins" / "hello" / "bin" / "plugin"
    binary.chmod(0o644)  # broken: not executable
    settings = SettingsProvider(None, {**FAST, "failed_retry_interval": 0.3})
    m = PluginManager(root, settings=settings)
    await m.initialize()
    try:
        assert m.get_plugin("hello").phase is Phase.FAILED
        stream = m.bus.stream("plugin/*")
        binary.chmod(0o755)  # the user fixes it; nobody clicks retry
        event = await next_event(stream, EVENT_FAILED_RETRY)
        assert event.payload["pluginID"] == "hello"
        while m.get_plugin("hello").phase is not Phase.RUNNING:
            ev = await next_event(stream, EVENT_STATE_CHANGE)
            assert ev.payload["pluginID"] == "hello"
    finally:
        await m.shutdown()


async def test_slow_retry_is_off_by_default(tmp_path: Path) -> None:
    assert SettingsProvider(None).settings.failed_retry_interval == 0
