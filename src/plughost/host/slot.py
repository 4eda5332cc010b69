"""One plugin's slot: its record, its running backend and its lock.

The slot is the only place a plugin's phase changes. ``change()`` follows the
transition table and raises on an illegal move; ``force()`` bypasses it and is
used only where the table cannot apply, each time with a comment saying why.
Starting and stopping exist only on ``LockedSlot``, the handle
``PluginTable.exclusive()`` gives while it holds the slot's lock, so "the
caller holds the lock" is a matter of types, not of naming conventions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import (
    PlughostError,
    PluginConflictError,
    PluginLoadError,
    ValidationError,
    plugin_context,
)
from ..events import EVENT_DEPRECATED_PROTOCOL
from ..lifecycle import Transition, can_transition
from ..metadata import PluginMeta
from ..phases import ACTIVE_PHASES, Phase
from ..process.attach import ReattachConfig, attach
from ..process.backend import ExitCallback, LogCallback, PluginBackend
from ..records import PluginInfo, PluginRecord, PluginStateRecord
from ..validate import validate_for_phase
from .hooks import HookStage, run_hooks

if TYPE_CHECKING:
    from ..events import EventBus
    from ..logs import PluginLogManager
    from ..paths import RootLayout
    from ..pids import PidRegistry
    from ..settings import Settings

__all__ = ["BackendFactory", "LoadPluginOptions", "LockedSlot", "PluginSlot", "SlotHost"]


@dataclasses.dataclass
class LoadPluginOptions:
    """How to load a plugin (the seed's LoadPluginOptions)."""

    dev_mode: bool = False
    dev_mode_path: str = ""
    existing_state: PluginStateRecord | None = None
    """A persisted state whose ``enabled`` and ``installed_at`` the record takes."""
    reattach: ReattachConfig | None = None
    """Attach to this already running process instead of spawning (dev mode, debugger)."""


BackendFactory = Callable[[PluginRecord, Path, ExitCallback, LogCallback], Awaitable[PluginBackend]]
"""Starts a plugin: (record, plugin dir, on_exit, on_log) -> a running backend."""

_BUSY = (Phase.STARTING, Phase.VALIDATING, Phase.INSTALLING, Phase.UNINSTALLING)


class SlotHost(Protocol):
    """What a slot sees of its table (``PluginTable``): services, not other slots."""

    layout: RootLayout
    bus: EventBus
    logs: PluginLogManager
    pids: PidRegistry
    backend_factory: BackendFactory
    controllers: dict[str, object]
    hooks: dict[str, object]
    closing: bool

    @property
    def settings(self) -> Settings: ...

    async def persist(self) -> bool: ...

    def report_exit(self, slot: PluginSlot, backend: PluginBackend, code: int | None) -> None: ...

    def track_stop(self, stop: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]: ...

    def publish_transition(self, transition: Transition) -> None: ...

    def client(self, plugin_id: str) -> Any: ...


class PluginSlot:
    """One plugin: its record, the backend it runs on, and the lock its operations take."""

    def __init__(self, record: PluginRecord, table: SlotHost) -> None:
        self.record = record
        self._table = table
        self._backend: PluginBackend | None = None
        self._lock = asyncio.Lock()
        record.machine.add_observer(table.publish_transition)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def phase(self) -> Phase:
        return self.record.phase

    @property
    def backend(self) -> PluginBackend | None:
        """The running process's backend (None while nothing runs)."""
        return self._backend

    @property
    def alive(self) -> bool:
        return self._backend is not None and not self._backend.exited

    def info(self) -> PluginInfo:
        return self.record.to_info()

    def change(self, to: Phase, reason: str = "") -> Transition | None:
        """Move along the transition table (no-op when already there); illegal moves raise."""
        if self.record.phase is to:
            return None
        return self.record.machine.transition_to(to, reason)

    def force(self, to: Phase, reason: str) -> Transition:
        """Move regardless of the table; recorded as forced. Callers say why in a comment."""
        return self.record.machine.force_phase(to, reason)


class LockedSlot:
    """A slot while its lock is held: where a plugin is started and stopped."""

    def __init__(self, slot: PluginSlot, created: bool) -> None:
        self.slot = slot
        self.created = created
        """True when ``exclusive(create=...)`` added this slot just now."""

    # -- the slot's face -----------------------------------------------------------
    @property
    def id(self) -> str:
        return self.slot.id

    @property
    def record(self) -> PluginRecord:
        return self.slot.record

    @property
    def phase(self) -> Phase:
        return self.slot.phase

    @property
    def backend(self) -> PluginBackend | None:
        return self.slot.backend

    def change(self, to: Phase, reason: str = "") -> Transition | None:
        return self.slot.change(to, reason)

    def force(self, to: Phase, reason: str) -> Transition:
        return self.slot.force(to, reason)

    def info(self) -> PluginInfo:
        return self.slot.info()

    @property
    def _table(self) -> SlotHost:
        return self.slot._table

    # -- start -------------------------------------------------------------------------
    async def start(
        self, options: LoadPluginOptions | None = None, failure_phase: Phase = Phase.FAILED
    ) -> PluginInfo:
        """Start the plugin; idempotent when it already runs.

        ``failure_phase`` is where a failed start leaves it: Failed, or
        Recovering for one attempt of a recovery (more may follow).
        """
        options = options or LoadPluginOptions()
        table, record = self._table, self.record
        if table.closing:
            raise PluginConflictError(
                "the host is shutting down; nothing new is started",
                plugin_id=self.id,
                suggestions=["start the host again with 'plughost run'"],
            )
        self._apply(options)
        needs_process = record.meta.has_backend_capabilities()
        if record.phase in ACTIVE_PHASES and (self.slot.alive or not needs_process):
            return record.to_info()
        if record.phase in _BUSY:
            raise PluginConflictError(
                f"plugin is {record.phase.value}; try again when it settles", plugin_id=self.id
            )
        if record.phase is Phase.BUILD_FAILED:
            raise ValidationError(
                f"the last build failed: {record.last_error}",
                title="Plugin build failed",
                plugin_id=self.id,
                suggestions=["fix the build errors; dev mode rebuilds on save"],
            )
        try:
            with plugin_context(self.id):
                await self._start(options.reattach)
        except BaseException as exc:
            await asyncio.shield(self._fail(exc, failure_phase))
            if isinstance(exc, PlughostError):
                raise
            if isinstance(exc, Exception):
                raise PluginLoadError(str(exc) or type(exc).__name__, plugin_id=self.id) from exc
            raise
        await table.persist()
        return record.to_info()

    def _apply(self, options: LoadPluginOptions) -> None:
        record, state = self.record, options.existing_state
        if state is not None:
            record.enabled, record.installed_at = state.enabled, state.installed_at
        if options.dev_mode:
            record.dev_mode, record.dev_path = True, options.dev_mode_path

    async def _start(self, reattach: ReattachConfig | None) -> None:
        table, record = self._table, self.record
        location = table.layout.plugin_dir(self.id)
        await self._drop_backend()  # a dead process from before, if any
        if record.phase in ACTIVE_PHASES:
            self.change(Phase.STOPPING, "restart")
            self.change(Phase.STOPPED, "restart")
        self.change(Phase.VALIDATING, "load")
        if reattach is None:
            validate_for_phase(Phase.VALIDATING, record.meta, location)
        self.change(Phase.STARTING, "validated")
        record.capabilities = None
        if record.meta.has_backend_capabilities() or reattach is not None:
            await self._start_backend(location, reattach)
        info, client = record.to_info(), table.client(self.id)
        for stage in ("init", "start"):
            await run_hooks(stage, info, table.controllers, table.hooks, client)
        backend = self.slot.backend
        if backend is not None and backend.exited:
            # Its exit was ignored (not Running yet): never call a dead plugin Running.
            raise PluginLoadError(
                f"the plugin exited while it was being started (status {backend.returncode})",
                plugin_id=self.id,
            )
        record.last_error = ""
        self.change(Phase.RUNNING, "started")

    async def _start_backend(self, location: Path, reattach: ReattachConfig | None) -> None:
        table, record, slot = self._table, self.record, self.slot
        holder: list[PluginBackend] = []

        def on_exit(code: int | None) -> None:
            if holder and slot.backend is holder[0]:  # not a report about a replaced process
                table.report_exit(slot, holder[0], code)

        def on_log(line: str, source: str) -> None:
            table.logs.write(slot.id, line, "stdout" if source == "stdout" else "stderr")

        if reattach is not None:
            backend: PluginBackend = await attach(slot.id, reattach, on_exit=on_exit)
        else:
            backend = await table.backend_factory(record, location, on_exit, on_log)
        holder.append(backend)
        slot._backend = backend
        record.pid = backend.pid
        record.protocol_version = backend.negotiated_version
        saved: asyncio.Future[None] | None = None
        if backend.pid is not None and reattach is None:  # never kill a process we did not start
            # Written while the plugin is asked for its capabilities; the start waits for both.
            saved = asyncio.ensure_future(table.pids.record(slot.id, backend.pid))
        try:
            detected = await backend.detect_capabilities(table.settings.health_timeout)
        finally:
            if saved is not None:
                await saved
        record.capabilities = detected or None
        self._check_protocol()
        if backend.exited:
            raise PluginLoadError("the plugin exited right after its handshake")

    def _check_protocol(self) -> None:
        record, table = self.record, self._table
        newest = max(table.settings.protocol_versions)
        if record.protocol_version is not None and record.protocol_version < newest:
            table.bus.publish(
                EVENT_DEPRECATED_PROTOCOL,
                {
                    "pluginID": record.id,
                    "protocolVersion": record.protocol_version,
                    "currentVersion": newest,
                },
            )

    async def _fail(self, exc: BaseException, phase: Phase) -> None:
        await self._drop_backend()
        record = self.record
        detail = exc.detail if isinstance(exc, PlughostError) else str(exc) or type(exc).__name__
        if isinstance(exc, asyncio.CancelledError):
            detail = "load cancelled"
        record.last_error = detail
        record.error_count += 1
        why = detail.splitlines()[0][:200] if detail else "load failed"
        if can_transition(record.phase, phase):
            self.change(phase, why)
        elif record.phase is not phase:
            # A start can fail at any step (even while stopping the old process), and a
            # failed recovery attempt goes back to Recovering, which the table has no
            # edge for from Validating or Starting: whatever the step, it ends here.
            self.force(phase, why)
        self._table.logs.host_log(record.id, "error", f"load failed: {detail}")
        await self._table.persist()

    # -- stop ----------------------------------------------------------------------------
    async def stop(self, reason: str, stage: HookStage = "stop") -> PluginInfo:
        """Stop the plugin (idempotent); Running or Degraded end Stopped."""
        record = self.record
        if record.phase in ACTIVE_PHASES:
            self.change(Phase.STOPPING, reason)
            try:
                table = self._table
                info, client = record.to_info(), table.client(self.id)
                await run_hooks(stage, info, table.controllers, table.hooks, client)
                await self._drop_backend()
            finally:  # even when the caller is cancelled mid-ladder: the stop itself goes on
                self.change(Phase.STOPPED, reason)
        else:
            await self._drop_backend()
            if record.phase is Phase.RECOVERING:
                # The user's stop ends a recovery; the table has no Recovering -> Stopped
                # edge because a recovery otherwise ends only Running or Failed.
                self.force(Phase.STOPPED, f"{reason} during recovery")
        return record.to_info()

    async def _drop_backend(self) -> None:
        """Stop and forget the backend. The stop runs on, shielded, if the caller is cancelled."""
        slot, table = self.slot, self._table
        backend, slot._backend = slot._backend, None
        if backend is None:
            return
        stop = table.track_stop(backend.stop())
        try:
            await asyncio.shield(stop)
        finally:
            entry = table.pids.entries().get(slot.id)
            if backend.pid is None or (
                backend.exited and entry is not None and entry.pid == backend.pid
            ):
                table.pids.tracker.remove(slot.id)
            self.record.pid = None
            if backend.pid is not None:
                await table.pids.save()

    async def reload(self) -> PluginInfo:
        """Stop and start again (dev mode and settings are kept)."""
        await self.stop("reload")
        return await self.start()

    # -- the directory under it was replaced ---------------------------------------------
    def replaced(self, meta: PluginMeta, reason: str) -> None:
        """A new package (install, update, rollback) now sits in the plugin's directory."""
        record = self.record
        record.meta, record.last_error, record.error_count = meta, "", 0
        if record.phase in (Phase.BUILDING, Phase.BUILD_FAILED):
            # A package replaces a dev build in progress or failed; the table has no
            # edge for it since only an install does this.
            self.force(Phase.INSTALLED, reason)
        else:
            self.change(Phase.INSTALLED, reason)
