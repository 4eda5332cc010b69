"""Installing a plugin from its source tree in dev mode, and bringing dev plugins back.

A dev install is an ordinary installed plugin (``plugins/<id>/`` with its
plugin.yaml and ``bin/plugin``) whose record remembers the source path; the
dev server watches that source and rebuilds into the installed directory.
A build that fails does not undo the install: the plugin stays, BuildFailed,
with the errors, and the watcher waits for the fix.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .builder import sync_metadata
from .devserver import DevServerManager
from .errors import PlughostError, ValidationError
from .events import (
    EVENT_DEV_INSTALL_COMPLETE,
    EVENT_DEV_INSTALL_ERROR,
    EVENT_DEV_INSTALL_START,
    EVENT_DEVSERVER_ERROR,
)
from .metadata import METADATA_FILE, load_meta
from .phases import Phase
from .records import PluginInfo, PluginRecord

if TYPE_CHECKING:
    from .manager import PluginManager

__all__ = ["PathSource", "dev_server_manager", "install_in_dev_mode", "restore_dev_plugins"]

log = logging.getLogger(__name__)

_Chosen = str | os.PathLike[str] | None
PathSource = str | os.PathLike[str] | Callable[[], _Chosen] | Callable[[], Awaitable[_Chosen]]
"""A source directory, or a chooser (a dialog) that returns one, or None when cancelled."""


def dev_server_manager(manager: PluginManager) -> DevServerManager:
    """The manager's DevServerManager, creating (and setting) one if it has none."""
    current = manager._dev_server_manager
    if isinstance(current, DevServerManager):
        return current
    dsm = DevServerManager(manager)
    manager.set_dev_server_manager(dsm)
    return dsm


async def _resolve(path: PathSource) -> Path:
    if callable(path):
        chosen = path()
        if inspect.isawaitable(chosen):
            chosen = await chosen
        if not chosen:
            raise ValidationError("no directory was chosen", title="Dev install cancelled")
        path = chosen
    try:
        source = Path(os.fspath(path)).expanduser().resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop
        raise ValidationError(f"{path!r} is not a usable path: {exc}") from None
    if not source.is_dir():
        raise ValidationError(
            f"{source} is not a directory", suggestions=["pass the plugin's source directory"]
        )
    return source


async def install_in_dev_mode(manager: PluginManager, path: PathSource) -> PluginInfo:
    """Install the plugin whose source is at ``path`` in dev mode, build it and load it.

    Returns the plugin's info: Running, or BuildFailed with ``last_error``
    holding the build errors (the watcher keeps waiting for a fix), or Failed
    when the build was fine but the plugin did not start. Raises for a path
    that is not a plugin source tree.
    """
    bus = manager.bus
    try:
        source = await _resolve(path)
        meta = load_meta(source)
    except PlughostError as exc:
        bus.publish(
            EVENT_DEV_INSTALL_ERROR, {"pluginID": None, "path": str(path), "error": exc.detail}
        )
        raise
    plugin_id = meta.id
    bus.publish(EVENT_DEV_INSTALL_START, {"pluginID": plugin_id, "path": str(source)})
    dsm = dev_server_manager(manager)
    try:
        await dsm.open()
        if dsm.is_managed(plugin_id):
            await dsm.stop(plugin_id)
        if plugin_id in manager._records:
            await manager.unload_plugin(plugin_id)
        target = manager.layout.plugin_dir(plugin_id)
        (target / "bin").mkdir(parents=True, exist_ok=True)
        sync_metadata(source, target)
        await _dev_record(manager, plugin_id, source)
        state = await dsm.start(plugin_id, source, build=True)
    except PlughostError as exc:
        bus.publish(
            EVENT_DEV_INSTALL_ERROR,
            {"pluginID": plugin_id, "path": str(source), "error": exc.detail, "errors": []},
        )
        raise
    info = manager.get_plugin(plugin_id)
    if info.phase is Phase.RUNNING:
        bus.publish(
            EVENT_DEV_INSTALL_COMPLETE,
            {
                "pluginID": plugin_id,
                "path": str(source),
                "phase": info.phase.value,
                "buildDuration": state.last_build_duration,
            },
        )
    else:
        bus.publish(
            EVENT_DEV_INSTALL_ERROR,
            {
                "pluginID": plugin_id,
                "path": str(source),
                "phase": info.phase.value,
                "error": state.last_error or info.last_error,
                "errors": [e.to_dict() for e in state.build_errors],
            },
        )
    return info


async def _dev_record(manager: PluginManager, plugin_id: str, source: Path) -> PluginRecord:
    """The plugin's record, in Building, remembering its source."""
    meta = load_meta(manager.layout.plugin_dir(plugin_id))
    record = manager._records.get(plugin_id)
    if record is None:
        record = manager._adopt(PluginRecord.new(meta, Phase.INSTALLED))
    async with manager._lock_for(plugin_id):
        record.meta = meta
        record.dev_mode, record.dev_path, record.enabled = True, str(source), True
        record.last_error = ""
        manager._try_move(record, Phase.BUILDING, "dev install", force=True)
    await manager.persist()
    return record


async def restore_dev_plugins(manager: PluginManager) -> None:
    """After a restart: watch every dev plugin's source again; rebuild those without a binary.

    Called by ``PluginManager.initialize`` when a DevServerManager is set.
    Never raises: a dev plugin whose source is gone is reported and left as it is.
    """
    dsm = manager._dev_server_manager
    if not isinstance(dsm, DevServerManager):
        return
    try:
        await dsm.open()
    except Exception:
        log.exception("cannot start following .devinfo files")
    for record in list(manager._records.values()):
        if not (record.dev_mode and record.dev_path):
            continue
        plugin_id = record.id
        source = Path(record.dev_path)
        if not (source / METADATA_FILE).is_file():
            detail = f"the dev source {source} of {plugin_id} is gone; not watching it"
            log.warning("%s", detail)
            manager.bus.publish(EVENT_DEVSERVER_ERROR, {"pluginID": plugin_id, "error": detail})
            continue
        try:
            await dsm.start(plugin_id, source, ui=False)
        except Exception:
            log.exception("cannot restart the dev server of %s", plugin_id)
            continue
        if record.phase in (Phase.BUILD_FAILED, Phase.BUILDING):
            dsm.spawn(dsm.rebuild(plugin_id))  # the binary is missing: build it
        if (source / "ui" / "package.json").is_file():
            dsm.spawn(dsm.start_ui(plugin_id))
