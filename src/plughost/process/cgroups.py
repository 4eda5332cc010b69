"""A sandboxed plugin's cgroups: where this host may make them, one set per plugin with
its limits, and the file a process writes to join one.

A plugin's set outlives its process: the plugin's next start (a restart after a crash,
a reload, a dev-mode rebuild) joins the same directories again. Making and removing
them is ~0.3 ms of the host's time at every start, and more of the kernel's after each
stop. They are removed when the host exits, or, for a host that was killed, by the
next host to look here.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import logging
import os
import re
from pathlib import Path
from typing import Literal

__all__ = ["CgroupVersion", "PluginCgroups", "give_back", "probe_cgroups", "take"]

log = logging.getLogger(__name__)

CgroupVersion = Literal["v2", "v1", "none"]

_ROOT = Path("/sys/fs/cgroup")
_names = itertools.count(1)
_PREFIX = "plughost-"
# plughost-<pid>.<start>-<plugin id>-<n>: the host that made it is the process with that pid
# and start time (a pid alone is taken again by another process, a restarted host even).
_OURS = re.compile(r"plughost-(?:probe-)?(\d+)(?:\.(\d+))?(?:-.*)?")
_kept: dict[str, PluginCgroups] = {}
"""plugin id -> its empty set, waiting for the plugin's next start."""
_removing_at_exit = False


@dataclasses.dataclass
class PluginCgroups:
    """One plugin's cgroup directories, and what they had counted when it joined them."""

    plugin_id: str
    version: CgroupVersion
    dirs: list[Path]
    limits: tuple[int, int]
    """(memory in bytes, processes) written to ``dirs``."""
    oom_base: int = 0
    """Memory kills counted before this process joined (the set may be a kept one)."""

    def join_files(self) -> list[str]:
        """The file of each directory that a single-threaded process writes "0" to, to move
        itself in.

        On v1, ``tasks``: moving only the calling thread skips the kernel's global
        threadgroup lock, whose write side waits for an RCU grace period (~9 ms on a busy
        machine, at every start); ``cgroup.procs`` takes it. The writer (the exec guard,
        else a shell) has no other thread and no child yet, so it is the whole plugin to
        be, and everything it starts is forked inside the cgroup: no race. v2 has no
        ``tasks`` for a domain cgroup: ``cgroup.procs`` there.
        """
        name = "tasks" if self.version == "v1" else "cgroup.procs"
        return [str(directory / name) for directory in self.dirs]

    def oom_kills(self) -> int:
        """How many processes the kernel has killed in these directories for exceeding
        their memory limit, since they were made."""
        total = 0
        for directory in self.dirs:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError, ValueError):
                    for line in (directory / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill":
                            total += int(value)
        return total

    def oom_killed(self) -> bool:
        """Did the kernel kill something here for exceeding the limit since the join?"""
        return self.oom_kills() > self.oom_base

    def empty(self) -> bool:
        try:
            return all(not (d / "cgroup.procs").read_bytes().strip() for d in self.dirs)
        except OSError:
            return False

    def remove(self) -> None:
        for directory in self.dirs:
            with contextlib.suppress(OSError):
                directory.rmdir()


def take(
    version: CgroupVersion,
    parents: dict[str, Path],
    plugin_id: str,
    *,
    memory_mb: int,
    processes: int,
) -> PluginCgroups | None:
    """The plugin's set with these limits: its kept one, else a new one (None: none here)."""
    limits = (memory_mb * 1024 * 1024, processes)
    kept = _kept.pop(plugin_id, None)
    if kept is not None:
        if kept.limits == limits and all(d.is_dir() for d in kept.dirs):
            return kept
        kept.remove()
    made = _make(version, parents, plugin_id, limits)
    return made if made.dirs else None


def give_back(cgroups: PluginCgroups) -> None:
    """The plugin's process is gone: keep its set for the next start, if nothing is left in
    it (else remove what can be)."""
    if not cgroups.empty():
        cgroups.remove()
        return
    cgroups.oom_base = cgroups.oom_kills()
    older = _kept.get(cgroups.plugin_id)
    if older is not None and older is not cgroups:
        older.remove()
    global _removing_at_exit
    if not _removing_at_exit:
        atexit.register(_remove_kept)
        _removing_at_exit = True
    _kept[cgroups.plugin_id] = cgroups


def _remove_kept() -> None:
    while _kept:
        _kept.popitem()[1].remove()


def _make(
    version: CgroupVersion, parents: dict[str, Path], plugin_id: str, limits: tuple[int, int]
) -> PluginCgroups:
    made = PluginCgroups(plugin_id, version, [], limits)
    name = f"{_PREFIX}{_host()}-{plugin_id}-{next(_names)}"
    memory = str(limits[0]).encode()
    wanted = {
        "pids": {"pids.max": str(limits[1]).encode()},
        "memory": {
            "memory.max": memory,
            "memory.swap.max": b"0",
            "memory.limit_in_bytes": memory,
            "memory.memsw.limit_in_bytes": memory,
        },
    }
    for controller, parent in sorted(parents.items()):
        directory = parent / name
        if directory in made.dirs:  # v2: one directory holds both controllers
            continue
        try:
            os.mkdir(directory)
        except OSError as exc:
            log.warning("cannot create cgroup %s: %s", directory, exc)
            continue
        made.dirs.append(directory)
        files = wanted["pids"] | wanted["memory"] if version == "v2" else wanted[controller]
        for file, value in files.items():
            try:  # each version knows only its own files
                fd = os.open(directory / file, os.O_WRONLY | os.O_CLOEXEC)
            except OSError:
                continue
            with contextlib.suppress(OSError):
                os.write(fd, value)
            os.close(fd)
    return made


def _own() -> dict[str, str]:
    """controller -> path of this process's cgroup, from /proc/self/cgroup ('' = the v2 one)."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                found[name] = path
    return found


def _writable_dir(path: Path) -> bool:
    """May this process create a child cgroup here? (Tried, not guessed from modes.)"""
    probe_dir = path / f"{_PREFIX}probe-{os.getpid()}"
    try:
        probe_dir.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe_dir.rmdir()
    return True


def probe_cgroups() -> tuple[CgroupVersion, dict[str, Path]]:
    """Where this host may make cgroups: v2 where its controllers are enabled, else v1's
    ``pids`` and ``memory``; controller -> the directory to make them in. What hosts that
    were killed left there is removed on the way."""
    own = _own()
    for mount in (_ROOT, _ROOT / "unified"):
        if "" not in own or not (mount / "cgroup.controllers").exists():
            continue
        here = mount / own[""].lstrip("/")
        try:
            enabled = set((here / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if {"pids", "memory"} <= enabled and _writable_dir(here):
            _sweep(here)
            return "v2", {"pids": here, "memory": here}
    dirs: dict[str, Path] = {}
    for controller in ("pids", "memory"):
        mount = _ROOT / controller
        if controller in own and (mount / "cgroup.procs").exists():
            here = mount / own[controller].lstrip("/")
            if _writable_dir(here):
                _sweep(here)
                dirs[controller] = here
    return ("v1", dirs) if dirs else ("none", {})


def _host(pid: int | None = None) -> str:
    """``<pid>.<start>``: a process, told from whatever takes its pid after it ("" if gone).

    The start is the kernel's (clock ticks since boot, /proc/<pid>/stat): unlike a wall
    clock time, a clock set meanwhile does not change it."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return ""
    except OSError:  # there, but hidden from this user (hidepid): taken as living
        return f"{pid}.?"
    fields = stat[stat.rfind(b")") + 2 :].split()
    return f"{pid}.{int(fields[19])}" if len(fields) > 19 else f"{pid}.?"


def _sweep(parent: Path) -> None:
    """Remove the empty sets of hosts that are gone (a killed host removes nothing)."""
    try:
        names = [e.name for e in os.scandir(parent) if e.name.startswith(_PREFIX)]
    except OSError:
        return
    for name in names:
        match = _OURS.fullmatch(name)
        if match is None:
            continue
        pid, started = match.groups()
        living = _host(int(pid))
        if living and (started is None or living in (f"{pid}.{started}", f"{pid}.?")):
            continue  # its host lives (or, named by an older plughost, a process has its pid)
        with contextlib.suppress(OSError):  # not empty, or another host's sweep was first
            (parent / name).rmdir()
