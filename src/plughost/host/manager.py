"""The plugin manager: the public facade of one root's plugins (the seed's Manager).

It wires the parts and owns their life: the plugin table (one slot per
plugin, the only place a phase changes), the restarter (health, crashes,
backoff), the installer, the PID registry and a single task group for all
background work. Every operation on one plugin runs inside
``table.exclusive(id)``; the manager itself holds no per-plugin state.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from ..errors import (
    CancelledError,
    PlughostError,
    PluginLoadError,
    PluginNotLoadedError,
    ValidationError,
)
from ..events import EVENT_INIT_COMPLETE, EventBus
from ..hardening import allow_traversal, protect_host_process, resolve_run_as
from ..lock import RootLock
from ..logs import PluginLogManager
from ..metadata import PluginMeta, load_meta, validate_plugin_id
from ..paths import RootLayout, resolve_root
from ..phases import ACTIVE_PHASES, Phase
from ..pids import PidRegistry, PluginPIDTracker
from ..process.backend import ExitCallback, LogCallback, PluginBackend
from ..reconcile import Reconciler
from ..records import PluginInfo, PluginRecord, PluginStateRecord
from ..rootcheck import prepare_root
from ..settings import Settings, SettingsProvider
from ..store import StateFileCorrupt, StateStore
from ..tasks import TaskOwner
from ..validate import binary_path
from .client import PluginClient
from .hooks import run_hooks
from .installer import PREVIOUS_DIR, Installer, held_reason, sweep_staging, ungranted
from .restarter import Restarter
from .slot import BackendFactory, LoadPluginOptions
from .table import PluginTable

if TYPE_CHECKING:
    from ..dev.watch import DevServerManager
    from ..registry.client import RegistryClient
    from ..registry.models import AvailablePlugin, DownloadStats, Review, VersionInfo

__all__ = ["BackendFactory", "LoadPluginOptions", "PluginManager"]

log = logging.getLogger(__name__)

DEV_SUFFIX = "-dev"
_REGISTRY_CLIENT = "plughost.registry.client"
HEARTBEAT = 30.0  # seconds between state rewrites while the host runs

Progress = Callable[[int, int | None], None]


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
        hooks: Mapping[str, object] | None = None,
        managers: Mapping[str, object] | None = None,
        backend_factory: BackendFactory | None = None,
        log_manager: PluginLogManager | None = None,
        registry_client: Any = None,
        start_plugins: bool = True,
    ) -> None:
        if managers is not None:
            warnings.warn(
                "PluginManager(managers=...) is deprecated; pass hooks=...",
                DeprecationWarning,
                stacklevel=2,
            )
            hooks = {**managers, **(hooks or {})}
        self.layout = RootLayout(resolve_root(root, profile))
        overrides = {"profile": profile} if profile else None
        self.settings_provider = settings or SettingsProvider(self.layout.settings_file, overrides)
        if settings is not None and profile and settings.settings.profile != profile:
            # An explicit profile also picks the cookie key, whoever supplied the settings.
            settings.override(profile=profile)
        self.bus = bus or EventBus()
        s = self.settings
        logs = log_manager or PluginLogManager(
            self.layout.logs,
            self.bus,
            ring_size=s.log_ring_size,
            max_bytes=s.log_max_bytes,
            backups=s.log_backups,
        )
        self.store = StateStore(self.layout.root, self.bus)
        self.root_lock = RootLock(self.layout.root)
        self.pids = PidRegistry(PluginPIDTracker(self.layout.root), lambda: self.root_lock.held)
        self.tasks = TaskOwner()
        self.registry_client = registry_client
        self._backend_factory = backend_factory
        self.table = PluginTable(
            layout=self.layout,
            settings=self.settings_provider,
            bus=self.bus,
            logs=logs,
            pids=self.pids,
            tasks=self.tasks,
            store=self.store,
            backend_factory=self._start_process if backend_factory is None else self._start_with,
            controllers=dict(controllers or {}),
            hooks=dict(hooks or {}),
        )
        # False for one-shot commands on a root no host is running: install, enable,
        # uninstall ... change the disk and the state, but start nothing that would
        # die with the command.
        self.table.start_plugins = start_plugins
        self.restarter = Restarter(self.table)
        self.installer = Installer(self.table, self.marketplace)
        self.restarter.add_crash_interceptor(self.installer.rollback_if_fresh)
        self.dev_server_manager: Any = None
        """The dev servers (a DevServerManager, or anything with the same methods)."""
        self.dev_server_checker: Any = None
        """Answers ``is_managed(id)``: is the plugin run by a dev server (the seed's checker)."""
        self.initialized = False
        self._spawn_limit: asyncio.Semaphore | None = None
        """While initialize loads: how many plugins may be between spawn and handshake."""

    # -- small helpers -------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.settings_provider.settings

    @property
    def plugins_dir(self) -> Path:
        return self.layout.plugins

    @property
    def logs(self) -> PluginLogManager:
        return self.table.logs

    @property
    def health(self) -> Restarter:
        """The restarter (the seed calls it the health checker)."""
        return self.restarter

    @property
    def start_plugins(self) -> bool:
        return self.table.start_plugins

    @property
    def shutting_down(self) -> bool:
        return self.table.closing

    async def persist(self) -> bool:
        """Write every record to plugin_state.json."""
        return await self.table.persist()

    # -- initialize ----------------------------------------------------------------
    async def initialize(self) -> list[PluginInfo]:
        """Take the root, clean up after a crashed host, restore and load plugins."""
        if self.settings.protect_host_process:  # before any plugin runs: see plughost.hardening
            protect_host_process()
        prepare_root(self.layout)  # refuses a root others may write, or one that is read-only
        self.root_lock.acquire()
        self.table.closing = False
        try:
            await self.tasks.open()
            self.layout.ensure()
            killed = await asyncio.to_thread(self.pids.tracker.cleanup_stale)
            if killed:
                log.warning("killed orphaned processes of: %s", ", ".join(killed))
            self._migrate_dev_dirs()
            self.store.clean_temp_files()
            await asyncio.to_thread(sweep_staging, self.plugins_dir)
            self._restore_records()
            async with self.table.held_writes():  # one state write, not one per start
                if self.start_plugins:
                    await self._load_enabled()
                restore = getattr(self.dev_server_manager, "restore", None)
                if restore is not None:  # dev plugins: watchers back, rebuilds
                    await restore()
            self._import_marketplace_client()
            self.restarter.start()
            self.tasks.spawn(self._heartbeat(), name="plughost:heartbeat")
            self.initialized = True
        except BaseException:
            await self.tasks.aclose()
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

    def _restore_records(self) -> None:
        persisted = self._read_state()
        result = Reconciler().reconcile(self.plugins_dir, persisted)
        self.table.keep_persisted([p for p in persisted if p.id in result.records])
        for record in result.records.values():
            slot = self.table.add(record)
            if record.phase is Phase.BUILDING:  # dev plugin without a binary
                record.last_error = record.last_error or (
                    f"{binary_path(self.layout.plugin_dir(record.id))} is missing: "
                    "the dev build has not produced it yet"
                )
                slot.change(Phase.BUILD_FAILED, record.last_error)

    async def _heartbeat(self) -> None:
        """Rewrite the state now and then, so "last seen" without a host is when it died."""
        while True:
            await asyncio.sleep(HEARTBEAT)
            await self.persist()

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
        """Every load runs at once; only spawn to handshake is limited (see _start_process)."""

        async def load(plugin_id: str) -> None:
            with contextlib.suppress(PlughostError):
                await self.load_plugin(plugin_id)

        todo = [
            i for i in self.table.ids(phases=(Phase.INSTALLED,)) if self.table.get(i).record.enabled
        ]
        self._spawn_limit = asyncio.Semaphore(self.settings.effective_load_concurrency)
        try:
            await asyncio.gather(*(load(i) for i in todo))
        finally:
            self._spawn_limit = None

    # -- load / reload / unload / retry / uninstall --------------------------------------
    def _new_record(self, plugin_id: str) -> Callable[[], PluginRecord]:
        return lambda: PluginRecord.new(load_meta(self.layout.plugin_dir(plugin_id)))

    async def load_plugin(
        self, plugin_id: str, options: LoadPluginOptions | None = None
    ) -> PluginInfo:
        """Start the plugin; idempotent when it already runs."""
        validate_plugin_id(plugin_id)
        async with self.table.exclusive(plugin_id, create=self._new_record(plugin_id)) as slot:
            return await slot.start(options)

    async def reload_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop and start again (dev mode and settings are kept)."""
        async with self.table.exclusive(plugin_id) as slot:
            return await slot.reload()

    async def unload_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop the plugin; idempotent."""
        async with self.table.exclusive(plugin_id) as slot:
            info = await slot.stop("unload")
        await self.persist()
        return info

    async def retry_failed_plugin(self, plugin_id: str) -> PluginInfo:
        """The user's retry: forget the crash budget, then load at once."""
        self.table.get(plugin_id)
        self.restarter.reset_budget(plugin_id)
        return await self.load_plugin(plugin_id)

    async def uninstall_plugin(self, plugin_id: str) -> PluginInfo:
        """Stop the plugin, remove its directory and logs, forget it."""
        async with self.table.exclusive(plugin_id) as slot:
            await self._stop_dev_server(plugin_id)
            self.restarter.forget(plugin_id)
            await slot.stop("uninstall")
            if slot.phase in (Phase.BUILDING, Phase.VALIDATING):
                # An uninstall takes a plugin from wherever it is; these two have no
                # edge to Uninstalling because nothing else ends them that way.
                slot.force(Phase.UNINSTALLING, "uninstall")
            else:
                slot.change(Phase.UNINSTALLING, "uninstall")
            await asyncio.to_thread(shutil.rmtree, self.layout.plugin_dir(plugin_id), True)
            await asyncio.to_thread(
                shutil.rmtree, self.plugins_dir / PREVIOUS_DIR / plugin_id, True
            )
            slot.change(Phase.UNINSTALLED, "uninstalled")
            info = slot.info()
            self.table.remove(plugin_id)
            self.logs.remove(plugin_id)
            await self.persist()
        await run_hooks(
            "destroy", info, self.table.controllers, self.table.hooks, self.table.client(plugin_id)
        )
        return info

    async def _stop_dev_server(self, plugin_id: str) -> None:
        servers = self.dev_server_manager
        # The seed's DevServerChecker, when one is set, answers; else the dev servers do.
        is_managed = getattr(self.dev_server_checker, "is_managed", None) or getattr(
            servers, "is_managed", None
        )
        if servers is not None and is_managed is not None and is_managed(plugin_id):
            result = servers.stop(plugin_id)
            if inspect.isawaitable(result):
                await result

    async def set_enabled(self, plugin_id: str, enabled: bool) -> PluginInfo:
        """Enable (and start) or disable (and stop) a plugin; remembered across restarts."""
        async with self.table.exclusive(plugin_id) as slot:
            slot.record.enabled = enabled
            if not enabled:
                await slot.stop("disabled")
                if slot.phase is Phase.FAILED:  # the table's way from Failed to Stopped
                    slot.change(Phase.INSTALLED, "disabled")
                if slot.phase is Phase.INSTALLED:
                    slot.change(Phase.STOPPED, "disabled")
                await self.persist()
                return slot.info()
            await self.persist()
            settled = slot.phase in ACTIVE_PHASES or slot.phase is Phase.BUILD_FAILED
            if settled or not self.start_plugins:
                return slot.info()
            return await slot.start()

    # -- installing and the marketplace ---------------------------------------------
    async def install_plugin_from_path(
        self, path: str | os.PathLike[str], progress: Progress | None = None
    ) -> PluginMeta:
        """Install or update from a .tar.gz package; a bad one changes nothing."""
        return await self.installer.install_from_path(path, progress=progress)

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
        self,
        plugin_id: str,
        version: str,
        progress: Progress | None = None,
        *,
        grant: bool = False,
    ) -> PluginMeta:
        """Download a marketplace version, verify it, install it.

        Without ``grant`` a version asking for permissions not yet granted is installed
        held (stopped) until ``grant_permissions``.
        """
        validate_plugin_id(plugin_id)
        return await self.installer.install_plugin_version(
            plugin_id, version, progress=progress, grant=grant
        )

    async def grant_permissions(self, plugin_id: str) -> PluginInfo:
        """Grant what the installed version asks for; a held plugin then starts."""
        self.table.get(plugin_id)
        await self.installer.grant_permissions(plugin_id)
        return self.get_plugin(plugin_id)

    async def rollback_plugin(self, plugin_id: str) -> PluginMeta:
        """Go back to the version an install replaced."""
        self.table.get(plugin_id)
        return await self.installer.rollback_plugin(plugin_id)

    def _import_marketplace_client(self) -> None:
        """Import the marketplace client (httpx and all, ~0.2 s) in a thread once the plugins
        have started (the import holds the GIL, which their starts would wait for): its first
        use, in :meth:`marketplace` on the event loop, must not stall it."""
        if (
            self.registry_client is None
            and self.start_plugins
            and _REGISTRY_CLIENT not in sys.modules
        ):
            self.tasks.spawn(
                asyncio.to_thread(importlib.import_module, _REGISTRY_CLIENT),
                name="plughost:import-marketplace",
            )

    def marketplace(self) -> RegistryClient:
        """The marketplace client (created on first use from the settings)."""
        if self.registry_client is None:
            from ..registry.client import RegistryClient

            self.registry_client = RegistryClient(self.settings_provider)
        client: RegistryClient = self.registry_client
        return client

    def _installed_versions(self) -> dict[str, str]:
        return {s.id: s.record.meta.version for s in self.table.slots()}

    async def list_available_plugins(self) -> list[AvailablePlugin]:
        from ..registry.client import enrich

        plugins = await self.marketplace().list_plugins()
        return enrich(plugins, self._installed_versions())

    async def search_plugins(
        self, query: str = "", category: str = "", sort: str = ""
    ) -> list[AvailablePlugin]:
        from ..registry.client import enrich

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
        slot = self.table.get(plugin_id)
        if slot.phase in (Phase.UNINSTALLED, Phase.UNINSTALLING, Phase.INSTALLING):
            raise PluginNotLoadedError(
                f"plugin is {slot.phase.value}: there is no process to recover",
                plugin_id=plugin_id,
            )
        self.restarter.handle_crash(plugin_id, kind="crashed")

    # -- shutdown --------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop every plugin, save the PID file, close logs, release the root."""
        if self.table.closing:
            return
        self.table.closing = True
        await self.restarter.stop()
        await self._close_extensions()
        await self.tasks.aclose()  # rollbacks, detaches, persists: nothing may start now
        limit = asyncio.Semaphore(self.settings.shutdown_concurrency)

        async def stop_one(plugin_id: str) -> None:
            try:
                async with limit, self.table.exclusive(plugin_id, takeover=False) as slot:
                    await slot.stop("host shutdown", stage="shutdown")
            except Exception:
                log.exception("stopping %s failed", plugin_id)

        await asyncio.gather(*(stop_one(i) for i in self.table.ids()))
        if await self.table.wait_stops():  # stops whose caller was cancelled: finished now
            for plugin_id, entry in self.pids.entries().items():
                if self.table.backend(plugin_id) is None and not psutil.pid_exists(entry.pid):
                    self.pids.tracker.remove(plugin_id)
        if self.table.ids():
            await self.persist()
        if self.initialized:
            await asyncio.to_thread(self.pids.tracker.save)
        self.logs.close_all()
        if self.registry_client is not None:
            with contextlib.suppress(Exception):
                await self.registry_client.aclose()
        self.root_lock.release()
        self.initialized = False

    async def _close_extensions(self) -> None:
        close = getattr(self.dev_server_manager, "close", None)
        if close is None:
            return
        try:
            result = close()
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("closing the dev servers failed")

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
        return self.table.get(plugin_id).info()

    def list_plugins(self) -> list[PluginInfo]:
        return [s.info() for s in self.table.slots()]

    def get_plugin_meta(self, plugin_id: str) -> PluginMeta:
        return self.table.get(plugin_id).record.meta

    def list_plugin_metas(self) -> list[PluginMeta]:
        return [s.record.meta for s in self.table.slots()]

    def get_plugin_history(self, plugin_id: str) -> list[dict[str, str]]:
        return [t.to_dict() for t in self.table.get(plugin_id).record.history()]

    def client(self, plugin_id: str) -> PluginClient:
        """A handle for calling the plugin that stays valid across reloads, crashes and updates.

        ``await manager.client("hello").stub(GreeterStub).Greet(request, timeout=5)``:
        while the plugin restarts a call waits for it (bounded by its deadline); when it
        is stopped, disabled, Failed or uninstalled, the call raises PluginUnavailableError.
        """
        validate_plugin_id(plugin_id)
        return self.table.client(plugin_id)

    def backend(self, plugin_id: str) -> PluginBackend | None:
        """The running process's backend, or None: valid only until the plugin restarts
        (``client()`` follows the plugin)."""
        return self.table.backend(plugin_id)

    # -- integration -----------------------------------------------------------------
    def register_controller(self, capability: str, controller: object) -> None:
        self.table.controllers[capability] = controller

    def register_hook(self, name: str, hook: object) -> None:
        self.table.hooks[name] = hook

    def set_dev_server_checker(self, checker: Any) -> None:
        self.dev_server_checker = checker

    def set_dev_server_manager(self, manager: Any) -> None:
        """Register the dev servers; the manager restores them at start and closes them."""
        self.dev_server_manager = manager

    def dev_servers(self) -> DevServerManager:
        """The host's DevServerManager, created and registered on first use."""
        from ..dev.watch import DevServerManager

        current = self.dev_server_manager
        if isinstance(current, DevServerManager):
            return current
        servers = DevServerManager(self.table)
        self.set_dev_server_manager(servers)
        return servers

    async def install_in_dev_mode(self, path: Any) -> PluginInfo:
        """Install from a source tree (or a chooser returning one), build, load, watch."""
        from ..dev.install import install_in_dev_mode

        return await install_in_dev_mode(self.table, self.dev_servers(), path)

    def set_plugin_log_manager(self, log_manager: PluginLogManager) -> None:
        self.table.logs = log_manager

    async def _start_with(
        self, record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        """A given backend factory: where its handshake ends is unknown, so the spawn
        limit spans the whole call."""
        assert self._backend_factory is not None
        async with self._spawn_limit or contextlib.nullcontext():
            return await self._backend_factory(record, location, on_exit, on_log)

    # -- the default backend ---------------------------------------------------------
    async def _start_process(
        self, record: PluginRecord, location: Path, on_exit: ExitCallback, on_log: LogCallback
    ) -> PluginBackend:
        from ..process.handshake import plugin_meta_env
        from ..process.local import LaunchSpec, start_process
        from ..process.sandbox import enforcement, policy_for

        s = self.settings
        more = ungranted(record.meta, record.granted)
        if more:  # held across a restart too: never started with what was not granted
            raise PluginLoadError(
                held_reason(record.meta, more),
                title="Permissions not granted",
                plugin_id=record.id,
                suggestions=[f"read them, then grant them: plughost grant {record.id}"],
            )
        policy = policy_for(record.meta, record.granted, s, self.layout.root, location)
        record.sandbox = enforcement(policy)
        if resolve_run_as(s.run_as, record.id) is not None:  # that user must reach plugins/<id>
            allow_traversal(self.layout.root, self.plugins_dir)
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
            # What the SDK would otherwise parse plugin.yaml for (and import yaml) at every start.
            extra_env=dict(s.extra_env) | plugin_meta_env(record.meta),
            start_timeout=s.start_timeout,
            stop_grace=s.stop_grace,
            kill_grace=s.kill_grace,
            parent_death_signal=s.parent_death_signal,
            run_as=s.run_as,
            sandbox=policy,
        )
        return await start_process(
            spec, on_exit=on_exit, on_log=on_log, spawn_limit=self._spawn_limit
        )
