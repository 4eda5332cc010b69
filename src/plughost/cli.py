"""The ``plughost`` command line: run the host, manage plugins, use the marketplace.

Every command that reads or changes a root talks to the host's local service
when a ``plughost run`` holds that root (its socket answers ``/v1/health``),
and otherwise acts on the root directly (a one-shot PluginManager that starts
no plugin). Every PlughostError is printed as title, detail and suggestions
(``--json``: ``{"error": {...}}``) with exit status 1.

Heavy modules (the manager, FastAPI, the registry) are imported by the
commands that need them, so ``plughost list`` starts fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from ._client import ServiceClient, error_from_problem
from .errors import (
    InternalError,
    PlughostError,
    PluginInstallError,
    PluginLoadError,
    PluginNotFoundError,
    PluginNotLoadedError,
    ValidationError,
)
from .paths import PROFILES, RootLayout, resolve_root

if TYPE_CHECKING:
    from .manager import PluginManager
    from .records import PluginInfo

__all__ = ["app", "main"]

app = typer.Typer(
    name="plughost",
    help="Install, run and supervise plugins as separate processes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
registry_app = typer.Typer(
    help="Host your own marketplace: a registry served from a directory.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

T = TypeVar("T")
Progress = Callable[[int, int | None], None]

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="plugin root (default: $PLUGHOST_HOME, else per user)", show_default=False
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="'omniview' manages an Omniview root (~/.omniview)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]

PHASE_STYLE = {
    "Running": "green",
    "Degraded": "yellow",
    "Recovering": "yellow",
    "Starting": "cyan",
    "Failed": "red",
    "BuildFailed": "red",
    "Stopped": "dim",
}
LEVELS = ("trace", "debug", "info", "warn", "error")
LEVEL_STYLE = {"trace": "dim", "debug": "dim", "info": "", "warn": "yellow", "error": "red"}
SPARK = "▁▂▃▄▅▆▇█"


# --------------------------------------------------------------------------- plumbing
_GLOBAL_OPTIONS: dict[str, Any] = {}


@app.callback()
def _options(root: RootOpt = None, profile: ProfileOpt = None) -> None:
    """plughost: a plugin host. Options given here apply to every command."""
    _GLOBAL_OPTIONS.update(root=root, profile=profile)


@dataclasses.dataclass(frozen=True)
class Target:
    """The root a command works on."""

    layout: RootLayout
    profile: str | None

    @property
    def root(self) -> Path:
        return self.layout.root


def _target(root: Path | None, profile: str | None) -> Target:
    root = root or _GLOBAL_OPTIONS.get("root")
    profile = profile or _GLOBAL_OPTIONS.get("profile")
    if profile is not None and profile not in PROFILES:
        raise ValidationError(
            f"unknown profile {profile!r}; expected one of: {', '.join(PROFILES)}",
            title="Unknown profile",
        )
    return Target(RootLayout(resolve_root(root, profile)), profile)


def _print_error(exc: PlughostError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": exc.to_dict()}, indent=2))
        return
    who = f" ({exc.plugin_id})" if exc.plugin_id else ""
    err_console.print(f"[bold red]error[/]: [bold]{escape(exc.title)}[/]{escape(who)}")
    for line in exc.detail.splitlines() or [""]:
        err_console.print(f"  {escape(line)}")
    for hint in exc.suggestions:
        err_console.print(f"  [cyan]hint[/]: {escape(hint)}")


@contextlib.contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    try:
        yield
    except PlughostError as exc:
        _print_error(exc, as_json)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except OSError as exc:
        error = InternalError(str(exc), title="System error")
        _print_error(error, as_json)
        raise typer.Exit(1) from None


def _json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _seg(value: str) -> str:
    return quote(value, safe="")


def _fail(exc: PlughostError) -> NoReturn:
    raise exc


def _setup_logging(level: int = logging.WARNING) -> None:
    """Library warnings (and worse) as tidy one-liners on stderr."""
    from rich.logging import RichHandler

    handler = RichHandler(
        console=err_console, show_path=False, show_time=False, rich_tracebacks=False
    )
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler], force=True)


# --------------------------------------------------------------------------- hosts
class Remote:
    """Operations through the running host's local service."""

    online = True

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def list_plugins(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.get("/v1/plugins")
        return result

    def get(self, plugin_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get(f"/v1/plugins/{_seg(plugin_id)}")
        return result

    def action(self, name: str, plugin_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.post(f"/v1/plugins/{_seg(plugin_id)}/{name}")
        return result

    def set_enabled(self, plugin_id: str, enabled: bool) -> dict[str, Any]:
        path = f"/v1/plugins/{_seg(plugin_id)}/enabled"
        result: dict[str, Any] = self.client.request("PUT", path, body={"enabled": enabled})
        return result

    def uninstall(self, plugin_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.request("DELETE", f"/v1/plugins/{_seg(plugin_id)}")
        return result

    def rollback(self, plugin_id: str) -> dict[str, Any]:
        return self.action("rollback", plugin_id)

    def install(self, body: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        for name, data in self.client.stream("POST", "/v1/install", body=body):
            if name == "progress" and progress is not None:
                progress(int(data.get("done", 0)), data.get("total"))
            elif name == "result":
                result: dict[str, Any] = data
                return result
            elif name == "error":
                raise error_from_problem(data, int(data.get("status", 500)))
        raise InternalError("the host ended the install stream without a result")

    def dev(self, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = self.client.post("/v1/dev", {"path": str(path)})
        return result

    def logs(self, plugin_id: str, n: int, grep: str | None, level: str | None) -> list[Any]:
        path = f"/v1/plugins/{_seg(plugin_id)}/logs"
        result: list[Any] = self.client.get(path, n=n, grep=grep, level=level)
        return result

    def follow(self, plugin_id: str) -> Iterator[dict[str, Any]]:
        path = f"/v1/plugins/{_seg(plugin_id)}/logs/stream"
        for name, data in self.client.stream("GET", path):
            if name == "log" and isinstance(data, dict):
                yield data

    def market(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/v1/marketplace{path}", **params)


class Local:
    """Operations on a root no host is running: a one-shot manager that starts nothing."""

    online = False

    def __init__(self, target: Target) -> None:
        self.target = target
        self.layout = target.layout

    def close(self) -> None:
        pass

    # -- helpers -------------------------------------------------------------------
    def _run(self, op: Callable[[PluginManager], Awaitable[T]], *, marketplace: bool = False) -> T:
        from .manager import PluginManager

        async def main() -> T:
            with self._marketplace() if marketplace else contextlib.nullcontext() as url:
                m = PluginManager(
                    self.layout.root, profile=self.target.profile, start_plugins=False
                )
                if url and url != m.settings.marketplace_url.rstrip("/"):
                    m.settings_provider.override(marketplace_url=url)
                await m.initialize()
                try:
                    return await op(m)
                finally:
                    dsm = getattr(m, "_dev_server_manager", None)
                    if dsm is not None and callable(getattr(dsm, "close", None)):
                        await dsm.close()
                    await m.shutdown()

        return asyncio.run(main())

    @contextlib.contextmanager
    def _marketplace(self) -> Iterator[str | None]:
        """Serve the root's bundled registry while the command runs, when it is the marketplace."""
        from ._localregistry import has_registry, owns_marketplace, serve_local_registry

        if owns_marketplace(self.layout) and has_registry(self.layout):
            with serve_local_registry(self.layout) as url:
                yield url
        else:
            yield None

    def _infos(self) -> list[PluginInfo]:
        return _offline_infos(self.layout)

    def _find(self, plugin_id: str) -> PluginInfo:
        from .metadata import validate_plugin_id

        validate_plugin_id(plugin_id)
        for info in self._infos():
            if info.id == plugin_id:
                return info
        raise PluginNotFoundError(
            f"no plugin with id {plugin_id!r} is installed in {self.layout.root}",
            plugin_id=plugin_id,
            suggestions=["list installed plugins with 'plughost list'"],
        )

    def _not_running(self, plugin_id: str, what: str) -> PluginNotLoadedError:
        return PluginNotLoadedError(
            f"no host is running root {self.layout.root}, so there is nothing to {what}",
            plugin_id=plugin_id,
            suggestions=[
                f"start the host: plughost run --root {self.layout.root}",
                "a plugin that failed is started again by the next 'plughost run'",
            ],
        )

    # -- operations ------------------------------------------------------------------
    def list_plugins(self) -> list[dict[str, Any]]:
        return [i.to_json_dict() for i in self._infos()]

    def get(self, plugin_id: str) -> dict[str, Any]:
        return self._find(plugin_id).to_json_dict()

    def action(self, name: str, plugin_id: str) -> dict[str, Any]:
        info = self._find(plugin_id)
        if name == "unload":
            return info.to_json_dict()
        raise self._not_running(plugin_id, name)

    def set_enabled(self, plugin_id: str, enabled: bool) -> dict[str, Any]:
        return self._run(
            lambda m: _info_dict(m.set_enabled(plugin_id, enabled)),
        )

    def uninstall(self, plugin_id: str) -> dict[str, Any]:
        self._find(plugin_id)
        return self._run(lambda m: _info_dict(m.uninstall_plugin(plugin_id)))

    def rollback(self, plugin_id: str) -> dict[str, Any]:
        async def op(m: PluginManager) -> dict[str, Any]:
            meta = await m.rollback_plugin(plugin_id)
            return m.get_plugin(meta.id).to_json_dict()

        return self._run(op)

    def install(self, body: dict[str, Any], progress: Progress | None) -> dict[str, Any]:
        async def op(m: PluginManager) -> dict[str, Any]:
            if body.get("path"):
                meta = await m.install_plugin_from_path(body["path"], progress)
            else:
                plugin_id = str(body["id"])
                version = body.get("version") or await _latest_version(m, plugin_id)
                meta = await m.install_plugin_version(plugin_id, version, progress)
            return m.get_plugin(meta.id).to_json_dict()

        return self._run(op, marketplace=not body.get("path"))

    def dev(self, path: Path) -> dict[str, Any]:
        return self._run(lambda m: _info_dict(m.install_in_dev_mode(path)))

    def _entries(self, plugin_id: str, limit: int = 100_000) -> list[Any]:
        from .logs import PluginLogManager
        from .metadata import validate_plugin_id

        validate_plugin_id(plugin_id)
        logs = PluginLogManager(self.layout.logs)
        entries = logs.read_file_logs(plugin_id, limit)
        if not entries and not self.layout.plugin_dir(plugin_id).is_dir():
            self._find(plugin_id)
        return entries

    def logs(self, plugin_id: str, n: int, grep: str | None, level: str | None) -> list[Any]:
        entries = [e.to_dict() for e in self._entries(plugin_id)]
        return _filter_logs(entries, grep, level)[-n:] if n > 0 else []

    def follow(self, plugin_id: str) -> Iterator[dict[str, Any]]:
        """New lines of ``logs/<id>.log`` as they are written (polling; survives rotation)."""
        from .logs import LogEntry

        path = self.layout.log_file(plugin_id)
        offset = path.stat().st_size if path.exists() else 0
        while True:
            time.sleep(0.25)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size < offset:
                offset = 0  # rotated
            if size == offset:
                continue
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(size - offset)
            cut = data.rfind(b"\n") + 1
            offset += cut
            for line in data[:cut].decode("utf-8", "replace").splitlines():
                with contextlib.suppress(ValueError):
                    yield LogEntry.model_validate_json(line).to_dict()

    def market(self, path: str, **params: Any) -> Any:
        from .registry.client import RegistryClient, enrich
        from .settings import SettingsProvider

        installed = {i.id: i.version for i in self._infos()}

        async def query(url: str | None) -> Any:
            overrides = {"marketplace_url": url} if url else None
            provider = SettingsProvider(self.layout.settings_file, overrides)
            async with RegistryClient(provider) as client:
                parts = path.strip("/").split("/")
                if parts == ["plugins"]:
                    found = await client.search_plugins(
                        params.get("q", ""), params.get("category", ""), params.get("sort", "")
                    )
                    return _dump(enrich(found, installed))
                if parts == ["categories"]:
                    return _dump(await client.list_categories())
                plugin_id = parts[1]
                if len(parts) == 2:
                    return _dump(enrich([await client.get_plugin(plugin_id)], installed)[0])
                if parts[2] == "versions":
                    return _dump(await client.get_release_history(plugin_id))
                if parts[2] == "reviews":
                    return _dump(await client.get_plugin_reviews(plugin_id, params.get("page", 1)))
                totals = await client.get_download_stats(plugin_id)
                daily = await client.get_daily_downloads(plugin_id, params.get("days", 30))
                return {
                    "plugin_id": plugin_id,
                    "total": totals.total_count,
                    "by_version": _dump(totals.by_version or []),
                    "daily": _dump(daily),
                }

        async def main() -> Any:
            with self._marketplace() as url:
                return await query(url)

        return asyncio.run(main())


Host = Remote | Local


async def _info_dict(result: Awaitable[Any]) -> dict[str, Any]:
    info = await result
    data: dict[str, Any] = info.to_json_dict()
    return data


async def _latest_version(m: PluginManager, plugin_id: str) -> str:
    from .service import _latest_version as latest

    return await latest(m, plugin_id)


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _lock_holder(layout: RootLayout) -> int | None:
    """The pid of a live process holding the root (from host.lock), if any."""
    try:
        text = layout.lock_file.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) == os.getpid():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return int(text)


def _host(target: Target, *, wait: bool = False) -> Host:
    """The running host's service, else the root itself.

    ``wait``: when another process holds the root (a host still starting up),
    wait up to 15 s for its service before acting on the root directly.
    """
    client = ServiceClient.connect(target.root)
    if client is not None:
        return Remote(client)
    if wait and _lock_holder(target.layout) is not None:
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline and _lock_holder(target.layout) is not None:
            time.sleep(0.2)
            client = ServiceClient.connect(target.root)
            if client is not None:
                return Remote(client)
    return Local(target)


@contextlib.contextmanager
def _session(
    root: Path | None, profile: str | None, as_json: bool = False, *, wait: bool = False
) -> Iterator[Host]:
    with _errors(as_json):
        host = _host(_target(root, profile), wait=wait)
        try:
            yield host
        finally:
            host.close()


def _offline_infos(layout: RootLayout) -> list[PluginInfo]:
    """What a root holds, read from disk without starting anything."""
    from .reconcile import Reconciler
    from .store import StateFileCorrupt, StateStore

    try:
        persisted = StateStore(layout.root).read() if layout.state_file.exists() else []
    except StateFileCorrupt:
        persisted = []
    result = Reconciler().reconcile(layout.plugins, persisted)
    phases = {p.id: p.phase for p in persisted}
    infos = []
    for record in result.records.values():
        info = record.to_info()
        infos.append(info.model_copy(update={"phase": phases.get(record.id, info.phase)}))
    return sorted(infos, key=lambda i: i.id)


def _filter_logs(entries: list[Any], grep: str | None, level: str | None) -> list[Any]:
    if grep:
        try:
            regex = re.compile(grep)
        except re.error as exc:
            raise ValidationError(
                f"invalid log search pattern {grep!r}: {exc}", title="Invalid search pattern"
            ) from exc
        entries = [e for e in entries if regex.search(_entry_text(e))]
    if level:
        floor = LEVELS.index(_level(level))
        entries = [e for e in entries if LEVELS.index(_level(e.get("level", "info"))) >= floor]
    return entries


def _level(value: str) -> str:
    value = value.strip().lower()
    value = {"warning": "warn", "err": "error", "fatal": "error"}.get(value, value)
    if value not in LEVELS:
        raise ValidationError(
            f"unknown log level {value!r}; expected one of: {', '.join(LEVELS)}",
            title="Invalid log level",
        )
    return value


def _entry_text(entry: dict[str, Any]) -> str:
    fields = entry.get("fields") or {}
    extra = " ".join(f"{k}={v}" for k, v in fields.items() if not str(k).startswith("@"))
    message = str(entry.get("message", ""))
    return f"{message} {extra}" if extra else message


# --------------------------------------------------------------------------- rendering
def _phase(phase: str) -> str:
    style = PHASE_STYLE.get(phase, "")
    return f"[{style}]{phase}[/]" if style else phase


def _plugin_table(infos: list[dict[str, Any]]) -> Table:
    table = Table("ID", "VERSION", "PHASE", "ENABLED", "PID", "CAPABILITIES", "LAST ERROR")
    for i in infos:
        error = (str(i.get("lastError") or "").splitlines() or [""])[0][:60]
        dev = " (dev)" if i.get("devMode") else ""
        table.add_row(
            escape(i["id"]) + dev,
            escape(str(i.get("version", ""))),
            _phase(str(i.get("phase", ""))),
            "yes" if i.get("enabled", True) else "[dim]no[/]",
            str(i.get("pid") or ""),
            escape(", ".join(i.get("capabilities") or [])),
            escape(error),
        )
    return table


def _state_line(info: dict[str, Any]) -> str:
    pid = f", pid {info['pid']}" if info.get("pid") else ""
    return f"{_phase(str(info.get('phase')))}{pid}"


def _print_info(info: dict[str, Any]) -> None:
    meta = info.get("metadata") or {}
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [
        ("id", escape(info["id"])),
        ("name", escape(str(info.get("name", "")))),
        ("version", escape(str(info.get("version", "")))),
        ("phase", _state_line(info)),
        ("enabled", "yes" if info.get("enabled", True) else "no"),
        ("capabilities", escape(", ".join(info.get("capabilities") or []))),
        ("description", escape(str(meta.get("description", "")))),
        ("author", escape(str((meta.get("author") or {}).get("name", "")))),
        ("category", escape(str(meta.get("category", "")))),
        ("installed", escape(str(info.get("installedAt", "")))),
    ]
    if info.get("devMode"):
        rows.append(("dev source", escape(str(info.get("devPath", "")))))
    if info.get("protocolVersion"):
        rows.append(("protocol", str(info["protocolVersion"])))
    if info.get("lastError"):
        rows.append(("last error", f"[red]{escape(str(info['lastError']))}[/]"))
    for key, value in rows:
        if value:
            table.add_row(key, value)
    console.print(table)


def _log_line(entry: dict[str, Any]) -> str:
    level = str(entry.get("level", "info"))
    stamp = str(entry.get("timestamp", ""))[11:23]
    style = LEVEL_STYLE.get(level, "")
    text = escape(_entry_text(entry))
    label = f"{level.upper():5}"
    if style:
        label, text = f"[{style}]{label}[/]", f"[{style}]{text}[/]"
    return f"[dim]{stamp}[/] {label} {text}"


def _progress_bar(label: str, as_json: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )


def _describe(name: str, payload: Any) -> str | None:
    """One readable line for an event of the host (None: not shown)."""
    p = payload if isinstance(payload, dict) else {}
    who = escape(str(p.get("pluginID") or ""))
    if name == "plugin/state_change":
        reason = f" [dim]({escape(str(p['reason']))})[/]" if p.get("reason") else ""
        return f"[bold]{who}[/] {p.get('from')} → {_phase(str(p.get('to')))}{reason}"
    if name == "plugin/crash":
        kind = p.get("kind", "crashed")
        how = ""
        if p.get("signal"):
            how = f" (signal {p['signal']})"
        elif p.get("exitCode") is not None:
            how = f" (exit {p['exitCode']})"
        retry = f"; restarting (attempt {p.get('attempt', 1)} of {p.get('maxAttempts', '?')})"
        if p.get("nextRetryAt") is None:
            retry = ""
        reason = escape(str(p.get("reason", "")))
        return f"[bold red]{who} {kind}[/]{how}: {reason}{retry}"
    if name == "plugin/recovered":
        return f"[bold green]{who} recovered[/] after {p.get('attempt', '?')} attempt(s)"
    if name == "plugin/crash_recovery_failed":
        return f"[bold red]{who} gave up recovering[/]: {escape(str(p.get('reason', '')))}"
    if name == "plugin/install_finished":
        return f"[green]installed[/] {who} {escape(str(p.get('version', '')))}"
    if name == "plugin/install_error":
        error = p.get("error") or {}
        return f"[red]install failed[/]: {escape(str(error.get('detail', error)))}"
    if name == "plugin/update_started":
        return f"downloading {who} {escape(str(p.get('version', '')))} from the marketplace"
    if name == "plugin/update_error":
        error = p.get("error") or {}
        return f"[red]{who} update failed[/]: {escape(str(error.get('detail', error)))}"
    if name == "plugin/init_complete":
        return (
            f"host ready: {p.get('plugins', 0)} plugin(s), {p.get('running', 0)} running, "
            f"{p.get('failed', 0)} failed"
        )
    if name in ("plugin/dev_install_error", "plugin/dev_reload_error", "plugin/devserver/error"):
        return f"[red]{who} {name.rsplit('/', 1)[-1]}[/]: {escape(str(p.get('error', '')))}"
    if name in ("plugin/dev_reload_complete", "plugin/dev_install_complete"):
        return f"[green]{who} {name.rsplit('/', 1)[-1].replace('_', ' ')}[/]"
    if name == "plugin/state_write_error":
        return f"[red]cannot write the state file[/]: {escape(str(p.get('error', '')))}"
    if name == "plugin/deprecated_protocol":
        return f"[yellow]{who} speaks deprecated protocol {p.get('protocolVersion')}[/]"
    return None  # process logs, dev-server chatter, install_started, update_complete


# --------------------------------------------------------------------------- run
async def _run_host(
    target: Target, *, fresh: bool, examples: bool, exit_after: float | None, as_json: bool
) -> None:
    from ._localregistry import (
        has_registry,
        owns_marketplace,
        publish_examples,
        serve_local_registry,
    )
    from .manager import PluginManager
    from .service import LocalService

    layout = target.layout
    manager = PluginManager(layout.root, profile=target.profile)
    dsm = None
    with contextlib.suppress(ImportError):
        from .devmode import dev_server_manager

        dsm = dev_server_manager(manager)  # dev plugins: watchers come back
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stream = manager.bus.stream("plugin/*")

    async def show() -> None:
        async for event in stream:
            if as_json:
                if event.name != "plugin/process/log":
                    print(json.dumps(event.to_dict()), flush=True)
                continue
            line = _describe(event.name, event.payload)
            if line:
                stamp = time.strftime("%H:%M:%S")
                console.print(f"[dim]{stamp}[/] {line}")

    def say(text: str) -> None:
        if not as_json:
            console.print(text)

    printer = asyncio.create_task(show())
    service: LocalService | None = None
    registry = contextlib.ExitStack()
    try:
        await manager.initialize()
        s = manager.settings
        service = LocalService(manager, tcp_port=s.service_port, token=s.service_token or None)
        await service.start()
        owned = owns_marketplace(layout)
        published: list[tuple[str, str, Path]] = []
        if fresh and examples and not stop.is_set():
            try:
                published = await asyncio.to_thread(publish_examples, layout)
            except (PlughostError, OSError) as exc:  # the host runs anyway, without examples
                error = exc if isinstance(exc, PlughostError) else InternalError(str(exc))
                error.title = "Cannot publish the example plugins"
                _print_error(error, as_json)
        if owned and has_registry(layout) and not stop.is_set():
            url = await asyncio.to_thread(registry.enter_context, serve_local_registry(layout))
            say(f"marketplace: the root's bundled registry at {url}")
        for plugin_id, version, package in published:
            if stop.is_set():
                break
            say(f"installing example plugin [bold]{plugin_id}[/] {version}")
            try:
                if owned:
                    await manager.install_plugin_version(plugin_id, version)
                else:  # a marketplace of the user's: install the bundled package itself
                    await manager.install_plugin_from_path(package)
            except PlughostError as exc:
                _print_error(exc, as_json)
        if not as_json:
            console.print(_plugin_table([i.to_json_dict() for i in manager.list_plugins()]))
        say(f"host running on [bold]{escape(str(layout.root))}[/]; API on {service.socket}")
        if service.tcp_address:
            host, port = service.tcp_address
            say(f"API also on http://{host}:{port} (bearer token required)")
        say("Ctrl-C stops the host and every plugin")
        if exit_after is not None:
            loop.call_later(exit_after, stop.set)
        await stop.wait()
        say("stopping plugins ...")
    finally:
        if service is not None:
            await service.stop()
        if dsm is not None:
            await dsm.close()
        await manager.shutdown()
        await asyncio.to_thread(registry.close)
        stream.close()
        await asyncio.gather(printer, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    say("host stopped; no plugin process left running")


def _is_fresh(layout: RootLayout) -> bool:
    return not layout.state_file.exists() and (
        not layout.plugins.is_dir() or not any(layout.plugins.iterdir())
    )


@app.command()
def run(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    examples: Annotated[
        bool,
        typer.Option(help="on a fresh root, install the bundled examples from a local registry"),
    ] = True,
    exit_after: Annotated[
        float | None, typer.Option(help="stop after this many seconds (demos, scripts)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print events as JSON lines")] = False,
) -> None:
    """Run the host in the foreground: load plugins, supervise them, show what happens."""
    with _errors(as_json):
        target = _target(root, profile)
        fresh = _is_fresh(target.layout)
        if fresh and examples and not as_json:
            console.print(f"new root {escape(str(target.root))}: installing the example plugins")
        asyncio.run(
            _run_host(
                target, fresh=fresh, examples=examples, exit_after=exit_after, as_json=as_json
            )
        )


@app.command()
def ui(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    port: Annotated[int, typer.Option(help="127.0.0.1 port (0 = any free port)")] = 0,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open a browser")] = False,
) -> None:
    """Open the running host's web dashboard on 127.0.0.1 (one-time sign-in link)."""
    from .dashboard.serve import run_ui

    with _errors():
        run_ui(root, profile, port=port, open_browser=open_browser, echo=console.print)


# --------------------------------------------------------------------------- plugins
@app.command("list")
def list_(root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List installed plugins and their phase (last known, when no host runs)."""
    with _session(root, profile, as_json) as host:
        infos = host.list_plugins()
        if as_json:
            _json(infos)
            return
        console.print(_plugin_table(infos))
        if not host.online:
            console.print("[dim]no host is running this root: phases are the last known[/]")


@app.command()
def info(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one installed plugin: phase, pid, metadata, last error."""
    with _session(root, profile, as_json) as host:
        data = host.get(plugin_id)
        if as_json:
            _json(data)
        else:
            _print_info(data)


def _parse_spec(spec: str) -> tuple[str, str | None]:
    plugin_id, _, version = spec.partition("@")
    return plugin_id, version or None


def _looks_like_path(target: str) -> bool:
    """A package file (an existing file, a path with '/', a .tar.gz name), not ID[@VERSION]."""
    return (
        Path(target).expanduser().is_file() or "/" in target or target.endswith((".tar.gz", ".tgz"))
    )


def _verify_package_signature(path: Path, public_key: str, settings_file: Path) -> str:
    """Check ``PATH.sig`` (and ``PATH.manifest.json`` when present) against a public key."""
    from . import signing
    from ._localregistry import read_toml
    from .archive import sha256_file

    key = public_key or str(read_toml(settings_file).get("registry_public_key", "")).strip()
    if not key:
        raise ValidationError(
            "--require-signature needs a public key to check against",
            title="No public key",
            suggestions=["pass --public-key HEX, or set registry_public_key in plughost.toml"],
        )
    sig_file = path.with_name(path.name + ".sig")
    if not sig_file.is_file():
        raise signing.UnsignedArtifactError(
            f"{path} has no signature file {sig_file.name}",
            suggestions=["sign it with 'plughost sign PACKAGE --key KEYFILE'"],
        )
    checksum = sha256_file(path)
    signing.verify_checksum_signature(checksum, sig_file.read_text().strip(), key)
    manifest_file = path.with_name(path.name + ".manifest.json")
    if manifest_file.is_file():
        signed = json.loads(manifest_file.read_text())
        trusted = [signing.TrustedKey(key_id=signing.key_id_for(key), public_key_hex=key)]
        manifest = signing.verify_manifest(signed, trusted)
        signing.verify_file(path, manifest)
    return checksum


def _install_one(host: Host, body: dict[str, Any], label: str, as_json: bool) -> dict[str, Any]:
    with _progress_bar(label, as_json) as bar:
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return host.install(body, progress)


def _report_install(host: Host, info: dict[str, Any], verb: str, as_json: bool, root: Path) -> None:
    if as_json:
        _json(info)
    elif host.online:
        console.print(
            f"{verb} [bold]{escape(info['id'])}[/] {escape(str(info.get('version')))}: "
            f"{_state_line(info)}"
        )
    else:
        console.print(
            f"{verb} [bold]{escape(info['id'])}[/] {escape(str(info.get('version')))} "
            f"into {escape(str(root))}; not started: no host is running this root "
            "('plughost run' starts it)"
        )
    if host.online and info.get("phase") == "Failed" and info.get("enabled", True):
        _fail(
            PluginLoadError(
                f"{verb}, but it did not start: {info.get('lastError', '')}",
                title="Plugin failed to start",
                plugin_id=info["id"],
                suggestions=[f"see 'plughost logs {info['id']}'", f"plughost retry {info['id']}"],
            )
        )


@app.command()
def install(
    target: Annotated[
        str, typer.Argument(metavar="PATH|ID[@VERSION]", help="a .tar.gz package or a plugin id")
    ],
    require_signature: Annotated[
        bool,
        typer.Option(
            "--require-signature",
            help="for a package file: refuse it unless PATH.sig verifies with the public key",
        ),
    ] = False,
    public_key: Annotated[
        str, typer.Option("--public-key", help="64 hex chars (default: registry_public_key)")
    ] = "",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install (or update) a plugin from a package file or from the marketplace."""
    with _session(root, profile, as_json, wait=True) as host:
        if _looks_like_path(target):
            path = Path(target).expanduser().resolve()
            if require_signature:
                if not path.is_file():
                    raise PluginInstallError(f"{path}: no such file")
                layout = _target(root, profile).layout
                _verify_package_signature(path, public_key, layout.settings_file)
                if not as_json:
                    err_console.print(f"signature of {path.name} verified")
            body: dict[str, Any] = {"path": str(path)}
            label = f"installing {path.name}"
        else:
            plugin_id, version = _parse_spec(target)
            body = {"id": plugin_id, "version": version}
            label = f"downloading {plugin_id}"
        info = _install_one(host, body, label, as_json)
        _report_install(host, info, "installed", as_json, _target(root, profile).root)


@app.command()
def uninstall(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: YesOpt = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a plugin and remove it with its logs."""
    with _session(root, profile, as_json, wait=True) as host:
        current = host.get(plugin_id)
        if not yes:
            typer.confirm(
                f"Uninstall {current['id']} {current.get('version', '')}?", abort=True, err=True
            )
        info = host.uninstall(plugin_id)
        if as_json:
            _json(info)
        else:
            console.print(f"uninstalled [bold]{escape(plugin_id)}[/]")


def _simple_action(name: str, verb: str, plugin_id: str, root: Path | None, profile: str | None,
                   as_json: bool) -> None:  # fmt: skip
    with _session(root, profile, as_json, wait=True) as host:
        info = host.action(name, plugin_id)
        if as_json:
            _json(info)
        else:
            console.print(f"{verb} [bold]{escape(plugin_id)}[/]: {_state_line(info)}")
            if info.get("phase") == "Failed" and info.get("lastError"):
                err_console.print(f"  [red]{escape(str(info['lastError']))}[/]")
        if info.get("phase") == "Failed":
            raise typer.Exit(1)


@app.command()
def reload(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a running plugin and start it again."""
    _simple_action("reload", "reloaded", plugin_id, root, profile, as_json)


@app.command()
def retry(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a failed plugin again, with a fresh crash budget."""
    _simple_action("retry", "retried", plugin_id, root, profile, as_json)


def _set_enabled(plugin_id: str, enabled: bool, root: Path | None, profile: str | None,
                 as_json: bool) -> None:  # fmt: skip
    with _session(root, profile, as_json, wait=True) as host:
        info = host.set_enabled(plugin_id, enabled)
        if as_json:
            _json(info)
            return
        word = "enabled" if enabled else "disabled"
        note = "" if host.online or not enabled else "; 'plughost run' will not start it"
        if enabled and not host.online:
            note = "; 'plughost run' will start it"
        console.print(f"{word} [bold]{escape(plugin_id)}[/]: {_state_line(info)}{note}")


@app.command()
def enable(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Enable a plugin (and start it when a host runs); remembered across restarts."""
    _set_enabled(plugin_id, True, root, profile, as_json)


@app.command()
def disable(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Disable a plugin (and stop it); a disabled plugin is not started."""
    _set_enabled(plugin_id, False, root, profile, as_json)


@app.command()
def rollback(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Go back to the version the last install replaced."""
    with _session(root, profile, as_json, wait=True) as host:
        info = host.rollback(plugin_id)
        _report_install(host, info, "rolled back to", as_json, _target(root, profile).root)


@app.command()
def logs(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="how many lines", min=0)] = 50,
    grep: Annotated[
        str | None, typer.Option("--grep", help="only lines matching this regex")
    ] = None,
    level: Annotated[
        str | None, typer.Option("--level", help="only this level and above (info, warn, error)")
    ] = None,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a plugin's recent log lines (-f: and follow them)."""
    with _session(root, profile, as_json) as host:
        if level:
            level = _level(level)
        if grep:
            _filter_logs([], grep, None)  # a bad regex fails here, before any output
        entries = host.logs(plugin_id, lines, grep, level) if lines else []
        for entry in entries:
            if as_json:
                print(json.dumps(entry), flush=True)
            else:
                console.print(_log_line(entry))
        if not follow:
            return
        with contextlib.suppress(KeyboardInterrupt):
            for entry in host.follow(plugin_id):
                if not _filter_logs([entry], grep, level):
                    continue
                if as_json:
                    print(json.dumps(entry), flush=True)
                else:
                    console.print(_log_line(entry))


@app.command()
def events(
    pattern: Annotated[str, typer.Option(help="event names to show (glob)")] = "plugin/*",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow the running host's events (state changes, crashes, installs ...)."""
    with _session(root, profile, as_json) as host:
        if not isinstance(host, Remote):
            _fail(
                PluginNotLoadedError(
                    f"no host is running root {host.layout.root}",
                    title="No running host",
                    suggestions=["start one with 'plughost run'"],
                )
            )
        with contextlib.suppress(KeyboardInterrupt):
            for name, data in host.client.stream("GET", "/v1/events", params={"pattern": pattern}):
                if as_json:
                    print(json.dumps(data), flush=True)
                    continue
                payload = data.get("payload", {}) if isinstance(data, dict) else {}
                line = _describe(name, payload)
                if line:
                    console.print(line)


@app.command()
def dev(
    path: Annotated[Path, typer.Argument(help="the plugin's source directory")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install a plugin from its source tree in dev mode: built, run, rebuilt on save."""
    with _session(root, profile, as_json, wait=True) as host:
        info = host.dev(path.expanduser().resolve())
        failed = info.get("phase") in ("BuildFailed", "Failed")
        if as_json:
            _json(info)
        elif host.online:
            console.print(
                f"dev install of [bold]{escape(info['id'])}[/] from {escape(str(path))}: "
                f"{_state_line(info)}"
            )
            if not failed:
                console.print("watching the source: saving a file rebuilds and reloads it")
        else:
            result = "build failed" if failed else "built, and started once to check it"
            console.print(
                f"dev install of [bold]{escape(info['id'])}[/] from {escape(str(path))}: "
                f"{result}; no host is running this root: 'plughost run' runs it and "
                "rebuilds it on save"
            )
        if failed:
            if not as_json and info.get("lastError"):
                err_console.print(f"[red]{escape(str(info['lastError']))}[/]")
            raise typer.Exit(1)


# --------------------------------------------------------------------------- marketplace
def _stars(rating: float) -> str:
    full = round(rating)
    return "★" * full + "☆" * (5 - full)


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="words to look for (name, description, tags)")] = "",
    category: Annotated[str, typer.Option(help="only this category")] = "",
    sort: Annotated[
        str, typer.Option(help="downloads, rating, name, updated, newest ('-' reverses)")
    ] = "",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the marketplace."""
    with _session(root, profile, as_json) as host:
        found = host.market("/plugins", q=query, category=category, sort=sort)
        if as_json:
            _json(found)
            return
        if not found:
            console.print("no plugin matches")
            return
        table = Table("ID", "NAME", "LATEST", "INSTALLED", "CATEGORY", "DOWNLOADS", "RATING")
        for p in found:
            installed = str(p.get("installed_version") or "")
            if p.get("update_available"):
                installed += " [yellow](update)[/]"
            table.add_row(
                escape(p["id"]),
                escape(str(p.get("name", ""))),
                escape(str(p.get("latest_version", ""))),
                installed,
                escape(str(p.get("category", ""))),
                str(p.get("download_count", 0)),
                f"{_stars(float(p.get('average_rating') or 0))} ({p.get('review_count', 0)})",
            )
        console.print(table)


def _sparkline(counts: list[int]) -> str:
    top = max(counts or [0])
    if top == 0:
        return SPARK[0] * len(counts)
    return "".join(SPARK[min(len(SPARK) - 1, round(c / top * (len(SPARK) - 1)))] for c in counts)


@app.command()
def show(
    plugin_id: Annotated[str, typer.Argument(metavar="ID")],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a marketplace plugin: readme, versions, reviews, downloads."""
    from rich.markdown import Markdown
    from rich.panel import Panel

    with _session(root, profile, as_json) as host:
        base = f"/plugins/{_seg(plugin_id)}"
        plugin = host.market(base)
        versions = host.market(f"{base}/versions")
        reviews = host.market(f"{base}/reviews", page=1)
        stats = host.market(f"{base}/stats")
        if as_json:
            _json({"plugin": plugin, "versions": versions, "reviews": reviews, "stats": stats})
            return
        head = Table.grid(padding=(0, 2))
        head.add_column(style="bold")
        head.add_column()
        installed = str(plugin.get("installed_version") or "not installed")
        if plugin.get("update_available"):
            installed += f" [yellow](update to {plugin.get('latest_version')} available)[/]"
        for key, value in (
            ("latest", escape(str(plugin.get("latest_version", "")))),
            ("installed", installed),
            ("publisher", escape(str(plugin.get("publisher_name", "")))),
            ("category", escape(str(plugin.get("category", "")))),
            ("tags", escape(", ".join(plugin.get("tags") or []))),
            ("license", escape(str(plugin.get("license", "")))),
            ("rating", f"{_stars(float(plugin.get('average_rating') or 0))} "
                       f"{float(plugin.get('average_rating') or 0):.1f} "
                       f"({plugin.get('review_count', 0)} reviews)"),
            ("downloads", str(stats.get("total", 0))),
        ):  # fmt: skip
            if value:
                head.add_row(key, value)
        title = f"{plugin.get('name') or plugin['id']} ({plugin['id']})"
        console.print(
            Panel(head, title=escape(title), subtitle=escape(plugin.get("description", "")))
        )
        if plugin.get("readme"):
            console.print(Panel(Markdown(plugin["readme"]), title="README"))
        table = Table("VERSION", "RELEASED", "PLATFORMS", "CHANGELOG", title="Versions")
        for v in versions:
            changelog = (str(v.get("changelog") or "").splitlines() or [""])[0][:60]
            table.add_row(
                escape(v["version"]),
                str(v.get("created_at") or "")[:10],
                escape(", ".join(v.get("platforms") or [])),
                escape(changelog),
            )
        console.print(table)
        if reviews:
            console.print("[bold]Reviews[/]")
            for r in reviews:
                console.print(
                    f"  [yellow]{_stars(float(r.get('rating', 0)))}[/] "
                    f"[bold]{escape(str(r.get('title', '')))}[/] "
                    f"[dim]{str(r.get('created_at') or '')[:10]}[/]"
                )
                if r.get("body"):
                    console.print(f"    {escape(str(r['body']))}")
        else:
            console.print("[dim]no reviews yet[/]")
        by_version = ", ".join(
            f"{escape(str(b['version']))}: {b['count']}" for b in stats.get("by_version") or []
        )
        daily = [int(d.get("count", 0)) for d in stats.get("daily") or []]
        console.print(f"[bold]Downloads[/] {stats.get('total', 0)} total ({by_version or 'none'})")
        if daily:
            console.print(f"  last {len(daily)} days: {_sparkline(daily)}")


@app.command()
def update(
    plugin_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="update every plugin that has an update")
    ] = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install the newest marketplace version of a plugin (or of all, with --all)."""
    with _session(root, profile, as_json, wait=True) as host:
        if plugin_id:
            plugin = host.market(f"/plugins/{_seg(plugin_id)}")
            if not plugin.get("installed"):
                _fail(
                    PluginNotFoundError(
                        f"{plugin_id} is not installed",
                        plugin_id=plugin_id,
                        suggestions=[f"install it: plughost install {plugin_id}"],
                    )
                )
            candidates = [plugin] if plugin.get("update_available") else []
            if not candidates and not as_json:
                console.print(
                    f"{escape(plugin_id)} is up to date ({plugin.get('installed_version')})"
                )
        else:
            available = host.market("/plugins")
            candidates = [p for p in available if p.get("update_available")]
            if not all_:
                if as_json:
                    _json({"updates": candidates, "updated": []})
                    return
                if not candidates:
                    console.print("every installed plugin is up to date")
                for p in candidates:
                    console.print(
                        f"{escape(p['id'])}: {p.get('installed_version')} → {p.get('latest_version')}"
                    )
                if candidates:
                    console.print(
                        "run 'plughost update --all' (or 'plughost update ID') to install"
                    )
                return
        updated = []
        for p in candidates:
            body = {"id": p["id"], "version": p["latest_version"]}
            info = _install_one(host, body, f"downloading {p['id']}", as_json)
            updated.append(info)
            if not as_json:
                _report_install(host, info, "updated", False, _target(root, profile).root)
        if as_json:
            _json({"updates": candidates, "updated": updated})
        elif all_ and not candidates:
            console.print("every installed plugin is up to date")


# --------------------------------------------------------------------------- packages
@app.command()
def pack(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="the plugin's source tree")],
    out: Annotated[
        Path | None, typer.Option("-o", "--out", help="package file (default ./ID-VERSION.tar.gz)")
    ] = None,
    build: Annotated[
        bool, typer.Option(help="run the plugin's build first (dev.build, or go build)")
    ] = True,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a plugin package (.tar.gz) from a source tree."""
    import shutil
    import tempfile

    from .archive import pack as pack_tree
    from .archive import sha256_file
    from .builder import PluginBuilder, plan_build
    from .metadata import load_meta

    with _errors(as_json):
        source = directory.expanduser().resolve()
        meta = load_meta(source)
        plan = plan_build(source, meta)
        target = (out or Path.cwd()).expanduser()
        if out is None or target.is_dir():
            target = target / f"{meta.id}-{meta.version}.tar.gz"
        with tempfile.TemporaryDirectory(prefix="plughost-pack-") as tmp:
            tree = source
            if build and plan.command is not None:
                from .settings import SettingsProvider

                settings = SettingsProvider(_target(root, profile).layout.settings_file).settings
                tree = Path(tmp) / meta.id
                if not as_json:
                    err_console.print(f"building {meta.id}: {plan.command}")
                builder = PluginBuilder(settings=settings)
                result = asyncio.run(builder.build(source, tree, meta))
                if not result.ok:
                    raise result.error(meta.id) or InternalError("build failed")
                for extra in ("README.md", "LICENSE"):
                    if (source / extra).is_file():
                        shutil.copy2(source / extra, tree / extra)
            pack_tree(tree, target)
        data: dict[str, Any] = {
            "path": str(target.resolve()),
            "id": meta.id,
            "version": meta.version,
            "sha256": sha256_file(target),
            "size": target.stat().st_size,
        }
        if as_json:
            _json(data)
        else:
            console.print(f"packed {meta.id} {meta.version} → {escape(data['path'])}")
            console.print(f"  sha256 {data['sha256']}, {data['size']} bytes")


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("-o", "--out", help="private key file (PEM)")] = Path(
        "plughost-signing.pem"
    ),
    force: Annotated[bool, typer.Option(help="overwrite an existing key file")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key; prints the public key (64 hex chars)."""
    from .signing import generate_keypair, key_id_for

    with _errors(as_json):
        target = out.expanduser()
        if target.exists() and not force:
            raise ValidationError(
                f"{target} already exists",
                title="Key file exists",
                suggestions=["choose another file with -o, or pass --force to replace it"],
            )
        pem, public_hex = generate_keypair()
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        data = {
            "key_file": str(target),
            "public_key_hex": public_hex,
            "key_id": key_id_for(public_hex),
        }
        if as_json:
            _json(data)
        else:
            print(public_hex)
            err_console.print(f"private key written to {escape(str(target))} (keep it secret)")
            err_console.print(
                'clients trust it with: registry_public_key = "<the hex above>" in plughost.toml'
            )


@app.command()
def sign(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="the .tar.gz to sign")],
    key: Annotated[Path, typer.Option("--key", help="private key file from 'plughost keygen'")],
    platform: Annotated[
        str, typer.Option(help="platform the package is for (default: this machine's)")
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Sign a package: writes PACKAGE.sig (base64) and PACKAGE.manifest.json (signed manifest)."""
    from . import signing
    from .archive import inspect_package, sha256_file
    from .registry.models import current_platform

    with _errors(as_json):
        path = package.expanduser()
        if not path.is_file():
            raise ValidationError(f"{path}: no such file", title="No package")
        private = signing.load_private_key(key.expanduser())
        public_hex = signing.public_key_hex(private)
        meta = inspect_package(path)
        checksum = sha256_file(path)
        signature = signing.sign_checksum(checksum, private)
        manifest = signing.Manifest(
            id=meta.id,
            version=meta.version,
            platform=platform or current_platform(),
            sha256=checksum,
            size=path.stat().st_size,
        )
        signed = signing.sign_manifest(manifest, private)
        sig_file = path.with_name(path.name + ".sig")
        manifest_file = path.with_name(path.name + ".manifest.json")
        sig_file.write_text(signature + "\n")
        manifest_file.write_text(json.dumps(signed, indent=2) + "\n")
        data = {
            "package": str(path),
            "sha256": checksum,
            "signature": signature,
            "signature_file": str(sig_file),
            "manifest_file": str(manifest_file),
            "public_key_hex": public_hex,
            "key_id": signed["key_id"],
        }
        if as_json:
            _json(data)
        else:
            console.print(f"signed {escape(path.name)} (sha256 {checksum})")
            console.print(f"  {escape(str(sig_file))}\n  {escape(str(manifest_file))}")
            console.print(f"  public key {public_hex}")


# --------------------------------------------------------------------------- registry
@registry_app.command("serve")
def registry_serve(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="registry directory")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    base_url: Annotated[str | None, typer.Option(help="public URL, when behind a proxy")] = None,
) -> None:
    """Serve a registry directory as a marketplace (the marketplace HTTP API)."""
    from .registry.index import RegistryIndex
    from .registry.server import run_server

    with _errors():
        directory = directory.expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        _, public_hex, _ = RegistryIndex(directory).signing_key()
        err_console.print(f"registry {escape(str(directory))} on http://{host}:{port}")
        err_console.print(
            f'clients: marketplace_url = "http://{host}:{port}", '
            f'registry_public_key = "{public_hex}"'
        )
        run_server(directory, host, port, base_url=base_url, log_level="warning")


@registry_app.command("publish")
def registry_publish(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="a .tar.gz plugin package")],
    directory: Annotated[Path, typer.Option("--dir", help="registry directory")],
    platform: Annotated[str, typer.Option(help="platform (default: this machine's)")] = "",
    readme: Annotated[
        Path | None, typer.Option(help="Markdown readme (default: the package's README.md)")
    ] = None,
    changelog: Annotated[str, typer.Option(help="what changed in this version")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Add a package to a registry directory, signed with the registry's key."""
    from .registry.index import publish

    with _errors(as_json):
        result = publish(
            directory.expanduser(),
            package.expanduser(),
            platform=platform or None,
            readme=readme.read_text() if readme else None,
            changelog=changelog,
        )
        data = {
            "id": result.plugin_id,
            "version": result.version,
            "platform": result.platform,
            "path": str(result.path),
            "sha256": result.sha256,
            "public_key_hex": result.public_key_hex,
            "key_id": result.key_id,
            "created_key": result.created_key,
        }
        if as_json:
            _json(data)
            return
        console.print(
            f"published {escape(result.plugin_id)} {escape(result.version)} ({result.platform})"
        )
        if result.created_key:
            console.print(
                f'new registry key; clients need registry_public_key = "{result.public_key_hex}"'
            )


# --------------------------------------------------------------------------- tooling
@app.command()
def init(
    name: Annotated[str, typer.Argument(help="the plugin id (and directory name)")],
    lang: Annotated[str, typer.Option("--lang", help="python or go")] = "python",
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where to create it (default: here)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new plugin that builds, installs and runs."""
    from .scaffold import scaffold

    with _errors(as_json):
        created = scaffold(name, lang, directory)
        files = sorted(str(p.relative_to(created)) for p in created.rglob("*") if p.is_file())
        if as_json:
            _json({"path": str(created), "id": name, "lang": lang, "files": files})
            return
        console.print(f"created {escape(str(created))} ({lang}): {', '.join(files)}")
        console.print("next:")
        console.print(f"  plughost dev {escape(str(created))}          # run it, rebuilt on save")
        console.print(
            f"  plughost pack {escape(str(created))} && plughost install {name}-0.1.0.tar.gz"
        )


@app.command()
def doctor(root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Check the root, the lock, stale processes, toolchains and the marketplace."""
    from .doctor import run_checks

    with _errors(as_json):
        target = _target(root, profile)
        checks = run_checks(target.root, target.profile)
        problems = [c for c in checks if c.status == "problem"]
        if as_json:
            _json({"ok": not problems, "checks": [c.to_dict() for c in checks]})
        else:
            style = {"ok": "green", "warn": "yellow", "problem": "red"}
            for c in checks:
                console.print(
                    f"[{style[c.status]}]{c.status:7}[/] [bold]{c.name}[/]: {escape(c.detail)}"
                )
                if c.fix and c.status != "ok":
                    console.print(f"         [cyan]fix[/]: {escape(c.fix)}")
            summary = f"{len(problems)} problem(s)" if problems else "no problems"
            console.print(summary)
        if problems:
            raise typer.Exit(1)


@app.command()
def version() -> None:
    """Print plughost's version."""
    print(__version__)


def main() -> None:
    _setup_logging()
    app()


if __name__ == "__main__":
    main()
