"""The exec guard: the last program bubblewrap runs before a confined plugin.

It runs inside the sandbox, after bubblewrap's mounts (Landlock forbids mounting, so
it cannot come first), right before the plugin: it joins the plugin's cgroups (each
``--join-fd FD``, a join file the host opened), then a seccomp filter refusing what
no plugin needs (ptrace, reading other processes' memory, the kernel keyring,
mounting, loading modules), then, unless exec is granted, a Landlock ruleset letting
only the paths before ``--`` be executed. The plugin inherits no descriptor but stdio.
With ``--init`` (bubblewrap's ``--as-pid-1``) it then forks: the plugin runs as its
child, and it stays as the namespace's first process, reaping orphans and ending with
the plugin's status, as bubblewrap's own reaper would (whose fork, of a larger process,
costs more).

One small C program, built with ``cc`` into the user's cache once per source. Where
it can (x86-64 and arm64), it is built without a C library: a C library's start-up
probes the CPU (``cpuid``), which in a virtual machine is a trap to the hypervisor
each time: ~0.45 ms of a ~0.6 ms exec, at every start of every confined plugin.
Elsewhere it is linked with the C library, statically where it can.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from ..fsutil import changeable_by_others

__all__ = ["build", "landlock_abi"]

SOURCE = r"""
#define _GNU_SOURCE
#include <asm/errno.h>
#include <asm/unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdint.h>

#ifdef GUARD_NOLIBC
/* No C library: the process starts here, and makes its system calls itself. */
#if defined(__x86_64__)
__asm__(".text\n.global _start\n_start:\n"
        "  xor %rbp, %rbp\n  mov %rsp, %rdi\n  and $-16, %rsp\n  call guard_start\n  hlt\n");
static long sc(long n, long a, long b, long c, long d, long e) {
    register long r10 __asm__("r10") = d, r8 __asm__("r8") = e;
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
__asm__(".text\n.global _start\n_start:\n  mov x29, #0\n  mov x30, #0\n  mov x0, sp\n"
        "  bl guard_start\n  brk #0\n");
static long sc(long n, long a, long b, long c, long d, long e) {
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c, x3 __asm__("x3") = d, x4 __asm__("x4") = e;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                     : "memory");
    return x0;
}
#else
#error "no start-up of our own for this architecture: built with the C library"
#endif
/* What the compiler may call for a struct's initialiser. */
void *memset(void *to, int c, unsigned long n) {
    volatile unsigned char *p = to;
    while (n--) *p++ = (unsigned char)c;
    return to;
}
void *memcpy(void *to, const void *from, unsigned long n) {
    volatile unsigned char *p = to;
    const unsigned char *q = from;
    while (n--) *p++ = *q++;
    return to;
}
#else
#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>
static long sc(long n, long a, long b, long c, long d, long e) {
    long ret = syscall(n, a, b, c, d, e);
    return ret == -1 ? -errno : ret;
}
#endif

#ifdef GUARD_NOLIBC /* x86-64 and arm64 */
#define AT_FDCWD_ (-100)
#define O_PATH_ 010000000
#define O_CLOEXEC_ 02000000
/* clone(SIGCHLD) is fork where clone's arguments start with the flags (not s390). */
#define fork_() sc(__NR_clone, 17 /* SIGCHLD */, 0, 0, 0, 0)
#else
#include <fcntl.h>
#define AT_FDCWD_ AT_FDCWD
#define O_PATH_ O_PATH
#define O_CLOEXEC_ O_CLOEXEC
static long fork_(void) {
    long child = fork();
    return child < 0 ? -errno : child;
}
#endif
#define CLOSE_RANGE_CLOEXEC_ 4
#define LL_EXECUTE 1ULL
#define DENY(nr) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1), \
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)

struct ll_ruleset { uint64_t handled_fs; };
struct ll_beneath { uint64_t allowed; int32_t fd; } __attribute__((packed));

static int same(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static unsigned long length(const char *s) {
    unsigned long n = 0;
    while (s[n]) n++;
    return n;
}

static void say(const char *s) { sc(__NR_write, 2, (long)s, (long)length(s), 0, 0); }

static const char *meaning(long e) {
    switch (e) {
    case EPERM: return "operation not permitted";
    case ENOENT: return "no such file or directory";
    case E2BIG: return "argument list too long";
    case ENOEXEC: return "exec format error";
    case EBADF: return "bad file descriptor";
    case EAGAIN: return "resource temporarily unavailable";
    case ENOMEM: return "cannot allocate memory";
    case EACCES: return "permission denied";
    case EBUSY: return "device or resource busy";
    case ENODEV: return "no such device";
    case ENOTDIR: return "not a directory";
    case EINVAL: return "invalid argument";
    case ETXTBSY: return "text file busy";
    case ENOSYS: return "function not implemented";
    case ELOOP: return "too many levels of symbolic links";
    default: return "error";
    }
}

/* "plughost exec guard: WHAT: MEANING (errno N)" on stderr; 126, as a shell's "cannot run". */
static int fail(const char *what, long result) {
    char number[24];
    int i = sizeof number - 1;
    unsigned long e = result < 0 ? (unsigned long)-result : 0;
    number[i] = 0;
    do number[--i] = (char)('0' + e % 10); while ((e /= 10) && i > 0);
    say("plughost exec guard: "); say(what); say(": ");
    say(meaning(-result)); say(" (errno "); say(number + i); say(")\n");
    return 126;
}

static int number_of(const char *s) {
    int n = 0;
    while (*s >= '0' && *s <= '9') n = n * 10 + (*s++ - '0');
    return *s ? -1 : n;
}

/* The namespace's first process, once PROGRAM runs as its child: it reaps whatever is
   orphaned in the namespace, and ends, as PROGRAM ended, when PROGRAM does (the kernel
   then ends everything else in the namespace). */
__attribute__((noreturn)) static void init(long program) {
    if (sc(436 /* close_range */, 0, ~0U, 0, 0, 0) < 0)
        for (int fd = 0; fd < 1024; fd++) sc(__NR_close, fd, 0, 0, 0, 0);
    for (;;) {
        int status = 0;
        long pid = sc(__NR_wait4, -1, (long)&status, 0x40000000 /* __WALL */, 0, 0);
        if (pid == program) {
            int signal = status & 0x7f;
            sc(__NR_exit_group, signal ? 128 + signal : (status >> 8) & 0xff, 0, 0, 0, 0);
        }
        if (pid < 0 && pid != -EINTR) sc(__NR_exit_group, 255, 0, 0, 0, 0);
    }
}

static int guard(int argc, char **argv, char **envp) {
    /* exec-guard [--init] [--join-fd FD]... [--landlock PATH...] -- PROGRAM ARGS... */
    int first = 1, as_init = argc > 1 && same(argv[1], "--init");
    long r;
    first += as_init;
    for (; first + 1 < argc && same(argv[first], "--join-fd"); first += 2) {
        /* "0": this thread, the only one; see PluginCgroups.join_files for why not the pid. */
        int fd = number_of(argv[first + 1]);
        if (fd < 3) return fail("joining a cgroup", -EBADF);
        r = sc(__NR_write, fd, (long)"0", 1, 0, 0);
        if (r != 1) return fail("joining a cgroup", r < 0 ? r : -EIO);
    }
    int split = first, landlock = first < argc && same(argv[first], "--landlock");
    while (split < argc && !same(argv[split], "--")) split++;
    if (split + 1 >= argc) {
        say("usage: exec-guard [--init] [--join-fd FD]... [--landlock PATH...] -- PROGRAM\n");
        return 2;
    }
    /* The join files and the guard itself (run from a descriptor) stay behind. */
    if (sc(436 /* close_range */, 3, ~0U, CLOSE_RANGE_CLOEXEC_, 0, 0) < 0)
        for (int fd = 3; fd < 1024; fd++) sc(__NR_fcntl, fd, 2 /* F_SETFD */, 1, 0, 0);
    r = sc(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (r < 0) return fail("no_new_privs", r);
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
        DENY(__NR_ptrace), DENY(__NR_process_vm_readv), DENY(__NR_process_vm_writev),
        DENY(__NR_keyctl), DENY(__NR_add_key), DENY(__NR_request_key),
        DENY(__NR_mount), DENY(__NR_umount2), DENY(__NR_pivot_root),
#ifdef __NR_fsmount
        DENY(__NR_move_mount), DENY(__NR_open_tree), DENY(__NR_fsopen), DENY(__NR_fsmount),
#endif
        DENY(__NR_init_module), DENY(__NR_finit_module), DENY(__NR_delete_module),
        DENY(__NR_kexec_load), DENY(__NR_open_by_handle_at), DENY(__NR_perf_event_open),
        DENY(__NR_bpf), DENY(__NR_userfaultfd),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog program = { sizeof filter / sizeof filter[0], filter };
    r = sc(__NR_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, (long)&program, 0, 0);
    if (r < 0) return fail("seccomp", r);
#endif
    if (landlock) {
        struct ll_ruleset attr = { LL_EXECUTE };
        long ruleset = sc(444, (long)&attr, sizeof attr, 0, 0, 0);
        if (ruleset < 0) return fail("landlock_create_ruleset", ruleset);
        for (int i = first + 1; i < split; i++) {
            long fd = sc(__NR_openat, AT_FDCWD_, (long)argv[i], O_PATH_ | O_CLOEXEC_, 0, 0);
            if (fd < 0) continue; /* not in this sandbox: nothing to allow */
            struct ll_beneath rule = { LL_EXECUTE, (int32_t)fd };
            r = sc(445, ruleset, 1, (long)&rule, 0, 0);
            if (r < 0) return fail(argv[i], r);
            sc(__NR_close, fd, 0, 0, 0, 0);
        }
        r = sc(446, ruleset, 0, 0, 0, 0);
        if (r < 0) return fail("landlock_restrict_self", r);
        sc(__NR_close, ruleset, 0, 0, 0, 0);
    }
    if (as_init) {
        long child = fork_();
        if (child < 0) return fail("fork", child);
        if (child > 0) init(child);
    }
    r = sc(__NR_execve, (long)argv[split + 1], (long)(argv + split + 1), (long)envp, 0, 0);
    return fail(argv[split + 1], r);
}

#ifdef GUARD_NOLIBC
__attribute__((used, noreturn)) void guard_start(long *stack) {
    int argc = (int)stack[0];
    char **argv = (char **)(stack + 1);
    sc(__NR_exit_group, guard(argc, argv, argv + argc + 1), 0, 0, 0, 0);
    for (;;) {}
}
#else
int main(int argc, char **argv, char **envp) { return guard(argc, argv, envp); }
#endif
"""

# Tried in turn: without a C library, then with it linked statically, then dynamically.
_BUILDS: tuple[list[str], ...] = (
    [
        "-DGUARD_NOLIBC",
        "-static",
        "-nostdlib",
        "-ffreestanding",
        "-fno-builtin",
        "-fno-stack-protector",
        "-fno-pie",
        "-no-pie",
    ],
    ["-static"],
    [],
)


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0: none)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        version = int(libc.syscall(444, None, 0, 1))  # LANDLOCK_CREATE_RULESET_VERSION
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def build(cache: Path) -> tuple[str | None, str]:
    """The guard's path, built into ``cache`` once per source; else None and why not."""
    if landlock_abi() < 1:
        return None, "the kernel offers no Landlock"
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    target = cache / f"exec-guard-{digest}"
    if os.access(target, os.X_OK):
        unsafe = changeable_by_others(cache, target, what="the exec guard's")
        return (None, unsafe) if unsafe else (str(target), "")
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler (cc) to build the exec guard"
    try:
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        unsafe = changeable_by_others(cache, what="the exec guard's")
        if unsafe:
            return None, unsafe
        source = cache / f".exec-guard-{digest}-{os.getpid()}.c"
        source.write_text(SOURCE)
        built = source.with_suffix("")
        try:
            for flags in _BUILDS:
                result = subprocess.run(
                    [compiler, "-O2", *flags, "-o", str(built), str(source)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                if result.returncode == 0:
                    break
        finally:
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
