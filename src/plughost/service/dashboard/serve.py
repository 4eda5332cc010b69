"""``plughost ui``: the dashboard on a 127.0.0.1 port, behind a one-time sign-in link.

The local service listens on a unix socket, which a browser cannot reach. This
module opens a loopback port serving the dashboard and the API, either for a
manager in this process (:func:`serve_dashboard`) or in front of the unix
socket of a host that runs elsewhere (:func:`serve_socket_dashboard`, what
``plughost ui`` uses through :func:`run_ui`).

Access: the printed URL ``http://127.0.0.1:PORT/ui/?token=T`` works once. Its
first request gets an HttpOnly, SameSite=Strict cookie named after the port and
a redirect to the page whose URL fragment holds a session token; the page keeps
that token in its tab's ``sessionStorage`` and sends it as ``X-Plughost-Session``.

Cookies are not scoped by port, so any other local server a user's browser
visits receives the cookie: alone it opens only the page's static files. Every
other request needs both the cookie and the page's token (a fragment is never
sent anywhere, and ``sessionStorage`` belongs to this origin alone), or an
``Authorization: Bearer <api token>`` header. Requests must name a loopback
host (no DNS rebinding), and requests from another origin or site are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import webbrowser
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ...errors import PlughostError
from . import STATIC_DIR, _Static

if TYPE_CHECKING:
    from ...host.manager import PluginManager

__all__ = [
    "MAX_PROXY_BODY",
    "SESSION_FRAGMENT",
    "SESSION_HEADER",
    "DashboardAuth",
    "DashboardServer",
    "HostNotRunningError",
    "create_proxy_app",
    "run_ui",
    "serve_dashboard",
    "serve_socket_dashboard",
]

COOKIE_PREFIX = "plughost_ui_"
SESSION_HEADER = "X-Plughost-Session"
SESSION_FRAGMENT = "plughost-session"
"""The sign-in redirect's fragment key: ``/ui/#plughost-session=<token>``."""
MAX_PROXY_BODY = 1 << 20
PROBLEM = "application/problem+json"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
_OTHER_SITES = frozenset({"cross-site", "same-site"})  # same-site: another 127.0.0.1 port
_HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length",
        "content-encoding", "cookie", "authorization", SESSION_HEADER.lower(),
    }
)  # fmt: skip


class HostNotRunningError(PlughostError):
    type = "host_not_running"
    status = 503
    default_title = "No host is running"


def _problem(
    status: int, title: str, detail: str, error_type: str, suggestions: list[str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:plughost:error:{error_type}",
        "errorType": error_type,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if suggestions:
        body["suggestions"] = suggestions
    return JSONResponse(
        body,
        status_code=status,
        media_type=PROBLEM,
        headers={"Cache-Control": "no-store"},
    )


def _host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``::1``, ``a:80`` -> ``a``."""
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _cookie_values(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` in a Cookie header, whatever else the header holds.

    Other apps on 127.0.0.1 share the browser's cookies for this host, and
    ``SimpleCookie`` drops the whole header at the first one it cannot parse
    (``prefs={"theme":"dark"}``): each pair is read on its own instead.
    """
    values = []
    for pair in header.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key.strip() == name:
            values.append(value.strip().strip('"'))
    return values


def _is_static(path: str) -> bool:
    """The page's own files (and ``/``, a redirect to them): nothing in them is secret."""
    return path in ("/", "/ui") or path.startswith("/ui/")


def _known(value: str, secrets_: set[str]) -> bool:
    encoded = value.encode()
    return any(secrets.compare_digest(encoded, s.encode()) for s in secrets_)


class DashboardAuth:
    """ASGI middleware: one-time sign-in -> cookie plus page token; or a bearer token.

    ``port`` (set once the server listens) names the cookie, so dashboards on
    different ports of one browser keep their own sessions.
    """

    def __init__(self, app: ASGIApp, *, api_token: str | None = None, port: int = 0) -> None:
        self.app = app
        self.api_token = api_token or secrets.token_urlsafe(32)
        self.port = port
        self._login: str | None = None
        self._cookies: set[str] = set()
        self._page_tokens: set[str] = set()

    @property
    def cookie_name(self) -> str:
        return f"{COOKIE_PREFIX}{self.port}"

    def issue_login_token(self) -> str:
        """A new one-time sign-in token (the previous one, if unused, stops working)."""
        self._login = secrets.token_urlsafe(24)
        return self._login

    def _take_login(self, token: str) -> bool:
        expected = self._login
        if expected is None or not secrets.compare_digest(token.encode(), expected.encode()):
            return False
        self._login = None  # one time
        return True

    def _cookie_ok(self, cookie_header: str) -> bool:
        return any(
            _known(v, self._cookies) for v in _cookie_values(cookie_header, self.cookie_name)
        )

    def _bearer_ok(self, authorization: str) -> bool:
        expected = f"Bearer {self.api_token}".encode()
        return secrets.compare_digest(authorization.encode(), expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        response = self._refusal(scope)
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        """The answer when the request may not pass (a sign-in's redirect too), else None."""
        request = Request(scope)
        headers = request.headers
        host = headers.get("host", "")
        if _host_name(host) not in LOOPBACK_NAMES:
            return _problem(
                403, "Forbidden", f"this dashboard only answers to 127.0.0.1, not {host!r}", "host"
            )
        cookie = self._cookie_ok(headers.get("cookie", ""))
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        token = next((v for k, v in query if k == "token"), None)
        if token is not None:
            return self._sign_in(scope, query, token, cookie)
        static = _is_static(request.url.path)
        foreign = _foreign(
            headers, host, navigation=static and scope.get("method", "GET") in ("GET", "HEAD")
        )
        if foreign is not None:
            return _problem(403, "Forbidden", foreign, "origin")
        bearer = self._bearer_ok(headers.get("authorization", ""))
        if not cookie and not bearer:
            return _problem(
                401,
                "Unauthorized",
                "sign in with the link 'plughost ui' printed, or send the bearer token",
                "unauthorized",
            )
        page_token = headers.get(SESSION_HEADER, "")
        if static or bearer or (page_token and _known(page_token, self._page_tokens)):
            return None
        return _problem(
            403,
            "Forbidden",
            f"the dashboard's cookie alone does not show a request comes from its page: "
            f"the page sends its session token in the {SESSION_HEADER} header",
            "session",
            suggestions=[
                "in a browser tab that lost its session, open a new sign-in link: run "
                "'plughost ui' again",
                "from a script, send 'Authorization: Bearer <api token>' instead",
            ],
        )

    def _sign_in(
        self, scope: Scope, query: list[tuple[str, str]], token: str, cookie: bool
    ) -> Response:
        rest = [(k, v) for k, v in query if k != "token"]
        location = scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
        if not self._take_login(token):
            if cookie:  # a bookmarked link, signed in already: the tab keeps its token
                return RedirectResponse(location, status_code=303)
            return _problem(
                401,
                "Unauthorized",
                "this sign-in link was already used or is wrong; run 'plughost ui' again "
                "for a new one",
                "unauthorized",
            )
        value, page_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._cookies.add(value)
        self._page_tokens.add(page_token)
        response = RedirectResponse(f"{location}#{SESSION_FRAGMENT}={page_token}", status_code=303)
        response.set_cookie(
            self.cookie_name, value, httponly=True, samesite="strict", path="/", secure=False
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def _foreign(headers: Headers, host: str, *, navigation: bool) -> str | None:
    """Why a request comes from another origin or site, if it does.

    Another 127.0.0.1 port is the same *site*; browsers send it SameSite=Strict
    cookies. Navigating to the page's files from elsewhere is harmless.
    """
    origin = headers.get("origin")
    if origin is not None and origin != f"http://{host}":
        return f"requests from {origin} are not allowed"
    site = headers.get("sec-fetch-site")
    if site in _OTHER_SITES and not (navigation and headers.get("sec-fetch-mode") == "navigate"):
        return f"requests from another site (Sec-Fetch-Site: {site}) are not allowed"
    return None


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: whoever started it decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class DashboardServer:
    """A running dashboard listener; ``url`` is a fresh one-time sign-in link."""

    def __init__(self, app: ASGIApp, host: str, port: int, api_token: str | None) -> None:
        self.auth = DashboardAuth(app, api_token=api_token)
        self.host = host
        config = uvicorn.Config(
            self.auth,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,  # event streams never end by themselves
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0
        self.on_stop: list[Callable[[], Any]] = []

    @property
    def api_token(self) -> str:
        return self.auth.api_token

    @property
    def cookie_name(self) -> str:
        return self.auth.cookie_name

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def login_url(self) -> str:
        """A new one-time sign-in URL (the previous one, if unused, stops working)."""
        return f"{self.base_url}/ui/?token={self.auth.issue_login_token()}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(), name="plughost:dashboard")
        for _ in range(1000):
            if self._server.started:
                break
            if self._task.done():
                self._task.result()  # the startup error (port in use ...)
                raise RuntimeError("the dashboard server stopped while starting")
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("the dashboard server did not start within 10 s")
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.auth.port = self.port

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        for callback in self.on_stop:
            result = callback()
            if asyncio.iscoroutine(result):
                await result

    async def wait(self) -> None:
        """Until the server stops."""
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def _serve(
    app: ASGIApp, host: str, port: int, api_token: str | None
) -> tuple[DashboardServer, str]:
    if host not in LOOPBACK_NAMES:
        raise PlughostError(
            f"the dashboard only listens on the loopback interface, not {host}",
            title="Refusing to listen",
        )
    server = DashboardServer(app, host, port, api_token)
    await server.start()
    return server, server.login_url()


async def serve_dashboard(
    manager: PluginManager, host: str = "127.0.0.1", port: int = 0, *, api_token: str | None = None
) -> tuple[DashboardServer, str]:
    """Serve the API and the dashboard of ``manager`` (in this loop) on ``host:port``.

    ``port=0`` picks a free port. Returns the server (``await server.stop()``)
    and the one-time sign-in URL ``http://127.0.0.1:PORT/ui/?token=...``.
    """
    from ..api import create_app

    app = create_app(manager)
    if not getattr(app.state, "plughost_dashboard", False):
        from . import mount_dashboard

        mount_dashboard(app, manager)
    return await _serve(app, host, port, api_token)


# -- in front of a host's unix socket ----------------------------------------------------
async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None as soon as it is known to pass ``limit`` bytes
    (what is left of it is never read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def create_proxy_app(
    socket: str | os.PathLike[str], *, max_body: int = MAX_PROXY_BODY
) -> tuple[Starlette, httpx.AsyncClient]:
    """The dashboard's files, and ``/v1/...`` forwarded to the local service at ``socket``.

    Request bodies over ``max_body`` bytes get 413: the page sends small JSON
    (a package to install is named by its path, not uploaded).
    """
    client = httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=os.fspath(socket)),
        base_url="http://plughost",
        timeout=httpx.Timeout(60.0, read=None),
    )

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        body = await _bounded_body(request, max_body)
        if body is None:
            refused = _problem(
                413,
                "Request body too large",
                f"the request body is larger than the {_size(max_body)} the dashboard forwards",
                "request_too_large",
                suggestions=[
                    "send less: a package is installed by its path on the host's disk, "
                    "not by its bytes"
                ],
            )
            refused.headers["Connection"] = "close"  # the rest of the body is not worth reading
            return refused
        upstream = client.build_request(
            request.method,
            request.url.path,
            params=request.url.query,
            headers=headers,
            content=body,
        )
        try:
            reply = await client.send(upstream, stream=True)
        except httpx.TransportError as exc:
            return _problem(
                502, "Host unreachable", f"the host's local service did not answer: {exc}", "proxy"
            )
        out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_BY_HOP}
        if reply.headers.get("content-type", "").startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in reply.aiter_bytes():
                        yield chunk
                finally:
                    await reply.aclose()

            return StreamingResponse(
                relay(),
                status_code=reply.status_code,
                headers=out,
                background=BackgroundTask(reply.aclose),
            )
        try:
            body = await reply.aread()
        finally:
            await reply.aclose()
        return Response(body, status_code=reply.status_code, headers=out)

    async def home(_: Request) -> Response:
        return RedirectResponse("/ui/", status_code=303)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(
        routes=[
            Route("/", home),
            Route("/v1/{rest:path}", forward, methods=methods),
            Mount("/ui", _Static(directory=STATIC_DIR, html=True), name="dashboard"),
        ]
    )
    return app, client


async def _host_answers(socket: Path) -> bool:
    if not socket.exists():
        return False
    transport = httpx.AsyncHTTPTransport(uds=str(socket))
    async with httpx.AsyncClient(transport=transport, timeout=3.0) as client:
        try:
            return (await client.get("http://plughost/v1/health")).status_code == 200
        except httpx.TransportError:
            return False


async def serve_socket_dashboard(
    socket: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    api_token: str | None = None,
    max_body: int = MAX_PROXY_BODY,
) -> tuple[DashboardServer, str]:
    """Serve the dashboard for the host whose local service listens on ``socket``."""
    path = Path(socket)
    if not await _host_answers(path):
        raise HostNotRunningError(
            f"no plughost host answers on {path}",
            suggestions=[f"start the host first: plughost run --root {path.parent.parent}"],
        )
    app, client = create_proxy_app(path, max_body=max_body)
    server, url = await _serve(app, host, port, api_token)
    server.on_stop.append(client.aclose)
    return server, url


def run_ui(
    root: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    *,
    port: int = 0,
    open_browser: bool = False,
    echo: Callable[[str], Any] = print,
    on_ready: Callable[[str], Any] | None = None,
) -> None:
    """``plughost ui``: serve the running host's dashboard until Ctrl-C (no typer here).

    ``on_ready`` is called with the one-time sign-in URL once the dashboard serves.
    """
    from ...paths import resolve_root
    from ..api import socket_path

    socket = socket_path(resolve_root(root, profile))

    async def main() -> None:
        server, url = await serve_socket_dashboard(socket, port=port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        echo(f"dashboard of the host on {socket}")
        echo(f"open (works once): {url}")
        echo("Ctrl-C stops the dashboard (the host keeps running)")
        if on_ready is not None:
            on_ready(url)
        if open_browser:
            with contextlib.suppress(Exception):
                webbrowser.open(url)
        waiter = asyncio.create_task(server.wait())
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), waiter], return_when=asyncio.FIRST_COMPLETED
        )
        await server.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C
        sys.stderr.write("\n")
