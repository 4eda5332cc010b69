"""Installing a plugin from its source tree in dev mode.

A dev install is an ordinary installed plugin (``plugins/<id>/`` with its
plugin.yaml and ``bin/plugin``) whose record remembers the source path; the
dev server watches that source and rebuilds into the installed directory.
A build that fails does not undo the install: the plugin stays, BuildFailed,
with the errors, and the watcher waits for the fix.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..errors import PlughostError, ValidationError
from ..events import (
    EVENT_DEV_INSTALL_COMPLETE,
    EVENT_DEV_INSTALL_ERROR,
    EVENT_DEV_INSTALL_START,
)
from ..host.table import PluginTable
from ..metadata import load_meta
from ..phases import Phase
from ..records import PluginInfo, PluginRecord
from .builder import sync_metadata
from .watch import DevServerManager

__all__ = ["PathSource", "install_in_dev_mode"]

_Chosen = str | os.PathLike[str] | None
PathSource = str | os.PathLike[str] | Callable[[], _Chosen] | Callable[[], Awaitable[_Chosen]]
"""A source directory, or a chooser (a dialog) that returns one, or None when cancelled."""


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


async def install_in_dev_mode(
    table: PluginTable, dsm: DevServerManager, path: PathSource
) -> PluginInfo:
    """Install the plugin whose source is at ``path`` in dev mode, build it and load it.

    Returns the plugin's info: Running, or BuildFailed with ``last_error``
    holding the build errors (the watcher keeps waiting for a fix), or Failed
    when the build was fine but the plugin did not start. Raises for a path
    that is not a plugin source tree.
    """
    bus = table.bus
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
    try:
        await dsm.open()
        if dsm.is_managed(plugin_id):
            await dsm.stop(plugin_id)
        try:
            await _dev_record(table, plugin_id, source)
            state = await dsm.start(plugin_id, source, build=True)
        except BaseException as exc:  # an error, or Ctrl-C / a cancel in the middle of the build
            await asyncio.shield(_not_building(table, plugin_id, exc))
            raise
    except PlughostError as exc:
        bus.publish(
            EVENT_DEV_INSTALL_ERROR,
            {"pluginID": plugin_id, "path": str(source), "error": exc.detail, "errors": []},
        )
        raise
    info = table.get(plugin_id).info()
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


async def _dev_record(table: PluginTable, plugin_id: str, source: Path) -> None:
    """Stop what runs, sync plugin.yaml, and leave the record Building, remembering its source.

    Everything happens under the plugin's lock, the record's creation included.
    """
    target = table.layout.plugin_dir(plugin_id)

    def create() -> PluginRecord:
        _sync(source, target)
        return PluginRecord.new(load_meta(target), Phase.INSTALLED)

    async with table.exclusive(plugin_id, create=create) as slot:
        await slot.stop("dev install")
        if not slot.created:
            _sync(source, target)
        record = slot.record
        record.meta = load_meta(target)
        record.dev_mode, record.dev_path, record.enabled = True, str(source), True
        record.last_error = ""
        if slot.phase is Phase.STOPPED:  # the table's way from Stopped to Building
            slot.change(Phase.INSTALLED, "dev install")
        slot.change(Phase.BUILDING, "dev install")
    await table.persist()


async def _not_building(table: PluginTable, plugin_id: str, exc: BaseException) -> None:
    """A dev install that did not finish its build ends BuildFailed, saying why, never
    Building: nothing builds it any more (a one-shot ``plughost dev`` has exited)."""
    if isinstance(exc, PlughostError):
        why = exc.detail
    elif isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        why = "the dev build was interrupted before it finished"
    else:
        why = f"the dev build failed: {exc or type(exc).__name__}"
    try:
        async with table.exclusive(plugin_id) as slot:
            if slot.phase is not Phase.BUILDING:
                return
            slot.record.last_error = why
            slot.change(Phase.BUILD_FAILED, why.splitlines()[0][:200])
    except PlughostError:
        return  # uninstalled meanwhile, or the host is closing: nothing to settle
    await table.persist()


def _sync(source: Path, target: Path) -> None:
    (target / "bin").mkdir(parents=True, exist_ok=True)
    sync_metadata(source, target)
