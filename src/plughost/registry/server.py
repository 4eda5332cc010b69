"""``plughost registry serve DIR``: the marketplace API (docs/publishing.md) over a registry.

A team can host its own marketplace, and the whole install flow runs offline
and in tests. The routes are the original marketplace's, answer for answer:
every JSON body is an envelope ``{success, data, message, pagination}``,
errors included (``success: false`` with a message and a 4xx/5xx status),
and ``GET /v1/plugins/{id}/download/{version}/{platform}`` answers 302 with
an absolute ``Location`` (the original Go client reads that header without
following it and fetches the URL as it is). The package itself is served by
``GET /v1/artifacts/{id}/{version}/{platform}.tar.gz``, or, when the
packages are in an object store, by the store itself at a pre-signed URL.

Handlers are thin: each awaits one :class:`~.catalog.Catalog` method. The
absolute URLs in answers are built from ``base_url`` or else the address the
server is bound to, never from the request's ``Host`` header, which any
client can set. Recorded downloads count once per client address, plugin and
version a minute (more are answered, not counted). The catalog's read routes
(:data:`CACHED_ROUTES`) are answered from rendered bytes while the catalog's
generation is unchanged (:mod:`.cache`): never staler than the database.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from ..errors import PlughostError, PluginNotFoundError
from .cache import ReadCache
from .catalog import DEFAULT_PER_PAGE, Catalog, Page
from .index import RegistryIndex
from .models import RecordDownloadInput
from .storage import Storage

__all__ = ["CACHED_ROUTES", "create_app", "run_server", "running_server"]

# The read routes whose answers depend only on the catalog, the request's path and
# query, and the address it arrived on: kept by the read cache (.cache) while the catalog
# is unchanged. Not the health check (it asks the database), not daily downloads (they
# depend on the day), not a download (the storage answers, and signed URLs expire).
CACHED_ROUTES = (
    "/v1/plugins",
    "/v1/categories",
    "/v1/plugins/{plugin_id}",
    "/v1/plugins/{plugin_id}/versions",
    "/v1/plugins/{plugin_id}/versions/{version}",
    "/v1/plugins/{plugin_id}/downloads",
    "/v1/plugins/{plugin_id}/reviews",
)


class _RegistryApp(FastAPI):
    """The app with the read cache in front of its whole stack: an answer kept costs no
    routing, no middleware and no parameter validation."""

    def build_middleware_stack(self) -> ASGIApp:
        catalog: Catalog = self.state.index
        return ReadCache(super().build_middleware_stack(), catalog.generation, CACHED_ROUTES)


class Envelope(JSONResponse):
    """A JSON answer encoded by pydantic in one pass, models and all: no dicts built in
    between and no json module. A model's None fields are left out; a dict's are kept
    (``"data": null``)."""

    def render(self, content: Any) -> bytes:
        return to_json(content, exclude_none=True, by_alias=False)


def ok(data: Any, message: str = "") -> JSONResponse:
    return Envelope({"success": True, "data": data, "message": message})


def ok_page(page: Page) -> JSONResponse:
    return Envelope(
        {
            "success": True,
            "data": page.items,
            "message": "",
            "pagination": {
                "page": page.page,
                "per_page": page.per_page,
                "total": page.total,
                "total_pages": page.total_pages,
            },
        }
    )


class PackageResponse(FileResponse):
    """A package file: read in chunks of 1 MiB, not 64 KiB, since each read is a hop to
    a worker thread and back (a typical package is then one read, not two or more)."""

    chunk_size = 1024 * 1024


def error(status: int, message: str) -> JSONResponse:
    return Envelope({"success": False, "data": None, "message": message}, status_code=status)


def _bound_url(request: Request) -> str:
    """``http://host:port`` of the socket the request arrived on."""
    server = request.scope.get("server")
    if not server or server[1] is None:  # a unix socket or an in-process transport
        return "http://localhost"
    host, port = server[0], server[1]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def create_app(
    directory: str | Path,
    *,
    base_url: str | None = None,
    database: str | None = None,
    storage: str | Storage | None = None,
) -> FastAPI:
    """The registry's ASGI app over ``directory`` (its key; by default its database and
    packages too: ``database`` is a SQLAlchemy URL, ``storage`` ``s3://bucket/prefix``).

    ``base_url`` is the public URL of the server as clients reach it (behind
    a proxy, say); by default absolute URLs name the address the server is bound to.
    The database's schema is brought up to date here, before anything is served.
    """
    RegistryIndex(directory, database=database, storage=storage)  # migrates
    index = Catalog(directory, database=database, storage=storage)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await index.close()

    app = _RegistryApp(
        title="plughost registry",
        description="The marketplace API (docs/publishing.md), served from a registry.",
        version="1",
        lifespan=lifespan,
    )
    app.state.index = index

    def base(request: Request) -> str:
        return (base_url or _bound_url(request)).rstrip("/")

    # -- errors as envelopes --------------------------------------------------

    @app.exception_handler(PlughostError)
    async def plughost_error(request: Request, exc: PlughostError) -> JSONResponse:
        return error(exc.status if exc.status < 500 else 500, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404 and exc.detail == "Not Found":
            return error(404, f"no such endpoint: {request.method} {request.url.path}")
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return error(400, f"invalid request: {problems}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    # -- routes ---------------------------------------------------------------

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        from .. import __version__

        plugins = await index.count_plugins()
        return ok({"status": "ok", "plugins": plugins, "server": f"plughost/{__version__}"})

    @app.get("/v1/plugins")
    async def list_plugins(
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        q: str = "",
        category: str = "",
        order_field: str = "",
        order_direction: str = "",
        featured: bool | None = None,
    ) -> JSONResponse:
        return ok_page(
            await index.list_plugins(
                page=page,
                per_page=per_page,
                q=q,
                category=category,
                order_field=order_field,
                order_direction=order_direction,
                # featured=false means "no filter", as the original client never sends it
                featured=True if featured else None,
            )
        )

    @app.get("/v1/categories")
    async def categories() -> JSONResponse:
        return ok(await index.categories())

    @app.get("/v1/plugins/{plugin_id}")
    async def get_plugin(plugin_id: str, request: Request) -> JSONResponse:
        return ok(await index.get_plugin(plugin_id, base_url=base(request)))

    @app.get("/v1/plugins/{plugin_id}/versions")
    async def list_versions(
        plugin_id: str, request: Request, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> JSONResponse:
        return ok_page(
            await index.list_versions(
                plugin_id, page=page, per_page=per_page, base_url=base(request)
            )
        )

    @app.get("/v1/plugins/{plugin_id}/versions/{version}")
    async def get_version(plugin_id: str, version: str, request: Request) -> JSONResponse:
        return ok(await index.get_version(plugin_id, version, base_url=base(request)))

    @app.get("/v1/plugins/{plugin_id}/download/{version}/{platform}")
    async def download(plugin_id: str, version: str, platform: str, request: Request) -> Response:
        key = await index.artifact_key(plugin_id, version, platform)  # else a 404 envelope
        filename = f"{plugin_id}-{version}-{platform}.tar.gz"
        location = await index.storage.download_url(key, filename)
        if location is None:
            location = index.artifact_url(base(request), plugin_id, version, platform)
        return RedirectResponse(location, status_code=302)

    @app.get("/v1/artifacts/{plugin_id}/{version}/{platform}.tar.gz")
    async def artifact(plugin_id: str, version: str, platform: str) -> Response:
        key = await index.artifact_key(plugin_id, version, platform)
        filename = f"{plugin_id}-{version}-{platform}.tar.gz"
        path = index.storage.local_path(key)
        if path is None:  # the object store serves it
            location = await index.storage.download_url(key, filename)
            assert location is not None
            return RedirectResponse(location, status_code=302)
        try:  # stat here (artifact_key just did): FileResponse would send it to a thread
            stat = path.stat()
        except FileNotFoundError:
            raise PluginNotFoundError(
                f"the package of {plugin_id} {version} ({platform}) is missing from the registry",
                plugin_id=plugin_id,
            ) from None
        return PackageResponse(
            path, media_type="application/gzip", filename=filename, stat_result=stat
        )

    @app.post("/v1/plugins/{plugin_id}/downloads")
    async def record_download(
        plugin_id: str,
        request: Request,
        body: Annotated[RecordDownloadInput | None, Body()] = None,
    ) -> JSONResponse:
        body = body or RecordDownloadInput()
        if body.plugin_id and body.plugin_id != plugin_id:
            return error(
                400, f"plugin_id {body.plugin_id!r} does not match the URL's {plugin_id!r}"
            )
        address = request.client.host if request.client else ""
        await index.record_download(plugin_id, body.version, body.arch, address=address)
        return ok(None, "download recorded")

    @app.get("/v1/plugins/{plugin_id}/downloads")
    async def download_stats(plugin_id: str) -> JSONResponse:
        return ok(await index.download_stats(plugin_id))

    @app.get("/v1/plugins/{plugin_id}/downloads/daily")
    async def daily_downloads(plugin_id: str, days: int = 30) -> JSONResponse:
        return ok(await index.daily_downloads(plugin_id, days))

    @app.get("/v1/plugins/{plugin_id}/reviews")
    async def reviews(
        plugin_id: str, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> JSONResponse:
        return ok_page(await index.list_reviews(plugin_id, page=page, per_page=per_page))

    # Accounts, publishers, submissions, posted reviews and the review page.
    from .service_api import install

    install(app, index, base, ok, ok_page)
    return app


def run_server(
    directory: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    base_url: str | None = None,
    log_level: str = "info",
    database: str | None = None,
    storage: str | None = None,
) -> None:
    """Serve the registry at ``directory`` until interrupted (``plughost registry serve``)."""
    app = create_app(directory, base_url=base_url, database=database, storage=storage)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@contextlib.contextmanager
def running_server(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0
) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread; yield its base URL (``http://host:port``).

    ``port=0`` picks a free port. For tests and benchmarks: the server stops
    when the block ends.
    """
    # Let uvicorn bind (port 0 = any free port) and read the port back: handing it a
    # pre-bound socket instead costs ~40 ms per request on Linux loopback.
    # With its lifespan: the app closes its pooled connections before the loop ends.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)  # off the main thread it leaves signals alone
    thread = threading.Thread(target=server.run, name="registry-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the registry server thread exited before it started")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the registry server did not start within {timeout} s")
            time.sleep(0.01)
        bound_port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
