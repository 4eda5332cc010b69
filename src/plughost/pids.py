"""Tracks plugin PIDs so that a host killed uncleanly cleans up on next start.

A PID alone is not an identity: the kernel reuses them. Each entry therefore
also stores the process's start time and executable, and cleanup kills only a
process that still matches all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel

from .coalesce import NextRun
from .store import atomic_write_json

__all__ = ["PID_FILE", "PidEntry", "PidRegistry", "PluginPIDTracker", "process_identity"]

log = logging.getLogger(__name__)

PID_FILE = "plugin_pids.json"
_START_TIME_TOLERANCE = 0.05  # seconds; psutil's create_time is derived from jiffies


class PidEntry(BaseModel):
    """One tracked process: who it is, beyond its number."""

    pid: int
    create_time: float
    exe: str


def process_identity(pid: int) -> PidEntry | None:
    """Read the identity of a live process, or None if it is gone or unreadable."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            return PidEntry(pid=pid, create_time=proc.create_time(), exe=proc.exe())
    except (psutil.Error, OSError):
        return None


def _same_process(entry: PidEntry) -> psutil.Process | None:
    current = process_identity(entry.pid)
    if current is None:
        return None
    if abs(current.create_time - entry.create_time) > _START_TIME_TOLERANCE:
        return None
    if current.exe != entry.exe:
        return None
    return psutil.Process(entry.pid)


def _kill(proc: psutil.Process) -> None:
    """SIGKILL the process and, when it leads one, its process group."""
    try:
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        _wait_dead(proc, timeout=5)
    except (psutil.Error, ProcessLookupError, PermissionError) as exc:
        log.warning("could not kill stale plugin process %d: %s", proc.pid, exc)


def _wait_dead(proc: psutil.Process, timeout: float) -> None:
    """Wait until the process is gone or a zombie.

    An orphan is not our child: its zombie stays until init reaps it, which
    can take seconds, and waiting for that (psutil's ``wait``) would make
    every stale process cost ``initialize()`` that long.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error, ChildProcessError):
                    proc.wait(timeout=0)  # reap it, if it happens to be ours
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > deadline:
            raise psutil.TimeoutExpired(timeout, proc.pid)
        time.sleep(0.005)


class PluginPIDTracker:
    """pluginID -> process identity, saved to ``<root>/plugin_pids.json``."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / PID_FILE
        self._entries: dict[str, PidEntry] = {}
        self._lock = threading.Lock()

    def record(self, plugin_id: str, pid: int) -> None:
        """Remember ``pid`` for ``plugin_id`` (after the process handshook)."""
        entry = process_identity(pid)
        if entry is None:
            log.warning("plugin %s: process %d vanished before it could be tracked", plugin_id, pid)
            return
        with self._lock:
            self._entries[plugin_id] = entry

    def remove(self, plugin_id: str) -> None:
        with self._lock:
            self._entries.pop(plugin_id, None)

    def entries(self) -> dict[str, PidEntry]:
        with self._lock:
            return dict(self._entries)

    def save(self) -> None:
        """Write the map; it is empty after a clean shutdown."""
        with self._lock:
            data = {pid: e.model_dump() for pid, e in sorted(self._entries.items())}
        atomic_write_json(self.path, data)

    def _read(self) -> dict[str, PidEntry]:
        try:
            raw: Any = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            log.info("no PID file at %s: nothing to clean up", self.path)
            return {}
        except (OSError, ValueError) as exc:
            log.warning("PID file %s unreadable (%s): skipping cleanup", self.path, exc)
            return {}
        if not isinstance(raw, dict):
            log.warning("PID file %s has no map: skipping cleanup", self.path)
            return {}
        entries: dict[str, PidEntry] = {}
        for plugin_id, item in raw.items():
            try:
                entries[str(plugin_id)] = PidEntry.model_validate(item)
            except ValueError:
                log.warning("PID file entry for %s is malformed: skipped", plugin_id)
        return entries

    def cleanup_stale(self) -> list[str]:
        """Kill processes left by a previous host that still match their identity.

        Returns the plugin ids whose process was killed; removes the file.
        """
        killed = []
        for plugin_id, entry in self._read().items():
            proc = _same_process(entry)
            if proc is None:
                log.info("stale PID %d of %s is gone or reused: left alone", entry.pid, plugin_id)
                continue
            log.warning("killing orphaned process %d of plugin %s", entry.pid, plugin_id)
            _kill(proc)
            killed.append(plugin_id)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove PID file %s: %s", self.path, exc)
        return killed


class PidRegistry:
    """The host's PID file, kept current: every change is saved before the caller goes on.

    A host killed at any moment can then be cleaned up after. Saves happen only
    while ``held()`` says this host holds the root, are serialised, and each
    writes the latest map, so the file never goes backwards.
    """

    def __init__(self, tracker: PluginPIDTracker, held: Callable[[], bool]) -> None:
        self.tracker = tracker
        self._held = held
        self._save = NextRun(self._save_map)  # shared by who waits for it

    @property
    def path(self) -> Path:
        return self.tracker.path

    def entries(self) -> dict[str, PidEntry]:
        return self.tracker.entries()

    async def record(self, key: str, pid: int) -> None:
        self.tracker.record(key, pid)
        await self.save()

    async def remove(self, key: str) -> None:
        self.tracker.remove(key)
        await self.save()

    async def save(self) -> None:
        """Callers that come while a save is under way share the next one, whose map is
        taken after they came: plugins started together cost a few writes, not one each."""
        if not self._held():
            return
        await self._save()

    async def _save_map(self) -> None:
        if not self._held():
            return
        try:
            await asyncio.to_thread(self.tracker.save)
        except OSError as exc:
            log.warning("cannot write the PID file %s: %s", self.tracker.path, exc)
