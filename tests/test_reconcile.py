"""Reconciler: the plugins directory against the state file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from plughost.metadata import PluginMeta
from plughost.phases import Phase
from plughost.reconcile import Reconciler, ReconcileResult
from plughost.records import PluginStateRecord

WHEN = datetime(2023, 7, 1, tzinfo=UTC)

PluginFactory = Callable[..., Path]  # the make_plugin fixture of conftest.py


def _state(plugin_id: str, **kw: Any) -> PluginStateRecord:
    kw.setdefault("phase", Phase.RUNNING)
    return PluginStateRecord(id=plugin_id, metadata=PluginMeta(id=plugin_id, version="0.0.1"), **kw)


def _phases(result: ReconcileResult) -> dict[str, Phase]:
    return {pid: rec.phase for pid, rec in result.records.items()}


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    directory = tmp_path / "plugins"
    directory.mkdir()
    return directory


def test_reconcile_sorts_everything_out(
    plugins: Path, make_plugin: PluginFactory, caplog: pytest.LogCaptureFixture
) -> None:
    make_plugin(plugins, "ready")
    make_plugin(plugins, "parked")
    make_plugin(plugins, "dev-unbuilt", binary=False)
    make_plugin(plugins, "unbuilt", binary=False)
    make_plugin(plugins, "not-exec", executable=False)
    make_plugin(plugins, "ui-only", capabilities=["ui"], binary=False, assets=True)
    make_plugin(plugins, "adopted")
    persisted = [
        _state(
            "ready",
            dev_path="/src/ready",
            last_error="old crash",
            error_count=2,
            installed_at=WHEN,
        ),
        _state("parked", enabled=False),
        _state("dev-unbuilt", dev_mode=True, dev_path="/src/dev-unbuilt"),
        _state("unbuilt"),
        _state("not-exec"),
        _state("ui-only"),
        _state("ghost"),
        _state("another-ghost", enabled=False),
    ]
    with caplog.at_level(logging.INFO, logger="plughost.reconcile"):
        result = Reconciler().reconcile(plugins, persisted)
    assert _phases(result) == {
        "ready": Phase.INSTALLED,
        "parked": Phase.STOPPED,
        "dev-unbuilt": Phase.BUILDING,
        "unbuilt": Phase.FAILED,
        "not-exec": Phase.FAILED,
        "ui-only": Phase.INSTALLED,
        "adopted": Phase.INSTALLED,
    }
    assert result.orphans == ["adopted"]
    assert result.ghosts == ["another-ghost", "ghost"]
    assert "ghost" in caplog.text

    ready = result.records["ready"]
    # What the user wanted and what happened before is carried over ...
    assert (ready.dev_path, ready.last_error, ready.error_count, ready.installed_at) == (
        "/src/ready",
        "old crash",
        2,
        WHEN,
    )
    # ... but the disk's metadata wins over the copy in the state file.
    assert ready.meta.version == "1.0.0"
    assert ready.machine.plugin_id == "ready"
    assert ready.history() == []

    assert result.records["parked"].enabled is False
    assert result.records["dev-unbuilt"].dev_mode is True
    assert result.records["dev-unbuilt"].dev_path == "/src/dev-unbuilt"
    assert "bin/plugin" in result.records["unbuilt"].last_error
    assert "missing" in result.records["unbuilt"].last_error
    assert result.records["adopted"].enabled is True
    assert result.records["adopted"].dev_mode is False


def test_disabled_wins_over_a_missing_binary(plugins: Path, make_plugin: PluginFactory) -> None:
    make_plugin(plugins, "off", binary=False)
    result = Reconciler().reconcile(plugins, [_state("off", enabled=False, dev_mode=True)])
    assert _phases(result) == {"off": Phase.STOPPED}


def test_directories_without_valid_metadata_are_skipped_with_a_warning(
    plugins: Path, make_plugin: PluginFactory, caplog: pytest.LogCaptureFixture
) -> None:
    make_plugin(plugins, "good")
    (plugins / "no-yaml").mkdir()
    (plugins / "broken").mkdir()
    (plugins / "broken" / "plugin.yaml").write_text("id: broken\nversion: [\n")
    (plugins / "invalid").mkdir()
    (plugins / "invalid" / "plugin.yaml").write_text("id: invalid\n")  # no version
    make_plugin(plugins, "renamed", yaml_id="original")
    (plugins / ".staging").mkdir()
    (plugins / ".staging" / "plugin.yaml").write_text("id: staging\nversion: '1'\n")
    (plugins / "stray-file").write_text("not a plugin")
    with caplog.at_level(logging.WARNING, logger="plughost.reconcile"):
        result = Reconciler().reconcile(plugins, [_state("broken")])
    assert list(result.records) == ["good"]
    assert result.orphans == ["good"]
    # A persisted entry whose directory no longer holds a valid plugin is a ghost.
    assert result.ghosts == ["broken"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("no-yaml", "broken", "invalid", "renamed"):
        assert any(f"skipping {plugins / name}" in w for w in warnings), name
    assert any("version" in w for w in warnings if "invalid" in w)
    assert any("'original'" in w for w in warnings if "renamed" in w)
    assert not any(".staging" in w or "stray-file" in w for w in warnings)


def test_reconcile_from_filesystem(plugins: Path, make_plugin: PluginFactory) -> None:
    make_plugin(plugins, "built")
    make_plugin(plugins, "unbuilt", binary=False)
    make_plugin(plugins, "ui", capabilities=["ui"], binary=False)
    make_plugin(plugins, "no-caps", capabilities=[], binary=False)
    result = Reconciler().reconcile_from_filesystem(plugins)
    assert _phases(result) == {
        "built": Phase.INSTALLED,
        "unbuilt": Phase.FAILED,
        "ui": Phase.INSTALLED,
        "no-caps": Phase.INSTALLED,
    }
    assert result.orphans == ["built", "no-caps", "ui", "unbuilt"]
    assert result.ghosts == []
    assert all(rec.enabled for rec in result.records.values())


def test_missing_plugins_directory(tmp_path: Path) -> None:
    result = Reconciler().reconcile(tmp_path / "nope", [_state("ghost")])
    assert result.records == {}
    assert result.orphans == []
    assert result.ghosts == ["ghost"]


def test_accepts_string_paths(plugins: Path, make_plugin: PluginFactory) -> None:
    make_plugin(plugins, "built")
    assert list(Reconciler().reconcile_from_filesystem(str(plugins)).records) == ["built"]
