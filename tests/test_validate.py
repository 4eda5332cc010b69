"""validate_for_phase: what must be on disk before Validating and Starting."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from plughost.errors import ValidationError
from plughost.metadata import PluginMeta
from plughost.phases import Phase
from plughost.validate import validate_for_phase

CHECKED = [Phase.VALIDATING, Phase.STARTING]
UNCHECKED = [p for p in Phase if p not in CHECKED]

PluginFactory = Callable[..., Path]  # the make_plugin fixture of conftest.py


def _meta(*capabilities: str) -> PluginMeta:
    return PluginMeta(id="alpha", version="1", capabilities=list(capabilities))


@pytest.mark.parametrize("phase", UNCHECKED)
def test_other_phases_pass_with_nothing_on_disk(tmp_path: Path, phase: Phase) -> None:
    validate_for_phase(phase, _meta("resource", "ui"), tmp_path / "missing")


@pytest.mark.parametrize("phase", CHECKED)
def test_backend_plugin_needs_its_binary(tmp_path: Path, phase: Phase) -> None:
    with pytest.raises(ValidationError) as info:
        validate_for_phase(phase, _meta("exec"), tmp_path)
    err = info.value
    assert err.plugin_id == "alpha"
    assert str(tmp_path / "bin" / "plugin") in err.detail
    assert err.title == "Plugin binary missing"
    assert err.suggestions


@pytest.mark.parametrize("phase", CHECKED)
def test_backend_binary_must_be_executable(
    tmp_path: Path, make_plugin: PluginFactory, phase: Phase
) -> None:
    location = make_plugin(tmp_path, "alpha", executable=False)
    with pytest.raises(ValidationError) as info:
        validate_for_phase(phase, _meta("resource"), location)
    assert "not an executable file" in info.value.detail
    assert "chmod +x" in info.value.suggestions[0]
    (location / "bin" / "plugin").chmod(0o700)
    validate_for_phase(phase, _meta("resource"), location)


@pytest.mark.parametrize("phase", CHECKED)
def test_backend_binary_must_be_a_file(tmp_path: Path, phase: Phase) -> None:
    (tmp_path / "bin" / "plugin").mkdir(parents=True)
    (tmp_path / "bin" / "plugin").chmod(0o755)
    with pytest.raises(ValidationError, match="not an executable file"):
        validate_for_phase(phase, _meta("resource"), tmp_path)


@pytest.mark.parametrize("phase", CHECKED)
def test_binary_may_be_a_symlink_to_an_executable(
    tmp_path: Path, make_plugin: PluginFactory, phase: Phase
) -> None:
    source = make_plugin(tmp_path, "source")
    location = tmp_path / "alpha"
    (location / "bin").mkdir(parents=True)
    os.symlink(source / "bin" / "plugin", location / "bin" / "plugin")
    validate_for_phase(phase, _meta("resource"), location)
    # A dangling link is a missing binary.
    (source / "bin" / "plugin").unlink()
    with pytest.raises(ValidationError):
        validate_for_phase(phase, _meta("resource"), location)


@pytest.mark.parametrize("phase", CHECKED)
def test_ui_plugin_needs_assets(tmp_path: Path, phase: Phase) -> None:
    with pytest.raises(ValidationError) as info:
        validate_for_phase(phase, _meta("ui"), str(tmp_path))
    assert "assets/" in info.value.detail
    assert info.value.plugin_id == "alpha"
    (tmp_path / "assets").write_text("not a directory")
    with pytest.raises(ValidationError):
        validate_for_phase(phase, _meta("ui"), tmp_path)
    (tmp_path / "assets").unlink()
    (tmp_path / "assets").mkdir()
    validate_for_phase(phase, _meta("ui"), tmp_path)


@pytest.mark.parametrize("phase", CHECKED)
def test_backend_and_ui_need_both(tmp_path: Path, make_plugin: PluginFactory, phase: Phase) -> None:
    location = make_plugin(tmp_path, "alpha")
    with pytest.raises(ValidationError, match="assets"):
        validate_for_phase(phase, _meta("resource", "ui"), location)
    (location / "assets").mkdir()
    validate_for_phase(phase, _meta("resource", "ui"), location)
    (location / "bin" / "plugin").unlink()
    with pytest.raises(ValidationError, match="no binary"):
        validate_for_phase(phase, _meta("resource", "ui"), location)


@pytest.mark.parametrize("phase", CHECKED)
def test_plugin_without_capabilities_needs_nothing(tmp_path: Path, phase: Phase) -> None:
    validate_for_phase(phase, _meta(), tmp_path / "missing")
