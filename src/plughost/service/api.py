"""The local service: the manager over HTTP, for the CLI, a desktop app and the dashboard.

While ``plughost run`` holds a root it serves this API on a unix socket in the
root (mode 0600: only the user can talk to it), and optionally on 127.0.0.1
behind a bearer token. Errors are problem JSON carrying plughost's error type;
events and log tails stream as server-sent events. A request body bigger than
``service_body_limit`` is refused before it is read (:class:`BodyLimit`): no
client, nor a page of the dashboard, can make the host hold or parse a huge one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import InternalError, PlughostError, PluginNotFoundError, ValidationError
from .fields import MAX_PATH, HostPath
from .sse import sse_stream

if TYPE_CHECKING:
    from ..host.manager import PluginManager

__all__ = ["MAX_PATH", "SOCKET_NAME", "BodyLimit", "LocalService", "create_app", "socket_path"]

SOCKET_NAME = "plughost.sock"
PROBLEM = "application/problem+json"


def socket_path(root: Path) -> Path:
    """Where the service listens for this root."""
    return Path(root) / "run" / SOCKET_NAME


def _problem(status: int, title: str, detail: str, error_type: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:plughost:error:{error_type}",
        "errorType": error_type,
        "title": title,
        "status": status,
        "detail": detail,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


class _BodyTooLarge(Exception):
    """Raised to the app by a receive() that has passed the body limit."""


class BodyLimit:
    """Refuses a request body bigger than ``limit()`` bytes without reading more of it.

    A body announced bigger (Content-Length) is answered 413 before any of it is
    read; a chunked one is counted as it arrives and refused as soon as it passes
    the limit, so no more than the limit and one chunk is ever held. What the app
    had begun to answer meanwhile is replaced by the 413, which also closes the
    connection (the rest of the body is not worth reading).
    """

    def __init__(self, app: ASGIApp, limit: Callable[[], int]) -> None:
        self.app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit()
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            await _too_large(limit, int(length))(scope, receive, send)
            return
        received = 0
        refused = started = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise _BodyTooLarge
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the app's answer to a body it could not read: the 413 replaces it
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:  # _BodyTooLarge, however the app wrapped it
            if not refused:
                raise
        if refused and not started:
            await _too_large(limit, None)(scope, receive, send)


def _too_large(limit: int, length: int | None) -> JSONResponse:
    size = f"of {length:,} bytes " if length is not None else ""
    response = _problem(
        413,
        "Request body too large",
        f"the request body {size}is larger than the {limit:,} bytes the local service accepts",
        "request_too_large",
        limit=limit,
        suggestions=[
            "send less: a package is installed by its path on the host's disk, not by its bytes",
            "if such a body is really needed, raise service_body_limit in plughost.toml",
        ],
    )
    response.headers["connection"] = "close"
    return response


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlughostError)
    async def plughost_error(_: Request, exc: PlughostError) -> JSONResponse:
        return JSONResponse(exc.to_problem(), status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _problem(422, "Invalid request", detail, "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404 and exc.detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
            return _problem(404, "Not found", detail, "not_found")
        if exc.status_code == 405 and exc.detail == "Method Not Allowed":
            detail = f"{request.method} is not allowed on {request.url.path}"
            return _problem(405, "Method not allowed", detail, "method_not_allowed")
        return _problem(exc.status_code, "HTTP error", str(exc.detail), "http")

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return _problem(500, "Internal error", f"{type(exc).__name__}: {exc}", "internal")


class EnabledBody(BaseModel):
    enabled: bool


class InstallBody(BaseModel):
    """``{"path": ...}`` for a package file on the host's disk, or ``{"id", "version"?}``
    for a marketplace version (the latest when ``version`` is missing)."""

    path: HostPath | None = None
    id: str | None = Field(None, max_length=256)
    version: str | None = Field(None, max_length=256)
    grant: bool = Field(
        False,
        description="marketplace: grant the permissions it asks for (else a version asking "
        "for more than was granted is installed held; see /v1/plugins/{id}/grant)",
    )


class DevBody(BaseModel):
    """``{"path": ...}``: a plugin's source tree on the host's disk."""

    path: HostPath


class CallBody(BaseModel):
    """One call of a plugin's unary method, with the request as protobuf JSON."""

    method: str = Field(
        max_length=1000, description="package.Service/Method, e.g. grpc.health.v1.Health/Check"
    )
    request: Any = Field(
        None, description="the request message as protobuf JSON; missing or null: empty"
    )
    timeout: float = Field(10.0, gt=0, le=300, description="seconds for the whole call")


class SettingValueBody(BaseModel):
    """A setting's new value, typed as the setting's definition says."""

    value: Any = Field(
        ...,
        description="JSON of the setting's type: a string (text, password, color, datetime, "
        "select), an integer, a number (float), true/false (toggle), a list (multi_select)",
    )


def _closing(app: FastAPI) -> asyncio.Event:
    """Set by LocalService.stop: every event stream of the app ends."""
    event: asyncio.Event = app.state.sse_closing
    return event


def _plugin_routes(app: FastAPI, manager: PluginManager) -> None:
    m = manager

    @app.get("/v1/plugins", summary="List installed plugins")
    async def list_plugins() -> list[dict[str, Any]]:
        return [i.to_json_dict() for i in m.list_plugins()]

    @app.get("/v1/plugins/{plugin_id}", summary="One plugin")
    async def get_plugin(plugin_id: str) -> dict[str, Any]:
        return m.get_plugin(plugin_id).to_json_dict()

    @app.get("/v1/plugins/{plugin_id}/meta", summary="The plugin's plugin.yaml")
    async def get_meta(plugin_id: str) -> dict[str, Any]:
        return m.get_plugin_meta(plugin_id).model_dump(mode="json", exclude_none=True)

    @app.get("/v1/plugins/{plugin_id}/history", summary="The last 50 state transitions")
    async def get_history(plugin_id: str) -> list[dict[str, str]]:
        return m.get_plugin_history(plugin_id)

    actions: dict[str, Callable[[str], Awaitable[Any]]] = {
        "load": m.load_plugin,
        "reload": m.reload_plugin,
        "unload": m.unload_plugin,
        "retry": m.retry_failed_plugin,
    }
    for name, action in actions.items():
        app.add_api_route(
            f"/v1/plugins/{{plugin_id}}/{name}",
            _action_endpoint(action),
            methods=["POST"],
            summary=f"{name.capitalize()} a plugin",
            name=f"{name}_plugin",
        )

    @app.put("/v1/plugins/{plugin_id}/enabled", summary="Enable or disable a plugin")
    async def set_enabled(plugin_id: str, body: EnabledBody) -> dict[str, Any]:
        return (await m.set_enabled(plugin_id, body.enabled)).to_json_dict()

    @app.delete("/v1/plugins/{plugin_id}", summary="Uninstall a plugin")
    async def uninstall(plugin_id: str) -> dict[str, Any]:
        return (await m.uninstall_plugin(plugin_id)).to_json_dict()

    @app.post(
        "/v1/plugins/{plugin_id}/grant",
        summary="Grant the permissions the installed version asks for",
        description="Releases an install or update held because it asks for more than was "
        "granted (its lastError says what): the grant is persisted and the plugin started.",
    )
    async def grant(plugin_id: str) -> dict[str, Any]:
        return (await m.grant_permissions(plugin_id)).to_json_dict()


def _call_routes(app: FastAPI, manager: PluginManager) -> None:
    from . import calls

    m = manager
    timeout_query = Query(
        calls.DEFAULT_INTROSPECT_TIMEOUT, ge=0.5, le=60, description="seconds to wait for answers"
    )

    @app.get(
        "/v1/plugins/{plugin_id}/services",
        summary="Names of the gRPC services a running plugin serves",
        description="From gRPC server reflection, else the services every plugin serves. "
        "503 (plugin_unavailable) when the plugin is not running.",
    )
    async def services(plugin_id: str, timeout: float = timeout_query) -> list[str]:
        return await calls.plugin_services(m, plugin_id, timeout)

    @app.get(
        "/v1/plugins/{plugin_id}/introspect",
        summary="What a running plugin serves and says about itself",
        description="services, reflection, the lifecycle service's GetInfo and "
        "GetCapabilities answers, the negotiated protocol version and the address from "
        "the handshake; a part that failed is null with its reason in errors.",
    )
    async def introspect(plugin_id: str, timeout: float = timeout_query) -> dict[str, Any]:
        return await calls.introspect(m, plugin_id, timeout)

    @app.post(
        "/v1/plugins/{plugin_id}/call",
        summary="Call a unary method of a running plugin, JSON in and out",
        description="Messages are described by the plugin's gRPC server reflection, else "
        "by plughost's own descriptors of health, go-plugin's controller and stdio, and "
        "the lifecycle service. Answers {response, describedBy}: the answer message as "
        "protobuf JSON, and where its types came from (reflection or built-in). "
        "Streaming methods are refused; 502 (plugin_call_failed) when the plugin answers "
        "an error, 503 (plugin_unavailable) when it is not running.",
    )
    async def call(plugin_id: str, body: CallBody) -> dict[str, Any]:
        return await calls.call_method(m, plugin_id, body.method, body.request, body.timeout)


def _settings_routes(app: FastAPI, manager: PluginManager) -> None:
    from .plugin_settings import PluginSettings

    settings = PluginSettings(manager)
    app.state.plugin_settings = settings
    common = (
        " The plugin must have the settings capability (404 setting_not_found otherwise) "
        "and be running (503 plugin_unavailable); the host needs Omniview's plugin SDK "
        "(412 omniview_sdk_not_found, with where it looked)."
    )

    @app.get(
        "/v1/plugins/{plugin_id}/settings",
        summary="The settings of an Omniview SDK plugin, with their values",
        description="Each setting's id, label, description, type, value, default (null "
        "when the plugin does not say), options, sensitive, devOnly and fileSelection. "
        "A sensitive (password) value is left out: value null, redacted true, hasValue." + common,
    )
    async def list_settings(plugin_id: str) -> list[dict[str, Any]]:
        return await settings.list(plugin_id)

    @app.get(
        "/v1/plugins/{plugin_id}/settings/{key}",
        summary="One setting of an Omniview SDK plugin, sensitive value included",
        description="404 setting_not_found when the plugin has no such setting." + common,
    )
    async def get_setting(plugin_id: str, key: str) -> dict[str, Any]:
        return await settings.get(plugin_id, key)

    @app.put(
        "/v1/plugins/{plugin_id}/settings/{key}",
        summary="Set one setting of an Omniview SDK plugin",
        description="The value is checked against the setting's type first: a wrong one is "
        "400 validation naming the type expected; a value the plugin refuses is 400 "
        "validation with the plugin's own message. Answers the setting as the plugin has "
        "it afterwards (a sensitive value left out)." + common,
    )
    async def put_setting(plugin_id: str, key: str, body: SettingValueBody) -> dict[str, Any]:
        return await settings.set(plugin_id, key, body.value)


def _action_endpoint(
    action: Callable[[str], Awaitable[Any]],
) -> Callable[[str], Awaitable[dict[str, Any]]]:
    async def endpoint(plugin_id: str) -> dict[str, Any]:
        info = await action(plugin_id)
        result: dict[str, Any] = info.to_json_dict()
        return result

    return endpoint


_LEVELS = ("trace", "debug", "info", "warn", "error")


def _level_rank(level: str) -> int:
    name = {"warning": "warn", "err": "error", "fatal": "error"}.get(level.lower(), level.lower())
    if name not in _LEVELS:
        raise ValidationError(
            f"unknown log level {level!r}; expected one of: {', '.join(_LEVELS)}",
            title="Invalid log level",
        )
    return _LEVELS.index(name)


def _log_routes(app: FastAPI, manager: PluginManager) -> None:
    from ..logs import MAX_PATTERN_CHARS, SEARCH_BUDGET

    m = manager

    @app.get("/v1/plugins/{plugin_id}/logs", summary="The plugin's recent log lines")
    async def logs(
        plugin_id: str,
        n: int = Query(100, ge=1, le=5000),
        grep: str | None = Query(
            None,
            description="regular expression to filter by (RE2: no lookarounds or backreferences; "
            f"at most {MAX_PATTERN_CHARS} characters); 400 when invalid, 422 when the search "
            f"takes over {SEARCH_BUDGET:g} s",
        ),
        level: str | None = Query(
            None, description="only this level and above: trace, debug, info, warn, error"
        ),
    ) -> list[dict[str, Any]]:
        m.get_plugin(plugin_id)
        if grep:  # in a thread: the host answers other requests while a search runs
            entries = await asyncio.to_thread(m.logs.search_logs, plugin_id, grep)
        else:
            entries = m.logs.get_logs(plugin_id, m.logs.ring_size if level else n)
        if level:
            floor = _level_rank(level)
            entries = [e for e in entries if _LEVELS.index(e.level) >= floor]
        return [e.to_dict() for e in entries[-n:]]

    @app.get("/v1/plugins/{plugin_id}/logs/stream", summary="Follow the plugin's log (SSE)")
    async def follow(plugin_id: str) -> StreamingResponse:
        m.get_plugin(plugin_id)
        sub = m.logs.subscribe(plugin_id)

        async def pairs() -> AsyncIterator[tuple[str, Any]]:
            try:
                async for entry in sub:
                    yield "log", entry.to_dict()
            finally:
                sub.close()

        return StreamingResponse(sse_stream(pairs(), _closing(app)), media_type="text/event-stream")

    @app.get("/v1/events", summary="Every event as it happens (SSE)")
    async def events(pattern: str = Query("plugin/*")) -> StreamingResponse:
        stream = m.bus.stream(pattern)

        async def pairs() -> AsyncIterator[tuple[str, Any]]:
            try:
                async for event in stream:
                    yield event.name, event.to_dict()
            finally:
                stream.close()

        return StreamingResponse(sse_stream(pairs(), _closing(app)), media_type="text/event-stream")


async def _latest_version(m: PluginManager, plugin_id: str) -> str:
    plugin = await m.marketplace().get_plugin(plugin_id)
    if not plugin.latest_version:
        raise PluginNotFoundError(
            "the marketplace lists no published version",
            plugin_id=plugin_id,
            suggestions=["name a version: ID@VERSION"],
        )
    return plugin.latest_version


Progress = Callable[[int, int | None], None]


async def _install(
    m: PluginManager, body: InstallBody, progress: Progress | None
) -> dict[str, Any]:
    if bool(body.path) == bool(body.id):
        raise ValidationError(
            'expected either {"path": ...} or {"id": ..., "version": ...}',
            title="Invalid install request",
        )
    if body.path:
        meta = await m.install_plugin_from_path(body.path, progress)
    else:
        plugin_id = str(body.id)
        version = body.version or await _latest_version(m, plugin_id)
        meta = await m.install_plugin_version(plugin_id, version, progress, grant=body.grant)
    result: dict[str, Any] = m.get_plugin(meta.id).to_json_dict()
    return result


def _install_routes(app: FastAPI, manager: PluginManager) -> None:
    m = manager
    running: set[asyncio.Task[None]] = set()  # installs outlive a client that went away
    app.state.install_tasks = running  # ... but not the service: stop() cancels them

    @app.post(
        "/v1/install",
        summary="Install from a package path or a marketplace version",
        description="With `Accept: text/event-stream` the answer is a stream of `progress` "
        "events ({done, total} bytes) ending with one `result` (the plugin) or `error` "
        "(problem JSON) event; otherwise the installed plugin.",
    )
    async def install(body: InstallBody, request: Request) -> Any:
        if "text/event-stream" not in request.headers.get("accept", ""):
            return await _install(m, body, None)
        queue: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(done: int, total: int | None) -> None:
            now = loop.time()
            if now - last[0] >= 0.05 or (total is not None and done >= total):
                last[0] = now
                item = ("progress", {"done": done, "total": total})
                loop.call_soon_threadsafe(queue.put_nowait, item)

        async def run() -> None:
            try:
                queue.put_nowait(("result", await _install(m, body, progress)))
            except PlughostError as exc:
                queue.put_nowait(("error", exc.to_problem()))
            except Exception as exc:
                problem = InternalError(f"{type(exc).__name__}: {exc}").to_problem()
                queue.put_nowait(("error", problem))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)  # after any progress

        task = asyncio.create_task(run(), name="plughost:service:install")
        running.add(task)
        task.add_done_callback(running.discard)

        async def pairs() -> AsyncIterator[tuple[str, Any]]:
            while (item := await queue.get()) is not None:
                yield item

        return StreamingResponse(sse_stream(pairs(), _closing(app)), media_type="text/event-stream")

    @app.post("/v1/plugins/{plugin_id}/rollback", summary="Go back to the replaced version")
    async def rollback(plugin_id: str) -> dict[str, Any]:
        meta = await m.rollback_plugin(plugin_id)
        return m.get_plugin(meta.id).to_json_dict()

    if callable(getattr(m, "install_in_dev_mode", None)):

        @app.post("/v1/dev", summary="Install a source tree in dev mode (build, run, watch)")
        async def dev(body: DevBody) -> dict[str, Any]:
            info = await m.install_in_dev_mode(body.path)
            return info.to_json_dict()


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _marketplace_routes(app: FastAPI, manager: PluginManager) -> None:
    m = manager

    def installed() -> dict[str, str]:
        return {i.id: i.version for i in m.list_plugins()}

    @app.get("/v1/marketplace/plugins", summary="Search the marketplace")
    async def search(
        q: str = "",
        category: str = "",
        sort: str = Query("", description="downloads, rating, name, updated ... ('-' = desc)"),
    ) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _dump(await m.search_plugins(q, category, sort))
        return result

    @app.get("/v1/marketplace/categories", summary="Categories with their plugin counts")
    async def categories() -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _dump(await m.marketplace().list_categories())
        return result

    @app.get("/v1/marketplace/plugins/{plugin_id}", summary="One marketplace plugin, with readme")
    async def plugin(plugin_id: str) -> dict[str, Any]:
        from ..registry.client import enrich

        found = await m.marketplace().get_plugin(plugin_id)
        result: dict[str, Any] = _dump(enrich([found], installed())[0])
        return result

    @app.get("/v1/marketplace/plugins/{plugin_id}/versions", summary="Versions, newest first")
    async def versions(plugin_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _dump(await m.get_plugin_release_history(plugin_id))
        return result

    @app.get("/v1/marketplace/plugins/{plugin_id}/reviews", summary="One page of reviews")
    async def reviews(plugin_id: str, page: int = Query(1, ge=1)) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = _dump(await m.get_plugin_reviews(plugin_id, page))
        return result

    @app.get("/v1/marketplace/plugins/{plugin_id}/stats", summary="Download statistics")
    async def stats(plugin_id: str, days: int = Query(30, ge=1, le=365)) -> dict[str, Any]:
        totals = await m.get_plugin_download_stats(plugin_id)
        daily = await m.marketplace().get_daily_downloads(plugin_id, days)
        return {
            "plugin_id": plugin_id,
            "total": totals.total_count,
            "by_version": _dump(totals.by_version or []),
            "daily": _dump(daily),
        }


def create_app(manager: PluginManager) -> FastAPI:
    """The API as an ASGI app (tests may drive it in-process too)."""
    app = FastAPI(
        title="plughost local service",
        version=__version__,
        description="Manage the plugins of one plughost root.",
    )
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=lambda: manager.settings.service_body_limit)
    app.state.sse_closing = asyncio.Event()

    @app.get("/v1/health", summary="Is the host up")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": __version__,
            "root": str(manager.layout.root),
            "pid": os.getpid(),
            "plugins": len(manager.list_plugins()),
        }

    _plugin_routes(app, manager)
    _call_routes(app, manager)
    _settings_routes(app, manager)
    _install_routes(app, manager)
    _marketplace_routes(app, manager)
    _log_routes(app, manager)
    from .dashboard import mount_dashboard

    mount_dashboard(app, manager)
    return app


class TokenAuth:
    """Bearer-token check for the tcp listener (the unix socket is protected by its mode)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if not secrets.compare_digest(headers.get(b"authorization", b""), self._expected):
                response = _problem(
                    401, "Unauthorized", "missing or wrong bearer token", "unauthorized"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the host decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalService:
    """Runs the API next to a running manager, until ``stop()``."""

    def __init__(
        self, manager: PluginManager, *, tcp_port: int | None = None, token: str | None = None
    ) -> None:
        self.manager = manager
        self.app = create_app(manager)
        self.socket = socket_path(manager.layout.root)
        self.tcp_port = tcp_port
        self.token = token
        self._servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []

    def _server(self, app: ASGIApp, **where: Any) -> uvicorn.Server:
        # log_config=None: uvicorn's warnings go through the host's logging setup
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            log_config=None,
            timeout_graceful_shutdown=2,  # streams it does not know of (the dashboard's)
            **where,
        )
        return _QuietServer(config)

    async def start(self) -> None:
        self.socket.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()  # left by a host that was killed; we hold the root lock
        servers = [self._server(self.app, uds=str(self.socket))]
        if self.tcp_port is not None:
            if not self.token:
                raise ValidationError(
                    "serving on 127.0.0.1 needs a token",
                    suggestions=["set service_token in plughost.toml"],
                )
            servers.append(
                self._server(TokenAuth(self.app, self.token), host="127.0.0.1", port=self.tcp_port)
            )
        for server in servers:
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(), name="plughost:service"))
        await self._wait_started()
        os.chmod(self.socket, 0o600)

    async def _wait_started(self) -> None:
        for _ in range(500):
            if all(s.started for s in self._servers):
                return
            for task in self._tasks:
                if task.done():
                    task.result()  # raises the server's startup error
            await asyncio.sleep(0.01)
        raise TimeoutError("local service did not start within 5 s")

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        if len(self._servers) < 2:
            return None
        sock = self._servers[1].servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return host, port

    async def stop(self) -> None:
        _closing(self.app).set()  # end the event streams, or uvicorn waits for them
        for server in self._servers:
            server.should_exit = True
        installs: set[asyncio.Task[None]] = getattr(self.app.state, "install_tasks", set())
        for task in list(installs):
            task.cancel()  # an install cleans its staging directory when cancelled
        await asyncio.gather(*self._tasks, *installs, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
