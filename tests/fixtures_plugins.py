"""Helpers and fixtures for the manager, health and host-killed tests.

Fixtures (``root``, ``managers``) are registered by importing
``managers_fixture`` and ``root_fixture`` into a test module.

Real plugins are the examples (``examples/``) and the test plugin ``ctl``
(``tests/plugins_mgr/ctl``, driven by files in its directory), copied into a
fresh root. Nothing here sleeps in the hope that something happened: waits
are on events from the manager's bus, or polls with a deadline (tests/waiting.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest
from waiting import async_wait_until

from plughost.events import EVENT_PROCESS_LOG, Event
from plughost.host.manager import BackendFactory, PluginManager
from plughost.phases import ALLOWED_TRANSITIONS, Phase
from plughost.settings import SettingsProvider

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
CTL_PLUGIN = Path(__file__).resolve().parent / "plugins_mgr" / "ctl"

# Fast, but not so fast that a loaded CI machine trips them.
FAST: dict[str, Any] = {
    "start_timeout": 20.0,
    "stop_grace": 2.0,
    "kill_grace": 1.0,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
    "stable_time": 0.3,  # Running this long after a restart counts as recovered
}


def settings(**overrides: Any) -> SettingsProvider:
    """A settings provider with test timings (no file), plus ``overrides``."""
    return SettingsProvider(None, {**FAST, **overrides})


def install_example(root: Path, example: str, plugin_id: str | None = None) -> Path:
    """Copy ``examples/<example>`` (or the ``ctl`` test plugin) to ``<root>/plugins/<id>``.

    A copy under another id gets that id in its plugin.yaml (the SDK takes
    its id from there).
    """
    source = CTL_PLUGIN if example == "ctl" else EXAMPLES / example
    plugin_id = plugin_id or example
    target = root / "plugins" / plugin_id
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    if plugin_id != example:
        meta = target / "plugin.yaml"
        meta.write_text(re.sub(r"(?m)^id: .*$", f"id: {plugin_id}", meta.read_text()))
    return target


def write_state(root: Path, entries: Iterable[dict[str, Any]]) -> None:
    """Pre-write plugin_state.json (e.g. with ``enabled: false``)."""
    (root / "plugin_state.json").write_text(json.dumps(list(entries)))


def read_state(root: Path) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in json.loads((root / "plugin_state.json").read_text())}


def read_pid_file(root: Path) -> dict[str, Any]:
    path = root / "plugin_pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


# -- processes -----------------------------------------------------------------------
def _cmdline(proc: psutil.Process) -> str:
    try:
        return "\0".join(proc.cmdline())
    except (psutil.Error, OSError):
        return ""


def plugin_processes(location: Path, *, anywhere: bool = False) -> list[psutil.Process]:
    """Live plugin processes whose command line runs something inside ``location``.

    By default only this process's descendants; ``anywhere`` looks at every
    process (for plugins whose host was killed and which were re-parented).
    A matching process whose parent matches too (the launcher script's
    short-lived ``$(dirname ...)`` subshell) is part of its parent's plugin,
    not another one.
    """
    needle = str(location) + os.sep
    candidates = psutil.process_iter() if anywhere else psutil.Process().children(recursive=True)
    found: dict[int, tuple[psutil.Process, int]] = {}
    for proc in candidates:
        with contextlib.suppress(psutil.Error):
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if needle in _cmdline(proc):
                found[proc.pid] = (proc, proc.ppid())
    return [proc for proc, ppid in found.values() if ppid not in found]


def root_processes(root: Path, *, anywhere: bool = False) -> list[psutil.Process]:
    return plugin_processes(root / "plugins", anywhere=anywhere)


def kill_all(procs: Iterable[psutil.Process]) -> None:
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.wait(5)


def pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- events --------------------------------------------------------------------------
SYNC_EVENT = "test/sync"


class Recorder:
    """Every event of a bus (except plugin log lines), kept in order, awaitable.

    Delivery is asynchronous, so positions are bus sequence numbers:
    ``mark()`` is the number of events published so far, and ``start=mark``
    means "events published after the mark", whether or not they have
    reached the recorder yet.
    """

    def __init__(self, manager: PluginManager) -> None:
        self.bus = manager.bus
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        self._stream = manager.bus.stream("*", maxsize=1_000_000)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self._stream:
            if event.name == EVENT_PROCESS_LOG:
                continue
            self.events.append(event)
            self._changed.set()

    def mark(self) -> int:
        return self.bus.published

    def since(self, start: int = 0) -> list[Event]:
        return [e for e in self.events if e.seq > start]

    def named(self, name: str, plugin_id: str | None = None, start: int = 0) -> list[Event]:
        return [
            e
            for e in self.since(start)
            if e.name == name and (plugin_id is None or e.plugin_id == plugin_id)
        ]

    def transitions(
        self, plugin_id: str | None = None, start: int = 0
    ) -> list[tuple[str, str, str]]:
        return [
            (e.payload["from"], e.payload["to"], e.payload["reason"])
            for e in self.named("plugin/state_change", plugin_id, start)
        ]

    async def wait_for(
        self,
        name: str | tuple[str, ...],
        predicate: Callable[[Event], bool] = lambda e: True,
        timeout: float = 10.0,
        *,
        start: int = 0,
    ) -> Event:
        """The first event named ``name`` (or one of the names) published after
        ``start`` that matches ``predicate``."""
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        while True:
            for event in self.since(start):
                if event.name in names and predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {name} event within {timeout:g} s; saw: "
                    + "; ".join(_brief(e) for e in self.since(start))
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_phase(
        self, plugin_id: str, phase: Phase, timeout: float = 10.0, *, start: int = 0
    ) -> Event:
        return await self.wait_for(
            "plugin/state_change",
            lambda e: e.plugin_id == plugin_id and e.payload["to"] == phase.value,
            timeout,
            start=start,
        )

    async def sync(self, timeout: float = 10.0) -> None:
        """Return once every event published before this call has been received."""
        token = f"sync-{time.monotonic_ns()}"
        start = self.mark()
        self.bus.publish(SYNC_EVENT, {"token": token})
        await self.wait_for(SYNC_EVENT, lambda e: e.payload["token"] == token, timeout, start=start)

    async def close(self) -> None:
        self._stream.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _brief(event: Event) -> str:
    p = event.payload
    if event.name == "plugin/state_change":
        return f"{p.get('pluginID')}:{p.get('from')}->{p.get('to')} ({p.get('reason')})"
    return f"{event.name}({p.get('pluginID', '')})"


def invalid_transitions(moves: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Moves the table forbids that were not explicitly forced."""
    bad = []
    for from_, to, reason in moves:
        if Phase(to) in ALLOWED_TRANSITIONS[Phase(from_)]:
            continue
        bad.append((from_, to, reason))
    return bad


# -- managers --------------------------------------------------------------------------
class Managers:
    """Creates managers on a root; at the end shuts them down and checks nothing is left."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.created: list[PluginManager] = []
        self.recorders: list[Recorder] = []

    def new(
        self,
        *,
        backend_factory: BackendFactory | None = None,
        controllers: dict[str, object] | None = None,
        hooks: dict[str, object] | None = None,
        **overrides: Any,
    ) -> PluginManager:
        """A manager on the root with test timings plus ``overrides`` as settings."""
        manager = PluginManager(
            self.root,
            settings=settings(**overrides),
            backend_factory=backend_factory,
            controllers=controllers,
            hooks=hooks,
        )
        self.created.append(manager)
        return manager

    def record(self, manager: PluginManager) -> Recorder:
        recorder = Recorder(manager)
        self.recorders.append(recorder)
        return recorder

    async def close(self) -> list[psutil.Process]:
        for manager in self.created:
            await manager.shutdown()  # a no-op for one already shut down
        for recorder in self.recorders:
            await recorder.close()
        for manager in self.created:
            manager.bus.close()
        leftovers = root_processes(self.root, anywhere=True)
        kill_all(leftovers)
        return leftovers


@pytest.fixture(name="root")
def root_fixture(tmp_path: Path) -> Path:
    """A plughost root (short path: unix socket paths are limited)."""
    path = tmp_path / "r"
    (path / "plugins").mkdir(parents=True)
    return path


@pytest.fixture(name="managers")
async def managers_fixture(root: Path) -> AsyncIterator[Managers]:
    """Make managers with ``managers.new(**settings)``; all are shut down afterwards,
    and the test fails if any plugin process outlives them."""
    made = Managers(root)
    yield made
    leftovers = await made.close()
    assert not leftovers, f"plugin processes left behind: {[p.pid for p in leftovers]}"


async def reported(
    manager: PluginManager, plugin_id: str, outcome: str, wanted: Iterable[str]
) -> dict[str, str]:
    """name -> outcome from the plugin's log lines ``<plugin_id>: <name>: <outcome>`` (a
    regex), once every ``wanted`` name has reported: what a probing plugin says it could do."""
    pattern = re.compile(rf"{re.escape(plugin_id)}: (\w+): ({outcome})")
    found: dict[str, str] = {}

    def read() -> bool:
        for entry in manager.logs.get_logs(plugin_id, 500):
            match = pattern.match(entry.message)
            if match:
                found[match.group(1)] = match.group(2)
        return set(wanted) <= set(found)

    await async_wait_until(read, timeout=30, message=lambda: f"outcomes so far: {found}")
    return found
