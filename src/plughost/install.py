"""Installing packages: from a file, from the marketplace, and rolling back.

A package is extracted into a private temp directory next to the plugins and
fully checked there; only then is the running plugin stopped and the
directories swapped, so a bad package never damages a working installation.
The replaced version is kept (``plugins/.previous/<id>``) for rollback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .archive import safe_extract, validate_package_dir
from .errors import PlughostError, PluginInstallError, PluginNotFoundError, ValidationError
from .events import (
    EVENT_INSTALL_ERROR,
    EVENT_INSTALL_FINISHED,
    EVENT_INSTALL_STARTED,
    EVENT_UPDATE_COMPLETE,
    EVENT_UPDATE_ERROR,
    EVENT_UPDATE_STARTED,
)
from .metadata import METADATA_FILE, PluginMeta, load_meta
from .phases import Phase
from .records import PluginRecord

if TYPE_CHECKING:
    from .manager import PluginManager

__all__ = [
    "PREVIOUS_DIR",
    "install_from_path",
    "install_plugin_version",
    "previous_version",
    "rollback_plugin",
]

PREVIOUS_DIR = ".previous"
Progress = Callable[[int, int | None], None]


def _previous_dir(manager: PluginManager, plugin_id: str) -> Path:
    return manager.plugins_dir / PREVIOUS_DIR / plugin_id


def previous_version(manager: PluginManager, plugin_id: str) -> PluginMeta | None:
    """The version kept for rollback, if any."""
    try:
        return load_meta(_previous_dir(manager, plugin_id))
    except ValidationError:
        return None


def _override_version(directory: Path, version: str) -> PluginMeta:
    """The marketplace's version wins over the one written inside the package."""
    path = directory / METADATA_FILE
    raw: dict[str, Any] = yaml.safe_load(path.read_text())
    raw["version"] = version
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_meta(directory)


def _check_source(path: Path) -> None:
    if not path.exists():
        raise PluginInstallError(
            f"{path}: no such file", suggestions=["check the path to the .tar.gz package"]
        )
    if not path.is_file():
        raise PluginInstallError(f"{path}: not a file; expected a .tar.gz plugin package")


def _swap_in(manager: PluginManager, staged: Path, plugin_id: str) -> None:
    """Put ``staged`` at plugins/<id>; the old directory becomes the rollback copy."""
    target = manager.layout.plugin_dir(plugin_id)
    previous = _previous_dir(manager, plugin_id)
    if target.exists():
        previous.parent.mkdir(exist_ok=True)
        if previous.exists():
            shutil.rmtree(previous)
        os.replace(target, previous)
    os.replace(staged, target)


async def _activate(manager: PluginManager, meta: PluginMeta, staged: Path, reason: str) -> None:
    """Stop the old instance, swap directories, record and (if enabled) start the new one."""
    plugin_id = meta.id
    async with manager._lock_for(plugin_id):
        record = manager._records.get(plugin_id)
        if record is not None:
            manager.health.cancel_recovery(plugin_id)
            await manager._unload_locked(plugin_id, reason)
        await asyncio.to_thread(_swap_in, manager, staged, plugin_id)
        if record is None:
            record = manager._adopt(PluginRecord.new(meta, Phase.UNINSTALLED))
            record.machine.transition_to(Phase.INSTALLING, reason)
            record.machine.transition_to(Phase.INSTALLED, reason)
        else:
            record.meta, record.last_error, record.error_count = meta, "", 0
            manager._try_move(record, Phase.INSTALLED, reason, force=True)
        if record.enabled and manager.start_plugins:
            with contextlib.suppress(PlughostError):  # the record says why it failed
                await manager._load_locked(plugin_id, _options())
        await manager.persist()


def _options() -> Any:
    from .manager import LoadPluginOptions

    return LoadPluginOptions()


async def install_from_path(
    manager: PluginManager,
    path: str | os.PathLike[str],
    *,
    version: str | None = None,
    progress: Progress | None = None,
) -> PluginMeta:
    """Install (or update) the plugin packaged at ``path``; events install_*."""
    source = Path(path).expanduser()
    manager.bus.publish(EVENT_INSTALL_STARTED, {"path": str(source)})
    staged: Path | None = None
    try:
        _check_source(source)
        manager.plugins_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".install-", dir=manager.plugins_dir))
        await asyncio.to_thread(
            safe_extract,
            source,
            staged,
            max_total=manager.max_plugin_size,
            max_file=manager.max_file_size,
            max_entries=manager.max_plugin_entries,
            progress=(lambda done, total: progress(done, total)) if progress else None,
        )
        meta = await asyncio.to_thread(validate_package_dir, staged)
        if version:
            meta = _override_version(staged, version)
        await _activate(manager, meta, staged, f"installed {meta.version}")
        staged = None
    except PlughostError as exc:
        manager.bus.publish(EVENT_INSTALL_ERROR, {"path": str(source), "error": exc.to_dict()})
        raise
    finally:
        if staged is not None:
            await asyncio.to_thread(shutil.rmtree, staged, True)
    info = manager.get_plugin(meta.id)
    manager.bus.publish(
        EVENT_INSTALL_FINISHED,
        {"pluginID": meta.id, "version": meta.version, "phase": info.phase.value},
    )
    return meta


async def install_plugin_version(
    manager: PluginManager,
    plugin_id: str,
    version: str,
    *,
    progress: Progress | None = None,
    require_signature: bool = True,
) -> PluginMeta:
    """Download, verify (checksum, Ed25519 signature) and install one marketplace version."""
    from .registry.client import verify_download

    client = manager.marketplace()
    payload = {"pluginID": plugin_id, "version": version}
    manager.bus.publish(EVENT_UPDATE_STARTED, payload)
    workdir = Path(tempfile.mkdtemp(prefix=".download-", dir=manager.plugins_dir))
    try:
        result = await client.download_artifact(plugin_id, version, dest=workdir, progress=progress)
        key = manager.settings.registry_public_key
        verify_download(result, key, require_signature=require_signature)
        meta = await install_from_path(manager, result.path, version=version)
        with contextlib.suppress(PlughostError):
            await client.record_download(plugin_id, version, result.platform)
    except PlughostError as exc:
        manager.bus.publish(EVENT_UPDATE_ERROR, {**payload, "error": exc.to_dict()})
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    manager.bus.publish(EVENT_UPDATE_COMPLETE, payload)
    return meta


async def rollback_plugin(manager: PluginManager, plugin_id: str) -> PluginMeta:
    """Swap the kept previous version back in (the current one becomes the previous)."""
    previous = _previous_dir(manager, plugin_id)
    if previous_version(manager, plugin_id) is None:
        raise PluginNotFoundError(
            f"no previous version of {plugin_id} is kept",
            plugin_id=plugin_id,
            suggestions=["a previous version is kept when an install replaces another"],
        )
    staged = Path(tempfile.mkdtemp(prefix=".rollback-", dir=manager.plugins_dir))
    await asyncio.to_thread(shutil.copytree, previous, staged, symlinks=True, dirs_exist_ok=True)
    meta = load_meta(staged)
    await _activate(manager, meta, staged, f"rolled back to {meta.version}")
    return meta
