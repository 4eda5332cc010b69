"""Shared fixtures: an isolated root per test and a factory for plugin directories."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from services import database, postgres, s3, s3_env  # noqa: F401 - the registry's fixtures
from toolchains import require_chromium, require_go, require_node

from plughost.events import EventBus

# Host variables that must never leak from the developer's shell into a test.
_HOST_ENV_PREFIXES = ("PLUGHOST_", "OMNIVIEW", "PLUGIN_", "MAGIC_COOKIE")


@pytest.fixture(autouse=True)
def clean_environ(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point PLUGHOST_HOME at a fresh directory and drop the host's plughost secrets."""
    for name in list(os.environ):
        if name.startswith(_HOST_ENV_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("plughost-home")
    monkeypatch.setenv("PLUGHOST_HOME", str(home))
    return home


# -- optional toolchains: skipped with a how-to outside CI, a failure in CI (tests/toolchains.py)
@pytest.fixture
def go(monkeypatch: pytest.MonkeyPatch) -> str:
    """A Go toolchain (>= 1.26), its directory first on PATH so plughost finds the same one."""
    path = require_go()
    monkeypatch.setenv("PATH", f"{Path(path).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    return path


@pytest.fixture
def node() -> str:
    """``node`` on PATH."""
    return require_node()


@pytest.fixture
def chromium() -> Path:
    """Debian's /usr/bin/chromium, with the playwright package to drive it."""
    return require_chromium()


@pytest.fixture
def bus() -> Iterator[EventBus]:
    event_bus = EventBus()
    yield event_bus
    event_bus.close()


PluginFactory = Callable[..., Path]


@pytest.fixture
def make_plugin() -> PluginFactory:
    """Create ``<plugins_dir>/<id>/`` with a plugin.yaml and, optionally, bin/ and assets/."""

    def make(
        plugins_dir: Path,
        plugin_id: str,
        *,
        capabilities: Sequence[str] = ("resource",),
        version: str = "1.0.0",
        binary: bool = True,
        executable: bool = True,
        assets: bool = False,
        yaml_id: str | None = None,
    ) -> Path:
        location = plugins_dir / plugin_id
        location.mkdir(parents=True)
        caps = "".join(f"\n  - {cap}" for cap in capabilities) if capabilities else " []"
        (location / "plugin.yaml").write_text(
            textwrap.dedent(
                f"""\
                id: {yaml_id or plugin_id}
                version: "{version}"
                name: {plugin_id} plugin
                """
            )
            + f"capabilities:{caps}\n"
        )
        if binary:
            bin_dir = location / "bin"
            bin_dir.mkdir()
            exe = bin_dir / "plugin"
            exe.write_text("#!/bin/sh\nexit 0\n")
            exe.chmod(0o755 if executable else 0o644)
        if assets:
            (location / "assets").mkdir()
            (location / "assets" / "index.js").write_text("export {}\n")
        return location

    return make
