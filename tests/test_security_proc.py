"""What a plugin cannot reach: the host's /proc, another user's rights, another plugin's sockets.

A plugin runs as the host's user unless ``run_as`` says otherwise, so these tests
read the host the way a plugin could: as a process of the same uid without
CAP_SYS_PTRACE. Under root both the host and the reader drop every capability
(``setpriv``), as two processes of an ordinary user are: the kernel also refuses
a reader holding fewer capabilities than its target, whatever the target's setting.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from cli_helpers import clean_env
from fixtures_plugins import Managers, install_example, managers_fixture, root_fixture
from gobuild import go_plugins
from toolchains import unavailable
from waiting import wait_until

from plughost.errors import PluginLoadError
from plughost.hardening import resolve_run_as
from plughost.phases import Phase
from plughost.process.sandbox import probe
from plughost.process.sockdir import SocketDir

__all__ = ["managers_fixture", "root_fixture"]

SECRET = "AKIA-host-secret-must-not-reach-plugins"

# A host: a PluginManager on the root given, until a line arrives on its stdin.
HOST = """
import asyncio, sys
from pathlib import Path
from plughost import PluginManager

async def main() -> None:
    manager = PluginManager(sys.argv[1])
    await manager.initialize()
    Path(sys.argv[1], "ready").write_text("")
    await asyncio.to_thread(sys.stdin.readline)
    await manager.shutdown()

asyncio.run(main())
"""

# What a plugin would try: its own capabilities, then the host's environment.
READER = """
import sys
status = open("/proc/self/status").read()
print(next(l for l in status.splitlines() if l.startswith("CapEff:")).split()[1])
try:
    print(open(f"/proc/{sys.argv[1]}/environ", "rb").read().decode(errors="replace"))
except PermissionError as exc:
    print("denied:", exc)
"""


def without_capabilities() -> list[str]:
    """A command prefix: the same uid, no capabilities at all (nothing to drop unless root)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        unavailable("setpriv is missing", "install util-linux")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]


def start_host(root: Path) -> subprocess.Popen[str]:
    """A host process (a PluginManager) on ``root``, with a secret in its environment."""
    proc = subprocess.Popen(
        [*without_capabilities(), sys.executable, "-c", HOST, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(AWS_SECRET_ACCESS_KEY=SECRET),
    )

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the host exited {proc.returncode}: {proc.communicate()[0]}")
        return (root / "ready").exists()

    wait_until(ready, timeout=30, interval=0.02, message="the host to initialize")
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
@pytest.mark.parametrize("protect", [True, False], ids=["protected", "unprotected"])
def test_a_process_of_the_hosts_user_cannot_read_its_environment(
    tmp_path: Path, protect: bool
) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "plughost.toml").write_text(f"protect_host_process = {str(protect).lower()}\n")
    host = start_host(root)
    try:
        reader = subprocess.run(
            [*without_capabilities(), sys.executable, "-c", READER, str(host.pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    finally:
        out, _ = host.communicate("stop\n", timeout=30)
    assert host.returncode == 0, out
    capabilities, result = reader.stdout.split("\n", 1)
    assert int(capabilities, 16) == 0, "the reader must have no capabilities (CAP_SYS_PTRACE)"
    assert psutil.Process().uids().effective == os.geteuid()  # same uid as the host
    if protect:
        assert result.startswith("denied: [Errno 13] Permission denied"), result
        assert SECRET not in result
    else:  # the same read, with the setting off, is what a plugin could do before
        assert f"AWS_SECRET_ACCESS_KEY={SECRET}" in result


# -- run_as ------------------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        unavailable(
            "running plugins as another user needs a root host", "run the tests as root (CI does)"
        )


@pytest.fixture
def open_root() -> Iterator[Path]:
    """A root nobody can reach: directly in /tmp, since pytest's own tmp dirs are 0700."""
    root = Path(tempfile.mkdtemp(prefix="ph-", dir="/tmp"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def open_managers(open_root: Path) -> AsyncIterator[Managers]:
    made = Managers(open_root)
    yield made
    leftovers = await made.close()
    assert not leftovers, f"plugin processes left behind: {[p.pid for p in leftovers]}"


def groups_of(pid: int) -> str:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(line for line in status.splitlines() if line.startswith("Groups:"))


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_plugins(tmp_path_factory, ("gohello",))


async def test_run_as_runs_the_plugin_as_that_user(
    open_root: Path, open_managers: Managers, go_build: Path
) -> None:
    # A Go plugin: a Python one would also need the host's interpreter reachable by nobody.
    require_root()
    nobody = pwd.getpwnam("nobody")
    shutil.copytree(go_build / "gohello", open_root / "plugins" / "gohello")
    for private in (open_root, open_root / "plugins"):
        os.chmod(private, 0o700)  # the host opens what the plugin's user must pass through
    manager = open_managers.new(run_as="nobody")
    await manager.initialize()
    info = manager.get_plugin("gohello")
    assert info.phase is Phase.RUNNING, info.last_error
    assert info.pid is not None
    proc = psutil.Process(info.pid)
    assert proc.uids().real == proc.uids().effective == nobody.pw_uid
    assert proc.gids().real == nobody.pw_gid
    assert groups_of(info.pid).split() == ["Groups:"]  # none of the host's groups
    backend = manager.backend("gohello")
    assert backend is not None and await backend.healthy()

    sockets = open_root / "run" / "gohello"
    assert proc.environ()["PLUGIN_UNIX_SOCKET_DIR"] == str(sockets)
    st = sockets.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o700)
    for passable in (open_root, open_root / "plugins", open_root / "run"):
        assert stat.S_IMODE(passable.stat().st_mode) & 0o011 == 0o011, passable
    await manager.unload_plugin("gohello")
    assert not sockets.exists()


async def test_run_as_and_the_sandbox_together(
    open_root: Path, open_managers: Managers, go_build: Path
) -> None:
    """A confined plugin run as another user: bubblewrap runs as that user, so nothing it
    mounts may be only the host user's (the sandbox's /etc copy in the host user's cache
    is not: /etc is bound entry by entry), and its data directory is that user's."""
    require_root()
    if not probe().usable:
        unavailable(probe().reason, "run scripts/install_sandbox.sh")
    nobody = pwd.getpwnam("nobody")
    target = open_root / "plugins" / "gohello"
    shutil.copytree(go_build / "gohello", target)
    meta = yaml.safe_load((target / "plugin.yaml").read_text())
    meta["permissions"] = {"network": "none"}
    (target / "plugin.yaml").write_text(yaml.safe_dump(meta))
    manager = open_managers.new(run_as="nobody", sandbox="enforce")
    await manager.initialize()
    info = manager.get_plugin("gohello")
    assert info.phase is Phase.RUNNING, info.last_error
    assert "enforced by bubblewrap" in info.sandbox
    backend = manager.backend("gohello")
    assert backend is not None and backend.pid is not None and await backend.healthy()
    plugin = next(
        p
        for p in psutil.Process(backend.pid).children(recursive=True)
        if p.exe() == str(target / "bin" / "plugin")
    )
    assert plugin.uids().effective == nobody.pw_uid
    assert os.readlink(f"/proc/{plugin.pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    inside = Path(f"/proc/{plugin.pid}/root")
    assert (inside / "etc/passwd").read_bytes() == Path("/etc/passwd").read_bytes()
    assert not (inside / "etc/shadow").exists()
    assert (open_root / "data" / "gohello").stat().st_uid == nobody.pw_uid


async def test_run_as_refuses_a_plugin_the_user_cannot_reach(
    root: Path, managers: Managers
) -> None:
    require_root()
    install_example(root, "hello")
    manager = managers.new(run_as="nobody")
    await manager.initialize()
    info = manager.get_plugin("hello")
    assert info.phase is Phase.FAILED
    # pytest's own tmp dir (pytest-of-root) is 0700, above the root: the host leaves it alone.
    blocked = next(p for p in reversed(root.parents) if not p.stat().st_mode & 0o001)
    assert f"user nobody may not pass through {blocked}" in (info.last_error or "")
    assert not (root / "run" / "hello").exists()


def test_run_as_names_an_unknown_user() -> None:
    with pytest.raises(PluginLoadError) as caught:
        resolve_run_as("no-such-user-here", "hello")
    assert "run_as names no user of this machine: 'no-such-user-here'" in caught.value.detail
    assert caught.value.plugin_id == "hello"
    assert resolve_run_as("") is None
    assert resolve_run_as(str(os.geteuid())) is None  # already that user: nothing to switch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="capabilities are Linux's")
def test_run_as_without_the_right_to_switch_users_is_a_clear_error() -> None:
    other = "nobody" if os.geteuid() != pwd.getpwnam("nobody").pw_uid else "root"
    check = (
        "from plughost.hardening import resolve_run_as\n"
        "from plughost.errors import PluginLoadError\n"
        "try:\n"
        f"    resolve_run_as({other!r}, 'hello')\n"
        "except PluginLoadError as exc:\n"
        "    print(exc.detail); print(exc.suggestions)\n"
    )
    out = subprocess.run(
        [*without_capabilities(), sys.executable, "-c", check],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f"run_as = {other!r}, but this host may not start processes as another user" in out
    assert "CAP_SETUID" in out and "run the host as root" in out


# -- per-plugin socket directories ---------------------------------------------------------


async def test_each_plugin_has_its_own_socket_directory(root: Path, managers: Managers) -> None:
    install_example(root, "hello")
    install_example(root, "hello", "hello2")
    manager = managers.new()
    await manager.initialize()
    own = {}
    for plugin_id in ("hello", "hello2"):
        backend = manager.backend(plugin_id)
        assert backend is not None and backend.pid is not None
        directory = root / "run" / plugin_id
        assert psutil.Process(backend.pid).environ()["PLUGIN_UNIX_SOCKET_DIR"] == str(directory)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert backend.address is not None and backend.address[1].startswith(f"{directory}/")
        own[plugin_id] = backend
    # The broker takes only addresses in the announcing plugin's own directory.
    for plugin_id, other in (("hello", "hello2"), ("hello2", "hello")):
        allowed = own[plugin_id].broker.config.socket_dir
        assert allowed == root / "run" / plugin_id
        address = own[other].address
        assert address is not None and not Path(address[1]).is_relative_to(allowed)
    await manager.unload_plugin("hello")
    assert not (root / "run" / "hello").exists()
    assert (root / "run" / "hello2").is_dir()


def test_a_late_cleanup_leaves_the_successors_directory_alone(tmp_path: Path) -> None:
    base = tmp_path / "run"
    first = SocketDir(base, "p")
    (first.path / "sock").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("")
    (first.path / "link").symlink_to(outside)  # what a plugin may leave behind
    second = SocketDir(base, "p")  # the next process: the leftover goes, links unfollowed
    assert second.path == first.path == base / "p"
    assert list(second.path.iterdir()) == []
    assert (outside / "keep").exists()
    (second.path / "sock").write_text("")
    first.remove()  # the first process's stop finishing late
    assert (second.path / "sock").exists()
    second.remove()
    second.remove()
    assert not second.path.exists()
    assert base.is_dir()
