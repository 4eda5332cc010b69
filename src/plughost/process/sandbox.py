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
import functools
import hashlib
import itertools
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from ..errors import PluginLoadError
from ..metadata import Permissions, PluginMeta
from ..settings import Settings

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
# ca-certificates configuration): each is a mount, ~0.2 ms at every start.
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
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Without the exec guard, a shell joins the cgroups named before "--" (see _join_file),
# then execs the rest: no Python between fork and exec.
_ENTER_CGROUPS = 'while [ "$1" != -- ]; do echo 0 > "$1"; shift; done; shift; exec "$@"'
_names = itertools.count(1)
_warned: set[str] = set()  # plugins already warned about running unconfined

# The exec guard runs inside bubblewrap, after its mounts (Landlock forbids mounting,
# so it cannot come first), right before the plugin: it joins the plugin's cgroups (each
# "--join FILE"), then a seccomp filter refusing what no plugin needs (ptrace, reading
# other processes' memory, the kernel keyring, mounting, loading modules), then, unless
# exec is granted, a Landlock ruleset letting only the paths before "--" be executed.
# One small C program, ~1 ms; built once with cc.
_GUARD_SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ll_ruleset { uint64_t handled_fs; };
struct ll_beneath { uint64_t allowed; int32_t fd; } __attribute__((packed));
#define LL_EXECUTE 1ULL
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

static int fail(const char *what) {
    fprintf(stderr, "plughost exec guard: %s: %s\n", what, strerror(errno));
    return 126;
}

int main(int argc, char **argv) {
    /* exec-guard [--join FILE]... [--landlock PATH...] -- PROGRAM ARGS... */
    int first = 1;
    for (; first + 1 < argc && strcmp(argv[first], "--join") == 0; first += 2) {
        /* "0": this thread, the only one; see _join_file for why not the pid. */
        int fd = open(argv[first + 1], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) return fail(argv[first + 1]);
        close(fd);
    }
    int split = first, landlock = first < argc && strcmp(argv[first], "--landlock") == 0;
    while (split < argc && strcmp(argv[split], "--") != 0) split++;
    if (split + 1 >= argc) { fprintf(stderr, "usage: %s [--join FILE]... [--landlock PATH...] -- PROGRAM\n", argv[0]); return 2; }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) return fail("no_new_privs");
#if defined(__x86_64__) || defined(__aarch64__)
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
#else
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_AARCH64, 1, 0),
#endif
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM), /* another ABI: refused */
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
#if defined(__x86_64__)
        BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1), /* x32 */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
#endif
        DENY(SYS_ptrace), DENY(SYS_process_vm_readv), DENY(SYS_process_vm_writev),
        DENY(SYS_keyctl), DENY(SYS_add_key), DENY(SYS_request_key),
        DENY(SYS_mount), DENY(SYS_umount2), DENY(SYS_pivot_root),
#ifdef SYS_fsmount
        DENY(SYS_move_mount), DENY(SYS_open_tree), DENY(SYS_fsopen), DENY(SYS_fsmount),
#endif
        DENY(SYS_init_module), DENY(SYS_finit_module), DENY(SYS_delete_module),
        DENY(SYS_kexec_load), DENY(SYS_open_by_handle_at), DENY(SYS_perf_event_open),
        DENY(SYS_bpf), DENY(SYS_userfaultfd),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { sizeof filter / sizeof filter[0], filter };
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program)) return fail("seccomp");
#endif
    if (landlock) {
        struct ll_ruleset attr = { LL_EXECUTE };
        int ruleset = syscall(444, &attr, sizeof attr, 0);
        if (ruleset < 0) return fail("landlock_create_ruleset");
        for (int i = first + 1; i < split; i++) {
            int fd = open(argv[i], O_PATH | O_CLOEXEC);
            if (fd < 0) continue; /* not in this sandbox: nothing to allow */
            struct ll_beneath rule = { LL_EXECUTE, fd };
            if (syscall(445, ruleset, 1, &rule, 0)) return fail(argv[i]);
            close(fd);
        }
        if (syscall(446, ruleset, 0)) return fail("landlock_restrict_self");
        close(ruleset);
    }
    execv(argv[split + 1], argv + split + 1);
    return fail(argv[split + 1]);
}
"""


@dataclasses.dataclass(frozen=True)
class SandboxProbe:
    """What this machine offers, found once by trying it."""

    bwrap: str | None
    usable: bool
    reason: str
    """Why the sandbox cannot be used ('' when it can)."""
    cgroup: Literal["v2", "v1", "none"]
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


def _own_cgroups() -> dict[str, str]:
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
    probe_dir = path / f"plughost-probe-{os.getpid()}"
    try:
        probe_dir.mkdir()
    except OSError:
        return False
    with contextlib.suppress(OSError):
        probe_dir.rmdir()
    return True


def _probe_cgroups() -> tuple[Literal["v2", "v1", "none"], dict[str, Path]]:
    own = _own_cgroups()
    for mount in (_CGROUP_ROOT, _CGROUP_ROOT / "unified"):
        if "" not in own or not (mount / "cgroup.controllers").exists():
            continue
        here = mount / own[""].lstrip("/")
        try:
            enabled = set((here / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if {"pids", "memory"} <= enabled and _writable_dir(here):
            return "v2", {"pids": here, "memory": here}
    dirs: dict[str, Path] = {}
    for controller in ("pids", "memory"):
        mount = _CGROUP_ROOT / controller
        if controller in own and (mount / "cgroup.procs").exists():
            here = mount / own[controller].lstrip("/")
            if _writable_dir(here):
                dirs[controller] = here
    return ("v1", dirs) if dirs else ("none", {})


@functools.cache
def probe() -> SandboxProbe:
    """Find bwrap, check it can build a sandbox here, and find where limits can go."""
    cgroup, dirs = _probe_cgroups() if sys.platform.startswith("linux") else ("none", {})
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
    guard, guard_reason = _build_guard()
    return SandboxProbe(bwrap, True, "", cgroup, dirs, root, guard, guard_reason)


def _landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = int(libc.syscall(444, None, 0, 1))  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def _changeable_by_others(*paths: Path) -> str:
    """Why a cached guard cannot be trusted (it runs before every confined plugin, as the
    host's user): a path another user owns or may write. Empty when all is well."""
    for path in paths:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return (
                f"the exec guard's {path} is not this user's alone (mode "
                f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}); run: chmod go-w {path}"
            )
    return ""


def _build_guard() -> tuple[str | None, str]:
    """The exec guard's path, built with cc into the user's cache once per source."""
    if _landlock_abi() < 1:
        return None, "the kernel offers no Landlock"
    digest = hashlib.sha256(_GUARD_SOURCE.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "plughost"
    target = cache / f"exec-guard-{digest}"
    if os.access(target, os.X_OK):
        unsafe = _changeable_by_others(cache, target)
        return (None, unsafe) if unsafe else (str(target), "")
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc) to build the exec guard"
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        unsafe = _changeable_by_others(cache)
        if unsafe:
            return None, unsafe
        source = cache / f".exec-guard-{digest}-{os.getpid()}.c"
        source.write_text(_GUARD_SOURCE)
        built = source.with_suffix("")
        result = subprocess.run(
            [compiler, "-O2", "-o", str(built), str(source)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        source.unlink(missing_ok=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines()
            return (
                None,
                f"the exec guard did not build: {lines[-1] if lines else result.returncode}",
            )
        built.chmod(0o755)
        os.replace(built, target)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the exec guard did not build: {exc}"
    return str(target), ""


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
    if permissions.network == "loopback":
        gaps.append("loopback-only (the host's network namespace is shared)")
    return gaps


@dataclasses.dataclass
class Confinement:
    """One plugin process's sandbox: the command prefix, its cgroups, and what they saw."""

    prefix: list[str]
    enforced: bool
    cgroups: list[Path] = dataclasses.field(default_factory=list)

    def oom_killed(self) -> bool:
        """Did the kernel kill something in this plugin's memory cgroup for exceeding it?"""
        for directory in self.cgroups:
            for name in ("memory.events", "memory.oom_control"):
                with contextlib.suppress(OSError):
                    for line in (directory / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and value.strip() not in ("", "0"):
                            return True
        return False

    def release(self) -> None:
        """Remove the plugin's cgroups (they are empty once its processes are gone)."""
        for directory in self.cgroups:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _create_cgroups(found: SandboxProbe, plugin_id: str, policy: SandboxPolicy) -> list[Path]:
    made: list[Path] = []
    name = f"plughost-{os.getpid()}-{plugin_id}-{next(_names)}"
    limits = {
        "pids": {"pids.max": str(policy.processes)},
        "memory": {
            "memory.max": str(policy.memory_mb * 1024 * 1024),
            "memory.swap.max": "0",
            "memory.limit_in_bytes": str(policy.memory_mb * 1024 * 1024),
            "memory.memsw.limit_in_bytes": str(policy.memory_mb * 1024 * 1024),
        },
    }
    for controller, parent in sorted(found.cgroup_dirs.items()):
        directory = parent / name
        if directory in made:  # v2: one directory holds both controllers
            continue
        try:
            directory.mkdir()
        except OSError as exc:
            log.warning("cannot create cgroup %s: %s", directory, exc)
            continue
        made.append(directory)
        wanted = limits["pids"] | limits["memory"] if found.cgroup == "v2" else limits[controller]
        for file, value in wanted.items():
            if (directory / file).exists():
                with contextlib.suppress(OSError):
                    (directory / file).write_text(value)
    return made


def _join_file(found: SandboxProbe, directory: Path) -> str:
    """The file a single-threaded process writes "0" to, to move itself into a cgroup.

    On v1, ``tasks``: moving only the calling thread skips the kernel's global
    threadgroup lock, whose write side waits for an RCU grace period (~9 ms on a busy
    machine, at every start); ``cgroup.procs`` takes it. The writer (the exec guard,
    else the shell) has no other thread and no child yet, so it is the whole plugin to
    be, and everything it starts is forked inside the cgroup: no race. v2 has no
    ``tasks`` for a domain cgroup: ``cgroup.procs`` there.
    """
    return str(directory / ("tasks" if found.cgroup == "v1" else "cgroup.procs"))


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


def _expand(path: str, home: Path) -> str:
    return str(home) + path[1:] if path == "~" or path.startswith("~/") else path


def _bwrap_args(
    found: SandboxProbe,
    policy: SandboxPolicy,
    permissions: Permissions,
    *,
    cwd: Path,
    socket_dir: Path,
    share_net: bool,
    needs_python: bool,
) -> list[str]:
    assert found.bwrap is not None
    args = [found.bwrap, *_NAMESPACES]
    if share_net:
        args.append("--share-net")
    for system in _SYSTEM:
        if os.path.islink(system):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(system), system]
        elif os.path.isdir(system):
            args += ["--ro-bind", system, system]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for runtime in _runtime_paths() if needs_python else ():
        args += ["--ro-bind", runtime, runtime]
    for device in permissions.devices:
        args += ["--dev-bind-try", device, device]
    for path, mode in permissions.filesystem.items():
        real = _expand(path, policy.home)
        args += ["--bind-try" if mode == "rw" else "--ro-bind-try", real, real]
    policy.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    args += ["--ro-bind", str(policy.plugin_dir), str(policy.plugin_dir)]
    args += ["--bind", str(policy.data_dir), str(policy.data_dir)]
    args += ["--bind", str(socket_dir), str(socket_dir)]
    args += ["--setenv", "PLUGHOST_DATA_DIR", str(policy.data_dir)]
    args += ["--chdir", str(cwd), "--"]
    return args


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


def _shebang(path: Path) -> list[str]:
    """The programs a ``#!`` script needs to start: its interpreter (and env's target)."""
    try:
        with open(path, "rb") as file:
            line = file.readline(512)
    except OSError:
        return []
    if not line.startswith(b"#!"):
        return []
    words = line[2:].decode(errors="replace").split()
    if not words:
        return []
    found = [words[0]]
    if os.path.basename(words[0]) == "env":
        names = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        target = shutil.which(names[0]) if names else None
        found += [target] if target else []
    return found


def _exec_paths(executable: Path, plugin_dir: Path) -> list[str]:
    """What a plugin's own start executes, and so all it may execute without ``exec``:
    its directory, its ``#!`` interpreter (a script's launcher runs the host's Python,
    which plughost.sdk plugins run on), and the dynamic loader of each."""
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
    return sorted(allowed)


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
) -> Confinement:
    """The command prefix that runs the plugin as ``policy`` says (empty: unconfined).

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
    # A tcp plugin listens on 127.0.0.1 of its own namespace, where the host cannot reach it.
    share_net = permissions.network != "none" or transport == "tcp"
    cgroups = _create_cgroups(found, plugin_id, policy)
    joins = [_join_file(found, d) for d in cgroups]
    prefix: list[str] = []
    if not cgroups:
        prefix += _rlimit_args(policy)
    elif found.guard is None:
        prefix += ["/bin/sh", "-c", _ENTER_CGROUPS, "sh", *joins, "--"]
    program = executable or policy.plugin_dir / "bin" / "plugin"
    # A compiled plugin that may start nothing else never runs the host's Python: its
    # directories (several mounts at every start) are left out.
    needs_python = permissions.exec or bool(_shebang(program))
    prefix += _bwrap_args(
        found,
        policy,
        permissions,
        cwd=cwd,
        socket_dir=socket_dir,
        share_net=share_net,
        needs_python=needs_python,
    )
    if found.guard is not None:
        # The guard joins the cgroups from inside: only their join files are bound writable
        # (the limits beside them stay out of reach).
        binds = [a for file in joins for a in ("--bind", file, file)]
        prefix[-1:-1] = [*binds, "--ro-bind", found.guard, found.guard]  # before the final "--"
        prefix.append(found.guard)
        prefix += [a for file in joins for a in ("--join", file)]
        if not permissions.exec:
            prefix += ["--landlock", *_exec_paths(program, policy.plugin_dir)]
        prefix.append("--")
    return Confinement(prefix, enforced=True, cgroups=cgroups)


def granted_env(policy: SandboxPolicy | None) -> Iterable[str]:
    """Host environment names the plugin was granted beyond the allow-list."""
    if policy is None or policy.permissions is None:
        return ()
    return policy.permissions.env
