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
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import psutil
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import PlughostError, PluginLoadError, PluginNotFoundError, ValidationError
from ..events import EVENT_DEVSERVER_ERROR, EVENT_STATE_CHANGE
from ..host.slot import LoadPluginOptions
from ..metadata import METADATA_FILE, load_meta, validate_plugin_id
from ..phases import Phase
from ..process.attach import AttachedBackend, ReattachConfig
from ..process.handshake import build_plugin_env, looks_like_handshake, parse_handshake
from ..records import PluginRecord
from ..store import atomic_write_text

if TYPE_CHECKING:
    from ..host.table import PluginTable
    from ..paths import RootLayout
    from ..settings import Settings

__all__ = [
    "ATTACHED_LINE",
    "DEVINFO_FILE",
    "DevInfo",
    "DevInfoError",
    "DevInfoWatcher",
    "NotAnsweringError",
    "StaleDevInfoError",
    "attach_environment",
    "check_attachable",
    "devinfo_from_handshake",
    "pid_alive",
    "read_devinfo",
    "run_attached",
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


# -- run by hand, announced for the plugin (plughost attach ID -- CMD) --------------------------
ATTACHED_LINE = "attached: the host (if running) picks it up; Ctrl-C stops it"
_DEV_SWITCH = {"omniview": "OMNIVIEW_DEV", "plughost": "PLUGHOST_DEV"}


def _exit_status(returncode: int) -> int:
    """A shell's exit status for a child's return code (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


def _signal_tree(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and to its descendants in its process group: what the terminal
    does on Ctrl-C (``go run`` ignores SIGINT and leaves it to the program it runs)."""
    targets = [pid]
    with contextlib.suppress(psutil.Error, OSError):
        group = os.getpgid(pid)
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(OSError):
                if os.getpgid(child.pid) == group:
                    targets.append(child.pid)
    for target in targets:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(target, sig)


def _terminal_signalled_us() -> bool:
    """True when a Ctrl-C typed now reached our whole process group (the child's too):
    stdin is a terminal whose foreground group is ours."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


def attach_environment(
    settings: Settings,
    plugin_id: str,
    *,
    socket_dir: str,
    devinfo_path: Path,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """What a plugin run by hand gets: the developer's environment (it is their command:
    ``go run`` needs GOPATH and the rest) without go-plugin variables of their shell, plus
    what the host would give it (the profile's magic cookie, protocol versions, ports, a
    socket dir) and the profile's dev switch (``OMNIVIEW_DEV=1`` / ``PLUGHOST_DEV=1``: the
    SDKs then leave Ctrl-C to the developer). No AutoMTLS: a .devinfo carries no
    certificate."""
    source = dict(os.environ if host_env is None else host_env)
    inherited = {
        k: v for k, v in source.items() if not k.startswith(("PLUGIN_", "PLUGHOST_DEVINFO"))
    }
    extra = {
        "PLUGHOST_PYTHON": sys.executable,
        "PLUGHOST_TRANSPORT": settings.transport,
        **settings.extra_env,
        _DEV_SWITCH[settings.profile]: "1",
    }
    if settings.profile == "plughost":
        extra["PLUGHOST_DEVINFO"] = str(devinfo_path)  # the Python SDK's file: the same one
    return build_plugin_env(
        cookie_key=settings.effective_cookie_key,
        cookie_value=plugin_id,
        plugin_id=plugin_id,
        protocol_versions=settings.protocol_versions,
        min_port=settings.min_port,
        max_port=settings.max_port,
        socket_dir=socket_dir,
        allow=inherited.keys(),
        extra=extra,
        host_env=inherited,
    )


def check_attachable(layout: RootLayout, plugin_id: str) -> Path:
    """The plugin's .devinfo path, once sure the plugin is installed and nothing live
    already announced itself there."""
    validate_plugin_id(plugin_id)
    plugin_dir = layout.plugin_dir(plugin_id)
    if not (plugin_dir / METADATA_FILE).is_file():
        raise PluginNotFoundError(
            f"plugin {plugin_id!r} is not installed in {layout.root} (no {METADATA_FILE} in "
            f"{plugin_dir}): the host attaches only to installed plugins",
            plugin_id=plugin_id,
            suggestions=[
                "install it from its source tree: plughost dev PATH (same --root/--profile)",
                "or from a package or the registry: plughost install SOURCE",
            ],
        )
    path = plugin_dir / DEVINFO_FILE
    try:
        live = read_devinfo(path)
    except DevInfoError:
        return path  # none, stale or broken: ours replaces it
    raise DevInfoError(
        f"{path}: process {live.pid} already announced {plugin_id!r} at {live.addr}",
        title="Plugin already run by hand",
        plugin_id=plugin_id,
        suggestions=[f"stop that process first (kill -INT {live.pid}), then run this again"],
    )


async def run_attached(
    layout: RootLayout,
    plugin_id: str,
    command: Sequence[str],
    settings: Settings,
    *,
    say: Callable[[str], None] | None = None,
    on_attached: Callable[[DevInfo, Path], None] | None = None,
    stdout: BinaryIO | None = None,
    interrupt: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> int:
    """Run ``command`` (the plugin, ``go run``, a debugger) in the foreground for the host
    to attach to; return its exit status.

    The child gets the environment the host would give the plugin (``attach_environment``)
    and the terminal (stdin, stderr). Its stdout passes through, except the go-plugin
    handshake line: from it ``<root>/plugins/<id>/.devinfo`` is written, so a running host
    attaches (and one started later does). The pid recorded is the child's: the handshake
    names no pid, and with ``go run`` or a debugger the serving process is a descendant
    whose parent lives exactly as long as it does, which is what the host's liveness check
    needs. Ctrl-C (SIGINT, or ``interrupt`` set) removes the file at once (the host lets
    go) and passes SIGINT to the child and its descendants unless the terminal already
    did; a second Ctrl-C sends SIGTERM, a third SIGKILL; SIGTERM and SIGHUP are passed on.
    When the child exits, the file is removed if it is still the one written here.
    ``say`` prints plughost's lines (stderr by default); ``on_attached``, when given,
    replaces the "attached" line.
    """
    path = check_attachable(layout, plugin_id)
    if not command:
        raise ValidationError("no command to run: plughost attach ID -- CMD [ARGS...]")
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    out = stdout or sys.stdout.buffer
    version = ""
    with contextlib.suppress(PlughostError):
        version = load_meta(layout.plugin_dir(plugin_id)).version
    socket_dir = tempfile.mkdtemp(prefix="plughost-attach-")
    env = attach_environment(settings, plugin_id, socket_dir=socket_dir, devinfo_path=path)
    written: list[str] = []  # the content of the .devinfo written here, while it stands
    announced = False

    def remove_ours() -> None:
        with contextlib.suppress(OSError):
            if written and path.read_text() == written[0]:
                path.unlink()
        written.clear()

    try:
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, limit=1024 * 1024
        )
    except OSError as exc:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise PluginLoadError(
            f"cannot run {command[0]}: {exc.strerror or exc}",
            plugin_id=plugin_id,
            suggestions=["check the command, or give the path of the plugin's executable"],
        ) from exc
    assert proc.stdout is not None
    loop = asyncio.get_running_loop()
    presses = 0

    def on_interrupt(from_terminal: bool) -> None:
        nonlocal presses
        presses += 1
        remove_ours()
        if proc.returncode is not None:
            return
        sig = {1: signal.SIGINT, 2: signal.SIGTERM}.get(presses, signal.SIGKILL)
        if presses == 1:
            say(f"stopping {plugin_id} (Ctrl-C again terminates it)")
        if not (presses == 1 and from_terminal):
            _signal_tree(proc.pid, sig)

    def on_terminate(sig: int) -> None:
        remove_ours()
        if proc.returncode is None:
            _signal_tree(proc.pid, sig)

    installed: list[int] = []
    if handle_signals:
        loop.add_signal_handler(signal.SIGINT, lambda: on_interrupt(_terminal_signalled_us()))
        installed.append(signal.SIGINT)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, on_terminate, sig)
            installed.append(sig)

    async def watch_interrupt() -> None:
        assert interrupt is not None
        await interrupt.wait()
        on_interrupt(False)

    async def pump() -> None:
        nonlocal announced
        assert proc.stdout is not None
        handshake_seen = False
        while True:
            try:
                chunk = await (
                    proc.stdout.read(65536) if handshake_seen else proc.stdout.readline()
                )
            except ValueError:  # a line longer than the limit: not a handshake
                chunk = await proc.stdout.read(65536)
            if not chunk:
                return
            text = chunk.decode(errors="replace")
            if handshake_seen or not looks_like_handshake(text):
                out.write(chunk)
                out.flush()
                continue
            handshake_seen = True
            try:
                info = devinfo_from_handshake(
                    text,
                    pid=proc.pid,
                    plugin_id=plugin_id,
                    version=version,
                    offered_versions=settings.protocol_versions,
                )
            except PlughostError as exc:
                say(f"error: {exc.detail}")
                on_interrupt(False)
                continue
            if presses:
                continue  # stopping already: announce nothing
            write_devinfo(path, info)
            written[:] = [info.to_json()]
            announced = True
            if on_attached is not None:
                on_attached(info, path)
            else:
                say(f"{plugin_id}: {ATTACHED_LINE} (pid {proc.pid}, {info.network} {info.addr})")

    watcher = asyncio.create_task(watch_interrupt()) if interrupt is not None else None
    try:
        await pump()
        returncode = await proc.wait()
    finally:
        remove_ours()
        for signum in installed:
            loop.remove_signal_handler(signum)
        if watcher is not None:
            watcher.cancel()
        if proc.returncode is None:
            _signal_tree(proc.pid, signal.SIGKILL)
            with contextlib.suppress(asyncio.CancelledError):
                await proc.wait()
        shutil.rmtree(socket_dir, ignore_errors=True)
    if not presses:
        before = "" if announced else " before its handshake"
        say(f"{plugin_id}: {command[0]} exited{before} (status {_exit_status(returncode)})")
    return _exit_status(returncode)
