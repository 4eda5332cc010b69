"""What must be on disk before a plugin may enter a phase."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ValidationError
from .metadata import PluginMeta
from .phases import Phase

__all__ = ["BINARY_PATH", "binary_path", "is_executable_file", "validate_for_phase"]

BINARY_PATH = Path("bin") / "plugin"
ASSETS_DIR = "assets"


def binary_path(location: str | Path) -> Path:
    return Path(location) / BINARY_PATH


def is_executable_file(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def validate_for_phase(phase: Phase, meta: PluginMeta, location: str | Path) -> None:
    """Raise ValidationError if ``location`` cannot hold ``meta`` in ``phase``.

    Validating and Starting need an executable ``bin/plugin`` for backend
    plugins and an ``assets/`` directory for ui plugins; other phases pass.
    """
    if phase not in (Phase.VALIDATING, Phase.STARTING):
        return
    location = Path(location)
    if meta.has_backend_capabilities():
        binary = binary_path(location)
        if not binary.exists():
            raise ValidationError(
                f"backend plugin has no binary at {binary}",
                title="Plugin binary missing",
                suggestions=["build the plugin so that bin/plugin exists"],
                plugin_id=meta.id,
            )
        if not is_executable_file(binary):
            raise ValidationError(
                f"{binary} is not an executable file",
                title="Plugin binary not executable",
                suggestions=[f"run: chmod +x {binary}"],
                plugin_id=meta.id,
            )
    if meta.has_ui_capabilities() and not (location / ASSETS_DIR).is_dir():
        raise ValidationError(
            f"ui plugin has no {ASSETS_DIR}/ directory in {location}",
            title="Plugin assets missing",
            suggestions=["build the UI so that its compiled files land in assets/"],
            plugin_id=meta.id,
        )
