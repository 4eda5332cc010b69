"""The local service: the manager over HTTP, for the CLI, a desktop app and the dashboard.

While ``plughost run`` holds a root it serves this API on a unix socket in the
root (mode 0600: only the user can talk to it), and optionally on 127.0.0.1
behind a bearer token. Errors are problem JSON carrying plughost's error type;
events and log tails stream as server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from . import __version__
from .errors import PlughostError, ValidationError

if TYPE_CHECKING:
    from .manager import PluginManager

__all__ = ["SOCKET_NAME", "LocalService", "create_app", "socket_path"]

SOCKET_NAME = "plughost.sock"
PROBLEM = "application/problem+json"
_HEARTBEAT = 15.0


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


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PlughostError)
    async def plughost_error(_: Request, exc: PlughostError) -> JSONResponse:
        return JSONResponse(exc.to_problem(), status_code=exc.status, media_type=PROBLEM)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _problem(422, "Invalid request", detail, "validation")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, "HTTP error", str(exc.detail), "http")

    @app.exception_handler(Exception)
    async def internal(_: Request, exc: Exception) -> JSONResponse:
        return _problem(500, "Internal error", f"{type(exc).__name__}: {exc}", "internal")


class EnabledBody(BaseModel):
    enabled: bool


async def _sse(events: AsyncIterator[tuple[str, Any]]) -> AsyncIterator[bytes]:
    """Frame (name, data) pairs as server-sent events, with heartbeats."""
    iterator = events.__aiter__()
    while True:
        try:
            name, data = await asyncio.wait_for(iterator.__anext__(), _HEARTBEAT)
        except TimeoutError:
            yield b": heartbeat\n\n"
            continue
        except StopAsyncIteration:
            return
        yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


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


def _action_endpoint(
    action: Callable[[str], Awaitable[Any]],
) -> Callable[[str], Awaitable[dict[str, Any]]]:
    async def endpoint(plugin_id: str) -> dict[str, Any]:
        info = await action(plugin_id)
        result: dict[str, Any] = info.to_json_dict()
        return result

    return endpoint


def _log_routes(app: FastAPI, manager: PluginManager) -> None:
    m = manager

    @app.get("/v1/plugins/{plugin_id}/logs", summary="The plugin's recent log lines")
    async def logs(
        plugin_id: str,
        n: int = Query(100, ge=1, le=5000),
        grep: str | None = Query(None, description="regular expression to filter by"),
        level: str | None = Query(None, description="only this level"),
    ) -> list[dict[str, Any]]:
        m.get_plugin(plugin_id)
        entries = m.logs.search_logs(plugin_id, grep, n) if grep else m.logs.get_logs(plugin_id, n)
        return [e.to_dict() for e in entries if level is None or e.level == level]

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

        return StreamingResponse(_sse(pairs()), media_type="text/event-stream")

    @app.get("/v1/events", summary="Every event as it happens (SSE)")
    async def events(pattern: str = Query("plugin/*")) -> StreamingResponse:
        stream = m.bus.stream(pattern)

        async def pairs() -> AsyncIterator[tuple[str, Any]]:
            try:
                async for event in stream:
                    yield event.name, event.to_dict()
            finally:
                stream.close()

        return StreamingResponse(_sse(pairs()), media_type="text/event-stream")


def create_app(manager: PluginManager) -> FastAPI:
    """The API as an ASGI app (tests may drive it in-process too)."""
    app = FastAPI(
        title="plughost local service",
        version=__version__,
        description="Manage the plugins of one plughost root.",
    )
    _install_error_handlers(app)

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
    _log_routes(app, manager)
    extra = getattr(manager, "extend_service", None)
    if callable(extra):
        extra(app)
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
        config = uvicorn.Config(app, log_level="warning", lifespan="off", **where)
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
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
