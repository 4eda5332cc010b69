"""What keeps a plugin away from its host: a non-dumpable host, and plugins run as another user.

A plugin runs as the host's user unless ``run_as`` names another, and Linux lets
a process read ``/proc/<pid>/environ`` and the memory of any process of its own
user: the environment allow-list alone would not keep the host's secrets from
its plugins. A non-dumpable process's ``/proc`` files need CAP_SYS_PTRACE.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import stat
import sys
from pathlib import Path

from .errors import PluginLoadError

__all__ = [
    "RunAs",
    "allow_traversal",
    "missing_privileges",
    "protect_host_process",
    "resolve_run_as",
    "unreachable",
]

log = logging.getLogger(__name__)

_PR_SET_DUMPABLE = 4
# What starting a plugin as another user takes: switching to it, giving it its socket
# directory, signalling its process group, and reaching its socket in that directory.
_SWITCH_CAPABILITIES = {
    0: "CAP_CHOWN",
    1: "CAP_DAC_OVERRIDE",
    5: "CAP_KILL",
    6: "CAP_SETGID",
    7: "CAP_SETUID",
}
_noted_unsupported = False


def protect_host_process() -> bool:
    """Mark this process non-dumpable, so no process without CAP_SYS_PTRACE reads its memory
    or environment through /proc (and no core dump is written). True when it took effect.

    Linux only; elsewhere a note is logged once and nothing changes.
    """
    global _noted_unsupported
    if not sys.platform.startswith("linux"):
        if not _noted_unsupported:
            _noted_unsupported = True
            log.info("protect_host_process: not supported on %s; nothing changed", sys.platform)
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        log.warning("prctl(PR_SET_DUMPABLE, 0) failed: %s", os.strerror(error))
        return False
    return True


@dataclasses.dataclass(frozen=True)
class RunAs:
    """The user plugins run as (the ``run_as`` setting), with its primary group only."""

    name: str
    uid: int
    gid: int


def resolve_run_as(value: str, plugin_id: str = "", executable: Path | None = None) -> RunAs | None:
    """``run_as`` (a user name or uid) as a user; None when empty or the host's own user.

    Raises PluginLoadError for an unknown user, for a host that may not switch to it,
    and for an ``executable`` that user could not reach or run.
    """
    value = value.strip()
    if not value:
        return None
    import pwd  # POSIX only: imported where run_as is used

    try:
        entry = pwd.getpwuid(int(value)) if value.isdigit() else pwd.getpwnam(value)
    except KeyError:
        raise PluginLoadError(
            f"run_as names no user of this machine: {value!r}",
            plugin_id=plugin_id or None,
            suggestions=[
                "set run_as in plughost.toml to an existing user name or uid, or clear it"
            ],
        ) from None
    if entry.pw_uid == os.geteuid():
        return None  # already that user: nothing to switch
    missing = missing_privileges()
    if missing:
        raise PluginLoadError(
            f"run_as = {value!r}, but this host may not start processes as another user "
            f"(it runs as uid {os.geteuid()} without {', '.join(missing)})",
            plugin_id=plugin_id or None,
            suggestions=[
                "run the host as root (or grant it those capabilities)",
                "or clear run_as in plughost.toml to run plugins as the host's own user",
            ],
        )
    user = RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid)
    blocked = unreachable(executable, user) if executable is not None else None
    if blocked is not None:
        what = "pass through" if blocked.is_dir() else "run"
        raise PluginLoadError(
            f"run_as = {value!r}, but user {user.name} may not {what} {blocked}",
            plugin_id=plugin_id or None,
            suggestions=[
                f"chmod o+rx {blocked}" if what == "run" else f"chmod o+x {blocked}",
                "or move the root somewhere that user can reach (every directory above it "
                "must be passable by others)",
            ],
        )
    return user


def missing_privileges() -> list[str]:
    """What this process lacks to run plugins as another user (empty: nothing)."""
    if sys.platform.startswith("linux"):
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            status = ""
        for line in status.splitlines():
            if line.startswith("CapEff:"):
                effective = int(line.split()[1], 16)
                return [n for bit, n in _SWITCH_CAPABILITIES.items() if not effective >> bit & 1]
    return [] if os.geteuid() == 0 else ["root"]


def _may(st: os.stat_result, user: RunAs, bit: int) -> bool:
    """Whether the mode bits grant ``user`` the permission ``bit`` (4 read, 1 execute)."""
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid == user.gid:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def unreachable(executable: Path, user: RunAs) -> Path | None:
    """The first directory on the way to ``executable`` that ``user`` cannot pass, or the
    executable itself when the user cannot run it; None when the user can."""
    real = Path(os.path.realpath(executable))
    for directory in reversed(real.parents):
        if not _may(os.stat(directory), user, 1):
            return directory
    st = os.stat(real)
    with open(real, "rb") as f:
        script = f.read(2) == b"#!"  # an interpreter has to read it too
    if not _may(st, user, 1) or (script and not _may(st, user, 4)):
        return real
    return None


def allow_traversal(*directories: Path) -> None:
    """Let every user pass through (not list) ``directories``: mode 0711 at least."""
    for directory in directories:
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        if mode & 0o011 != 0o011:
            os.chmod(directory, mode | 0o011)
