"""Dev servers: watch a plugin's source, rebuild on save, reload, serve its UI live.

One ``DevServerManager`` per host. For each plugin in dev mode it owns a
watcher (watchfiles on the source tree), the rebuild-and-reload loop, and
optionally the UI dev server; it also follows plugins run by hand
(``.devinfo``, external mode). Everything it does is visible as state
(``get_state``) and as ``plugin/devserver/*`` and ``plugin/dev_reload_*``
events. A failed rebuild never takes a working plugin down: the previous
instance keeps running and the errors are shown until the code is fixed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ..errors import PlughostError, PluginNotFoundError, ValidationError
from ..events import (
    EVENT_DEVSERVER_ERROR,
    EVENT_DEVSERVER_LOG,
    EVENT_DEVSERVER_STATUS,
    EVENT_RELOAD_COMPLETE,
    EVENT_RELOAD_ERROR,
    EVENT_RELOAD_START,
)
from ..metadata import METADATA_FILE, PluginMeta, load_meta
from ..phases import ACTIVE_PHASES, Phase
from ..records import BuildIssue, BuildRecord
from .builder import BuildError, BuildResult, PluginBuilder, matches_watch, plan_build
from .external import DevInfo, DevInfoWatcher
from .vite import DEFAULT_UI_DEV_COMMAND, UI_PORT_RANGE, UiDevServer

if TYPE_CHECKING:
    from ..host.table import PluginTable

__all__ = [
    "DevServerChecker",
    "DevServerManager",
    "DevServerMode",
    "DevServerState",
    "DevServerStatus",
]

log = logging.getLogger(__name__)

DevServerMode = Literal["idle", "managed", "external"]
DevServerStatus = Literal["idle", "starting", "building", "running", "ready", "error", "stopped"]


@runtime_checkable
class DevServerChecker(Protocol):
    """What the plugin manager asks of the dev server system (the seed's DevServerChecker)."""

    def is_managed(self, plugin_id: str) -> bool:
        """True when the plugin is run by a dev server (managed or attached)."""


def _ui_key(plugin_id: str) -> str:
    """The PID file's key for a plugin's UI dev server (a process group we started)."""
    return f"{plugin_id}/ui"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


_LOGGED_BUILD_ERRORS = 50
"""At most this many of a failed build's errors go to the plugin's log."""


def _ms(milliseconds: float) -> str:
    """A duration with its unit: ``350 ms``, ``1.2 s``."""
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    return f"{milliseconds / 1000:.1f} s"


@dataclasses.dataclass
class DevServerState:
    """One plugin's dev server, as the UI shows it (the original's keys)."""

    plugin_id: str
    mode: DevServerMode = "idle"
    dev_path: str = ""
    status: DevServerStatus = "idle"
    """The backend: building, running, error ..."""
    vite_status: DevServerStatus = "idle"
    vite_port: int | None = None
    vite_url: str = ""
    last_build_duration: float | None = None
    """Milliseconds."""
    last_build_time: datetime | None = None
    last_build_error: str = ""
    build_errors: list[BuildError] = dataclasses.field(default_factory=list)
    last_error: str = ""
    last_reload_at: datetime | None = None
    grpc_connected: bool = False
    external_pid: int | None = None
    watching: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "pluginID": self.plugin_id,
            "mode": self.mode,
            "devPath": self.dev_path,
            "status": self.status,
            "goStatus": self.status,
            "viteStatus": self.vite_status,
            "vitePort": self.vite_port,
            "viteURL": self.vite_url,
            "lastBuildDuration": self.last_build_duration,
            "lastBuildTime": _iso(self.last_build_time),
            "lastBuildError": self.last_build_error,
            "buildErrors": [e.to_dict() for e in self.build_errors],
            "lastError": self.last_error,
            "lastReloadAt": _iso(self.last_reload_at),
            "grpcConnected": self.grpc_connected,
            "externalPid": self.external_pid,
            "watching": self.watching,
        }


@dataclasses.dataclass
class _Instance:
    """What runs for one managed plugin."""

    plugin_id: str
    source: Path
    watch: tuple[str, ...]
    generated: tuple[str, ...] = ()
    """Files the build writes itself (a .proto's stubs): not edits, so no rebuild."""
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    stop_event: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    ui: UiDevServer | None = None


def _setting(table: PluginTable, name: str, default: Any) -> Any:
    """A dev setting from plughost.toml when the Settings model has it, else ``default``."""
    value = getattr(table.settings, name, None)
    return default if value in (None, "") else value


class DevServerManager:
    """Dev servers of one host: ``DevServerManager(manager.table)``, then
    ``manager.set_dev_server_manager(dsm)`` (or just ``manager.dev_servers()``).

    The manager restores it at start and closes it at shutdown; its tasks run in
    the host's task group.
    """

    def __init__(
        self,
        table: PluginTable,
        *,
        debounce_ms: int | None = None,
        step_ms: int | None = None,
        ui_command: str | Sequence[str] | None = None,
        ui_build_command: str | Sequence[str] | None = None,
        ui_port_range: tuple[int, int] = UI_PORT_RANGE,
        ui_ready_timeout: float = 30.0,
        watch_devinfo: bool = True,
        devinfo_check_interval: float | None = None,
        log_lines: int = 2000,
    ) -> None:
        self._table = table
        self.debounce_ms: int = debounce_ms or _setting(table, "dev_debounce_ms", 500)
        """Changes are grouped for at most this long (watchfiles' debounce) ..."""
        self.step_ms: int = step_ms or _setting(table, "dev_step_ms", 50)
        """... and a rebuild starts once this long passed without another change."""
        self.ui_command = ui_command or _setting(table, "dev_ui_command", DEFAULT_UI_DEV_COMMAND)
        self.ui_build_command = ui_build_command or _setting(
            table, "dev_ui_build_command", "pnpm run build"
        )
        self.ui_port_range = ui_port_range
        self.ui_ready_timeout = ui_ready_timeout
        interval = devinfo_check_interval or _setting(table, "devinfo_check_interval", 5.0)
        self.devinfo: DevInfoWatcher | None = (
            DevInfoWatcher(
                table,
                check_interval=interval,
                on_change=self._on_external,
                on_health=self._on_external_health,
            )
            if watch_devinfo
            else None
        )
        self._log_lines = log_lines
        self._instances: dict[str, _Instance] = {}
        self._states: dict[str, DevServerState] = {}
        self._logs: dict[str, collections.deque[dict[str, Any]]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._opened = False

    # -- open / close ------------------------------------------------------------------
    async def open(self) -> None:
        """Start following ``.devinfo`` files (idempotent)."""
        if self._opened:
            return
        self._opened = True
        if self.devinfo is not None:
            await self.devinfo.start()

    async def close(self) -> None:
        """Stop every watcher and UI dev server, and the ``.devinfo`` watcher."""
        for plugin_id in list(self._instances):
            await self.stop(plugin_id)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self.devinfo is not None:
            await self.devinfo.stop()
        self._opened = False

    async def restore(self) -> None:
        """After a restart: watch every dev plugin's source again; rebuild those without a binary.

        Called by ``PluginManager.initialize``. Never raises: a dev plugin whose
        source is gone is reported and left as it is.
        """
        try:
            await self.open()
        except Exception:
            log.exception("cannot start following .devinfo files")
        for slot in self._table.slots():
            record = slot.record
            if not (record.dev_mode and record.dev_path):
                continue
            source = Path(record.dev_path)
            if not (source / METADATA_FILE).is_file():
                detail = f"the dev source {source} of {slot.id} is gone; not watching it"
                log.warning("%s", detail)
                self._table.bus.publish(
                    EVENT_DEVSERVER_ERROR, {"pluginID": slot.id, "error": detail}
                )
                continue
            try:
                await self.start(slot.id, source, ui=False)
            except Exception:
                log.exception("cannot restart the dev server of %s", slot.id)
                continue
            if slot.phase in (Phase.BUILD_FAILED, Phase.BUILDING):
                self.spawn(self.rebuild(slot.id))  # the binary is missing: build it
            if (source / "ui" / "package.json").is_file():
                self.spawn(self.start_ui(slot.id))

    # -- queries -----------------------------------------------------------------------
    def is_managed(self, plugin_id: str) -> bool:
        state = self._states.get(plugin_id)
        return plugin_id in self._instances or (state is not None and state.mode == "external")

    def get_state(self, plugin_id: str) -> DevServerState:
        return self._states.get(plugin_id) or DevServerState(plugin_id)

    def list_states(self) -> list[DevServerState]:
        return [self._states[i] for i in sorted(self._states)]

    def get_logs(self, plugin_id: str, n: int = 200) -> list[dict[str, Any]]:
        """The last ``n`` dev-server lines (build output, UI server, watcher), oldest first."""
        lines = list(self._logs.get(plugin_id, ()))
        return lines[-n:] if n > 0 else []

    def ui_server(self, plugin_id: str) -> UiDevServer | None:
        """The plugin's running UI dev server (its port, process group), if any."""
        inst = self._instances.get(plugin_id)
        return inst.ui if inst is not None else None

    # -- start / stop ------------------------------------------------------------------
    async def start(
        self,
        plugin_id: str,
        dev_path: str | os.PathLike[str] | None = None,
        *,
        build: bool = False,
        ui: bool | None = None,
    ) -> DevServerState:
        """Watch the plugin's source (and run its UI dev server when it has ``ui/``).

        ``build`` also builds and (re)loads it now, under the watcher's lock.
        ``ui=None`` starts the UI dev server when there is a ``ui/package.json``.
        """
        await self.open()
        source = self._source_of(plugin_id, dev_path)
        inst = self._instances.get(plugin_id)
        if inst is not None and inst.source != source:
            await self.stop(plugin_id)
            inst = None
        state = self._state(plugin_id)
        state.dev_path = str(source)
        if state.mode != "external":
            state.mode = "managed"
        if inst is None:
            inst = _Instance(plugin_id, source, *self._watch_globs(source))
            self._instances[plugin_id] = inst
            ready = asyncio.Event()
            inst.task = self._table.tasks.spawn(
                self._watch(inst, ready), name=f"plughost:{plugin_id}:devwatch"
            )
            await ready.wait()
            state.watching = True
            self._log(plugin_id, "watch", "info", f"watching {source} for {', '.join(inst.watch)}")
        self._publish_state(state)
        if build:
            async with inst.lock:
                await self._build_and_apply(inst, ui=None)
        if not self._table.start_plugins:
            ui = False  # a one-shot command starts nothing that would die with it
        if ui is not False and (ui or (source / "ui" / "package.json").is_file()):
            await self.start_ui(plugin_id)
        return state

    async def stop(self, plugin_id: str) -> DevServerState:
        """Stop the watcher and the UI dev server; the plugin itself keeps its phase."""
        inst = self._instances.pop(plugin_id, None)
        state = self._state(plugin_id)
        if inst is not None:
            inst.stop_event.set()
            if inst.task is not None:
                inst.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await inst.task
            await self._stop_ui(inst, state)
            state.watching = False
            if state.mode == "managed":
                state.mode, state.status = "idle", "stopped"
            self._log(plugin_id, "watch", "info", "dev server stopped")
            self._publish_state(state)
        return state

    async def restart(self, plugin_id: str) -> DevServerState:
        """Stop and start again (same source, UI dev server included)."""
        source = self._source_of(plugin_id, None)
        await self.stop(plugin_id)
        return await self.start(plugin_id, source)

    async def rebuild(self, plugin_id: str) -> BuildResult:
        """Build and reload now, as if a file had changed."""
        inst = self._instances.get(plugin_id)
        if inst is None:
            await self.start(plugin_id)
            inst = self._instances[plugin_id]
        return await self._rebuild_and_reload(inst, trigger="manual", changes=())

    async def start_ui(self, plugin_id: str) -> DevServerState:
        """Start the UI dev server of a watched plugin; errors go to state and events."""
        inst = self._instances.get(plugin_id)
        state = self._state(plugin_id)
        if inst is None:
            raise ValidationError(
                "the plugin has no dev server; start one first", plugin_id=plugin_id
            )
        if inst.ui is not None and inst.ui.running:
            return state
        server = UiDevServer(
            inst.source / "ui",
            command=self.ui_command,
            port_range=self.ui_port_range,
            ready_timeout=self.ui_ready_timeout,
            settings=self._table.settings,
            on_line=lambda line: self._log(plugin_id, "vite", "info", line),
            on_exit=lambda code: self._ui_exited(plugin_id, server, code),
            spawn=self._table.tasks.spawn,
        )
        inst.ui = server
        state.vite_status = "starting"
        self._publish_state(state)
        try:
            port = await server.start()
        except PlughostError as exc:
            inst.ui = None
            state.vite_status, state.vite_port, state.vite_url = "error", None, ""
            self._error(plugin_id, f"UI dev server: {exc.detail}", source="vite")
            return state
        state.vite_status, state.vite_port, state.vite_url = "ready", port, server.url
        if server.proc is not None:  # a host killed now leaves it to the next start's cleanup
            await self._table.pids.record(_ui_key(plugin_id), server.proc.pid)
        self._log(plugin_id, "vite", "info", f"UI dev server ready at {server.url}")
        self._publish_state(state)
        return state

    def _ui_exited(self, plugin_id: str, server: UiDevServer, code: int | None) -> None:
        inst = self._instances.get(plugin_id)
        if inst is None or inst.ui is not server:
            return
        inst.ui = None
        state = self._state(plugin_id)
        state.vite_status, state.vite_port, state.vite_url = "error", None, ""
        self._error(plugin_id, f"the UI dev server exited (status {code})", source="vite")
        self.spawn(server.stop())  # its port and any process left in its group

    async def stop_ui(self, plugin_id: str) -> DevServerState:
        inst = self._instances.get(plugin_id)
        state = self._state(plugin_id)
        if inst is not None:
            await self._stop_ui(inst, state)
            self._publish_state(state)
        return state

    async def _stop_ui(self, inst: _Instance, state: DevServerState) -> None:
        if inst.ui is not None:
            server, inst.ui = inst.ui, None
            await server.stop()
            await self._table.pids.remove(_ui_key(inst.plugin_id))
            state.vite_status, state.vite_port, state.vite_url = "stopped", None, ""

    # -- watching ------------------------------------------------------------------------
    def _source_of(self, plugin_id: str, dev_path: str | os.PathLike[str] | None) -> Path:
        if dev_path is None:
            inst = self._instances.get(plugin_id)
            slot = self._table.find(plugin_id)
            dev_path = inst.source if inst else (slot.record.dev_path if slot else "")
        if not dev_path:
            raise ValidationError(
                "the plugin has no dev source path; install it with install_in_dev_mode",
                plugin_id=plugin_id,
            )
        source = Path(dev_path).expanduser().resolve()
        if not (source / METADATA_FILE).is_file():
            raise ValidationError(
                f"{source} has no {METADATA_FILE}: not a plugin source tree", plugin_id=plugin_id
            )
        return source

    @staticmethod
    def _watch_globs(source: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(the globs to watch, the globs of generated files among them)."""
        try:
            plan = plan_build(source, load_meta(source))
        except PlughostError:
            return ("*",), ()
        return plan.watch, plan.generated

    async def _watch(self, inst: _Instance, ready: asyncio.Event) -> None:
        from watchfiles import awatch

        source = str(inst.source)

        def accept(_change: object, path: str) -> bool:
            relative = os.path.relpath(path, source).replace(os.sep, "/")
            return (
                not relative.startswith("..")
                and matches_watch(relative, inst.watch)
                and not (inst.generated and matches_watch(relative, inst.generated))
            )

        changes = awatch(
            inst.source,
            watch_filter=accept,
            debounce=self.debounce_ms,
            step=self.step_ms,
            stop_event=inst.stop_event,
            rust_timeout=1000,
            yield_on_timeout=True,
        )
        ready.set()  # watchfiles sets the watch up on the generator's first step, before waiting
        try:
            async for batch in changes:
                if self._table.closing:
                    return
                if not batch:
                    continue
                paths = sorted({os.path.relpath(p, source) for _c, p in batch})
                self._log(inst.plugin_id, "watch", "info", f"changed: {', '.join(paths)}")
                try:
                    await self._rebuild_and_reload(inst, trigger="watch", changes=paths)
                except Exception as exc:  # one bad rebuild must not end the watch
                    log.exception("dev rebuild of %s failed", inst.plugin_id)
                    self._error(inst.plugin_id, f"rebuild failed: {exc}", source="watch")
        except Exception as exc:
            log.exception("dev watcher of %s failed", inst.plugin_id)
            self._error(inst.plugin_id, f"the file watcher stopped: {exc}", source="watch")

    # -- build and reload ------------------------------------------------------------------
    async def _rebuild_and_reload(
        self, inst: _Instance, *, trigger: str, changes: Sequence[str]
    ) -> BuildResult:
        plugin_id = inst.plugin_id
        async with inst.lock:
            started = time.monotonic()
            bus = self._table.bus
            bus.publish(
                EVENT_RELOAD_START,
                {"pluginID": plugin_id, "trigger": trigger, "changes": list(changes)},
            )
            result, error = await self._build_and_apply(inst, ui=False)
            slot = self._table.find(plugin_id)
            phase = slot.phase.value if slot else None
            if error:
                bus.publish(
                    EVENT_RELOAD_ERROR,
                    {
                        "pluginID": plugin_id,
                        "error": error,
                        "errors": [e.to_dict() for e in result.errors],
                        "phase": phase,
                        "stage": "reload" if result.ok else "build",
                        "buildDuration": round(result.duration * 1000, 1),
                    },
                )
            else:
                bus.publish(
                    EVENT_RELOAD_COMPLETE,
                    {
                        "pluginID": plugin_id,
                        "buildDuration": round(result.duration * 1000, 1),
                        "duration": round((time.monotonic() - started) * 1000, 1),
                        "phase": phase,
                    },
                )
            return result

    async def _build_and_apply(
        self, inst: _Instance, *, ui: bool | None
    ) -> tuple[BuildResult, str]:
        """Build, then reload the plugin on success; returns (result, error or "")."""
        plugin_id, state, table = inst.plugin_id, self._state(inst.plugin_id), self._table
        state.status = "building"
        self._publish_state(state)
        builder = PluginBuilder(
            settings=table.settings,
            on_output=lambda source, line: self._log(plugin_id, source, "info", line),
            ui_build_command=self.ui_build_command,
        )
        result = await builder.build(inst.source, table.layout.plugin_dir(plugin_id), ui=ui)
        state.last_build_duration = round(result.duration * 1000, 1)
        state.last_build_time = _now()
        await self._keep_build(plugin_id, result, state.last_build_time)
        inst.watch, inst.generated = self._watch_globs(inst.source)  # dev.watch may have changed
        if not result.ok:
            summary = result.summary()
            state.status, state.last_build_error, state.last_error = "error", summary, summary
            state.build_errors = list(result.errors)
            await self._mark_build_failed(plugin_id, summary)
            self._error(plugin_id, summary, errors=result.errors, source="build")
            return result, result.error_message
        state.build_errors, state.last_build_error = [], ""
        self._log(plugin_id, "build", "info", f"built in {state.last_build_duration:.0f} ms")
        if state.mode == "external":
            self._log(plugin_id, "watch", "info", "an external instance is attached: not reloading")
            self._publish_state(state)
            return result, ""
        try:
            await self._reload(plugin_id)
        except PlughostError as exc:
            state.status, state.last_error = "error", exc.detail
            state.grpc_connected = False
            self._error(plugin_id, f"reload failed: {exc.detail}", source="manager")
            return result, exc.detail
        backend = table.backend(plugin_id)
        state.status, state.last_error = "running", ""
        state.last_reload_at = _now()
        state.grpc_connected = backend is not None and not backend.exited
        self._publish_state(state)
        return result, ""

    async def _keep_build(self, plugin_id: str, result: BuildResult, at: datetime) -> None:
        """The build on the plugin's record (persisted: ``plughost info`` shows it, host or
        not) and in its log (``plughost logs``): when, how long, where it broke."""
        table = self._table
        slot = table.find(plugin_id)
        if slot is None:
            return
        took = round(result.duration * 1000, 1)
        slot.record.last_build = BuildRecord(
            at=at,
            ok=result.ok,
            duration_ms=took,
            error=result.error_message,
            errors=[BuildIssue(**e.to_dict()) for e in result.errors],
        )
        if result.ok:
            table.logs.host_log(plugin_id, "info", f"dev build ok in {_ms(took)}")
        else:
            head = f"dev build failed after {_ms(took)}: {result.error_message}"
            table.logs.host_log(plugin_id, "error", head)
            for error in result.errors[:_LOGGED_BUILD_ERRORS]:
                table.logs.host_log(plugin_id, "error", f"  {error}")
        await table.persist()

    async def _reload(self, plugin_id: str) -> None:
        table = self._table
        if plugin_id not in table:
            return
        meta: PluginMeta = load_meta(table.layout.plugin_dir(plugin_id))  # synced by the build
        async with table.exclusive(plugin_id) as slot:
            slot.record.meta = meta
            if slot.phase is Phase.BUILD_FAILED:
                slot.record.last_error = ""
                slot.change(Phase.BUILDING, "dev rebuild succeeded")
            if slot.record.enabled and table.start_plugins:
                await slot.reload()
                return
            if slot.phase is Phase.BUILDING:
                # Built fine but not to be started: no longer BuildFailed, ready for enable.
                slot.change(Phase.VALIDATING, "built")
                slot.change(Phase.INSTALLED, "built, not started")
        await table.persist()

    async def _mark_build_failed(self, plugin_id: str, detail: str) -> None:
        """BuildFailed (with the errors) unless a previous instance is still running."""
        table = self._table
        try:
            async with table.exclusive(plugin_id) as slot:
                if slot.phase in ACTIVE_PHASES and slot.slot.alive:
                    return  # keep serving the last good build
                slot.record.last_error = detail
                if slot.phase is not Phase.BUILD_FAILED:
                    await slot.stop("dev build failed")
                    if slot.phase is Phase.STOPPED:  # the table's way from Stopped to Building
                        slot.change(Phase.INSTALLED, "dev build")
                    slot.change(Phase.BUILDING, "dev build")
                    slot.change(Phase.BUILD_FAILED, detail.splitlines()[0][:200])
        except PluginNotFoundError:
            return
        await table.persist()

    # -- external mode -------------------------------------------------------------------
    def _on_external(self, plugin_id: str, info: DevInfo | None) -> None:
        state = self._state(plugin_id)
        if info is not None:
            state.mode, state.status, state.external_pid = "external", "running", info.pid
            state.grpc_connected = True
            if info.vite_port:
                state.vite_port, state.vite_url = (
                    info.vite_port,
                    f"http://localhost:{info.vite_port}",
                )
            self._log(plugin_id, "manager", "info", f"attached to external process {info.pid}")
        else:
            state.mode = "managed" if plugin_id in self._instances else "idle"
            state.status, state.external_pid, state.grpc_connected = "stopped", None, False
            inst = self._instances.get(plugin_id)
            if inst is None or inst.ui is None:
                state.vite_port, state.vite_url = None, ""
            self._log(plugin_id, "manager", "info", "external process detached")
        self._publish_state(state)

    def _on_external_health(self, plugin_id: str, healthy: bool) -> None:
        state = self._state(plugin_id)
        state.grpc_connected = healthy
        state.status = "running" if healthy else "error"
        self._publish_state(state)

    # -- state, logs, events -------------------------------------------------------------
    def _state(self, plugin_id: str) -> DevServerState:
        return self._states.setdefault(plugin_id, DevServerState(plugin_id))

    def _publish_state(self, state: DevServerState) -> None:
        self._table.bus.publish(EVENT_DEVSERVER_STATUS, state.to_dict())

    def _log(self, plugin_id: str, source: str, level: str, message: str) -> None:
        entry = {
            "timestamp": _now().isoformat(),
            "source": source,
            "level": level,
            "message": message,
            "pluginID": plugin_id,
        }
        self._logs.setdefault(plugin_id, collections.deque(maxlen=self._log_lines)).append(entry)
        self._table.bus.publish(EVENT_DEVSERVER_LOG, entry)

    def _error(
        self, plugin_id: str, message: str, *, errors: Sequence[BuildError] = (), source: str
    ) -> None:
        self._log(plugin_id, source, "error", message)
        state = self._state(plugin_id)
        self._table.bus.publish(
            EVENT_DEVSERVER_ERROR,
            {
                "pluginID": plugin_id,
                "mode": state.mode,
                "source": source,
                "error": message,
                "errors": [e.to_dict() for e in errors],
            },
        )
        self._publish_state(state)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` in the host's task group; cancelled on close."""
        task = self._table.tasks.spawn(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
