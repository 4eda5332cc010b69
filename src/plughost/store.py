"""plugin_state.json: atomic writes, corrupt-file quarantine, a last good copy, and merging.

A crash at any instant must leave either the complete old file or the complete
new one, never a mix: write a temp file in the same directory, fsync it,
rename it over the old one, then fsync the directory so the rename itself is
durable. A file spoiled all the same (a disk, an editor) must not bring back
enabled what the user disabled: before each write, the file being replaced is
kept as ``plugin_state.json.bak`` if it parses, and a corrupt file is replaced
by that copy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic

from .atomic import atomic_replace, atomic_write_bytes, atomic_write_text
from .errors import InternalError
from .events import EVENT_STATE_WRITE_ERROR, EventBus
from .fsutil import PRIVATE_FILE, tighten
from .paths import RootLayout
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
    """The state file exists but cannot be parsed, and no good backup replaced it."""

    type = "state_file_corrupt"
    default_title = "State file corrupt"
    backup_ok = False
    """Whether a good backup is there to replace it (``read(repair=False)`` only looks)."""


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=False).encode() + b"\n"


def atomic_write_json(path: Path, data: Any, mode: int = PRIVATE_FILE) -> None:
    atomic_write_bytes(path, _json_bytes(data), mode)


_UNREADABLE = (ValueError, pydantic.ValidationError, UnicodeDecodeError)


def _parse(data: bytes) -> list[PluginStateRecord]:
    """The records of a state file's bytes; raises one of ``_UNREADABLE``."""
    raw = json.loads(data)
    if not isinstance(raw, list):
        raise ValueError(f"expected a JSON list, got {type(raw).__name__}")
    return [PluginStateRecord.model_validate(item) for item in raw]


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
    """Reads and writes ``<root>/plugin_state.json`` (0600) and its last good copy."""

    def __init__(self, root: Path, bus: EventBus | None = None) -> None:
        self.path = Path(root) / STATE_FILE
        self._bus = bus
        self._good: bytes | None = None  # the file's content, known to parse

    @property
    def backup(self) -> Path:
        """``plugin_state.json.bak``: the state before the last write, as it was read or written."""
        return RootLayout(self.path.parent).state_backup

    def read(self, *, repair: bool = True) -> list[PluginStateRecord]:
        """The persisted records; [] when the file is missing.

        A file that cannot be parsed is moved aside and replaced by the backup
        (logged as a warning), or, without a good backup, raises StateFileCorrupt
        so the caller can rebuild from the filesystem. ``repair=False`` (doctor)
        changes nothing and raises StateFileCorrupt for a corrupt file.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        with contextlib.suppress(OSError):  # a read-only root keeps its modes
            tighten(self.path)
        try:
            records = _parse(data)
        except _UNREADABLE as exc:
            return self._recover((str(exc) or repr(exc)).splitlines()[0], repair, exc)
        self._good = data
        return records

    def _recover(self, why: str, repair: bool, exc: Exception) -> list[PluginStateRecord]:
        backup = self._read_backup()
        problem = f"{self.path} could not be parsed ({why})"
        if not repair:
            has = f"the next start restores {self.backup.name}" if backup else "no good backup"
            error = StateFileCorrupt(f"{problem}; {has}")
            error.backup_ok = backup is not None
            raise error from exc
        aside = self.quarantine()
        if backup is None:
            raise StateFileCorrupt(
                f"{problem}; kept aside as {aside.name}, and there is no good {self.backup.name}",
                suggestions=["state is rebuilt from the plugins directory; nothing is lost"],
            ) from exc
        data, records = backup
        atomic_write_bytes(self.path, data, PRIVATE_FILE)
        self._good = data
        log.warning(
            "%s; kept aside as %s and replaced by the last good state, %s",
            problem,
            aside.name,
            self.backup.name,
        )
        return records

    def _read_backup(self) -> tuple[bytes, list[PluginStateRecord]] | None:
        try:
            data = self.backup.read_bytes()
            return data, _parse(data)
        except (OSError, *_UNREADABLE):
            return None

    def _keep_backup(self) -> None:
        """Keep the file about to be replaced as the backup, if it parses.

        A hard link, renamed over the old backup: no copy, and a crash leaves the
        old backup or the new one. Failing only costs the backup, never the write.
        """
        try:
            data = self.path.read_bytes()
        except OSError:
            return
        if data != self._good:
            try:
                _parse(data)
            except _UNREADABLE:
                log.warning("%s does not parse: the backup keeps the last good state", self.path)
                return
        tmp = self.path.with_name(f".{self.backup.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.link(self.path, tmp)
            os.replace(tmp, self.backup)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("cannot keep %s as %s: %s", self.path, self.backup.name, exc)

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
        data = _json_bytes(payload)
        try:
            self._keep_backup()
            atomic_write_bytes(self.path, data, PRIVATE_FILE)
        except OSError as exc:
            log.error("cannot write %s: %s", self.path, exc)
            if self._bus is not None:
                self._bus.publish(
                    EVENT_STATE_WRITE_ERROR, {"path": str(self.path), "error": str(exc)}
                )
            return False
        self._good = data
        return True
