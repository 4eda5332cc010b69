"""Confine a plugin to what it was granted: bubblewrap namespaces plus cgroup or rlimit limits.

A plugin that declares ``permissions`` runs under ``bwrap``: the system read-only
(and only the parts programs need: ``/usr``, the libraries, a few files of ``/etc``),
its own directory read-only, a private writable ``<root>/data/<id>`` and ``/tmp``,
only the granted paths, a PID namespace with a fresh ``/proc`` (the host's
processes are invisible), a network namespace unless network is granted, a new
session, no new privileges, and death with its parent. The socket directory is
bound at the same path inside and out, so go-plugin's handshake, AutoMTLS, stdio
and broker work unchanged over unix sockets.

Limits go through cgroups when the host may create them (v2 where its controllers
are enabled, else v1 ``pids``/``memory``): root ignores ``RLIMIT_NPROC``, so only
the pids controller limits a root host's plugin. Without cgroups, ``prlimit``
sets rlimits instead (and a memory kill cannot be told from a crash).

Nothing is assumed: ``probe()`` runs ``bwrap`` once and looks at the cgroup
mounts, and each plugin's ``Confinement`` says what is enforced and what is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from ..errors import PluginLoadError
from ..fsutil import changeable_by_others
from ..hardening import RunAs, allow_traversal
from ..metadata import Permissions, PluginMeta
from ..settings import Settings
from . import execguard
from .cgroups import CgroupVersion, PluginCgroups, give_back, probe_cgroups, take
from .netns import LoopbackForward, pasta_path

__all__ = [
    "SANDBOX_MODES",
    "Confinement",
    "SandboxPolicy",
    "SandboxProbe",
    "confine",
    "enforcement",
    "granted_env",
    "policy_for",
    "probe",
]

log = logging.getLogger(__name__)

SandboxMode = Literal["enforce", "warn", "off"]
SANDBOX_MODES: tuple[str, ...] = ("enforce", "warn", "off")

# What programs read from /etc; the rest (shadow, ssh host keys, ...) stays out, and so
# does what only the tools that maintain these files read (ld.so.conf for ldconfig, the
# ca-certificates configuration). A mirror of them is bound as /etc (see _etc_args).
_ETC = (
    "ld.so.cache",
    "alternatives",
    "localtime",
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "resolv.conf",
    "host.conf",
    "gai.conf",
    "ssl",
    "mime.types",
    "os-release",
)
_HOST_ETC = "/etc"
# /dev for a plugin that may start no other program: the devices programs open (/dev/random
# is the same device), no terminals. Each bind is a mount at every start (~0.1 ms with
# bubblewrap's bookkeeping); "--dev" makes seven, and a devpts instance, that only a
# program run from a terminal needs, and so keeps serving plugins granted exec.
_LEAN_DEV = (
    *("--dir", "/dev", "--dir", "/dev/shm"),
    *(
        a
        for name in ("null", "zero", "urandom")
        for a in ("--dev-bind", f"/dev/{name}", f"/dev/{name}")
    ),
    *("--symlink", "urandom", "/dev/random", "--symlink", "/proc/self/fd", "/dev/fd"),
    *(
        a
        for n, name in enumerate(("stdin", "stdout", "stderr"))
        for a in ("--symlink", f"/proc/self/fd/{n}", f"/dev/{name}")
    ),
)
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Without the exec guard, a shell joins the cgroups named before "--" (see PluginCgroups.join_files),
# then execs the rest: no Python between fork and exec.
_ENTER_CGROUPS = 'while [ "$1" != -- ]; do echo 0 > "$1"; shift; done; shift; exec "$@"'
_warned: set[str] = set()  # plugins already warned about running unconfined


@dataclasses.dataclass(frozen=True)
class SandboxProbe:
    """What this machine offers, found once by trying it."""

    bwrap: str | None
    usable: bool
    reason: str
    """Why the sandbox cannot be used ('' when it can)."""
    cgroup: CgroupVersion
    cgroup_dirs: dict[str, Path]
    """controller (pids, memory) -> the host's own cgroup directory of that controller."""
    root: bool
    guard: str | None = None
    """The built exec guard (seccomp, and Landlock unless exec is granted); None: see why."""
    guard_reason: str = ""

    def limits_text(self) -> str:
        if self.cgroup == "none":
            return "rlimits (no writable cgroup: a memory kill is reported as a crash)"
        return f"cgroup {self.cgroup} ({', '.join(sorted(self.cgroup_dirs))})"


@functools.cache
def probe() -> SandboxProbe:
    """Find bwrap, check it can build a sandbox here, and find where limits can go."""
    cgroup, dirs = probe_cgroups() if sys.platform.startswith("linux") else ("none", {})
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    if not sys.platform.startswith("linux"):
        return SandboxProbe(None, False, f"no sandbox on {sys.platform}", "none", {}, root)
    if bwrap is None:
        reason = "bubblewrap (bwrap) is not installed"
        return SandboxProbe(None, False, reason, cgroup, dirs, root)
    try:
        result = subprocess.run(
            [bwrap, *_NAMESPACES, "--ro-bind", "/", "/", "--proc", "/proc", "--", "/bin/true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return SandboxProbe(bwrap, False, f"bwrap cannot run: {exc}", cgroup, dirs, root)
    if result.returncode != 0:
        why = result.stderr.decode(errors="replace").strip().splitlines()
        reason = f"bwrap cannot create namespaces here: {why[-1] if why else result.returncode}"
        return SandboxProbe(bwrap, False, reason, cgroup, dirs, root)
    guard, guard_reason = execguard.build(_cache_dir())
    return SandboxProbe(bwrap, True, "", cgroup, dirs, root, guard, guard_reason)


def _cache_dir() -> Path:
    return _cache_dir_of(os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))


@functools.lru_cache(maxsize=8)
def _cache_dir_of(xdg_cache_home: str | None, home: str | None) -> Path:
    """``_cache_dir`` for this environment (asked at every start)."""
    return Path(xdg_cache_home or Path.home() / ".cache") / "plughost"


_NAMESPACES = ("--unshare-all", "--die-with-parent", "--new-session")


@dataclasses.dataclass(frozen=True)
class SandboxPolicy:
    """How one plugin is to be confined; built by the host from settings, metadata and grant."""

    mode: SandboxMode
    permissions: Permissions | None
    """The granted permissions; None when the plugin declares none (it runs unconfined)."""
    plugin_dir: Path
    data_dir: Path
    home: Path
    memory_mb: int
    processes: int


def policy_for(
    meta: PluginMeta,
    granted: Permissions | None,
    settings: Settings,
    root: Path,
    location: Path,
) -> SandboxPolicy:
    """The plugin's policy: its grant (else what it declares, when nothing was asked at
    install: a dev tree or a copied directory) under the host's settings."""
    home = settings.extra_env.get("HOME") or os.environ.get("HOME") or str(Path.home())
    declared = meta.permissions
    return SandboxPolicy(
        mode=settings.sandbox,
        permissions=None if declared is None else (granted or declared),
        plugin_dir=location,
        data_dir=root / "data" / meta.id,
        home=Path(home),
        memory_mb=settings.sandbox_memory_mb,
        processes=settings.sandbox_processes,
    )


def enforcement(policy: SandboxPolicy | None) -> str:
    """One line on how a plugin is confined, for ``info``, ``doctor`` and the API."""
    if policy is None or policy.permissions is None:
        return "not sandboxed (declares no permissions)"
    if policy.mode == "off":
        return "not sandboxed (sandbox = off)"
    found = probe()
    if not found.usable:
        if policy.mode == "warn":
            return f"NOT enforced: {found.reason} (sandbox = warn runs it unconfined)"
        return f"cannot start: {found.reason} (sandbox = enforce)"
    gaps = _unenforced(policy.permissions)
    text = "enforced by bubblewrap"
    if found.guard is not None:
        text += "; seccomp refuses ptrace, other processes' memory, keyrings and mounts"
        if not policy.permissions.exec:
            text += "; exec limited by Landlock to its own files and interpreters"
    if policy.permissions.network == "loopback" and pasta_path() is not None:
        text += "; network of its own, the host's 127.0.0.1 ports forwarded by pasta"
    text += f"; limits by {found.limits_text()}"
    return text + (f"; not enforced: {', '.join(gaps)}" if gaps else "")


def _unenforced(permissions: Permissions) -> list[str]:
    """Grants or refusals the sandbox cannot hold (said, never pretended)."""
    gaps = []
    found = probe()
    if found.guard is None:
        gaps.append(f"seccomp ({found.guard_reason})")
        if not permissions.exec:
            gaps.append("exec (the plugin may start any program it can see)")
    if permissions.network == "loopback" and pasta_path() is None:
        gaps.append("loopback-only (the host's network namespace is shared: pasta is missing)")
    return gaps


@dataclasses.dataclass
class Confinement:
    """One plugin process's sandbox: the command prefix, its cgroups, and what they saw."""

    prefix: list[str]
    enforced: bool
    cgroups: PluginCgroups | None = None
    fds: tuple[int, ...] = ()
    """Descriptors the prefix names: passed to it (``pass_fds``), then closed by close_fds."""
    network: LoopbackForward | None = None
    """``network: loopback``'s own namespace, to be filled by pasta once spawned."""

    def close_fds(self) -> None:
        """Close the host's copies of ``fds``, once the prefix is spawned or failed to be."""
        fds, self.fds = self.fds, ()
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def oom_killed(self) -> bool:
        """Did the kernel kill something in this plugin's memory cgroup for exceeding it?"""
        return self.cgroups is not None and self.cgroups.oom_killed()

    def release(self) -> None:
        """Hand the plugin's cgroups back (kept for its next start: see cgroups.py), and end
        its network's pasta. Its processes are gone."""
        if self.network is not None:
            self.network.stop()
        if self.cgroups is not None:
            give_back(self.cgroups)


@functools.cache
def _runtime_paths() -> tuple[str, ...]:
    """The host's Python (for plugins written with plughost.sdk): read-only, nothing else.

    Only the outermost directories: every bind is a mount bubblewrap makes at each
    start (a nested one adds the cost and nothing else).
    """
    interpreter = os.path.dirname(os.path.realpath(sys.executable))
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, interpreter}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    found = sorted(p for p in paths if os.path.exists(p) and not p.startswith(_SYSTEM))
    outer: list[str] = []
    for path in found:  # sorted: a directory comes before what is inside it
        if not any(path.startswith(top.rstrip("/") + "/") for top in outer):
            outer.append(path)
    return tuple(outer)


_Version = tuple[tuple[str, tuple[int, ...] | None], ...]
_etc_shown: dict[tuple[Path, str], _Version] = {}
"""(copy directory, /etc entry's path) -> what its copy was made from: each path in it (relative)
with the stat it had, by this process. A change to any of them calls for a new copy."""
_etc_dirs: dict[Path, tuple[int, int]] = {}
"""copy directory -> its (device, inode) as this process made it: one removed meanwhile
is made anew."""
_etc_failed: set[Path] = set()
"""Copy directories this process could not keep: the entries are bound instead."""
_etc_checked: dict[Path, float] = {}
"""mirror -> time.monotonic() of its last check against the host's /etc."""
_ETC_RECHECK_S = 0.5


def _etc_args() -> list[str]:
    """/etc in the sandbox: one read-only bind of a directory mirroring the entries of _ETC.

    Every bind is a mount at each start, ~0.2 ms with bubblewrap's bookkeeping: one
    instead of 13. What the mirror shows is made again, entry by entry, as soon as it
    changes on the host (a stat of each file and directory in it, ~0.1 ms, at a start
    at most every _ETC_RECHECK_S: starts in a burst, or a crash loop, check once), and
    a running plugin sees the new entries (the bind is of the directory). It
    shows only what every user may read (never ``/etc/ssl/private``). Where it cannot
    be kept (another user may change the cache, or it cannot be written), each entry
    is bound instead, for the rest of the host's life.
    """
    target = _cache_dir() / "etc"
    if target not in _etc_failed:
        now = time.monotonic()
        if target in _etc_checked and now - _etc_checked[target] < _ETC_RECHECK_S:
            return ["--ro-bind", str(target), "/etc"]
        try:
            args = ["--ro-bind", str(_etc_mirror(target)), "/etc"]
            _etc_checked[target] = now
            return args
        except OSError as exc:
            _etc_failed.add(target)
            log.warning("sandbox: /etc is bound entry by entry (slower): %s", exc)
    return _etc_entries()


def _etc_entries() -> list[str]:
    """/etc in the sandbox without the mirror: a bind of each entry of _ETC."""
    return [a for name in _ETC for a in ("--ro-bind-try", f"{_HOST_ETC}/{name}", f"/etc/{name}")]


def _etc_mirror(target: Path) -> Path:
    """``target``, showing what the sandbox's /etc is to show now."""
    try:
        now = os.stat(target)
        here: tuple[int, int] | None = (now.st_dev, now.st_ino)
    except OSError:
        here = None
    if here is None or _etc_dirs.get(target) != here:  # new, or removed meanwhile
        for key in [key for key in _etc_shown if key[0] == target]:
            del _etc_shown[key]
    stale = [
        name
        for name in _ETC
        if not _unchanged(f"{_HOST_ETC}/{name}", _etc_shown.get((target, f"{_HOST_ETC}/{name}")))
    ]
    if not stale:
        return target
    first = not any(key[0] == target for key in _etc_shown)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    unsafe = changeable_by_others(target.parent, what="the sandbox's /etc copy")
    if unsafe:
        raise PermissionError(unsafe)
    # Other hosts of this user (other roots, test workers) may bring it up to date at the
    # same time: one at a time, each finding what the one before did.
    with _locked(target.parent / ".etc.lock"):
        _update_mirror(target, stale, first)
    return target


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _update_mirror(target: Path, stale: list[str], first: bool) -> None:
    target.mkdir(mode=0o755, exist_ok=True)
    unsafe = changeable_by_others(target, what="the sandbox's /etc copy")
    if unsafe:
        raise PermissionError(unsafe)
    now = os.stat(target)
    _etc_dirs[target] = (now.st_dev, now.st_ino)
    if first:  # what an older host copied and is no longer wanted
        for name in set(os.listdir(target)) - set(_ETC):
            _remove(target / name)
    for name in stale:
        source = f"{_HOST_ETC}/{name}"
        try:
            info: os.stat_result | None = os.stat(source)
        except OSError:
            info = None
        made: list[tuple[str, tuple[int, ...] | None]] = []
        _mirror(source, target / name, info, made, "")
        _etc_shown[(target, source)] = tuple(made) or (("", None),)


def _unchanged(source: str, shown: _Version | None) -> bool:
    if shown is None:
        return False
    for relative, version in shown:
        try:
            info = os.stat(source + relative, follow_symlinks=not relative)
        except OSError:
            if version is not None:
                return False
        else:
            if version != _signature(info):
                return False
    return True


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (
        info.st_mode,
        info.st_dev,
        info.st_ino,
        info.st_size,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def _mirror(
    source: str,
    copy: Path,
    info: os.stat_result | None,
    made: list[tuple[str, tuple[int, ...] | None]],
    relative: str,
) -> None:
    """Make ``copy`` show ``source`` as every user may read it: a file's content, a
    symbolic link as it is, a directory's entries in turn; nothing else. ``made`` gets
    every file and directory seen (relative), with the stat it had when copied."""
    kind = _kind(info)
    try:
        have: str | None = _kind(os.lstat(copy)) or "other"
    except FileNotFoundError:
        have = None
    if have is not None and have != kind:
        _remove(copy)
        have = None
    if info is None:
        return
    if kind != "link":  # a link's change changes its directory
        made.append((relative, _signature(info)))
    if kind is None:
        return
    if kind == "link":
        target = os.readlink(source)
        if have is None or os.readlink(copy) != target:
            temp = copy.with_name(f".{copy.name}.{os.getpid()}")
            temp.unlink(missing_ok=True)
            os.symlink(target, temp)
            os.replace(temp, copy)
        return
    mode = stat.S_IMODE(info.st_mode) & 0o755
    if kind == "dir":
        try:
            entries = set(os.listdir(source))
        except PermissionError:  # readable by every user but this one: not shown
            _remove(copy)
            return
        if have is None:
            copy.mkdir()
        os.chmod(copy, mode)
        for extra in set(os.listdir(copy)) - entries:
            _remove(copy / extra)
        for name in sorted(entries):
            try:
                inner: os.stat_result | None = os.lstat(f"{source}/{name}")
            except OSError:
                inner = None
            _mirror(f"{source}/{name}", copy / name, inner, made, f"{relative}/{name}")
        return
    temp = copy.with_name(f".{copy.name}.{os.getpid()}")
    try:
        if have is not None and _same_file(source, copy, mode):
            return  # copied by an earlier host
        shutil.copyfile(source, temp)
    except PermissionError:
        temp.unlink(missing_ok=True)
        _remove(copy)
        return
    os.chmod(temp, mode)
    os.utime(temp, ns=(info.st_atime_ns, info.st_mtime_ns))
    os.replace(temp, copy)


def _same_file(source: str, copy: Path, mode: int) -> bool:
    """Does ``copy`` hold ``source`` already? (Small files, compared whole: a package
    manager may give a changed file its old time and size.)"""
    have = os.lstat(copy)
    if (stat.S_IMODE(have.st_mode), have.st_size) != (mode, os.stat(source).st_size):
        return False
    with open(source, "rb") as theirs, open(copy, "rb") as ours:
        return theirs.read() == ours.read()


def _kind(info: os.stat_result | None) -> str | None:
    """What the mirror makes of an entry: "file", "dir", "link", or None (left out: not
    readable by every user, or neither of these)."""
    if info is None:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "link"
    if stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_IROTH:
        return "file"
    if stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IROTH and info.st_mode & stat.S_IXOTH:
        return "dir"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _expand(path: str, home: Path) -> str:
    return str(home) + path[1:] if path == "~" or path.startswith("~/") else path


def _refuse_host_files(policy: SandboxPolicy, granted: str, real: str) -> None:
    """A writable grant must not reach plughost's own files: the root (every plugin's
    code and data, the state) and the cache (the exec guard, the sandbox's /etc). A
    plugin able to write them could change what every other plugin runs or reads."""
    path = os.path.realpath(real)
    for own in (policy.data_dir.parent.parent, _cache_dir()):
        mine = os.path.realpath(own)
        if os.path.commonpath([path, mine]) in (path, mine):
            raise PluginLoadError(
                f"plugin {policy.data_dir.name!r} is granted {granted!r} read-write, which "
                f"{'holds' if len(path) <= len(mine) else 'is inside'} plughost's own files "
                f"({mine}): with it the plugin could change other plugins or the sandbox",
                plugin_id=policy.data_dir.name,
                suggestions=[
                    f"grant a narrower path, or {granted!r} read-only (ro)",
                    "a plugin's own writable directory is PLUGHOST_DATA_DIR, given without asking",
                ],
            )


def _bwrap_args(
    found: SandboxProbe,
    policy: SandboxPolicy,
    permissions: Permissions,
    *,
    cwd: Path,
    socket_dir: Path,
    share_net: bool,
    needs_python: bool,
    user: RunAs | None,
) -> list[str]:
    assert found.bwrap is not None
    args = [found.bwrap, *_NAMESPACES]
    if found.guard is not None:  # the guard is the namespace's init (a fork of its own is
        args.append("--as-pid-1")  # cheaper than bubblewrap's: -0.4 ms at each start)
    if share_net:
        args.append("--share-net")
    args += _system_args()
    # A plugin run as another user (run_as) cannot reach the mirror in the host user's
    # cache, nor would bubblewrap, as that user, bind it: each entry is bound instead.
    args += _etc_args() if user is None else _etc_entries()
    args += ["--proc", "/proc", *(("--dev", "/dev") if permissions.exec else _LEAN_DEV)]
    args += ["--tmpfs", "/tmp"]
    for runtime in _runtime_paths() if needs_python else ():
        args += ["--ro-bind", runtime, runtime]
    for device in permissions.devices:
        args += ["--dev-bind-try", device, device]
    for path, mode in permissions.filesystem.items():
        real = _expand(path, policy.home)
        if mode == "rw":
            _refuse_host_files(policy, path, real)
        args += ["--bind-try" if mode == "rw" else "--ro-bind-try", real, real]
    policy.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if user is not None:  # the plugin's own directory, for its own user
        allow_traversal(policy.data_dir.parent)
        if policy.data_dir.lstat().st_uid != user.uid:
            os.chown(policy.data_dir, user.uid, user.gid, follow_symlinks=False)
    args += ["--ro-bind", str(policy.plugin_dir), str(policy.plugin_dir)]
    args += ["--bind", str(policy.data_dir), str(policy.data_dir)]
    args += ["--bind", str(socket_dir), str(socket_dir)]
    args += ["--setenv", "PLUGHOST_DATA_DIR", str(policy.data_dir)]
    args += ["--chdir", str(cwd), "--"]
    return args


@functools.cache
def _system_args() -> tuple[str, ...]:
    """The system's directories, read-only (the layout does not change under a host)."""
    args: list[str] = []
    for system in _SYSTEM:
        if os.path.islink(system):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            args += ["--ro-bind", system, system]
    return tuple(args)


def _elf_interpreter(path: str) -> str | None:
    """The dynamic loader an ELF executable names (PT_INTERP), if any."""
    try:
        with open(path, "rb") as file:
            head = file.read(64)
            if head[:4] != b"\x7fELF" or len(head) < 64:
                return None
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            word = "Q" if wide else "I"
            (phoff,) = struct.unpack_from(order + word, head, 32 if wide else 28)
            size, count = struct.unpack_from(order + "HH", head, 54 if wide else 42)
            for index in range(min(count, 64)):
                file.seek(phoff + index * size)
                header = file.read(size)
                if struct.unpack_from(order + "I", header)[0] != 3:  # PT_INTERP
                    continue
                offset, length = (
                    (
                        struct.unpack_from(order + "Q", header, 8)[0],
                        struct.unpack_from(order + "Q", header, 32)[0],
                    )
                    if wide
                    else (
                        struct.unpack_from(order + "I", header, 4)[0],
                        struct.unpack_from(order + "I", header, 16)[0],
                    )
                )
                file.seek(offset)
                return file.read(min(length, 4096)).rstrip(b"\0").decode()
    except (OSError, struct.error, UnicodeDecodeError):
        return None
    return None


def _version(path: Path) -> tuple[int, ...] | None:
    """What tells one content of ``path`` from another, for the caches below."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _shebang(path: Path) -> list[str]:
    """The programs a ``#!`` script needs to start: its interpreter (and env's target)."""
    return list(_shebang_of(path, _version(path)))


@functools.lru_cache(maxsize=256)
def _shebang_of(path: Path, version: tuple[int, ...] | None) -> tuple[str, ...]:
    """``_shebang``, read once per ``version`` of the file."""
    try:
        with open(path, "rb") as file:
            line = file.readline(512)
    except OSError:
        return ()
    if not line.startswith(b"#!"):
        return ()
    words = line[2:].decode(errors="replace").split()
    if not words:
        return ()
    found = [words[0]]
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        target = shutil.which(names[0]) if names else None
        found += [target] if target else []
    return tuple(found)


def _exec_paths(executable: Path, plugin_dir: Path) -> list[str]:
    """What a plugin's own start executes, and so all it may execute without ``exec``:
    its directory, its ``#!`` interpreter (a script's launcher runs the host's Python,
    which plughost.sdk plugins run on), and the dynamic loader of each.

    Found again whenever the executable or its interpreter changes (an upgrade that
    points ``python3`` elsewhere); a system path that moves meanwhile is refused, never
    allowed (Landlock allows what is at the path when the guard runs)."""
    programs = [executable, *map(Path, _shebang(executable))]
    versions = tuple(_version(program) for program in programs)
    return list(_exec_paths_of(executable, plugin_dir, versions))


@functools.lru_cache(maxsize=256)
def _exec_paths_of(
    executable: Path, plugin_dir: Path, versions: tuple[tuple[int, ...] | None, ...]
) -> tuple[str, ...]:
    """``_exec_paths``, found once per ``versions`` of the executable and interpreter."""
    programs = [str(executable)]
    interpreters = _shebang(executable)
    if interpreters:
        programs += [*interpreters, sys.executable]
    allowed = {str(plugin_dir)}
    for program in programs:
        real = os.path.realpath(program)
        allowed.add(real)
        loader = _elf_interpreter(real)
        if loader:
            allowed.add(os.path.realpath(loader))
    return tuple(sorted(allowed))


def _rlimit_args(policy: SandboxPolicy) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        log.warning("neither a writable cgroup nor prlimit: plugin limits are not enforced")
        return []
    memory = policy.memory_mb * 1024 * 1024
    return [prlimit, f"--nproc={policy.processes}", f"--data={memory}", "--"]


def confine(
    policy: SandboxPolicy | None,
    *,
    plugin_id: str,
    cwd: Path,
    socket_dir: Path,
    transport: str,
    executable: Path | None = None,
    user: RunAs | None = None,
) -> Confinement:
    """The command prefix that runs the plugin as ``policy`` says (empty: unconfined);
    ``user``: the user it runs as, when not the host's (run_as).

    Raises PluginLoadError when the policy says enforce and the sandbox cannot be built.
    """
    if policy is not None and policy.permissions is None and plugin_id not in _warned:
        _warned.add(plugin_id)
        log.warning("plugin %s declares no permissions: it runs unconfined", plugin_id)
    if policy is None or policy.permissions is None or policy.mode == "off":
        return Confinement([], enforced=False)
    found = probe()
    if not found.usable:
        if policy.mode == "enforce":
            raise PluginLoadError(
                f"plugin {plugin_id!r} declares permissions and sandbox = enforce, but "
                f"{found.reason}",
                plugin_id=plugin_id,
                suggestions=[
                    "install bubblewrap (scripts/install_sandbox.sh, or apt-get install "
                    "bubblewrap) and check 'plughost doctor'",
                    'or set sandbox = "warn" in plughost.toml to run it unconfined',
                ],
            )
        log.warning("plugin %s runs unconfined: %s (sandbox = warn)", plugin_id, found.reason)
        return Confinement([], enforced=False)
    permissions = policy.permissions
    # network: loopback gets a namespace of its own, the host's loopback forwarded into it
    # by pasta (netns.py); without pasta it shares the host's. A tcp plugin listens on
    # 127.0.0.1 of its own namespace, where the host cannot reach it: it shares the host's.
    pasta = pasta_path() if permissions.network == "loopback" and transport != "tcp" else None
    share_net = (permissions.network != "none" and pasta is None) or transport == "tcp"
    made = Confinement(
        [],
        enforced=True,
        cgroups=take(
            found.cgroup,
            found.cgroup_dirs,
            plugin_id,
            memory_mb=policy.memory_mb,
            # The guard stays in them as the sandbox's init: not one of the plugin's own.
            processes=policy.processes + (found.guard is not None),
        ),
    )
    try:
        _fill(made, found, policy, plugin_id, cwd, socket_dir, share_net, pasta, executable, user)
    except BaseException:  # nothing of it is left: descriptors, cgroups, pasta's namespace
        made.close_fds()
        made.release()
        raise
    return made


def _fill(
    made: Confinement,
    found: SandboxProbe,
    policy: SandboxPolicy,
    plugin_id: str,
    cwd: Path,
    socket_dir: Path,
    share_net: bool,
    pasta: str | None,
    executable: Path | None,
    user: RunAs | None,
) -> None:
    """``made``'s prefix, and the descriptors it names."""
    assert policy.permissions is not None
    permissions = policy.permissions
    joins = made.cgroups.join_files() if made.cgroups is not None else []
    if made.cgroups is None:
        made.prefix += _rlimit_args(policy)
    elif found.guard is None:
        made.prefix += ["/bin/sh", "-c", _ENTER_CGROUPS, "sh", *joins, "--"]
    program = executable or policy.plugin_dir / "bin" / "plugin"
    # A compiled plugin that may start nothing else never runs the host's Python: its
    # directories (several mounts at every start) are left out.
    needs_python = permissions.exec or bool(_shebang(program))
    fds: list[int] = []
    try:
        made.prefix += _bwrap_args(
            found,
            policy,
            permissions,
            cwd=cwd,
            socket_dir=socket_dir,
            share_net=share_net,
            needs_python=needs_python,
            user=user,
        )
        if pasta is not None:  # bubblewrap reports its namespaces, then waits for pasta
            made.network = LoopbackForward(pasta)
            fds += made.network.child_fds
            made.prefix[-1:-1] = made.network.bwrap_args  # before its "--"
        if found.guard is None:
            return
        # The guard runs from a descriptor and joins the cgroups through join files the
        # host opened: neither the cache nor the cgroup tree is mounted (a mount costs at
        # every start), and the plugin inherits none of them (the guard closes them at exec).
        joined = _open_for_guard(found.guard, joins, plugin_id, fds)
    finally:
        made.fds = (*made.fds, *fds)
    made.prefix += [f"/proc/self/fd/{fds[-1]}", "--init"]
    made.prefix += [a for fd in joined for a in ("--join-fd", str(fd))]
    if not permissions.exec:
        made.prefix += ["--landlock", *_exec_paths(program, policy.plugin_dir)]
    made.prefix.append("--")


def _open_for_guard(guard: str, joins: list[str], plugin_id: str, fds: list[int]) -> list[int]:
    """The join files opened for writing, then the guard for running: each appended to
    ``fds`` (the guard last); the join files' descriptors returned."""
    joined: list[int] = []
    try:
        for file in joins:
            joined.append(os.open(file, os.O_WRONLY | os.O_CLOEXEC))
            fds.append(joined[-1])
        fds.append(os.open(guard, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        raise PluginLoadError(
            f"plugin {plugin_id!r} cannot be confined: {exc.filename}: {exc.strerror}",
            plugin_id=plugin_id,
            suggestions=["check 'plughost doctor' (the sandbox's cgroups and exec guard)"],
        ) from exc
    return joined


def granted_env(policy: SandboxPolicy | None) -> Iterable[str]:
    """Host environment names the plugin was granted beyond the allow-list."""
    if policy is None or policy.permissions is None:
        return ()
    return policy.permissions.env
