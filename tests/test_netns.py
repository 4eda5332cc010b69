"""``network: loopback``: a network namespace of the plugin's own, the host's loopback
ports forwarded into it by pasta, and nothing else (process/netns.py).

A probe plugin (tests/plugins/netprobe) connects to a real port on the host's
127.0.0.1, to a real port of the host reached through another address of the
machine, and listens on a port of its own; the host then tries that port. Real
bubblewrap, real pasta, real sockets. Every pasta ends with its plugin, however the
plugin ends, and with its host.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from cli_helpers import clean_env, cli
from fixtures_plugins import Managers, managers_fixture, pid_alive, reported, root_fixture
from toolchains import unavailable
from waiting import async_wait_until

from plughost.errors import PluginLoadError
from plughost.host.manager import PluginManager
from plughost.metadata import load_meta
from plughost.phases import Phase
from plughost.process.local import LaunchSpec, ProcessBackend, start_process
from plughost.process.netns import pasta_path
from plughost.process.sandbox import policy_for, probe
from plughost.settings import Settings

__all__ = ["managers_fixture", "root_fixture"]

NETPROBE = Path(__file__).resolve().parent / "plugins" / "netprobe"
HELPER = Path(__file__).resolve().parent / "helpers" / "host_with_plugins.py"
PROBES = ("loopback", "outside", "listen")


@pytest.fixture(autouse=True)
def _need_pasta() -> None:
    found = probe()
    if not found.usable:
        unavailable(found.reason, "run scripts/install_sandbox.sh")
    if pasta_path() is None:
        unavailable("pasta is not installed", "run scripts/install_sandbox.sh (passt)")


def outside_address() -> str:
    """An IPv4 address of this machine that is not on its loopback."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return address.address
    unavailable("this machine has no address but its loopback", "run on a networked machine")


def free_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


@contextlib.contextmanager
def listening(host: str) -> Iterator[int]:
    with socket.socket() as server:
        server.bind((host, 0))
        server.listen(16)
        yield server.getsockname()[1]


def refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def path_of(monkeypatch: pytest.MonkeyPatch, path: str) -> Iterator[None]:
    """PATH (where the host looks for pasta) set to ``path`` for the block."""
    monkeypatch.setenv("PATH", path)
    pasta_path.cache_clear()
    try:
        yield
    finally:
        monkeypatch.undo()
        pasta_path.cache_clear()


def install_netprobe(root: Path, network: str = "loopback") -> Path:
    target = root / "plugins" / "netprobe"
    shutil.copytree(NETPROBE, target, ignore=shutil.ignore_patterns("__pycache__"))
    meta = yaml.safe_load((target / "plugin.yaml").read_text())
    meta["permissions"] = {"network": network}
    (target / "plugin.yaml").write_text(yaml.safe_dump(meta))
    return target


async def outcomes(manager: PluginManager, wanted: tuple[str, ...] = PROBES) -> dict[str, str]:
    """probe -> its outcome ('connected', 'listening' or 'blocked (...)'), once all are in."""
    return await reported(manager, "netprobe", ".*", wanted)


def pasta_of(manager: PluginManager) -> int:
    """The pid of the pasta serving the plugin's current process."""
    backend = manager.backend("netprobe")
    assert isinstance(backend, ProcessBackend)
    network = backend.confinement.network
    assert network is not None and network.pid is not None
    assert pid_alive(network.pid) and "--netns" in psutil.Process(network.pid).cmdline()
    return network.pid


async def gone(pid: int, what: str) -> None:
    await async_wait_until(lambda: not pid_alive(pid), timeout=10, message=what)


async def test_loopback_reaches_the_hosts_loopback_and_nothing_else(
    managers: Managers, root: Path
) -> None:
    install_netprobe(root)
    address = outside_address()
    listen_port = free_port()
    with listening("127.0.0.1") as loopback_port, listening("0.0.0.0") as outside_port:
        assert not refused(address, outside_port)  # the host itself reaches it there
        env = {
            "NETPROBE_LOOPBACK_PORT": str(loopback_port),
            "NETPROBE_OUTSIDE_HOST": address,
            "NETPROBE_OUTSIDE_PORT": str(outside_port),
            "NETPROBE_LISTEN_PORT": str(listen_port),
        }
        manager = managers.new(extra_env=env, sandbox="enforce")
        await manager.initialize()
        found = await outcomes(manager)
        assert found["loopback"] == "connected", found
        assert found["outside"].startswith("blocked"), found
        assert found["listen"] == "listening", found
        sandbox = manager.get_plugin("netprobe").sandbox
        assert "forwarded by pasta" in sandbox and "not enforced" not in sandbox, sandbox
    # Nothing forwards the plugin's own ports to the host: not at once, and not after
    # pasta's scans of the namespace's ports (once a second, for "-t auto"; measured:
    # a port is published ~1 s after it is opened).
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert refused("127.0.0.1", listen_port)
        await asyncio.sleep(0.1)


async def test_without_pasta_a_loopback_plugin_shares_the_hosts_network(
    managers: Managers, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As before pasta: it runs, reaches the machine's other addresses, and says so."""
    install_netprobe(root)
    no_pasta = tmp_path / "bin"
    no_pasta.mkdir()
    with path_of(monkeypatch, str(no_pasta)):
        assert pasta_path() is None
        address = outside_address()
        with listening("127.0.0.1") as loopback_port, listening("0.0.0.0") as outside_port:
            env = {
                "NETPROBE_LOOPBACK_PORT": str(loopback_port),
                "NETPROBE_OUTSIDE_HOST": address,
                "NETPROBE_OUTSIDE_PORT": str(outside_port),
                "NETPROBE_LISTEN_PORT": str(free_port()),
            }
            manager = managers.new(extra_env=env, sandbox="enforce")
            await manager.initialize()
            found = await outcomes(manager)
        assert found["loopback"] == found["outside"] == "connected", found
        sandbox = manager.get_plugin("netprobe").sandbox
        assert "not enforced: loopback-only" in sandbox and "pasta is missing" in sandbox
        backend = manager.backend("netprobe")
        assert isinstance(backend, ProcessBackend) and backend.confinement.network is None


async def test_no_pasta_outlives_its_plugin(managers: Managers, root: Path) -> None:
    install_netprobe(root)
    manager = managers.new(extra_env={}, sandbox="enforce")
    recorder = managers.record(manager)
    await manager.initialize()
    first = pasta_of(manager)
    # The host's death-watch mark: it dies with a crashed host (see the test below).
    assert any(k == "PLUGHOST_HOST_MARK" for k in psutil.Process(first).environ())

    # A crash (SIGKILL): its pasta goes, and the restarted plugin gets a new one.
    backend = manager.backend("netprobe")
    assert backend is not None and backend.pid is not None
    start = recorder.mark()
    inner = [
        p
        for p in psutil.Process(backend.pid).children(recursive=True)
        if "plugin.py" in " ".join(p.cmdline())
    ]
    assert inner, "the plugin's process under bubblewrap"
    inner[-1].kill()
    await gone(first, "the crashed plugin's pasta to end")
    await recorder.wait_phase("netprobe", Phase.RUNNING, 30, start=start)
    second = pasta_of(manager)
    assert second != first

    # A stop.
    await manager.unload_plugin("netprobe")
    await gone(second, "the stopped plugin's pasta to end")

    # The host's shutdown.
    await manager.load_plugin("netprobe")
    third = pasta_of(manager)
    await manager.shutdown()
    await gone(third, "the pasta of a plugin stopped by the host's shutdown to end")


async def test_pasta_dies_with_a_killed_host(managers: Managers) -> None:
    install_netprobe(managers.root)
    host = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HELPER),
        str(managers.root),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        assert host.stdout is not None
        report: dict[str, Any] = json.loads(await asyncio.wait_for(host.stdout.readline(), 60))
        assert report["phases"] == {"netprobe": "Running"}, report
        below = {p.pid for p in psutil.Process(report["pids"]["netprobe"]).children(True)}
        pastas = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if any(f"/proc/{pid}/ns/net" in (p.info["cmdline"] or []) for pid in below)
        ]
        assert len(pastas) == 1, pastas
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(host.pid, signal.SIGKILL)
        await host.wait()
    await gone(pastas[0], "the killed host's pasta to end")


def test_doctor_says_whether_pasta_is_there(root: Path, tmp_path: Path) -> None:
    install_netprobe(root)
    checks = {c["name"]: c for c in cli("doctor", "--json", root=root).json()["checks"]}
    assert checks["pasta"]["status"] == "ok", checks["pasta"]
    assert "forwarded by pasta" in checks["grants netprobe"]["detail"]
    # Without pasta on PATH (bubblewrap still there): a warning naming how to install it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bwrap", "prlimit", "cc"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    report = cli("doctor", "--json", root=root, env=clean_env(PATH=str(bin_dir))).json()
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["pasta"]["status"] == "warn", checks["pasta"]
    assert "scripts/install_sandbox.sh" in checks["pasta"]["fix"]
    assert "apt-get install passt" in checks["pasta"]["fix"]
    assert "pasta is missing" in checks["grants netprobe"]["detail"]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('echo "no such namespace" >&2; exit 1', "pasta exited with 1: no such namespace"),
        ("exec sleep 600", "pasta did not set up plugin 'netprobe''s network within 2 s"),
    ],
    ids=["fails", "hangs"],
)
async def test_a_pasta_that_fails_or_hangs_fails_the_start_and_leaves_nothing(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str, expected: str
) -> None:
    plugin_dir = install_netprobe(root)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pasta").write_text(f"#!/bin/sh\n{script}\n")
    (fake / "pasta").chmod(0o755)
    spec = LaunchSpec(
        plugin_id="netprobe",
        executable=plugin_dir / "bin" / "plugin",
        cwd=plugin_dir,
        socket_dir=root / "run",
        start_timeout=2.0,
    )
    meta = load_meta(plugin_dir)
    spec.sandbox = policy_for(meta, None, Settings(sandbox="enforce"), root, plugin_dir)
    fds = set(os.listdir("/proc/self/fd"))
    with (
        path_of(monkeypatch, f"{fake}:{os.environ['PATH']}"),
        pytest.raises(PluginLoadError) as caught,
    ):
        await start_process(spec)
    assert expected in caught.value.detail, caught.value.detail
    assert caught.value.suggestions
    # Neither the plugin nor the fake pasta is left, nor any descriptor of theirs.
    await async_wait_until(
        lambda: not psutil.Process().children(recursive=True),
        message=lambda: f"no process left: {psutil.Process().children(recursive=True)}",
    )
    await async_wait_until(
        lambda: set(os.listdir("/proc/self/fd")) <= fds,
        message=lambda: f"no descriptor left: {set(os.listdir('/proc/self/fd')) - fds}",
    )
