"""The sandbox holds against a hostile plugin (tests/plugins/hostile), and lets through
exactly what was granted.

Each attempt of the hostile plugin is one line in its log; the tests read them from
the host's log of the plugin. Real processes, a real listening port, a planted key in
a temporary HOME, bubblewrap and the host's cgroups: nothing is simulated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,
    reported,
    root_fixture,
)
from toolchains import unavailable

from plughost.errors import PluginLoadError
from plughost.host.manager import PluginManager
from plughost.metadata import Permissions
from plughost.phases import Phase
from plughost.process import cgroups, execguard, sandbox
from plughost.process.local import ProcessBackend
from plughost.process.sandbox import probe
from plughost.settings import SettingsProvider

__all__ = ["managers_fixture", "root_fixture"]

HOSTILE = Path(__file__).resolve().parent / "plugins" / "hostile"
ATTEMPTS = ("ssh", "host_environ", "other_plugin", "write", "connect", "exec", "fork")
# Started by the host's Python itself: a /bin/sh launcher would make /bin/sh part of
# the plugin's own start, and so executable without the exec grant.
LAUNCHER = f"""#!{sys.executable}
import runpy, sys
runpy.run_path(sys.argv[0].rsplit("/bin/", 1)[0] + "/plugin.py", run_name="__main__")
"""
SECRET = "sandbox-test-secret-value"


@pytest.fixture(autouse=True)
def _need_sandbox() -> None:
    found = probe()
    if not found.usable:
        unavailable(found.reason, "run scripts/install_sandbox.sh")


@pytest.fixture
def listener() -> Iterator[int]:
    """A real server on 127.0.0.1 that the plugin must not reach unless granted."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server.getsockname()[1]


def install_hostile(root: Path, permissions: dict[str, Any]) -> Path:
    target = root / "plugins" / "hostile"
    shutil.copytree(HOSTILE, target, ignore=shutil.ignore_patterns("__pycache__"))
    meta = yaml.safe_load((target / "plugin.yaml").read_text())
    meta["permissions"] = permissions
    (target / "plugin.yaml").write_text(yaml.safe_dump(meta))
    (target / "bin" / "plugin").write_text(LAUNCHER)
    return target


def hostile_env(root: Path, tmp_path: Path, port: int) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n")
    other = install_example(root, "hello", "other")
    (other / "secret.txt").write_text("another plugin's secret")
    return {
        "HOME": str(home),
        "HOSTILE_HOST_PID": str(os.getpid()),
        "HOSTILE_OTHER_FILE": str(other / "secret.txt"),
        "HOSTILE_WRITE_DIR": str(other),
        "HOSTILE_PORT": str(port),
    }


def sandboxed_process(pid: int, executable: Path) -> int:
    """The plugin's own process under bubblewrap (whose outer process the host started)."""
    found = [
        child.pid
        for child in psutil.Process(pid).children(recursive=True)
        if child.exe() == str(executable)
    ]
    assert len(found) == 1, found
    return found[0]


async def outcomes(manager: PluginManager) -> dict[str, str]:
    """attempt -> 'blocked' | 'SUCCEEDED', once the plugin reported every one."""
    return await reported(manager, "hostile", "blocked|SUCCEEDED|ok", [*ATTEMPTS, "data"])


async def run_hostile(
    managers: Managers, root: Path, tmp_path: Path, port: int, permissions: dict[str, Any]
) -> tuple[PluginManager, dict[str, str]]:
    env = hostile_env(root, tmp_path, port)
    install_hostile(root, permissions)
    os.environ["PLUGHOST_TEST_SECRET"] = SECRET  # in the host's environ, for the plugin to steal
    manager = managers.new(extra_env=env, sandbox="enforce", sandbox_processes=64)
    await manager.initialize()
    return manager, await outcomes(manager)


async def test_every_attempt_fails_and_the_host_is_unaffected(
    managers: Managers, root: Path, tmp_path: Path, listener: int
) -> None:
    manager, found = await run_hostile(managers, root, tmp_path, listener, {"network": "none"})
    assert found == {name: "blocked" for name in ATTEMPTS} | {"data": "ok"}
    assert manager.get_plugin("hostile").phase == Phase.RUNNING
    assert manager.get_plugin("other").phase == Phase.RUNNING  # its neighbour still serves
    assert not (root / "plugins" / "other" / "hostile-was-here").exists()
    assert not (root / "plugins" / "hostile" / "hostile-was-here").exists()
    assert (root / "data" / "hostile" / "mine").read_text() == "ok"
    log = "\n".join(e.message for e in manager.logs.get_logs("hostile", 500))
    assert SECRET not in log and "planted" not in log
    sandbox = manager.get_plugin("hostile").sandbox
    assert "enforced by bubblewrap" in sandbox and "not enforced" not in sandbox
    assert "exec limited by Landlock" in sandbox and "seccomp refuses ptrace" in sandbox


async def test_granting_the_ssh_directory_lets_exactly_that_read_through(
    managers: Managers, root: Path, tmp_path: Path, listener: int
) -> None:
    _, found = await run_hostile(
        managers, root, tmp_path, listener, {"filesystem": {"~/.ssh": "ro"}}
    )
    assert found.pop("ssh") == "SUCCEEDED"
    assert found == {name: "blocked" for name in ATTEMPTS if name != "ssh"} | {"data": "ok"}


async def test_granting_loopback_lets_exactly_the_connection_through(
    managers: Managers, root: Path, tmp_path: Path, listener: int
) -> None:
    _, found = await run_hostile(managers, root, tmp_path, listener, {"network": "loopback"})
    assert found.pop("connect") == "SUCCEEDED"
    assert found == {name: "blocked" for name in ATTEMPTS if name != "connect"} | {"data": "ok"}


async def test_granting_exec_lets_exactly_the_program_start_through(
    managers: Managers, root: Path, tmp_path: Path, listener: int
) -> None:
    if probe().guard is None:
        unavailable(f"exec is not enforced here: {probe().guard_reason}", "install cc")
    manager, found = await run_hostile(managers, root, tmp_path, listener, {"exec": True})
    assert found.pop("exec") == "SUCCEEDED"
    assert found == {name: "blocked" for name in ATTEMPTS if name != "exec"} | {"data": "ok"}
    assert "exec limited by Landlock" not in manager.get_plugin("hostile").sandbox


async def test_a_plugin_over_its_memory_limit_is_reported_as_oom(
    managers: Managers, root: Path, tmp_path: Path, listener: int
) -> None:
    found = probe()
    if "memory" not in found.cgroup_dirs:
        unavailable("no writable memory cgroup", "run the tests as root on a cgroup host")
    env = hostile_env(root, tmp_path, listener) | {"HOSTILE_OOM_MB": "400", "HOSTILE_FORKS": "1"}
    install_hostile(root, {})
    manager = managers.new(
        extra_env=env, sandbox_memory_mb=200, recovery_attempts=1, crash_budget=1
    )
    recorder = managers.record(manager)
    await manager.initialize()
    crash = await recorder.wait_for("plugin/crash", lambda e: e.plugin_id == "hostile", 30)
    assert crash.payload["kind"] == "oom", crash.payload


def _process_running(top: int, executable: Path) -> psutil.Process:
    """The process below ``top`` running ``executable`` (helpers that come and go may
    vanish while they are looked at)."""
    for process in psutil.Process(top).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if process.exe() == str(executable):
                return process
    raise AssertionError(f"no process below {top} runs {executable}")


def install_sandboxed_gohello(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go test plugin, declaring ``network: none`` (so confined, exec not granted)."""
    from gobuild import go_plugins

    built = go_plugins(tmp_path_factory, ["gohello"])
    target = root / "plugins" / "gohello"
    shutil.copytree(built / "gohello", target)
    meta = yaml.safe_load((target / "plugin.yaml").read_text())
    meta["permissions"] = {"network": "none"}
    (target / "plugin.yaml").write_text(yaml.safe_dump(meta))
    return target


async def test_a_go_plugin_runs_sandboxed_with_automtls_and_the_broker_dir(
    managers: Managers, root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    target = install_sandboxed_gohello(root, tmp_path_factory)
    manager = managers.new(auto_mtls="always")
    await manager.initialize()
    info = manager.get_plugin("gohello")
    assert info.phase == Phase.RUNNING, info.last_error
    assert "enforced by bubblewrap" in info.sandbox
    backend = manager.backend("gohello")
    assert backend is not None and await backend.healthy() is True
    # A compiled plugin gets no mounts of the host's Python (each costs at every start).
    assert backend.pid is not None
    plugin = _process_running(backend.pid, target / "bin" / "plugin")
    mountinfo = Path(f"/proc/{plugin.pid}/mountinfo").read_text().splitlines()
    mounts = {line.split()[4] for line in mountinfo}
    assert str(target) in mounts
    assert sys.prefix not in mounts and sys.base_prefix not in mounts, mounts
    # /etc is one mount of the host's files every user may read; nothing of the cgroup
    # tree or the exec guard is mounted, and the plugin holds no descriptor to them.
    assert [m for m in mounts if m == "/etc" or m.startswith("/etc/")] == ["/etc"], mounts
    assert not [m for m in mounts if m.startswith(("/sys", str(sandbox._cache_dir())))], mounts
    inside = Path(f"/proc/{plugin.pid}/root")
    assert (inside / "etc/passwd").read_bytes() == Path("/etc/passwd").read_bytes()
    assert not (inside / "etc/shadow").exists() and not (inside / "etc/ssl/private").exists()
    # It may start no other program: the devices programs open, and no terminal.
    assert sorted(m for m in mounts if m.startswith("/dev")) == [
        "/dev/null",
        "/dev/urandom",
        "/dev/zero",
    ], mounts
    assert os.readlink(inside / "dev/random") == "urandom" and (inside / "dev/shm").is_dir()
    assert not (inside / "dev/pts").exists() and not (inside / "dev/tty").exists()
    held = [
        os.readlink(f"/proc/{plugin.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{plugin.pid}/fd")
    ]
    guard = probe().guard or "no guard"
    assert not [f for f in held if f.startswith("/sys/fs/cgroup") or f == guard], held


def plughost_cgroups(pid: int) -> dict[str, Path]:
    """controller -> the plughost cgroup process ``pid`` is in, from /proc/<pid>/cgroup."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "/plughost-" in path:
            mount = Path("/sys/fs/cgroup") / (controllers.split(",")[0] if controllers else "")
            found[controllers or "v2"] = mount / path.lstrip("/")
    return found


async def test_a_restarted_plugin_joins_the_cgroups_it_had(
    managers: Managers, root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Making a plugin's cgroups and removing them after it cost at every start: a restart
    (a reload, a crash's recovery) joins the same ones, limits and all."""
    if probe().cgroup == "none":
        unavailable("no writable cgroup", "run the tests as root on a cgroup host")
    executable = install_sandboxed_gohello(root, tmp_path_factory) / "bin" / "plugin"
    manager = managers.new(sandbox_processes=48)
    await manager.initialize()
    pids = []
    for reload in (True, False):
        backend = manager.backend("gohello")
        assert backend is not None and backend.pid is not None
        pids.append(_process_running(backend.pid, executable).pid)
        if reload:
            first = plughost_cgroups(pids[0])
            await manager.reload_plugin("gohello")
    assert pids[0] != pids[1] and not psutil.pid_exists(pids[0])
    assert first and plughost_cgroups(pids[1]) == first
    limited = first.get("pids") or first["v2"]
    expected = 48 + (probe().guard is not None)  # and the exec guard, the sandbox's init
    assert (limited / "pids.max").read_text().strip() == str(expected)


def test_kept_cgroups_go_with_their_host_and_a_killed_hosts_with_the_next_probe(
    tmp_path: Path,
) -> None:
    """A host removes the cgroups it kept when it exits; one that was killed cannot, so the
    next host to look for its own removes them (and never a living host's)."""
    version, parents = cgroups.probe_cgroups()
    if version == "none":
        unavailable("no writable cgroup", "run the tests as root on a cgroup host")
    host = textwrap.dedent(
        """
        import os, sys
        from plughost.process import cgroups
        version, parents = cgroups.probe_cgroups()
        made = cgroups.take(version, parents, "kept", memory_mb=64, processes=8)
        cgroups.give_back(made)
        print(" ".join(map(str, made.dirs)), flush=True)
        if sys.argv[1] == "killed":
            os.kill(os.getpid(), 9)
        """
    )
    exited = subprocess.run([sys.executable, "-c", host, "exits"], capture_output=True, text=True)
    killed = subprocess.run([sys.executable, "-c", host, "killed"], capture_output=True, text=True)
    assert exited.returncode == 0 and killed.returncode == -9, (exited.stderr, killed.stderr)
    assert not [d for d in exited.stdout.split() if Path(d).exists()]
    left = [Path(d) for d in killed.stdout.split()]
    assert left  # (another host, a parallel test worker, may sweep them before this one)
    ours = cgroups.take(version, parents, "living", memory_mb=64, processes=8)
    assert ours is not None
    try:
        cgroups.probe_cgroups()
        assert not [d for d in left if d.exists()]
        assert all(d.is_dir() for d in ours.dirs)  # this host lives: its own stay
    finally:
        ours.remove()


def test_the_sweep_tells_a_living_host_from_one_whose_pid_was_taken_again(tmp_path: Path) -> None:
    """A pid alone is no host: a restarted host may get the killed one's pid. A set is its
    host's while a process with that pid and that start time lives."""
    me = cgroups._host()
    pid, started = me.split(".")
    names = {
        f"plughost-{me}-mine-1": True,  # this host: kept
        f"plughost-{pid}.{int(started) + 1}-reused-1": False,  # this pid, another process
        f"plughost-{pid}-older-1": True,  # named by pid alone, and a process has it
        f"plughost-probe-{pid}": True,
        "plughost-4194303.1-gone-1": False,  # no such process
        "unrelated": True,
    }
    for name in names:
        (tmp_path / name).mkdir()
    cgroups._sweep(tmp_path)
    assert {n: (tmp_path / n).exists() for n in names} == names


def test_a_kept_cgroups_old_memory_kills_are_not_the_next_processes(tmp_path: Path) -> None:
    """A restarted plugin joins a cgroup whose counter already holds the last process's
    memory kills: only new ones are its own."""
    directory = tmp_path / "plughost-1-p-1"
    directory.mkdir()
    (directory / "cgroup.procs").write_text("")
    (directory / "memory.events").write_text("low 0\noom 2\noom_kill 2\n")
    kept = cgroups.PluginCgroups("p", "v2", [directory], (64 << 20, 8))
    assert kept.oom_killed()  # the first process's kills
    cgroups.give_back(kept)
    again = cgroups.take("v2", {"pids": tmp_path}, "p", memory_mb=64, processes=8)
    assert again is kept and not again.oom_killed()
    (directory / "memory.events").write_text("low 0\noom 3\noom_kill 3\n")
    assert again.oom_killed()
    (directory / "cgroup.procs").write_text("4242\n")  # not empty: never kept
    cgroups.give_back(again)
    other = cgroups.take("v2", {"pids": tmp_path}, "p", memory_mb=64, processes=8)
    assert other is not None and other is not again and other.dirs[0].parent == tmp_path


async def test_an_omniview_sdk_plugin_runs_sandboxed_with_its_omniview_directory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK reads ``$HOME/.omniview/plugins/<id>/plugin.yaml`` itself: that directory is
    the plugin's own, bound read-only, while the rest of HOME stays out of sight."""
    from gobuild import go_plugins

    built = go_plugins(tmp_path_factory, ["omnihello"])
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("planted")
    target = home / ".omniview" / "plugins" / "omnihello"
    shutil.copytree(built / "omnihello", target)
    meta = yaml.safe_load((target / "plugin.yaml").read_text())
    meta["permissions"] = {"network": "none"}
    (target / "plugin.yaml").write_text(yaml.safe_dump(meta))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)
    settings = SettingsProvider(None, {"start_timeout": 30.0, "sandbox": "enforce"})
    manager = PluginManager(home / ".omniview", profile="omniview", settings=settings)
    await manager.initialize()
    try:
        info = manager.get_plugin("omnihello")
        assert info.phase == Phase.RUNNING, info.last_error
        assert "enforced by bubblewrap" in info.sandbox
        backend = manager.backend("omnihello")
        assert isinstance(backend, ProcessBackend) and backend.pid is not None
        assert await backend.healthy() is True
        assert (
            "omniview.sdk.lifecycle.v1.PluginLifecycle"
            in await manager.client("omnihello").services()
        )
        # Inside its own PID namespace, and HOME holds nothing but its own directory.
        plugin = sandboxed_process(backend.pid, target / "bin" / "plugin")
        assert os.readlink(f"/proc/{plugin}/ns/pid") != os.readlink("/proc/self/ns/pid")
        root_of_plugin = Path(f"/proc/{plugin}/root")
        assert (root_of_plugin / str(target).lstrip("/") / "plugin.yaml").is_file()
        assert not (root_of_plugin / str(home).lstrip("/") / ".ssh").exists()
    finally:
        await manager.shutdown()


def test_an_exec_guard_others_may_change_is_never_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard runs before every confined plugin as the host's user: a cache other users
    may write would let them run code as that user, so it is refused, never used."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    (tmp_path / "plughost").mkdir(mode=0o700)
    guard, why = execguard.build(tmp_path / "plughost")
    if guard is None and "not this user's" not in why:
        unavailable(
            f"no exec guard here: {why}", "install a C compiler (cc) on a kernel with Landlock"
        )
    assert guard is not None and why == ""
    (tmp_path / "plughost").chmod(0o777)
    refused, why = execguard.build(tmp_path / "plughost")
    assert refused is None and "not this user's alone" in why and "chmod go-w" in why


@pytest.fixture
def host_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the host's /etc, and a cache of the host's user alone."""
    etc = tmp_path / "etc"
    (etc / "ssl" / "certs").mkdir(parents=True)
    (etc / "ssl" / "private").mkdir(mode=0o700)
    (etc / "ssl" / "private" / "host.key").write_text("private key")
    (etc / "ssl" / "certs" / "ca.pem").write_text("a certificate")
    (etc / "ssl" / "certs" / "5d1a.0").symlink_to("ca.pem")
    (etc / "alternatives").mkdir()
    (etc / "alternatives" / "awk").symlink_to("/usr/bin/mawk")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (etc / "shadow").write_text("root:secret:::")
    (tmp_path / "UTC").write_text("a zone")
    (etc / "localtime").symlink_to(tmp_path / "UTC")
    for path in (etc, etc / "ssl", etc / "ssl" / "certs", etc / "alternatives"):
        path.chmod(0o755)
    for path in (etc / "passwd", etc / "ssl" / "certs" / "ca.pem", tmp_path / "UTC"):
        path.chmod(0o644)
    (tmp_path / "cache").mkdir(mode=0o700)
    monkeypatch.setattr(sandbox, "_HOST_ETC", str(etc))
    monkeypatch.setattr(sandbox, "_ETC_RECHECK_S", 0.0)  # each call looks again
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return etc


def test_the_sandbox_etc_shows_what_every_user_may_read_and_follows_changes(
    host_etc: Path, tmp_path: Path
) -> None:
    """One bind of a mirror instead of a mount per entry: it must show exactly what the
    entries did (minus what not every user may read), and each change at the next start."""
    args = sandbox._etc_args()
    mirror = tmp_path / "cache" / "plughost" / "etc"
    assert args == ["--ro-bind", str(mirror), "/etc"]
    assert (mirror / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\n"
    assert (mirror / "localtime").read_text() == "a zone" and not (
        mirror / "localtime"
    ).is_symlink()
    assert os.readlink(mirror / "ssl" / "certs" / "5d1a.0") == "ca.pem"
    assert os.readlink(mirror / "alternatives" / "awk") == "/usr/bin/mawk"
    assert not (mirror / "shadow").exists()  # not an entry of the sandbox's /etc
    assert not (mirror / "ssl" / "private").exists()  # not every user's to read
    assert not (mirror / "hosts").exists()  # the host has none

    (host_etc / "passwd").write_text("root:x:0:0::/root:/bin/sh\nplugin:x:1:1::/:/bin/sh\n")
    (host_etc / "ssl" / "certs" / "new.pem").write_text("another certificate")
    (host_etc / "ssl" / "certs" / "new.pem").chmod(0o644)
    (host_etc / "ssl" / "certs" / "ca.pem").chmod(0o600)
    (host_etc / "alternatives" / "awk").unlink()
    (host_etc / "alternatives" / "awk").symlink_to("/usr/bin/gawk")
    (host_etc / "hosts").write_text("127.0.0.1 localhost\n")
    (host_etc / "hosts").chmod(0o644)
    (tmp_path / "UTC").unlink()
    sandbox._etc_args()
    assert (mirror / "passwd").read_text().endswith("plugin:x:1:1::/:/bin/sh\n")
    assert (mirror / "ssl" / "certs" / "new.pem").read_text() == "another certificate"
    assert not (mirror / "ssl" / "certs" / "ca.pem").exists()
    assert os.readlink(mirror / "alternatives" / "awk") == "/usr/bin/gawk"
    assert (mirror / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert not (mirror / "localtime").exists()  # its target is gone

    shutil.rmtree(mirror)  # a cache cleaned under a running host
    sandbox._etc_args()
    assert (mirror / "hosts").read_text() == "127.0.0.1 localhost\n"


def test_an_etc_copy_others_may_change_is_never_used(host_etc: Path, tmp_path: Path) -> None:
    """Every plugin reads the mirror as its /etc: a cache other users may write would let
    them change it, so each entry is bound from the host instead."""
    (tmp_path / "cache" / "plughost").mkdir(mode=0o777)
    (tmp_path / "cache" / "plughost").chmod(0o777)
    args = sandbox._etc_args()
    assert args[:3] == ["--ro-bind-try", f"{host_etc}/{sandbox._ETC[0]}", f"/etc/{sandbox._ETC[0]}"]
    assert "--ro-bind" not in args and len(args) == 3 * len(sandbox._ETC)
    assert not (tmp_path / "cache" / "plughost" / "etc").exists()


def test_a_symlink_in_place_of_the_etc_copy_is_never_followed(
    host_etc: Path, tmp_path: Path
) -> None:
    """The copy is cleaned of entries it no longer wants: through a link put in its place
    that would delete whatever the link points at, so a link makes it bound entry by entry."""
    mirror = tmp_path / "cache" / "plughost" / "etc"
    sandbox._etc_args()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("not the sandbox's")
    shutil.rmtree(mirror)
    mirror.symlink_to(victim)
    args = sandbox._etc_args()
    assert (victim / "keep").read_text() == "not the sandbox's"
    assert str(mirror) not in args and len(args) == 3 * len(sandbox._ETC)


def test_a_writable_grant_of_plughosts_own_files_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin that could write the root or the cache could change what every other plugin
    runs (their code, the exec guard) or reads (the sandbox's /etc)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home" / ".cache"))
    root = tmp_path / "home" / ".local" / "share" / "plughost"
    policy = sandbox.SandboxPolicy(
        mode="enforce",
        permissions=None,
        plugin_dir=root / "plugins" / "p",
        data_dir=root / "data" / "p",
        home=tmp_path / "home",
        memory_mb=256,
        processes=64,
    )
    for granted in ("~", "~/.cache", "~/.cache/plughost/etc", "~/.local/share/plughost/plugins"):
        real = sandbox._expand(granted, policy.home)
        with pytest.raises(PluginLoadError, match="plughost's own files") as caught:
            sandbox._refuse_host_files(policy, granted, real)
        assert "read-only" in " ".join(caught.value.suggestions)
    for granted in ("~/.kube", "~/.cache/other", "~/.local/share/other"):
        sandbox._refuse_host_files(policy, granted, sandbox._expand(granted, policy.home))


@pytest.mark.parametrize("refused", ["a grant", "the guard"])
def test_a_refused_start_leaves_no_cgroup_and_no_descriptor(
    refused: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cgroups and descriptors a start took are handed back when its sandbox cannot be
    built: a plugin refused at every try would otherwise leave one set per try. Refused
    for a grant before anything is opened, or for a guard gone after the join files were."""
    found = probe()
    if refused == "the guard":
        if not found.cgroup_dirs:
            unavailable("no writable cgroup", "run the tests as root on a cgroup host")
        gone = dataclasses.replace(found, guard=str(tmp_path / "removed-guard"))
        monkeypatch.setattr(sandbox, "probe", lambda: gone)
    root = tmp_path / "root"
    granted = {str(root): "rw"} if refused == "a grant" else {}
    policy = sandbox.SandboxPolicy(
        mode="enforce",
        permissions=Permissions(filesystem=granted),
        plugin_dir=root / "plugins" / "refused",
        data_dir=root / "data" / "refused",
        home=tmp_path,
        memory_mb=256,
        processes=64,
    )
    before = set(os.listdir("/proc/self/fd"))
    opened: list[str] = []
    real_open = os.open

    def counted(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(sandbox.os, "open", counted)
    with pytest.raises(PluginLoadError, match=r"own files|cannot be confined"):
        sandbox.confine(
            policy, plugin_id="refused", cwd=tmp_path, socket_dir=tmp_path, transport="unix"
        )
    monkeypatch.undo()
    if refused == "the guard":  # the join files were open when the guard was not found
        assert [p for p in opened if "plughost-" in p], opened
    assert set(os.listdir("/proc/self/fd")) <= before
    made = [
        d
        for parent in found.cgroup_dirs.values()
        for d in parent.glob(f"plughost-{cgroups._host()}-refused-*")
    ]
    kept = cgroups._kept.pop("refused", None)  # kept for its next start, as after an exit
    try:
        assert set(made) == set(kept.dirs if kept else ()), made  # none left unaccounted for
    finally:
        if kept is not None:
            kept.remove()


def test_an_interpreter_pointed_elsewhere_is_allowed_at_the_next_start(tmp_path: Path) -> None:
    """What a script plugin may execute is found again when its ``#!`` interpreter changes
    (an upgrade re-pointing ``python3``), not only when the script does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("old", "new"):
        shutil.copy("/bin/true", bin_dir / name)
    (bin_dir / "interp").symlink_to("old")
    plugin = tmp_path / "plugin"
    (plugin / "bin").mkdir(parents=True)
    script = plugin / "bin" / "plugin"
    script.write_text(f"#!{bin_dir / 'interp'}\n")
    assert str(bin_dir / "old") in sandbox._exec_paths(script, plugin)
    (bin_dir / "interp").unlink()
    (bin_dir / "interp").symlink_to("new")
    allowed = sandbox._exec_paths(script, plugin)
    assert str(bin_dir / "new") in allowed and str(bin_dir / "old") not in allowed


def test_hosts_making_the_etc_copy_at_once_all_get_it(tmp_path: Path) -> None:
    """Several hosts of one user (other roots, test workers) may find the copy missing at
    the same moment: each must end with the one bind, none fall back to a bind per entry."""
    script = textwrap.dedent(
        """
        import json, sys
        from plughost.process import sandbox
        print("ready", flush=True)
        sys.stdin.readline()  # every host is ready: go
        print(json.dumps(sandbox._etc_args()))
        """
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    hosts = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for host in hosts:  # each imported, so they all start looking at the same moment
        assert host.stdout is not None
        assert host.stdout.readline() == "ready\n", host.communicate(timeout=60)
    for host in hosts:
        assert host.stdin is not None
        host.stdin.write("\n")
        host.stdin.flush()
    answers = [host.communicate(timeout=60) for host in hosts]
    mirror = str(tmp_path / "cache" / "plughost" / "etc")
    assert [json.loads(out) for out, _ in answers] == [["--ro-bind", mirror, "/etc"]] * 4, answers
    assert (Path(mirror) / "passwd").read_bytes() == Path("/etc/passwd").read_bytes()


def test_the_exec_guard_on_its_own(tmp_path: Path) -> None:
    """The guard runs before every confined plugin, with no C library of its own where it
    can: it says what failed and exits 126, and otherwise runs the program with no new
    privileges, its seccomp filter, and no descriptor but stdio."""
    guard, why = execguard.build(tmp_path / "cache")
    if guard is None:
        unavailable(f"no exec guard here: {why}", "install cc on a kernel with Landlock")

    def run(*argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([guard, *argv], capture_output=True, text=True, timeout=30, **kwargs)

    usage = run()
    assert usage.returncode == 2 and usage.stderr.startswith("usage: exec-guard")
    for argv, said in (
        (["--join-fd", "x", "--", "/bin/true"], "joining a cgroup: bad file descriptor (errno 9)"),
        (["--", str(tmp_path / "missing")], "missing: no such file or directory (errno 2)"),
        (["--landlock", str(tmp_path), "--", "/bin/true"], "/bin/true: permission denied"),
    ):
        failed = run(*argv)
        assert failed.returncode == 126, failed
        assert failed.stderr.startswith("plughost exec guard: ") and said in failed.stderr
    with (tmp_path / "joined").open("w") as join, (tmp_path / "kept").open("w") as other:
        ran = run(
            "--join-fd", str(join.fileno()), "--", "/bin/sh", "-c",
            "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; ls /proc/self/fd",
            pass_fds=(join.fileno(), other.fileno()),
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "joined").read_text() == "0"  # what joins a cgroup
    lines = ran.stdout.split()
    assert lines[:4] == ["NoNewPrivs:", "1", "Seccomp:", "2"], lines
    assert sorted(int(fd) for fd in lines[4:]) == [0, 1, 2, 3]  # 3: ls's own directory


def test_a_confined_plugin_is_not_its_namespaces_first_process(tmp_path: Path) -> None:
    """Something reaps the orphans of what a plugin starts, and a plugin's signals to itself
    act as anywhere else (a namespace's first process ignores those it has no handler for)."""
    if probe().guard is None:
        unavailable(f"no exec guard here: {probe().guard_reason}", "install cc")
    plugin_dir = tmp_path / "plugins" / "p"
    plugin_dir.mkdir(parents=True)
    policy = sandbox.SandboxPolicy(
        mode="enforce",
        permissions=Permissions(exec=True),
        plugin_dir=plugin_dir,
        data_dir=tmp_path / "data" / "p",
        home=tmp_path,
        memory_mb=256,
        processes=64,
    )
    zombies = "grep -ls '^[0-9]* ([^)]*) Z' /proc/[0-9]*/stat"
    script = (
        f'(true &); i=0; while [ -n "$({zombies})" ] && [ $i -lt 200 ]; do'
        " sleep 0.05; i=$((i + 1)); done; "
        f'echo "pid $$ zombies $({zombies} | wc -l)"; kill -TERM $$; echo survived'
    )
    confined = sandbox.confine(
        policy, plugin_id="p", cwd=plugin_dir, socket_dir=tmp_path, transport="unix"
    )
    try:
        ran = subprocess.run(
            [*confined.prefix, "/bin/sh", "-c", script],
            pass_fds=confined.fds, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        confined.close_fds()
        confined.release()
    assert ran.stdout.split() == ["pid", "2", "zombies", "0"], (ran.stdout, ran.stderr)
    assert ran.returncode == 128 + signal.SIGTERM, ran
