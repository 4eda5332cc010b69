"""External dev mode: attach to a plugin the developer runs by hand (under a debugger).

The plugin announces itself in ``<root>/plugins/<id>/.devinfo`` (the original
SDK's file: ``{pid, protocol, protocolVersion, addr, vitePort?, pluginId,
version, startedAt}``). The host watches for these files, attaches to the
address without spawning, checks the process every few seconds, and detaches
when the file goes or the process dies. A broken or stale file is a problem
of the developer's session, not of the host: it is reported, never fatal.

Omniview's Go SDK (``pkg/sdk/devinfo.go``, v0.5.0): with ``OMNIVIEW_DEV=1``
its ``Serve`` captures the handshake line and calls ``WriteDevInfo``, which
writes ``$HOME/.omniview/plugins/<id>/.devinfo`` (``json.MarshalIndent``, the
field names above, ``vitePort`` omitted when 0, ``startedAt`` in RFC 3339 with
nanoseconds, ``addr`` a socket path or ``host:port`` without the network, via
``.devinfo.tmp`` and a rename); SIGINT/SIGTERM remove it and exit 0. It wants a
5-field handshake line, but go-plugin prints 6 (``1|1|unix|/tmp/plugin…|grpc|``),
so v0.5.0 logs ``failed to write devinfo: invalid handshake line (expected 5
parts, got 6)`` and writes nothing. ``DevInfo`` reads the file it would write
(tests/test_omniview_dev.py checks the field names against the SDK's source);
until the SDK writes it, ``write_devinfo_from_handshake`` writes it from the
line the plugin prints on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import PlughostError, ValidationError
from ..events import EVENT_DEVSERVER_ERROR, EVENT_STATE_CHANGE
from ..host.slot import LoadPluginOptions
from ..metadata import METADATA_FILE, load_meta, validate_plugin_id
from ..phases import Phase
from ..process.attach import AttachedBackend, ReattachConfig
from ..process.handshake import parse_handshake
from ..records import PluginRecord
from ..store import atomic_write_text

if TYPE_CHECKING:
    from ..host.table import PluginTable

__all__ = [
    "DEVINFO_FILE",
    "DevInfo",
    "DevInfoError",
    "DevInfoWatcher",
    "NotAnsweringError",
    "StaleDevInfoError",
    "devinfo_from_handshake",
    "pid_alive",
    "read_devinfo",
    "write_devinfo",
    "write_devinfo_from_handshake",
]

log = logging.getLogger(__name__)

DEVINFO_FILE = ".devinfo"
_LEFT = frozenset({Phase.STOPPED.value, Phase.FAILED.value, Phase.RECOVERING.value})
ChangeCallback = Callable[[str, "DevInfo | None"], None]
"""Called with (plugin id, the attached DevInfo, or None once detached)."""


class DevInfoError(ValidationError):
    """A .devinfo file that cannot be used."""

    type = "devinfo_invalid"
    default_title = "Invalid .devinfo file"


class StaleDevInfoError(DevInfoError):
    """A .devinfo file whose process is gone (the plugin was killed, not stopped)."""

    type = "devinfo_stale"
    default_title = "Stale .devinfo file"


class NotAnsweringError(PlughostError):
    """An attached plugin whose process lives but does not answer health checks."""

    type = "plugin_not_answering"
    status = 504
    default_title = "Attached plugin not answering"


class DevInfo(BaseModel):
    """What a plugin run by hand says about where it listens."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    pid: int = Field(gt=0)
    protocol: str = "grpc"
    protocol_version: int = Field(1, alias="protocolVersion")
    addr: str = Field(min_length=1)
    vite_port: int | None = Field(None, alias="vitePort")
    plugin_id: str = Field("", alias="pluginId")
    version: str = ""
    started_at: datetime | None = Field(None, alias="startedAt")

    @field_validator("vite_port", mode="before")
    @classmethod
    def _zero_is_none(cls, value: object) -> object:
        return None if value in (0, "", None) else value

    @property
    def network(self) -> str:
        """The address kind, which the file does not say: a path is unix, host:port is tcp."""
        addr = self.addr.removeprefix("unix:")
        if addr.startswith(("/", "@", ".")) or self.addr.startswith("unix:"):
            return "unix"
        host, _, port = addr.rpartition(":")
        return "tcp" if host and port.isdigit() else "unix"

    def reattach_config(self) -> ReattachConfig:
        addr = self.addr.removeprefix("unix:") if self.network == "unix" else self.addr
        return ReattachConfig(
            pid=self.pid,
            addr=addr,
            network=self.network,
            protocol=self.protocol,
            protocol_version=self.protocol_version,
        )

    def to_json(self) -> str:
        data = self.model_dump(by_alias=True, mode="json", exclude_none=True)
        if self.started_at is not None:
            data["startedAt"] = self.started_at.isoformat().replace("+00:00", "Z")
        return json.dumps(data, indent=2)


def pid_alive(pid: int) -> bool:
    """True for a running (not zombie) process."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def read_devinfo(path: str | os.PathLike[str], *, check_pid: bool = True) -> DevInfo:
    """Parse a .devinfo file; DevInfoError if malformed, StaleDevInfoError if its pid is dead."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DevInfoError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DevInfoError(f"{path}: cannot be read: {exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DevInfoError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
            suggestions=["the plugin's SDK writes this file; restart the plugin to rewrite it"],
        ) from exc
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, [[[[... nested deep
        raise DevInfoError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DevInfoError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    try:
        info = DevInfo.model_validate(raw)
    except pydantic.ValidationError as exc:
        fields = "; ".join(
            f"'{'.'.join(map(str, e['loc'])) or '(top level)'}': {e['msg']}" for e in exc.errors()
        )
        raise DevInfoError(
            f"{path}: {fields}",
            suggestions=["expected {pid, protocol, protocolVersion, addr, pluginId, version}"],
        ) from exc
    if check_pid and not pid_alive(info.pid):
        raise StaleDevInfoError(
            f"{path}: process {info.pid} is not running (the plugin was stopped without "
            "removing its .devinfo)",
            suggestions=["start the plugin again, or delete the file"],
        )
    return info


def write_devinfo(path: str | os.PathLike[str], info: DevInfo) -> Path:
    """Write ``info`` atomically (temp file, then rename), as the original SDK does."""
    path = Path(path)
    atomic_write_text(path, info.to_json(), 0o600)
    return path


def devinfo_from_handshake(
    line: str,
    *,
    pid: int,
    plugin_id: str,
    version: str = "",
    vite_port: int | None = None,
    offered_versions: Iterable[int] = (1,),
) -> DevInfo:
    """A DevInfo for a plugin from its go-plugin handshake line (5, 6 or 7 fields)."""
    hs = parse_handshake(line, offered_versions)
    return DevInfo(
        pid=pid,
        protocol=hs.protocol,
        protocol_version=hs.app_version,
        addr=hs.address,
        vite_port=vite_port,
        plugin_id=plugin_id,
        version=version,
        started_at=datetime.now(UTC),
    )


def write_devinfo_from_handshake(
    path: str | os.PathLike[str],
    line: str,
    *,
    pid: int,
    plugin_id: str,
    version: str = "",
    vite_port: int | None = None,
) -> DevInfo:
    """For a plugin started by hand whose SDK writes no .devinfo (a go-plugin plugin)."""
    info = devinfo_from_handshake(
        line, pid=pid, plugin_id=plugin_id, version=version, vite_port=vite_port
    )
    write_devinfo(path, info)
    return info


def _signature(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class DevInfoWatcher:
    """Watches ``<root>/plugins/*/.devinfo`` and attaches / detaches accordingly."""

    def __init__(
        self,
        table: PluginTable,
        *,
        check_interval: float = 5.0,
        health_timeout: float = 2.0,
        on_change: ChangeCallback | None = None,
        on_health: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._table = table
        self.check_interval = check_interval
        self.health_timeout = health_timeout
        self.on_change = on_change
        self.on_health = on_health
        self.attached: dict[str, DevInfo] = {}
        self.healthy: dict[str, bool] = {}
        self._seen: dict[Path, tuple[int, int]] = {}
        self._reported: set[tuple[Any, ...]] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    @property
    def plugins_dir(self) -> Path:
        return self._table.layout.plugins

    @property
    def running(self) -> bool:
        return any(not t.done() for t in self._tasks)

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        """Attach to what is already announced, then watch for changes."""
        if self.running:
            return
        self._stop = asyncio.Event()
        self.plugins_dir.mkdir(parents=True, exist_ok=True)
        ready = asyncio.Event()
        spawn = self._table.tasks.spawn
        self._tasks = [
            spawn(self._watch(ready), name="plughost:devinfo:watch"),
            spawn(self._check_loop(), name="plughost:devinfo:check"),
            spawn(self._follow_phases(), name="plughost:devinfo:phases"),
        ]
        await ready.wait()
        await self.scan()

    async def stop(self, *, detach: bool = False) -> None:
        """Stop watching; with ``detach``, also let go of the attached plugins."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if detach:
            for plugin_id in list(self.attached):
                await self._detach(plugin_id, "dev watcher stopped")

    async def _watch(self, ready: asyncio.Event) -> None:
        from watchfiles import awatch

        def only_devinfo(_change: object, path: str) -> bool:
            return os.path.basename(path) == DEVINFO_FILE

        changes = awatch(
            self.plugins_dir,
            watch_filter=only_devinfo,
            debounce=500,
            step=30,
            stop_event=self._stop,
            rust_timeout=1000,
            yield_on_timeout=True,
        )
        ready.set()  # the watch is set up on the first step of the generator, before it waits
        try:
            async for batch in changes:
                if self._table.closing:
                    return
                for plugin_dir in sorted({Path(path).parent for _change, path in batch}):
                    await self._safely(self.handle(plugin_dir / DEVINFO_FILE))
        except Exception:
            log.exception("the .devinfo watcher stopped")

    async def _follow_phases(self) -> None:
        """Notice at once when the manager let an attached plugin go (its process exited)."""
        async with self._table.bus.stream(EVENT_STATE_CHANGE) as events:
            async for event in events:
                plugin_id = event.plugin_id
                if plugin_id in self.attached and event.payload.get("to") in _LEFT:
                    await self._safely(self._forget_if_gone(plugin_id))

    async def _forget_if_gone(self, plugin_id: str) -> None:
        async with self._locks.setdefault(plugin_id, asyncio.Lock()):
            info = self.attached.get(plugin_id)
            backend = self._table.backend(plugin_id)
            if info is None or (isinstance(backend, AttachedBackend) and backend.pid == info.pid):
                return
            # The manager detached it; a .devinfo left behind is stale from now on.
            self._seen.pop(self.plugins_dir / plugin_id / DEVINFO_FILE, None)
            await self._detach(plugin_id, f"process {info.pid} is gone")

    async def _check_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.check_interval)
            if self._stop.is_set() or self._table.closing:
                return
            await self._safely(self.check_now())

    async def _safely(self, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handling a .devinfo change failed")

    # -- one file ---------------------------------------------------------------------
    async def scan(self) -> None:
        """Handle every .devinfo present now (and forget those that are gone)."""
        present = set(self.plugins_dir.glob(f"*/{DEVINFO_FILE}"))
        for path in sorted(present | set(self._seen)):
            await self._safely(self.handle(path))

    async def handle(self, path: Path) -> None:
        """React to the current content of one .devinfo file (or to its absence)."""
        plugin_id = path.parent.name
        async with self._locks.setdefault(plugin_id, asyncio.Lock()):
            signature = _signature(path)
            if signature is None:
                self._seen.pop(path, None)
                if plugin_id in self.attached:
                    await self._detach(plugin_id, ".devinfo removed")
                return
            if self._seen.get(path) == signature:
                return
            self._seen[path] = signature
            try:
                validate_plugin_id(plugin_id)
                info = await self._read(path)
                if info.plugin_id and info.plugin_id != plugin_id:
                    raise DevInfoError(
                        f"{path}: pluginId {info.plugin_id!r} does not match the directory"
                    )
            except PlughostError as exc:
                self._report(plugin_id, path, exc, signature)
                if plugin_id in self.attached:
                    await self._detach(plugin_id, f"{path.name} is no longer valid")
                return
            await self._attach(plugin_id, path, info)

    async def _read(self, path: Path) -> DevInfo:
        try:
            return read_devinfo(path)
        except StaleDevInfoError:
            raise
        except DevInfoError:
            # A writer that does not rename into place may be half-way: look once more.
            age = time.time() - path.stat().st_mtime if path.exists() else 1.0
            if age > 0.5:
                raise
            await asyncio.sleep(0.1)
            return read_devinfo(path)

    def _report(
        self, plugin_id: str, path: Path, exc: PlughostError, signature: object = None
    ) -> None:
        key = (path, exc.type, signature)
        if key in self._reported:
            return
        self._reported.add(key)
        log.warning("%s", exc.detail)
        with contextlib.suppress(Exception):
            self._table.logs.host_log(plugin_id, "warn", exc.detail)
        self._table.bus.publish(
            EVENT_DEVSERVER_ERROR,
            {
                "pluginID": plugin_id,
                "mode": "external",
                "path": str(path),
                "type": exc.type,
                "error": exc.detail,
                "suggestions": list(exc.suggestions),
            },
        )

    # -- attach / detach -------------------------------------------------------------
    async def _attach(self, plugin_id: str, path: Path, info: DevInfo) -> None:
        table = self._table
        config = info.reattach_config()
        current = self.attached.get(plugin_id)
        backend = table.backend(plugin_id)
        if current is not None and current.reattach_config() == config and backend is not None:
            return  # the same process rewrote its file
        if plugin_id not in table and not (path.parent / METADATA_FILE).is_file():
            self._report(
                plugin_id,
                path,
                DevInfoError(
                    f"{path}: plugin {plugin_id!r} is not installed (no {METADATA_FILE} "
                    f"in {path.parent})",
                    suggestions=["install the plugin in dev mode first"],
                ),
                _signature(path),
            )
            return

        def create() -> PluginRecord:
            return PluginRecord.new(load_meta(path.parent), Phase.INSTALLED)

        try:
            async with table.exclusive(plugin_id, create=create) as slot:
                await slot.stop("unload")  # a spawned instance, or an older attach
                if slot.phase is Phase.BUILD_FAILED:
                    slot.change(Phase.FAILED, "external instance announced")
                options = LoadPluginOptions(
                    dev_mode=True, dev_mode_path=slot.record.dev_path, reattach=config
                )
                await slot.start(options)
        except PlughostError as exc:
            self.attached.pop(plugin_id, None)
            self._report(plugin_id, path, exc, _signature(path))
            return
        self.attached[plugin_id] = info
        self.healthy[plugin_id] = True
        table.logs.host_log(
            plugin_id, "info", f"attached to process {info.pid} at {info.addr} (.devinfo)"
        )
        if self.on_change is not None:
            self.on_change(plugin_id, info)

    async def _detach(self, plugin_id: str, reason: str) -> None:
        info = self.attached.pop(plugin_id, None)
        self.healthy.pop(plugin_id, None)
        if isinstance(self._table.backend(plugin_id), AttachedBackend):
            with contextlib.suppress(PlughostError):
                async with self._table.exclusive(plugin_id) as slot:
                    await slot.stop("unload")
                await self._table.persist()
        if info is not None:
            self._table.logs.host_log(
                plugin_id, "info", f"detached from process {info.pid}: {reason}"
            )
            if self.on_change is not None:
                self.on_change(plugin_id, None)

    async def check_now(self) -> None:
        """One round of checks: pid alive and health answering, files still there."""
        for plugin_id, info in list(self.attached.items()):
            path = self.plugins_dir / plugin_id / DEVINFO_FILE
            backend = self._table.backend(plugin_id)
            if not pid_alive(info.pid):
                async with self._locks.setdefault(plugin_id, asyncio.Lock()):
                    self._seen.pop(path, None)  # so the next scan reports the file as stale
                    await self._detach(plugin_id, f"process {info.pid} exited")
                continue
            if not path.exists() or not isinstance(backend, AttachedBackend):
                async with self._locks.setdefault(plugin_id, asyncio.Lock()):
                    await self._detach(plugin_id, "no longer attached")
                continue
            healthy = await backend.healthy(self.health_timeout)
            if healthy != self.healthy.get(plugin_id):
                self.healthy[plugin_id] = healthy
                if not healthy:
                    self._report(
                        plugin_id,
                        path,
                        NotAnsweringError(
                            f"process {info.pid} does not answer health checks "
                            "(paused in a debugger?)"
                        ),
                        time.monotonic(),
                    )
                if self.on_health is not None:
                    self.on_health(plugin_id, healthy)
        await self.scan()
