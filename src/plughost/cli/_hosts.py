"""The session a command works through: the running host's service, else the root itself.

Every command that reads or changes a root talks to the host's local service
when a ``plughost run`` holds that root (its socket answers ``/v1/health``),
and otherwise acts on the root directly (a one-shot PluginManager that starts
no plugin). ``Remote`` and ``Local`` offer the same operations, so a command
is written once for both; ``session`` picks one and reports errors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InternalError, PluginNotFoundError, PluginNotLoadedError, ValidationError
from ..lock import RootLock
from ..paths import RootLayout
from ..service.client import ServiceClient, error_from_problem
from ._common import Target, handle_errors, resolve_target, segment

if TYPE_CHECKING:
    from ..host.manager import PluginManager
    from ..records import PluginInfo

__all__ = [
    "LEVELS",
    "Host",
    "Local",
    "Progress",
    "Remote",
    "entry_text",
    "filter_logs",
    "normalize_level",
    "session",
]

T = TypeVar("T")
Progress = Callable[[int, int | None], None]

LEVELS = ("trace", "debug", "info", "warn", "error")


class Remote:
    """Operations through the running host's local service."""

    online = True

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def close(self) -> None:
        self.client.close()

    def list_plugins(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.get("/v1/plugins")
        return [{**i, "live": True, "lastSeen": None} for i in result]

    def get(self, plugin_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.get(f"/v1/plugins/{segment(plugin_id)}")
        return {**result, "live": True, "lastSeen": None}

    def action(self, name: str, plugin_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.client.post(f"/v1/plugins/{segment(plugin_id)}/{name}")
        return result

    def set_enabled(self, plugin_id: str, enabled: bool) -> dict[str, Any]:
        path = f"/v1/plugins/{segment(plugin_id)}/enabled"
        result: dict[str, Any] = self.client.request("PUT", path, body={"enabled": enabled})
        return result

    def uninstall(self, plugin_id: str) -> dict[str, Any]:
        path = f"/v1/plugins/{segment(plugin_id)}"
        result: dict[str, Any] = self.client.request("DELETE", path)
        return result

    def rollback(self, plugin_id: str) -> dict[str, Any]:
        return self.action("rollback", plugin_id)

    def grant(self, plugin_id: str) -> dict[str, Any]:
        return self.client.grant_permissions(plugin_id)

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
        path = f"/v1/plugins/{segment(plugin_id)}/logs"
        result: list[Any] = self.client.get(path, n=n, grep=grep, level=level)
        return result

    def follow(self, plugin_id: str) -> Iterator[dict[str, Any]]:
        path = f"/v1/plugins/{segment(plugin_id)}/logs/stream"
        for name, data in self.client.stream("GET", path):
            if name == "log" and isinstance(data, dict):
                yield data

    def market(self, path: str, **params: Any) -> Any:
        return self.client.get(f"/v1/marketplace{path}", **params)

    def introspect(self, plugin_id: str, timeout: float = 5.0) -> dict[str, Any]:
        path = f"/v1/plugins/{segment(plugin_id)}/introspect"
        result: dict[str, Any] = self.client.get(path, timeout=timeout)
        return result

    def call(self, plugin_id: str, method: str, request: Any, timeout: float) -> Any:
        path = f"/v1/plugins/{segment(plugin_id)}/call"
        body = {"method": method, "request": request, "timeout": timeout}
        result = self.client.request("POST", path, body=body, timeout=timeout + 30.0)
        return result["response"] if isinstance(result, dict) else result

    def settings(self, plugin_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.get(f"/v1/plugins/{segment(plugin_id)}/settings")
        return result

    def setting(self, plugin_id: str, key: str) -> dict[str, Any]:
        path = f"/v1/plugins/{segment(plugin_id)}/settings/{segment(key)}"
        result: dict[str, Any] = self.client.get(path)
        return result

    def set_setting(self, plugin_id: str, key: str, value: Any) -> dict[str, Any]:
        path = f"/v1/plugins/{segment(plugin_id)}/settings/{segment(key)}"
        result: dict[str, Any] = self.client.request("PUT", path, body={"value": value})
        return result


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
        from ..host.manager import PluginManager

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
                    await m.shutdown()

        import asyncio  # here, not at the top: 'list' through the host never needs it

        return asyncio.run(main())

    @contextlib.contextmanager
    def _marketplace(self) -> Iterator[str | None]:
        """Serve the root's bundled registry while the command runs, when it is the marketplace."""
        from ..registry.local import has_registry, owns_marketplace, serve_local_registry

        # Only for this command: the settings file and the served-url marker belong to
        # the host (`run`), and a host holding the root is not ours to reconfigure.
        held = RootLock(self.layout.root).is_held_elsewhere()
        if not held and owns_marketplace(self.layout) and has_registry(self.layout):
            with serve_local_registry(self.layout, configure=False) as url:
                yield url
        else:
            yield None

    def _infos(self, seen: dict[str, datetime] | None = None) -> list[PluginInfo]:
        return _offline_infos(self.layout, seen)

    def _find(self, plugin_id: str, seen: dict[str, datetime] | None = None) -> PluginInfo:
        from ..metadata import validate_plugin_id

        validate_plugin_id(plugin_id)
        for info in self._infos(seen):
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
        seen: dict[str, datetime] = {}
        return [_last_known(i, seen) for i in self._infos(seen)]

    def get(self, plugin_id: str) -> dict[str, Any]:
        seen: dict[str, datetime] = {}
        return _last_known(self._find(plugin_id, seen), seen)

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
                grant = bool(body.get("grant"))
                meta = await m.install_plugin_version(plugin_id, version, progress, grant=grant)
            return m.get_plugin(meta.id).to_json_dict()

        return self._run(op, marketplace=not body.get("path"))

    def grant(self, plugin_id: str) -> dict[str, Any]:
        self._find(plugin_id)
        return self._run(lambda m: _info_dict(m.grant_permissions(plugin_id)))

    def dev(self, path: Path) -> dict[str, Any]:
        return self._run(lambda m: _info_dict(m.install_in_dev_mode(path)))

    def introspect(self, plugin_id: str, timeout: float = 5.0) -> dict[str, Any]:
        self._find(plugin_id)
        raise self._not_running(plugin_id, "ask")

    def call(self, plugin_id: str, method: str, request: Any, timeout: float) -> Any:
        self._find(plugin_id)
        raise self._not_running(plugin_id, "call")

    def _no_settings(self, plugin_id: str) -> PluginNotLoadedError:
        self._find(plugin_id)
        from ..paths import resolve_root

        profile = self.target.profile
        where = f"--profile {profile}" if profile else ""
        if not profile or self.layout.root != resolve_root(None, profile):
            where = f"{where} --root {self.layout.root}".strip()
        return PluginNotLoadedError(
            "settings live in the running plugin: start the host with plughost run "
            f"(no host is running root {self.layout.root})",
            title="No host is running",
            plugin_id=plugin_id,
            suggestions=[f"start the host: plughost {where} run"],
        )

    def settings(self, plugin_id: str) -> list[dict[str, Any]]:
        raise self._no_settings(plugin_id)

    def setting(self, plugin_id: str, key: str) -> dict[str, Any]:
        raise self._no_settings(plugin_id)

    def set_setting(self, plugin_id: str, key: str, value: Any) -> dict[str, Any]:
        raise self._no_settings(plugin_id)

    def _entries(self, plugin_id: str, limit: int = 100_000) -> list[Any]:
        from ..logs import PluginLogManager
        from ..metadata import validate_plugin_id

        validate_plugin_id(plugin_id)
        logs = PluginLogManager(self.layout.logs)
        entries = logs.read_file_logs(plugin_id, limit)
        if not entries and not self.layout.plugin_dir(plugin_id).is_dir():
            self._find(plugin_id)
        return entries

    def logs(self, plugin_id: str, n: int, grep: str | None, level: str | None) -> list[Any]:
        entries = [e.to_dict() for e in self._entries(plugin_id)]
        return filter_logs(entries, grep, level, plugin_id)[-n:] if n > 0 else []

    def follow(self, plugin_id: str) -> Iterator[dict[str, Any]]:
        """New lines of ``logs/<id>.log`` as they are written (polling; survives rotation)."""
        from ..logs import LogEntry

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
        from ..registry.client import RegistryClient, enrich
        from ..settings import SettingsProvider

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

        import asyncio

        return asyncio.run(main())


Host = Remote | Local


async def _info_dict(result: Awaitable[Any]) -> dict[str, Any]:
    info = await result
    data: dict[str, Any] = info.to_json_dict()
    return data


async def _latest_version(m: PluginManager, plugin_id: str) -> str:
    from ..service.api import _latest_version as latest

    return await latest(m, plugin_id)


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _lock_holder(layout: RootLayout) -> int | None:
    """The pid of the process holding the root, if one does.

    The kernel's lock is the truth (a SIGKILLed host leaves its pid in the file,
    and that pid may since belong to anything); the file only names the holder.
    """
    lock = RootLock(layout.root)
    if not lock.is_held_elsewhere():
        return None
    return lock.holder_pid() or -1


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
def session(
    root: Path | None, profile: str | None, as_json: bool = False, *, wait: bool = False
) -> Iterator[Host]:
    """The host of the command's root, closed afterwards; errors printed as the CLI does."""
    with handle_errors(as_json):
        host = _host(resolve_target(root, profile), wait=wait)
        try:
            yield host
        finally:
            host.close()


def _last_known(info: PluginInfo, seen: dict[str, datetime]) -> dict[str, Any]:
    """A plugin as no host sees it: its last known phase, ``live: false``, when it was
    last seen (``lastSeen``: when a host last wrote its state), and no pid."""
    when = seen.get(info.id)
    data = info.to_json_dict()
    data.update(pid=None, live=False, lastSeen=when.isoformat() if when else None)
    return data


def _offline_infos(layout: RootLayout, seen: dict[str, datetime] | None = None) -> list[PluginInfo]:
    """What a root holds, read from disk without starting anything.

    ``seen`` is filled with when each persisted phase was last known to be true:
    the entry's ``lastSeen``, else the state file's modification time.
    """
    from ..reconcile import Reconciler
    from ..store import StateFileCorrupt, StateStore

    try:
        persisted = StateStore(layout.root).read() if layout.state_file.exists() else []
        written = datetime.fromtimestamp(layout.state_file.stat().st_mtime, UTC)
    except (StateFileCorrupt, OSError):
        persisted, written = [], None
    if seen is not None:
        seen.update({p.id: s for p in persisted if (s := p.last_seen or written) is not None})
    result = Reconciler().reconcile(layout.plugins, persisted)
    phases = {p.id: p.phase for p in persisted}
    infos = []
    for record in result.records.values():
        info = record.to_info()
        infos.append(info.model_copy(update={"phase": phases.get(record.id, info.phase)}))
    return sorted(infos, key=lambda i: i.id)


# --------------------------------------------------------------------------- log filters
def filter_logs(
    entries: list[Any], grep: str | None, level: str | None, plugin_id: str | None = None
) -> list[Any]:
    """The entries whose text matches ``grep`` and whose level is ``level`` or above.

    ``grep`` is searched as the host's API searches (RE2, within its time budget), so
    a pattern means the same whether the host runs or not.
    """
    if grep:
        from ..logs import search_entries

        entries = search_entries(entries, grep, entry_text, plugin_id=plugin_id)
    if level:
        floor = LEVELS.index(normalize_level(level))
        entries = [
            e for e in entries if LEVELS.index(normalize_level(e.get("level", "info"))) >= floor
        ]
    return entries


def normalize_level(value: str) -> str:
    value = value.strip().lower()
    value = {"warning": "warn", "err": "error", "fatal": "error"}.get(value, value)
    if value not in LEVELS:
        raise ValidationError(
            f"unknown log level {value!r}; expected one of: {', '.join(LEVELS)}",
            title="Invalid log level",
        )
    return value


def entry_text(entry: dict[str, Any]) -> str:
    """A log entry's message with its fields (``key=value``), as ``--grep`` sees it."""
    fields = entry.get("fields") or {}
    extra = " ".join(f"{k}={v}" for k, v in fields.items() if not str(k).startswith("@"))
    message = str(entry.get("message", ""))
    return f"{message} {extra}" if extra else message
