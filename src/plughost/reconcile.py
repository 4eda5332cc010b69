"""Audits the plugins directory against persisted state.

The filesystem is the truth about what is installed; the state file is the
truth about what the user wanted (enabled, dev mode). Reconciling keeps both.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

from .errors import ValidationError
from .lifecycle import PluginStateMachine
from .metadata import PluginMeta, load_meta
from .phases import Phase
from .records import PluginRecord, PluginStateRecord
from .validate import binary_path, is_executable_file

__all__ = ["ReconcileResult", "Reconciler"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReconcileResult:
    records: dict[str, PluginRecord]
    orphans: list[str] = dataclasses.field(default_factory=list)
    """Directories on disk with no persisted entry (adopted as Installed)."""
    ghosts: list[str] = dataclasses.field(default_factory=list)
    """Persisted entries with no directory on disk (dropped)."""


def _resting_phase(meta: PluginMeta, location: Path, enabled: bool, dev_mode: bool) -> Phase:
    if not enabled:
        return Phase.STOPPED
    if meta.has_backend_capabilities() and not is_executable_file(binary_path(location)):
        return Phase.BUILDING if dev_mode else Phase.FAILED
    return Phase.INSTALLED


class Reconciler:
    """Produces a consistent set of records from the disk and the state file."""

    def _scan(self, plugin_dir: Path) -> dict[str, PluginMeta]:
        found: dict[str, PluginMeta] = {}
        if not plugin_dir.is_dir():
            return found
        for entry in sorted(plugin_dir.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            try:
                meta = load_meta(entry)
            except ValidationError as exc:
                log.warning("skipping %s: %s", entry, exc.detail)
                continue
            if meta.id != entry.name:
                log.warning(
                    "skipping %s: plugin.yaml says id %r, which does not match the directory",
                    entry,
                    meta.id,
                )
                continue
            found[meta.id] = meta
        return found

    def reconcile(
        self, plugin_dir: str | Path, persisted: Iterable[PluginStateRecord]
    ) -> ReconcileResult:
        plugin_dir = Path(plugin_dir)
        on_disk = self._scan(plugin_dir)
        persisted_by_id = {p.id: p for p in persisted}
        result = ReconcileResult(records={})
        for plugin_id, meta in on_disk.items():
            state = persisted_by_id.get(plugin_id)
            if state is None:
                result.orphans.append(plugin_id)
            enabled = state.enabled if state else True
            dev_mode = state.dev_mode if state else False
            phase = _resting_phase(meta, plugin_dir / plugin_id, enabled, dev_mode)
            record = PluginRecord(
                meta=meta,  # the disk's metadata wins over a stale copy in the state
                machine=PluginStateMachine(plugin_id, phase),
                enabled=enabled,
                dev_mode=dev_mode,
            )
            if state:
                record.dev_path = state.dev_path
                record.last_error = state.last_error
                record.error_count = state.error_count
                record.installed_at = state.installed_at
                record.last_build = state.last_build
            if phase is Phase.FAILED and not record.last_error:
                binary = binary_path(plugin_dir / plugin_id)
                problem = "is not executable" if binary.exists() else "is missing"
                record.last_error = f"binary {binary} {problem}"
            result.records[plugin_id] = record
        result.ghosts = sorted(set(persisted_by_id) - set(on_disk))
        for ghost in result.ghosts:
            log.info("dropping state of %s: its directory is gone", ghost)
        return result

    def reconcile_from_filesystem(self, plugin_dir: str | Path) -> ReconcileResult:
        """Rebuild state from the disk alone (state file missing or corrupt)."""
        return self.reconcile(plugin_dir, [])
