"""The plugin manager: every plugin's record, process and lifecycle, in one place.

Operations on one plugin (load, reload, unload, uninstall, recovery) take that
plugin's lock, so they run one at a time; different plugins proceed in
parallel. Every change of phase goes through the plugin's state machine, which
publishes it; every change of what should survive a restart is persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from . import MAX_PLUGIN_SIZE, install
from .attach import AttachedBackend, ReattachConfig, attach
from .backend import ExitCallback, LogCallback, PluginBackend
from .errors import (
    CancelledError,
    InvalidTransitionError,
    PlughostError,
    PluginConflictError,
    PluginLoadError,
    PluginNotFoundError,
    ValidationError,
    plugin_context,
)
from .events import (
    EVENT_DEPRECATED_PROTOCOL,
    EVENT_INIT_COMPLETE,
    EVENT_STATE_CHANGE,
    EventBus,
    StateChangePayload,
)
from .health import HealthChecker
from .hooks import HookStage, run_hooks
from .lifecycle import Transition
from .lock import RootLock
from .logs import PluginLogManager
from .metadata import PluginMeta, load_meta, validate_plugin_id
from .paths import RootLayout, resolve_root
from .phases import ACTIVE_PHASES, Phase
from .pids import PluginPIDTracker
from .reconcile import Reconciler
from .records import PluginInfo, PluginRecord, PluginStateRecord
from .settings import Settings, SettingsProvider
from .store import StateFileCorrupt, StateStore, merge_records
from .validate import binary_path, validate_for_phase

if TYPE_CHECKING:
    from .registry.client import RegistryClient
    from .registry.models import AvailablePlugin, DownloadStats, Review, VersionInfo

__all__ = ["BackendFactory", "LoadPluginOptions", "PluginManager"]

log = logging.getLogger(__name__)

DEV_SUFFIX = "-dev"

Progress = Callable[[int, int | None], None]


@dataclasses.dataclass
class LoadPluginOptions:
    """How to load a plugin (the seed's LoadPluginOptions)."""

    dev_mode: bool = False
    dev_mode_path: str = ""
    existing_state: PluginStateRecord | None = None
    reattach: ReattachConfig | None = None
    """Attach to this already running process instead of spawning (dev mode, debugger)."""


BackendFactory = Callable[[PluginRecord, Path, ExitCallback, LogCallback], Awaitable[PluginBackend]]
"""Starts a plugin: (record, plugin dir, on_exit, on_log) -> a running backend."""


class PluginManager:
    """Owns the plugins of one root. Create, ``await initialize()``, ``await shutdown()``."""

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        profile: str | None = None,
        settings: SettingsProvider | None = None,
        bus: EventBus | None = None,
        controllers: Mapping[str, object] | None = None,
        managers: Mapping[str, object] | None = None,
        backend_factory: BackendFactory | None = None,
        log_manager: PluginLogManager | None = None,
        registry_client: Any = None,
        start_plugins: bool = True,
    ) -> None:
        self.layout = RootLayout(resolve_root(root, profile))
        overrides = {"profile": profile} if profile else None
        self.settings_provider = settings or SettingsProvider(self.layout.settings_file, overrides)
        if settings is not None and profile and settings.settings.profile != profile:
            # An explicit profile also picks the cookie key, whoever supplied the settings.
            settings.override(profile=profile)
        self.bus = bus or EventBus()
        s = self.settings
        self.logs = log_manager or PluginLogManager(
            self.layout.logs,
            self.bus,
            ring_size=s.log_ring_size,
            max_bytes=s.log_max_bytes,
            backups=s.log_backups,
        )
        self.store = StateStore(self.layout.root, self.bus)
        self.pids = PluginPIDTracker(self.layout.root)
        self.root_lock = RootLock(self.layout.root)
        self.health = HealthChecker(self)
        self.registry_client = registry_client
        # False for one-shot commands on a root no host is running: install, enable,
        # uninstall ... change the disk and the state, but start nothing that would
        # die with the command.
        self.start_plugins = start_plugins
        # Package limits are parameters, so tests can use small numbers.
        self.max_plugin_size = MAX_PLUGIN_SIZE  # total bytes of one package
        self.max_file_size = MAX_PLUGIN_SIZE  # bytes of any one file in it
        self.max_plugin_entries = 100_000
        self._backend_factory = backend_factory or self._start_process
        self._controllers: dict[str, object] = dict(controllers or {})
        self._hooks: dict[str, object] = dict(managers or {})
        self._records: dict[str, PluginRecord] = {}
        self._backends: dict[str, PluginBackend] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._persisted: list[PluginStateRecord] = []
        self._persist_lock = asyncio.Lock()
        self._pid_save_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._stops: set[asyncio.Future[Any]] = set()  # backend stops still in progress
        self._dev_server_checker: Any = None
        self._dev_server_manager: Any = None
        self.initialized = False
        self.shutting_down = False

    # -- small helpers -------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.settings_provider.settings

    @property
    def plugins_dir(self) -> Path:
        return self.layout.plugins

    def _lock_for(self, plugin_id: str) -> asyncio.Lock:
        return self._locks.setdefault(plugin_id, asyncio.Lock())

    def _get(self, plugin_id: str) -> PluginRecord:
        record = self._records.get(plugin_id)
        if record is None:
            raise PluginNotFoundError(
                f"no plugin with id {plugin_id!r} is installed",
                plugin_id=plugin_id,
                suggestions=["list installed plugins with 'plughost list'"],
            )
        return record

    def _publish_transition(self, transition: Transition) -> None:
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

    def _adopt(self, record: PluginRecord) -> PluginRecord:
        record.machine.add_observer(self._publish_transition)
        self._records[record.id] = record
        return record

    def _try_move(
        self, record: PluginRecord, phase: Phase, reason: str = "", *, force: bool = False
    ) -> bool:
        """Move if the table allows it; with ``force``, move anyway (recorded as forced)."""
        if record.phase is phase:
            return True
        try:
            record.machine.transition_to(phase, reason)
        except InvalidTransitionError:
            if not force:
                log.debug("%s: %s -> %s not allowed", record.id, record.phase, phase)
                return False
            record.machine.force_phase(phase, reason or f"to {phase.value}")
        return True

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- persistence ---------------------------------------------------------------
    async def persist(self) -> bool:
        """Write every record to plugin_state.json (serialised, latest snapshot wins)."""
        async with self._persist_lock:
            records = merge_records(
                [r.to_state() for r in self._records.values()],
                [p for p in self._persisted if p.id in self._records],
                self.plugins_dir,
            )
            return await asyncio.to_thread(self.store.write, records)

    def _schedule_persist(self) -> None:
        self._spawn(self.persist())

    # -- initialize ----------------------------------------------------------------
    async def initialize(self) -> list[PluginInfo]:
        """Take the root, clean up after a crashed host, restore and load plugins."""
        self.root_lock.acquire()
        self.shutting_down = False
        try:
            self.layout.ensure()
            killed = await asyncio.to_thread(self.pids.cleanup_stale)
            if killed:
                log.warning("killed orphaned processes of: %s", ", ".join(killed))
            self._migrate_dev_dirs()
            self.store.clean_temp_files()
            await asyncio.to_thread(install.sweep_staging, self.plugins_dir)
            persisted = self._read_state()
            result = Reconciler().reconcile(self.plugins_dir, persisted)
            self._persisted = [p for p in persisted if p.id in result.records]
            for record in result.records.values():
                self._adopt(record)
                if record.phase is Phase.BUILDING:  # dev plugin without a binary
                    record.last_error = record.last_error or (
                        f"{binary_path(self.layout.plugin_dir(record.id))} is missing: "
                        "the dev build has not produced it yet"
                    )
                    self._try_move(record, Phase.BUILD_FAILED, record.last_error)
            if self.start_plugins:
                await self._load_enabled()
            if self._dev_server_manager is not None:  # dev plugins: watchers back, rebuilds
                from . import devmode

                await devmode.restore_dev_plugins(self)
            await self.persist()
            self.health.start()
            self.initialized = True
        except BaseException:
            self.root_lock.release()
            raise
        infos = self.list_plugins()
        self.bus.publish(
            EVENT_INIT_COMPLETE,
            {
                "plugins": len(infos),
                "running": sum(i.phase is Phase.RUNNING for i in infos),
                "failed": sum(i.phase is Phase.FAILED for i in infos),
            },
        )
        return infos

    def _read_state(self) -> list[PluginStateRecord]:
        try:
            return self.store.read()
        except StateFileCorrupt as exc:
            log.error("%s", exc.detail)
            return []

    def _migrate_dev_dirs(self) -> None:
        """Rename ``<id>-dev`` directories (an older layout) to ``<id>``."""
        if not self.plugins_dir.is_dir():
            return
        for entry in sorted(self.plugins_dir.iterdir()):
            if not (entry.is_dir() and entry.name.endswith(DEV_SUFFIX)):
                continue
            target = entry.with_name(entry.name[: -len(DEV_SUFFIX)])
            try:
                declared = load_meta(entry).id
            except ValidationError:
                continue
            if declared != target.name:
                continue  # a plugin whose real id ends in "-dev": nothing to migrate
            if target.exists():
                log.warning("not migrating %s: %s already exists", entry, target)
                continue
            entry.rename(target)
            log.info("migrated dev plugin directory %s -> %s", entry.name, target.name)

    async def _load_enabled(self) -> None:
        limit = asyncio.Semaphore(self.settings.load_concurrency)

        async def load(plugin_id: str) -> None:
            async with limit:
                with contextlib.suppress(PlughostError):
                    await self.load_plugin(plugin_id)

        todo = [r.id for r in self._records.values() if r.enabled and r.phase is Phase.INSTALLED]
        await asyncio.gather(*(load(i) for i in todo))

    # -- load ----------------------------------------------------------------------
    async def load_plugin(
        self, plugin_id: str, options: LoadPluginOptions | None = None
    ) -> PluginInfo:
        """Start the plugin; idempotent when it already runs."""
        validate_plugin_id(plugin_id)
        async with self._lock_for(plugin_id):
            # The user's load wins over a pending recovery (which would otherwise wake
            # up, find the plugin Running, and count that as a failed attempt).
            self.health.cancel_recovery(plugin_id)
            return await self._load_locked(plugin_id, options or LoadPluginOptions())

    def _record_for_load(self, plugin_id: str, options: LoadPluginOptions) -> PluginRecord:
        record = self._records.get(plugin_id)
        if record is None:
            meta = load_meta(self.layout.plugin_dir(plugin_id))
            record = self._adopt(PluginRecord.new(meta, Phase.INSTALLED))
        if options.existing_state is not None:
            record.enabled = options.existing_state.enabled
            record.installed_at = options.existing_state.installed_at
        if options.dev_mode:
            record.dev_mode, record.dev_path = True, options.dev_mode_path
        return record

    def _alive(self, plugin_id: str) -> bool:
        backend = self._backends.get(plugin_id)
        return backend is not None and not backend.exited

    async def _load_locked(
        self,
        plugin_id: str,
        options: LoadPluginOptions,
        failure_phase: Phase = Phase.FAILED,
    ) -> PluginInfo:
        if self.shutting_down:
            raise PluginConflictError(
                "the host is shutting down; nothing new is started",
                plugin_id=plugin_id,
                suggestions=["start the host again with 'plughost run'"],
            )
        record = self._record_for_load(plugin_id, options)
        needs_process = record.meta.has_backend_capabilities()
        if record.phase in ACTIVE_PHASES and (self._alive(plugin_id) or not needs_process):
            return record.to_info()
        if record.phase in (Phase.STARTING, Phase.VALIDATING, Phase.INSTALLING, Phase.UNINSTALLING):
            raise PluginConflictError(
                f"plugin is {record.phase.value}; try again when it settles",
                plugin_id=plugin_id,
            )
        if record.phase is Phase.BUILD_FAILED:
            raise ValidationError(
                f"the last build failed: {record.last_error}",
                title="Plugin build failed",
                plugin_id=plugin_id,
                suggestions=["fix the build errors; dev mode rebuilds on save"],
            )
        try:
            with plugin_context(plugin_id):
                await self._start_locked(record, options.reattach)
        except BaseException as exc:
            await asyncio.shield(self._fail_load(record, exc, failure_phase))
            if isinstance(exc, PlughostError):
                raise
            if isinstance(exc, Exception):
                raise PluginLoadError(str(exc) or type(exc).__name__, plugin_id=plugin_id) from exc
            raise
        await self.persist()
        return record.to_info()

    async def _start_locked(
        self, record: PluginRecord, reattach: ReattachConfig | None = None
    ) -> None:
        plugin_id = record.id
        location = self.layout.plugin_dir(plugin_id)
        await self._stop_backend(plugin_id)  # a dead process from before, if any
        if record.phase in ACTIVE_PHASES:
            self._try_move(record, Phase.STOPPING, "restart")
            self._try_move(record, Phase.STOPPED, "restart")
        self._try_move(record, Phase.VALIDATING, "load", force=True)
        if reattach is None:
            validate_for_phase(Phase.VALIDATING, record.meta, location)
        record.machine.transition_to(Phase.STARTING, "validated")
        record.capabilities = None
        if record.meta.has_backend_capabilities() or reattach is not None:
            await self._start_backend(record, location, reattach)
        info = record.to_info()
        stages: tuple[HookStage, ...] = ("init", "start")
        for stage in stages:
            await run_hooks(stage, info, self._controllers, self._hooks)
        backend = self._backends.get(plugin_id)
        if backend is not None and backend.exited:
            # Its exit was ignored (not Running yet): never call a dead plugin Running.
            raise PluginLoadError(
                f"the plugin exited while it was being started (status {backend.returncode})",
                plugin_id=plugin_id,
            )
        record.last_error = ""
        record.machine.transition_to(Phase.RUNNING, "started")

    async def _start_backend(
        self, record: PluginRecord, location: Path, reattach: ReattachConfig | None = None
    ) -> None:
        plugin_id = record.id
        holder: list[PluginBackend] = []

        def on_exit(code: int | None) -> None:
            if holder and self._backends.get(plugin_id) is holder[0]:
                self._on_backend_exit(plugin_id, code)

        def on_log(line: str, source: str) -> None:
            self.logs.write(plugin_id, line, "stdout" if source == "stdout" else "stderr")

        if reattach is not None:
            backend: PluginBackend = await attach(plugin_id, reattach, on_exit=on_exit)
        else:
            backend = await self._backend_factory(record, location, on_exit, on_log)
        holder.append(backend)
        self._backends[plugin_id] = backend
        record.pid = backend.pid
        record.protocol_version = backend.negotiated_version
        if backend.pid is not None and reattach is None:
            self.pids.record(plugin_id, backend.pid)  # never kill a process we did not start
            await self._save_pids()
        timeout = self.settings.health_timeout
        detected = await backend.detect_capabilities(timeout)
        record.capabilities = detected or None
        self._check_protocol(record)
        if backend.exited:
            raise PluginLoadError("the plugin exited right after its handshake")

    def _check_protocol(self, record: PluginRecord) -> None:
        newest = max(self.settings.protocol_versions)
        if record.protocol_version is not None and record.protocol_version < newest:
            self.bus.publish(
                EVENT_DEPRECATED_PROTOCOL,
                {
                    "pluginID": record.id,
                    "protocolVersion": record.protocol_version,
                    "currentVersion": newest,
                },
            )

    async def _fail_load(
        self, record: PluginRecord, exc: BaseException, phase: Phase = Phase.FAILED
    ) -> None:
        await self._stop_backend(record.id)
        detail = exc.detail if isinstance(exc, PlughostError) else str(exc) or type(exc).__name__
        if isinstance(exc, asyncio.CancelledError):
            detail = "load cancelled"
        record.last_error = detail
        record.error_count += 1
        self._try_move(record, phase, detail.splitlines()[0][:200], force=True)
        self.logs.host_log(record.id, "error", f"load failed: {detail}")
        await self.persist()

    async def _start_process(
        self, record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        from ._process import LaunchSpec, start_process

        s = self.settings
        spec = LaunchSpec(
            plugin_id=record.id,
            executable=binary_path(location),
            cwd=location,
            socket_dir=self.layout.run,
            cookie_key=s.effective_cookie_key,
            protocol_versions=s.protocol_versions,
            min_port=s.min_port,
            max_port=s.max_port,
            transport=s.transport,
            auto_mtls=s.auto_mtls,
            env_allow=s.env_allow,
            extra_env=dict(s.extra_env),
            start_timeout=s.start_timeout,
            stop_grace=s.stop_grace,
            kill_grace=s.kill_grace,
            parent_death_signal=s.parent_death_signal,
        )
        return await start_process(spec, on_exit=on_exit, on_log=on_log)

    def _on_backend_exit(self, plugin_id: str, code: int | None) -> None:
        record = self._records.get(plugin_id)
        if self.shutting_down or record is None or record.phase not in ACTIVE_PHASES:
            return
        if isinstance(self._backends.get(plugin_id), AttachedBackend):
            # Someone else's process (a debugger session) ended: detach, do not respawn.
            self._spawn(self._detach_ended(plugin_id))
            return
        log.warning("plugin %s exited unexpectedly (status %s)", plugin_id, code)
        record.pid = None
        self.health.handle_crash(
            plugin_id, kind="crashed", returncode=code, backend=self._backends.get(plugin_id)
        )

    async def _detach_ended(self, plugin_id: str) -> None:
        async with self._lock_for(plugin_id):
            if plugin_id in self._records:
                await self._unload_locked(plugin_id, "attached process exited")
        await self.persist()

    async def _stop_backend(self, plugin_id: str) -> None:
        backend = self._backends.pop(plugin_id, None)
        if backend is None:
            return
        # The stop runs as its own task, shielded: a caller cancelled mid-ladder must not
        # leave the process running, and shutdown waits for every such stop.
        stop = asyncio.ensure_future(backend.stop())
        self._stops.add(stop)
        stop.add_done_callback(self._stops.discard)
        try:
            await asyncio.shield(stop)
        finally:
            entry = self.pids.entries().get(plugin_id)
            if (
                backend.exited and entry is not None and entry.pid == backend.pid
            ) or backend.pid is None:
                self.pids.remove(plugin_id)
            record = self._records.get(plugin_id)
            if record is not None:
                record.pid = None
            if backend.pid is not None:
                await self._save_pids()

    async def _save_pids(self) -> None:
        """Keep plugin_pids.json current, so a host killed at any moment can be cleaned up after.

        Only while this manager holds the root; saves are serialised and each
        writes the tracker's latest map, so the file never goes backwards.
        """
        if not self.root_lock.held:
            return
        async with self._pid_save_lock:
            try:
                await asyncio.to_thread(self.pids.save)
            except OSError as exc:
                log.warning("cannot write the PID file %s: %s", self.pids.path, exc)

    async def _recover_plugin(self, plugin_id: str, attempt: int) -> bool:
        """One recovery attempt (called by the health checker); True when Running again."""
        async with self._lock_for(plugin_id):
            record = self._records.get(plugin_id)
            if record is None or record.phase not in (Phase.RECOVERING, Phase.FAILED):
                return False
            self.logs.host_log(plugin_id, "info", f"recovery attempt {attempt}")
            try:
                # A failed attempt leaves it Recovering (more attempts may follow); the
                # health checker decides when it is Failed.
                await self._load_locked(plugin_id, LoadPluginOptions(), Phase.RECOVERING)
            except PlughostError as exc:
                log.warning("recovery attempt %d of %s failed: %s", attempt, plugin_id, exc)
                return False
            return True

    # -- reload / unload / retry / uninstall --------------------------------------
    async def reload_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop and start again (dev mode and settings are kept)."""
        async with self._lock_for(plugin_id):
            self._get(plugin_id)
            self.health.cancel_recovery(plugin_id)
            await self._unload_locked(plugin_id, "reload")
            return await self._load_locked(plugin_id, LoadPluginOptions())

    async def unload_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop the plugin; idempotent."""
        async with self._lock_for(plugin_id):
            self._get(plugin_id)
            self.health.cancel_recovery(plugin_id)
            info = await self._unload_locked(plugin_id, "unload")
            await self.persist()
            return info

    async def _unload_locked(
        self, plugin_id: str, reason: str, stage: HookStage = "stop"
    ) -> PluginInfo:
        record = self._get(plugin_id)
        if record.phase in ACTIVE_PHASES:
            self._try_move(record, Phase.STOPPING, reason)
            await run_hooks(stage, record.to_info(), self._controllers, self._hooks)
            await self._stop_backend(plugin_id)
            self._try_move(record, Phase.STOPPED, reason)
        else:
            await self._stop_backend(plugin_id)
            if record.phase is Phase.RECOVERING:
                self._try_move(record, Phase.STOPPED, f"{reason} during recovery", force=True)
        return record.to_info()

    async def retry_failed_plugin(self, plugin_id: str) -> PluginInfo:
        """The user's retry: forget the crash budget, then load at once."""
        self._get(plugin_id)
        self.health.cancel_recovery(plugin_id)
        self.health.reset_budget(plugin_id)
        return await self.load_plugin(plugin_id)

    async def uninstall_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop the plugin, remove its directory and logs, forget it."""
        async with self._lock_for(plugin_id):
            record = self._get(plugin_id)
            await self._stop_dev_server(plugin_id)
            self.health.forget(plugin_id)
            await self._unload_locked(plugin_id, "uninstall")
            self._try_move(record, Phase.UNINSTALLING, "uninstall", force=True)
            await asyncio.to_thread(shutil.rmtree, self.layout.plugin_dir(plugin_id), True)
            await asyncio.to_thread(
                shutil.rmtree, self.plugins_dir / install.PREVIOUS_DIR / plugin_id, True
            )
            self._try_move(record, Phase.UNINSTALLED, "uninstalled")
            info = record.to_info()
            del self._records[plugin_id]
            self.logs.remove(plugin_id)
            await self.persist()
        await run_hooks("destroy", info, self._controllers, self._hooks)
        return info

    async def _stop_dev_server(self, plugin_id: str) -> None:
        mgr = self._dev_server_manager
        if mgr is not None and mgr.is_managed(plugin_id):
            result = mgr.stop(plugin_id)
            if asyncio.iscoroutine(result):
                await result

    # -- installing and the marketplace ---------------------------------------------
    async def install_plugin_from_path(
        self, path: str | os.PathLike[str], progress: Progress | None = None
    ) -> PluginMeta:
        """Install or update from a .tar.gz package; a bad one changes nothing."""
        return await install.install_from_path(self, path, progress=progress)

    async def install_from_path_prompt(
        self, chooser: Callable[[], str | os.PathLike[str] | Awaitable[Any] | None]
    ) -> PluginMeta:
        """Ask ``chooser`` (a file dialog, a prompt) for a package, then install it."""
        chosen = chooser()
        if inspect.isawaitable(chosen):
            chosen = await chosen
        if not chosen:
            raise CancelledError("no package was chosen", title="Install cancelled")
        return await self.install_plugin_from_path(chosen)

    async def install_plugin_version(
        self, plugin_id: str, version: str, progress: Progress | None = None
    ) -> PluginMeta:
        """Download a marketplace version, verify it, install it."""
        validate_plugin_id(plugin_id)
        return await install.install_plugin_version(self, plugin_id, version, progress=progress)

    async def rollback_plugin(self, plugin_id: str) -> PluginMeta:
        """Go back to the version an install replaced."""
        self._get(plugin_id)
        return await install.rollback_plugin(self, plugin_id)

    def marketplace(self) -> RegistryClient:
        """The marketplace client (created on first use from the settings)."""
        if self.registry_client is None:
            from .registry.client import RegistryClient

            self.registry_client = RegistryClient(self.settings_provider)
        client: RegistryClient = self.registry_client
        return client

    def _installed_versions(self) -> dict[str, str]:
        return {r.id: r.meta.version for r in self._records.values()}

    async def list_available_plugins(self) -> list[AvailablePlugin]:
        from .registry.client import enrich

        plugins = await self.marketplace().list_plugins()
        return enrich(plugins, self._installed_versions())

    async def search_plugins(
        self, query: str = "", category: str = "", sort: str = ""
    ) -> list[AvailablePlugin]:
        from .registry.client import enrich

        plugins = await self.marketplace().search_plugins(query, category, sort)
        return enrich(plugins, self._installed_versions())

    async def get_plugin_readme(self, plugin_id: str) -> str:
        return await self.marketplace().get_plugin_readme(plugin_id)

    async def get_plugin_versions(self, plugin_id: str) -> list[VersionInfo]:
        return await self.marketplace().get_plugin_versions(plugin_id)

    async def get_plugin_reviews(self, plugin_id: str, page: int = 1) -> list[Review]:
        return await self.marketplace().get_plugin_reviews(plugin_id, page)

    async def get_plugin_download_stats(self, plugin_id: str) -> DownloadStats:
        return await self.marketplace().get_download_stats(plugin_id)

    async def get_plugin_release_history(self, plugin_id: str) -> list[VersionInfo]:
        return await self.marketplace().get_release_history(plugin_id)

    # -- crash entry point -----------------------------------------------------------
    def handle_plugin_crash(self, plugin_id: str) -> None:
        """Treat the plugin as crashed now (the seed's HandlePluginCrash)."""
        self._get(plugin_id)
        self.health.handle_crash(plugin_id, kind="crashed")

    # -- shutdown --------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop every plugin, save the PID file, close logs, release the root."""
        if self.shutting_down:
            return
        self.shutting_down = True
        await self.health.stop()
        for task in list(self._background):  # rollbacks, detaches: nothing may start now
            task.cancel()
        await asyncio.gather(*list(self._background), return_exceptions=True)
        limit = asyncio.Semaphore(self.settings.shutdown_concurrency)

        async def stop_one(plugin_id: str) -> None:
            async with limit, self._lock_for(plugin_id):
                try:
                    await self._unload_locked(plugin_id, "host shutdown", stage="shutdown")
                except Exception:
                    log.exception("stopping %s failed", plugin_id)

        await asyncio.gather(*(stop_one(i) for i in list(self._records)))
        if self._stops:  # stops whose caller was cancelled: they finish before we go
            await asyncio.gather(*list(self._stops), return_exceptions=True)
            for plugin_id, entry in self.pids.entries().items():
                if plugin_id not in self._backends and not psutil.pid_exists(entry.pid):
                    self.pids.remove(plugin_id)
        if self._records:
            await self.persist()
        if self.initialized:
            await asyncio.to_thread(self.pids.save)
        self.logs.close_all()
        if self.registry_client is not None:
            with contextlib.suppress(Exception):
                await self.registry_client.aclose()
        self.root_lock.release()
        self.initialized = False

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Initialize if needed, then supervise until ``stop`` is set or the task is cancelled."""
        if not self.initialized:
            await self.initialize()
        try:
            await (stop or asyncio.Event()).wait()
        finally:
            await asyncio.shield(self.shutdown())

    # -- queries -----------------------------------------------------------------------
    def get_plugin(self, plugin_id: str) -> PluginInfo:
        return self._get(plugin_id).to_info()

    def list_plugins(self) -> list[PluginInfo]:
        return [self._records[i].to_info() for i in sorted(self._records)]

    def get_plugin_meta(self, plugin_id: str) -> PluginMeta:
        return self._get(plugin_id).meta

    def list_plugin_metas(self) -> list[PluginMeta]:
        return [self._records[i].meta for i in sorted(self._records)]

    def get_plugin_history(self, plugin_id: str) -> list[dict[str, str]]:
        return [t.to_dict() for t in self._get(plugin_id).history()]

    def backend(self, plugin_id: str) -> PluginBackend | None:
        """The running plugin's backend (its gRPC channel and capability clients)."""
        return self._backends.get(plugin_id)

    # -- integration -----------------------------------------------------------------
    def register_controller(self, capability: str, controller: object) -> None:
        self._controllers[capability] = controller

    def register_hook(self, name: str, hook: object) -> None:
        self._hooks[name] = hook

    def set_dev_server_checker(self, checker: Any) -> None:
        self._dev_server_checker = checker

    def set_dev_server_manager(self, manager: Any) -> None:
        self._dev_server_manager = manager

    async def install_in_dev_mode(self, path: Any) -> PluginInfo:
        """Install from a source tree (or a chooser returning one), build, load, watch."""
        from . import devmode

        return await devmode.install_in_dev_mode(self, path)

    def set_plugin_log_manager(self, log_manager: PluginLogManager) -> None:
        self.logs = log_manager

    async def set_enabled(self, plugin_id: str, enabled: bool) -> PluginInfo:
        """Enable (and start) or disable (and stop) a plugin; remembered across restarts."""
        async with self._lock_for(plugin_id):
            record = self._get(plugin_id)
            record.enabled = enabled
            self.health.cancel_recovery(plugin_id)
            if not enabled:
                self.health.cancel_recovery(plugin_id)
                await self._unload_locked(plugin_id, "disabled")
                self._try_move(record, Phase.STOPPED, "disabled")
                await self.persist()
                return record.to_info()
            await self.persist()
            settled = record.phase in ACTIVE_PHASES or record.phase is Phase.BUILD_FAILED
            if settled or not self.start_plugins:
                return record.to_info()
            return await self._load_locked(plugin_id, LoadPluginOptions())
