"""The plugin table: every plugin's slot, and the one way to hold a slot's lock.

Operations on one plugin (load, reload, unload, install, recovery) run inside
``async with table.exclusive(plugin_id) as slot``, one at a time per plugin;
different plugins proceed in parallel. The table also carries what a slot
needs to start and stop a process (settings, bus, logs, PID registry, the
backend factory, controllers and hooks) and persists the records, so the
restarter, the installer and dev mode can work with the table alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from datetime import UTC, datetime
from typing import Any

from ..coalesce import NextRun
from ..errors import PluginNotFoundError
from ..events import EVENT_STATE_CHANGE, EventBus, StateChangePayload
from ..lifecycle import Transition
from ..logs import PluginLogManager
from ..paths import RootLayout
from ..phases import Phase
from ..pids import PidRegistry
from ..process.backend import PluginBackend
from ..records import PluginRecord, PluginStateRecord
from ..settings import Settings, SettingsProvider
from ..store import StateStore, merge_records
from ..tasks import TaskOwner
from .client import PluginClient
from .slot import BackendFactory, LockedSlot, PluginSlot

__all__ = ["ExitListener", "PluginTable"]

_batch: contextvars.ContextVar[object] = contextvars.ContextVar("plughost_table_batch")
"""The batch (see PluginTable.held_writes) the current task, and the tasks and callbacks
it starts, belong to: its writes wait for the batch's end while that batch lasts."""

ExitListener = Callable[[PluginSlot, PluginBackend, int | None], None]
"""Told when a slot's process exits on its own: (slot, the backend that ended, status)."""


class PluginTable:
    """Every plugin's slot, keyed by id."""

    def __init__(
        self,
        *,
        layout: RootLayout,
        settings: SettingsProvider,
        bus: EventBus,
        logs: PluginLogManager,
        pids: PidRegistry,
        tasks: TaskOwner,
        store: StateStore,
        backend_factory: BackendFactory,
        controllers: dict[str, object],
        hooks: dict[str, object],
    ) -> None:
        self.layout = layout
        self.settings_provider = settings
        self.bus = bus
        self.logs = logs
        self.pids = pids
        self.tasks = tasks
        self.store = store
        self.backend_factory = backend_factory
        self.controllers = controllers
        self.hooks = hooks
        self.closing = False
        """Set when the host shuts down: nothing new may start."""
        self.start_plugins = True
        """False for one-shot commands: records change, no process is started."""
        self._slots: dict[str, PluginSlot] = {}
        self._persisted: list[PluginStateRecord] = []  # state-file entries kept as they were
        self._write = NextRun(self._write_snapshot)  # shared by who waits for it
        self._batches: set[object] = set()  # held_writes() under way: see persist()
        self._stops: set[asyncio.Future[Any]] = set()  # process stops still in progress
        self._takeover: list[Callable[[str], None]] = []
        self._watchers: dict[str, set[asyncio.Future[None]]] = {}  # wait_change callers
        self._exit: list[ExitListener] = []

    @property
    def settings(self) -> Settings:
        return self.settings_provider.settings

    # -- lookups -----------------------------------------------------------------------
    def __contains__(self, plugin_id: object) -> bool:
        return plugin_id in self._slots

    def find(self, plugin_id: str) -> PluginSlot | None:
        return self._slots.get(plugin_id)

    def get(self, plugin_id: str) -> PluginSlot:
        slot = self._slots.get(plugin_id)
        if slot is None:
            raise PluginNotFoundError(
                f"no plugin with id {plugin_id!r} is installed",
                plugin_id=plugin_id,
                suggestions=["list installed plugins with 'plughost list'"],
            )
        return slot

    def ids(self, phases: Collection[Phase] | None = None) -> list[str]:
        """Sorted ids, optionally only of plugins in ``phases``."""
        return sorted(i for i, s in self._slots.items() if phases is None or s.phase in phases)

    def slots(self) -> list[PluginSlot]:
        return [self._slots[i] for i in sorted(self._slots)]

    def client(self, plugin_id: str) -> PluginClient:
        """A handle that calls the plugin through restarts (see ``host.client``)."""
        return PluginClient(self, plugin_id)

    def backend(self, plugin_id: str) -> PluginBackend | None:
        slot = self._slots.get(plugin_id)
        return slot.backend if slot is not None else None

    # -- membership --------------------------------------------------------------------
    def add(self, record: PluginRecord) -> PluginSlot:
        slot = PluginSlot(record, self)
        self._slots[record.id] = slot
        return slot

    def remove(self, plugin_id: str) -> None:
        self._slots.pop(plugin_id, None)

    @contextlib.asynccontextmanager
    async def exclusive(
        self,
        plugin_id: str,
        *,
        create: Callable[[], PluginRecord] | None = None,
        takeover: bool = True,
    ) -> AsyncIterator[LockedSlot]:
        """Hold the plugin's lock; the handle starts and stops it.

        ``create`` makes the record of a plugin the table does not know yet.
        ``takeover`` (a user's action) tells the listeners, e.g. the restarter,
        that a pending recovery is no longer wanted; its own attempts pass False.
        """
        slot = self._slots.get(plugin_id)
        created = slot is None
        if slot is None:
            if create is None:
                self.get(plugin_id)  # raises PluginNotFoundError
            assert create is not None
            slot = self.add(create())
        async with slot._lock:
            if self._slots.get(plugin_id) is not slot:
                raise PluginNotFoundError(
                    f"plugin {plugin_id!r} was uninstalled meanwhile",
                    plugin_id=plugin_id,
                    suggestions=["install it again, then retry"],
                )
            if takeover:
                for listener in self._takeover:
                    listener(plugin_id)
            try:
                yield LockedSlot(slot, created)
            finally:
                self._wake(plugin_id)

    # -- listeners -----------------------------------------------------------------------
    def on_takeover(self, listener: Callable[[str], None]) -> None:
        self._takeover.append(listener)

    def on_exit(self, listener: ExitListener) -> None:
        self._exit.append(listener)

    def report_exit(self, slot: PluginSlot, backend: PluginBackend, code: int | None) -> None:
        for listener in self._exit:
            listener(slot, backend, code)

    async def wait_change(self, plugin_id: str, timeout: float) -> None:
        """Return at the plugin's next phase change or end of an operation, or on timeout."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watchers = self._watchers.setdefault(plugin_id, set())
        watchers.add(future)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            watchers.discard(future)
            if not watchers:
                self._watchers.pop(plugin_id, None)

    def _wake(self, plugin_id: str) -> None:
        for future in self._watchers.get(plugin_id, ()):
            if not future.done():
                future.set_result(None)

    def publish_transition(self, transition: Transition) -> None:
        self._wake(transition.plugin_id)
        self.bus.publish(
            EVENT_STATE_CHANGE,
            StateChangePayload(
                plugin_id=transition.plugin_id,
                from_phase=transition.from_phase.value,
                to_phase=transition.to_phase.value,
                reason=transition.reason,
                timestamp=transition.timestamp,
            ),
        )

    # -- process stops -------------------------------------------------------------------
    def track_stop(self, stop: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        """Run a backend's stop as its own task, so shutdown can wait for it."""
        future = asyncio.ensure_future(stop)
        self._stops.add(future)
        future.add_done_callback(self._stops.discard)
        return future

    async def wait_stops(self) -> bool:
        """Wait for stops whose callers were cancelled; True if there were any."""
        if not self._stops:
            return False
        await asyncio.gather(*list(self._stops), return_exceptions=True)
        return True

    # -- persistence ---------------------------------------------------------------------
    def keep_persisted(self, records: list[PluginStateRecord]) -> None:
        """State-file entries to merge into every write (read at start)."""
        self._persisted = records

    @contextlib.asynccontextmanager
    async def held_writes(self) -> AsyncIterator[None]:
        """Within: ``persist()`` writes nothing; one write at the end has every change.

        For a batch of starts (the host's own start): each start would otherwise
        rewrite every record, fsyncs and all, while the next plugins start.
        """
        batch = object()
        self._batches.add(batch)
        token = _batch.set(batch)
        try:
            yield
        finally:  # a batch cut short keeps what it did, as its writes one by one would have
            _batch.reset(token)
            self._batches.discard(batch)
            await self.persist()

    async def persist(self) -> bool:
        """Write every record to plugin_state.json (serialised, latest snapshot wins).

        Callers that come while a write is under way share the next one, whose snapshot
        is taken after they came: 50 plugins started together cost a few writes, not 50
        one after the other on each start's path. Within ``held_writes()`` (its task, and
        the tasks started there) the write is left to its end; anyone else's is made.
        """
        if _batch.get(None) in self._batches:
            return True
        return await self._write()

    async def _write_snapshot(self) -> bool:
        now = datetime.now(UTC)  # what a CLI without a host shows as "last seen"
        records = merge_records(
            [s.record.to_state(last_seen=now) for s in self._slots.values()],
            [p for p in self._persisted if p.id in self._slots],
            self.layout.plugins,
        )
        return await asyncio.to_thread(self.store.write, records)

    def persist_soon(self) -> None:
        self.tasks.spawn(self.persist(), name="plughost:persist")
