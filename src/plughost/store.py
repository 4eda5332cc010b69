"""plugin_state.json: atomic writes, corrupt-file quarantine, and merging.

A crash at any instant must leave either the complete old file or the complete
new one, never a mix: write a temp file in the same directory, fsync it,
rename it over the old one, then fsync the directory so the rename itself is
durable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic

from .atomic import atomic_replace, atomic_write_bytes, atomic_write_text
from .errors import InternalError
from .events import EVENT_STATE_WRITE_ERROR, EventBus
from .records import PluginStateRecord

__all__ = [
    "STATE_FILE",
    "StateFileCorrupt",
    "StateStore",
    "atomic_replace",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "merge_records",
]

log = logging.getLogger(__name__)

STATE_FILE = "plugin_state.json"


class StateFileCorrupt(InternalError):
    """The state file exists but cannot be parsed; it has been moved aside."""

    type = "state_file_corrupt"
    default_title = "State file corrupt"


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=False).encode() + b"\n")


def merge_records(
    loaded: Iterable[PluginStateRecord],
    persisted: Iterable[PluginStateRecord],
    plugins_dir: Path,
) -> list[PluginStateRecord]:
    """Loaded records win; persisted ones are kept only while their directory exists.

    A persisted entry whose directory is gone is a ghost and is dropped.
    """
    merged: dict[str, PluginStateRecord] = {}
    for record in persisted:
        if (plugins_dir / record.id).is_dir():
            merged[record.id] = record
    for record in loaded:
        merged[record.id] = record
    return sorted(merged.values(), key=lambda r: r.id)


class StateStore:
    """Reads and writes ``<root>/plugin_state.json``."""

    def __init__(self, root: Path, bus: EventBus | None = None) -> None:
        self.path = Path(root) / STATE_FILE
        self._bus = bus

    def read(self) -> list[PluginStateRecord]:
        """The persisted records; [] when the file is missing.

        Raises StateFileCorrupt (after moving the file aside) when it cannot be
        parsed, so the caller can rebuild from the filesystem.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            raw = json.loads(data)
            if not isinstance(raw, list):
                raise ValueError(f"expected a JSON list, got {type(raw).__name__}")
            return [PluginStateRecord.model_validate(item) for item in raw]
        except (ValueError, pydantic.ValidationError, UnicodeDecodeError) as exc:
            aside = self.quarantine()
            raise StateFileCorrupt(
                f"{self.path} could not be parsed ({str(exc).splitlines()[0]}); "
                f"kept aside as {aside.name}",
                suggestions=["state is rebuilt from the plugins directory; nothing is lost"],
            ) from exc

    def clean_temp_files(self) -> int:
        """Remove temp files a writer killed mid-write left behind (call under the root lock)."""
        removed = 0
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()
                removed += 1
        return removed

    def quarantine(self) -> Path:
        """Move the current file to ``plugin_state.json.corrupt-<timestamp>``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        os.replace(self.path, aside)
        log.warning("state file %s is corrupt; moved to %s", self.path, aside)
        return aside

    def write(self, records: Iterable[PluginStateRecord]) -> bool:
        """Persist ``records``; on failure emit ``plugin/state_write_error`` and return False."""
        payload = [r.to_json_dict() for r in sorted(records, key=lambda r: r.id)]
        try:
            atomic_write_json(self.path, payload)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            if self._bus is not None:
                self._bus.publish(
                    EVENT_STATE_WRITE_ERROR, {"path": str(self.path), "error": str(exc)}
                )
            return False
        return True
