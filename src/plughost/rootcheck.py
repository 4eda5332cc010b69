"""Is a root safe to run from, and can it be written? Checked at every start, and by doctor.

The root holds the executables the host runs and files with secrets (the service
token in plughost.toml, the plugins' logs, the registry's signing key). A root
or ``plugins/`` that another user may write is one from which another user can
have the host run anything: the host refuses to start from it (``prepare_root``)
rather than fix the mode, because what is inside may already have been
replaced. What is only too readable, and is ours, is tightened. ``audit_root``
lists every finding, each with the command that fixes it, for ``doctor``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import pwd
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from .errors import PlughostError
from .fsutil import PRIVATE_DIR, PRIVATE_FILE, loose_bits, tighten
from .paths import RootLayout

__all__ = [
    "Finding",
    "RootReadOnlyError",
    "RootUnsafeError",
    "audit_root",
    "not_writable",
    "prepare_root",
    "writing",
]

Severity = Literal["refuse", "problem", "warn"]
_SECRET_KEY = ("token", "secret", "password")
"""A settings key naming one of these holds a secret (service_token, a registry's token)."""


class RootUnsafeError(PlughostError):
    """The root or ``plugins/`` may be changed by another user."""

    type = "root_unsafe"
    status = 403
    default_title = "Root open to other users"


class RootReadOnlyError(PlughostError):
    """The root cannot be written: a read-only file system, or not this user's to write."""

    type = "root_read_only"
    status = 403
    default_title = "Root not writable"


@dataclasses.dataclass(frozen=True)
class Finding:
    """One entry of the root whose owner or mode is wrong, and the command that fixes it."""

    path: Path
    detail: str
    fix: str
    severity: Severity
    """refuse: the host does not start; problem: a secret or the host's files are exposed;
    warn: more readable than it should be, and the host tightens it when it starts."""


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _mode(st: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(st.st_mode):o}, owner {_user(st.st_uid)}"


def _others(bits: int) -> str:
    """Who the group/other ``bits`` (read or write, either position) let in."""
    group, other = bits & 0o070, bits & 0o007
    return "group and others" if group and other else "group" if group else "others"


def _foreign(st: os.stat_result) -> bool:
    """Owned by another user than this one (root's own entries are no threat)."""
    return st.st_uid not in (os.geteuid(), 0)


def _stat(path: Path) -> os.stat_result | None:
    """The entry's own mode, or its target's for a link (whose own mode means nothing)."""
    try:
        return os.stat(path)
    except OSError:
        return None


def _unsafe(path: Path, st: os.stat_result) -> Finding | None:
    """Another user owns ``path`` or may write in it: a refusal for the root and plugins/."""
    if _foreign(st):
        return Finding(
            path,
            f"{path} belongs to another user ({_mode(st)})",
            f"sudo chown {_user(os.geteuid())} {path}",
            "refuse",
        )
    if not (writable := stat.S_IMODE(st.st_mode) & 0o022):
        return None
    detail = f"{path} is writable by {_others(writable)} ({_mode(st)})"
    return Finding(path, detail, f"chmod 700 {path}", "refuse")


def _loose(path: Path, st: os.stat_result, severity: Severity, why: str = "") -> Finding | None:
    """``path`` gives other users more than its owner's eyes only (``loose_bits``)."""
    if not (bits := loose_bits(st)) and not _foreign(st):
        return None
    want = PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else PRIVATE_FILE
    if bits & 0o022 or _foreign(st):
        severity = "problem"  # anyone who may write it may change what the host does
    verb = "writable" if bits & 0o022 else "readable"
    who = "another user" if _foreign(st) and not bits else _others(bits)
    detail = f"{path} is {verb} by {who} ({_mode(st)}){why}"
    fix = f"chmod {want:o} {path}"
    if _foreign(st):
        fix = f"sudo chown {_user(os.geteuid())} {path} && {fix}"
    return Finding(path, detail, fix, severity)


def _secret_keys(settings_file: Path) -> list[str]:
    """The settings keys (dotted, at any depth) that hold a non-empty secret."""
    try:
        import tomllib  # only when there is a settings file to read: every command imports this

        data = tomllib.loads(settings_file.read_text())
    except (OSError, ValueError):
        return []

    def walk(value: Any, prefix: str) -> Iterator[str]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{prefix}{key}.")
        elif isinstance(value, list):
            for item in value:
                yield from walk(item, prefix)
        elif value not in ("", None) and any(w in prefix.lower() for w in _SECRET_KEY):
            yield prefix.rstrip(".")

    return sorted(set(walk(data, "")))


def audit_root(layout: RootLayout, secrets: Iterable[Path] = ()) -> list[Finding]:
    """Every entry of the root whose owner or mode is wrong; ``secrets`` are more files that
    must be private (the registry's signing key). An entry that is missing is fine."""
    found: list[Finding | None] = []
    for directory in (layout.root, layout.plugins):
        if st := _stat(directory):
            found.append(_unsafe(directory, st) or _loose(directory, st, "warn"))
    for directory in (layout.logs, layout.run, layout.registry):
        if st := _stat(directory):
            found.append(_loose(directory, st, "problem"))
    if st := _stat(layout.settings_file):
        keys = _secret_keys(layout.settings_file) if loose_bits(st) & 0o044 else []
        why = f": it holds {', '.join(keys)}" if keys else ""
        found.append(_loose(layout.settings_file, st, "problem" if keys else "warn", why))
    state_files = (layout.state_file, layout.state_backup, layout.pid_file, layout.lock_file)
    for path in state_files:
        if st := _stat(path):
            found.append(_loose(path, st, "warn"))
    with contextlib.suppress(OSError):
        for entry in sorted(layout.logs.iterdir()):
            if (st := _stat(entry)) and stat.S_ISREG(st.st_mode):
                found.append(_loose(entry, st, "problem", ": plugin logs may hold secrets"))
    for path in secrets:
        if st := _stat(path):
            found.append(_loose(path, st, "problem", ": a private key"))
    return [f for f in found if f is not None]


def _mount_point(path: Path) -> Path:
    """The mount point of the file system ``path`` (or its nearest existing parent) is on.

    Linux's mount table knows bind mounts, whose device is their source's; elsewhere,
    the highest parent on the same device.
    """
    path = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    with contextlib.suppress(OSError):
        mounts = [  # field 5 of mountinfo, with a space, a tab ... written as \ooo
            Path(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]))
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ]
        real = Path(os.path.realpath(path))
        within = [m for m in mounts if m == real or m in real.parents]
        if within:
            return max(within, key=lambda m: len(m.parts))
    device = path.stat().st_dev
    while path != path.parent and path.parent.stat().st_dev == device:
        path = path.parent
    return path


def not_writable(path: Path, exc: OSError | None = None) -> RootReadOnlyError:
    """The error for a root (or an entry of it) the host cannot write, saying why and what to do."""
    elsewhere = "or run the host on a writable root: --root DIR (or PLUGHOST_HOME=DIR)"
    read_only = exc is not None and exc.errno == errno.EROFS
    if exc is None or not read_only:
        with contextlib.suppress(OSError, StopIteration):
            existing = next(p for p in (path, *path.parents) if p.exists())
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    if read_only:
        mount = _mount_point(path)
        return RootReadOnlyError(
            f"{path} is on a read-only file system ({mount}): the host writes its lock, "
            "state and logs in the root",
            suggestions=[f"remount it read-write: mount -o remount,rw {mount}", elsewhere],
        )
    user = _user(os.geteuid())
    return RootReadOnlyError(
        f"{path} is not writable by {user} (uid {os.geteuid()}): the host writes its lock, "
        "state and logs in the root",
        suggestions=[f"give it to {user}: sudo chown {user} {path} && chmod 700 {path}", elsewhere],
    )


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write below ``path`` (read-only, permission denied) into ``not_writable``."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        failed = Path(exc.filename) if isinstance(exc.filename, str) else path
        raise not_writable(failed, exc) from exc


def _refuse(finding: Finding) -> RootUnsafeError:
    return RootUnsafeError(
        f"{finding.detail}: another user could replace a plugin this host runs, "
        "so it does not start from there",
        suggestions=[
            finding.fix,
            "then check that the plugins in it are the ones you installed",
            "or run the host on another root: --root DIR (or PLUGHOST_HOME=DIR)",
        ],
    )


def prepare_root(layout: RootLayout) -> None:
    """Make the root ready for a host, or refuse it; call before taking its lock.

    Raises RootUnsafeError when another user owns the root or ``plugins/`` or may
    write in them, and RootReadOnlyError when the root cannot be written.
    Creates the directories 0700 and tightens the host's files that are too readable.
    """
    for directory in (layout.root, layout.plugins):
        if (st := _stat(directory)) and (finding := _unsafe(directory, st)):
            raise _refuse(finding)
    if layout.root.exists() and not os.access(layout.root, os.W_OK | os.X_OK):
        raise not_writable(layout.root)
    with writing(layout.root):
        layout.ensure()
        tighten(layout.settings_file)
        with contextlib.suppress(OSError):
            for entry in layout.logs.iterdir():
                tighten(entry)
