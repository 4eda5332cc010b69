"""Helpers for the dev-mode tests: source trees to edit, a host with a dev server, event waits.

Nothing here sleeps in the hope that something happened: every wait is on an
event of the manager's bus (or a poll with a deadline), and fails saying what
it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from google.protobuf import wrappers_pb2

from plughost._proto import hello_pb2_grpc
from plughost.dev.watch import DevServerManager
from plughost.events import EVENT_PROCESS_LOG, Event
from plughost.host.manager import PluginManager
from plughost.settings import SettingsProvider

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "src" / "plughost" / "examples"
GOPLUGIN = REPO / "tests" / "goplugins" / "goplugin"
DEVPLUGINS = Path(__file__).resolve().parent
GO_DEV_BUILD = "go build -mod=readonly -o build/bin/plugin ."

FAST: dict[str, Any] = {"start_timeout": 20.0, "stop_grace": 2.0, "kill_grace": 1.0}


def settings(**overrides: Any) -> SettingsProvider:
    return SettingsProvider(None, {**FAST, **overrides})


def copy_hello(dest: Path, plugin_id: str = "devhello") -> Path:
    """The hello example's source tree, under another id."""
    shutil.copytree(EXAMPLES / "hello", dest, ignore=shutil.ignore_patterns("__pycache__"))
    meta = dest / "plugin.yaml"
    meta.write_text(re.sub(r"(?m)^id: .*$", f"id: {plugin_id}", meta.read_text()))
    return dest


def copy_goplugin(dest: Path, build: str = GO_DEV_BUILD) -> Path:
    """The gohello Go plugin's source tree with a ``dev.build`` command (its id must stay gohello)."""
    shutil.copytree(GOPLUGIN, dest)
    (dest / "plugin.yaml").write_text(
        "id: gohello\nversion: 0.1.0\nname: Go Hello (dev)\ncapabilities: [exec]\n"
        f"dev:\n  build: {build}\n  output: build/bin/plugin\n"
    )
    return dest


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


async def greet(manager: PluginManager, plugin_id: str, name: str = "x") -> str:
    backend = manager.backend(plugin_id)
    assert backend is not None, f"{plugin_id} has no backend"
    stub: Any = backend.stub(hello_pb2_grpc.GreeterStub)
    reply = await stub.Greet(wrappers_pb2.StringValue(value=name), timeout=5)
    return str(reply.value)


class Events:
    """Every event of a bus from now on (except plugin log lines), awaitable by name."""

    def __init__(self, manager: PluginManager) -> None:
        self.bus = manager.bus
        self.seen: list[Event] = []
        self._changed = asyncio.Event()
        self._stream = manager.bus.stream("*", maxsize=100_000)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self._stream:
            if event.name != EVENT_PROCESS_LOG:
                self.seen.append(event)
                self._changed.set()

    def mark(self) -> int:
        """Sequence number of the last event published so far."""
        return self.bus.published

    def named(self, name: str, plugin_id: str | None = None, start: int = 0) -> list[Event]:
        return [
            e
            for e in self.seen
            if e.seq > start and e.name == name and (plugin_id is None or e.plugin_id == plugin_id)
        ]

    async def wait(
        self,
        name: str | tuple[str, ...],
        predicate: Callable[[Event], bool] = lambda e: True,
        *,
        start: int = 0,
        timeout: float = 30.0,
    ) -> Event:
        """The first event named ``name`` published after ``start`` matching ``predicate``."""
        names = (name,) if isinstance(name, str) else name
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if event.seq > start and event.name in names and predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                brief = [f"{e.name}{e.payload.get('to', '')}" for e in self.seen if e.seq > start]
                raise AssertionError(f"no {names} within {timeout:g} s; saw {brief[-40:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_phase(
        self, plugin_id: str, phase: str, *, start: int = 0, timeout: float = 30.0
    ) -> Event:
        return await self.wait(
            "plugin/state_change",
            lambda e: e.plugin_id == plugin_id and e.payload["to"] == phase,
            start=start,
            timeout=timeout,
        )

    async def close(self) -> None:
        self._stream.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


@contextlib.asynccontextmanager
async def dev_host(
    root: Path, **dsm_options: Any
) -> AsyncIterator[tuple[PluginManager, DevServerManager, Events]]:
    """A manager on ``root`` with a DevServerManager (fast debounce), initialized."""
    manager = PluginManager(root, settings=settings())
    dsm_options.setdefault("debounce_ms", 300)
    dsm_options.setdefault("step_ms", 30)
    dsm_options.setdefault("devinfo_check_interval", 0.3)
    dsm = DevServerManager(manager.table, **dsm_options)
    manager.set_dev_server_manager(dsm)
    events = Events(manager)
    try:
        await manager.initialize()
        yield manager, dsm, events
    finally:
        await manager.shutdown()  # closes the dev servers too
        await events.close()
