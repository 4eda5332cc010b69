"""A stand-in marketplace written only from the marketplace API's description
(docs/publishing.md, "The marketplace API").

It shares no code with ``plughost.registry`` (no models, no index, no signing
helpers): canned data, plain dicts, and ``cryptography`` for the Ed25519
signature of the hex checksum. Testing the client against it as well as
against our own server keeps the two from agreeing on a private mistake.

Extras for error tests:

- ``GET /v1/plugins/boom`` answers 500 with a server message;
- ``/html/...`` answers 200 with an HTML page for every path (a
  ``marketplace_url`` that points at something that is not the API);
- gamma 0.9.0's package (``/broken``) is cut off mid-stream.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["BOOM_MESSAGE", "StubMarketplace", "make_stub"]

BOOM_MESSAGE = "stub database is on fire"
T0 = "2024-03-01T10:00:00Z"


def _package(plugin_id: str, version: str) -> bytes:
    """A small real tar.gz with a plugin.yaml, so a download is a plausible package."""
    meta = f"id: {plugin_id}\nversion: {version}\nname: {plugin_id}\ncapabilities: [ui]\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("plugin.yaml", meta.encode()), ("assets/app.js", b"//" * 4000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class StubMarketplace:
    """The stub's data; ``app`` serves it."""

    public_key_hex: str
    plugins: list[dict[str, Any]]
    versions: dict[str, list[dict[str, Any]]]
    reviews: dict[str, list[dict[str, Any]]]
    files: dict[str, bytes]
    downloads: list[dict[str, str]] = field(default_factory=list)
    app: Starlette | None = None


def _envelope(data: Any, pagination: dict[str, int] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "data": data, "message": ""}
    if pagination is not None:
        body["pagination"] = pagination
    return JSONResponse(body)


def _fail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=status)


def _paged(request: Request, items: list[Any]) -> JSONResponse:
    page = max(1, int(request.query_params.get("page", "1")))
    per_page = min(100, max(1, int(request.query_params.get("per_page", "20"))))
    chunk = items[(page - 1) * per_page : page * per_page]
    total = len(items)
    return _envelope(
        chunk,
        {
            "page": page,
            "per_page": per_page,
            "total": total,
            "total_pages": math.ceil(total / per_page),
        },
    )


def make_stub() -> StubMarketplace:
    key = Ed25519PrivateKey.generate()
    public_hex = (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )

    def plugin(
        pid: str, name: str, category: str, downloads: int, rating: float, **kw: Any
    ) -> dict[str, Any]:
        return {
            "id": pid,
            "name": name,
            "description": kw.get("description", f"The {name} plugin"),
            "icon_url": "",
            "category": category,
            "tags": kw.get("tags", []),
            "license": "MIT",
            "repository": f"https://example.invalid/{pid}",
            "url": "",
            "readme": f"# {name}\n\nStub readme.",
            "official": False,
            "featured": kw.get("featured", False),
            "download_count": downloads,
            "average_rating": rating,
            "review_count": 0,
            "publisher_id": "stub",
            "publisher_name": "Stub Publisher",
            "latest_version": kw.get("latest", "1.0.0"),
            "author": {"name": "Stub", "email": "stub@example.invalid", "url": ""},
            "created_at": T0,
            "updated_at": kw.get("updated", T0),
        }

    plugins = [
        plugin("alpha", "Alpha", "tools", 500, 4.5, featured=True, latest="2.0.0", tags=["k8s"]),
        plugin("beta", "Beta", "themes", 20, 3.0, updated="2024-05-01T00:00:00Z"),
        plugin("gamma", "Gamma", "tools", 90, 5.0, description="kubernetes helper"),
    ]
    files: dict[str, bytes] = {}
    versions: dict[str, list[dict[str, Any]]] = {}

    def version(pid: str, ver: str, changelog: str, *, signed: bool = True) -> dict[str, Any]:
        data = _package(pid, ver)
        name = f"{pid}-{ver}-linux_amd64.tar.gz"
        files[name] = data
        checksum = hashlib.sha256(data).hexdigest()
        signature = base64.b64encode(key.sign(checksum.encode())).decode() if signed else ""
        artifact = {
            "checksum": checksum,
            "signature": signature,
            "download_url": f"/files/{name}",
            "size": len(data),
        }
        return {
            "id": f"{pid}-{ver}",
            "plugin_id": pid,
            "version": ver,
            "description": "",
            "changelog": changelog,
            "min_ide_version": "",
            "max_ide_version": "",
            "capabilities": ["ui"],
            "visible": True,
            "artifacts": {"linux_amd64": artifact, "darwin_arm64": artifact},
            "created_at": T0,
            "updated_at": T0,
        }

    versions["alpha"] = [
        version("alpha", "2.0.0", "Big rewrite"),
        version("alpha", "1.10.0", "More things"),
        version("alpha", "1.2.0", "First public"),
    ]
    versions["beta"] = [version("beta", "1.0.0", "Unsigned build", signed=False)]
    versions["gamma"] = [version("gamma", "1.0.0", "Hello"), version("gamma", "0.9.0", "Old")]
    # 0.9.0's package is cut off mid-stream (see ``broken`` below).
    versions["gamma"][1]["artifacts"] = {
        "linux_amd64": {
            **versions["gamma"][1]["artifacts"]["linux_amd64"],
            "download_url": "/broken",
        }
    }

    reviews = {
        "alpha": [
            {
                "id": f"r{i}",
                "plugin_id": "alpha",
                "user_id": 100 + i,
                "rating": 1 + i % 5,
                "title": f"Review {i}",
                "body": "text",
                "created_at": T0,
                "updated_at": T0,
            }
            for i in range(7)
        ]
    }
    stub = StubMarketplace(public_hex, plugins, versions, reviews, files)
    stub.app = _app(stub)
    return stub


class _Broken:
    """A raw ASGI endpoint: promises 100 000 bytes, sends 10, then drops the connection."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/gzip"), (b"content-length", b"100000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"0123456789", "more_body": True})
        raise ConnectionAbortedError("the stub drops the connection on purpose")


def _app(stub: StubMarketplace) -> Starlette:
    def find(request: Request) -> dict[str, Any] | None:
        pid = request.path_params["id"]
        return next((p for p in stub.plugins if p["id"] == pid), None)

    async def health(request: Request) -> Response:
        return _envelope({"status": "ok"})

    async def list_plugins(request: Request) -> Response:
        qp = request.query_params
        items = list(stub.plugins)
        if q := qp.get("q", "").lower():
            items = [p for p in items if q in (p["name"] + p["description"]).lower()]
        if category := qp.get("category"):
            items = [p for p in items if p["category"] == category]
        if qp.get("featured") == "true":
            items = [p for p in items if p["featured"]]
        if order := qp.get("order_field"):
            items.sort(key=lambda p: p[order], reverse=qp.get("order_direction") == "desc")
        return _paged(request, items)

    async def get_plugin(request: Request) -> Response:
        if request.path_params["id"] == "boom":
            return _fail(500, BOOM_MESSAGE)
        found = find(request)
        return _envelope(found) if found else _fail(404, "plugin not found")

    async def categories(request: Request) -> Response:
        counts: dict[str, int] = {}
        for p in stub.plugins:
            counts[p["category"]] = counts.get(p["category"], 0) + 1
        return _envelope([{"category": c, "count": n} for c, n in sorted(counts.items())])

    async def list_versions(request: Request) -> Response:
        if not find(request):
            return _fail(404, "plugin not found")
        return _paged(request, stub.versions.get(request.path_params["id"], []))

    async def get_version(request: Request) -> Response:
        for v in stub.versions.get(request.path_params["id"], []):
            if v["version"] == request.path_params["version"]:
                return _envelope(v)
        return _fail(404, "version not found")

    async def download(request: Request) -> Response:
        for v in stub.versions.get(request.path_params["id"], []):
            if v["version"] == request.path_params["version"]:
                artifact = v["artifacts"].get(request.path_params["platform"])
                if artifact:
                    return RedirectResponse(
                        str(request.base_url).rstrip("/") + artifact["download_url"], 302
                    )
        return _fail(404, "artifact not found")

    async def file(request: Request) -> Response:
        data = stub.files.get(request.path_params["name"])
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="application/gzip")

    async def downloads(request: Request) -> Response:
        if not find(request):
            return _fail(404, "plugin not found")
        pid = request.path_params["id"]
        if request.method == "POST":
            stub.downloads.append(await request.json())
            return _envelope(None)
        by_version: dict[str, int] = {}
        for d in stub.downloads:
            if d["plugin_id"] == pid:
                by_version[d["version"]] = by_version.get(d["version"], 0) + 1
        return _envelope(
            {
                "plugin_id": pid,
                "total_count": sum(by_version.values()),
                "by_version": [{"version": v, "count": n} for v, n in by_version.items()],
            }
        )

    async def daily(request: Request) -> Response:
        if not find(request):
            return _fail(404, "plugin not found")
        days = int(request.query_params.get("days", "30"))
        today = datetime.now(UTC).date()
        return _envelope(
            [
                {"date": (today - timedelta(days=n)).isoformat(), "count": n % 3}
                for n in range(days - 1, -1, -1)
            ]
        )

    async def reviews(request: Request) -> Response:
        if not find(request):
            return _fail(404, "plugin not found")
        return _paged(request, stub.reviews.get(request.path_params["id"], []))

    async def html(request: Request) -> Response:
        return HTMLResponse("<html><body>Welcome to a web page, not an API</body></html>")

    return Starlette(
        routes=[
            Route("/v1/health", health),
            Route("/v1/plugins", list_plugins),
            Route("/v1/categories", categories),
            Route("/v1/plugins/{id}", get_plugin),
            Route("/v1/plugins/{id}/versions", list_versions),
            Route("/v1/plugins/{id}/versions/{version}", get_version),
            Route("/v1/plugins/{id}/download/{version}/{platform}", download),
            Route("/v1/plugins/{id}/downloads", downloads, methods=["GET", "POST"]),
            Route("/v1/plugins/{id}/downloads/daily", daily),
            Route("/v1/plugins/{id}/reviews", reviews),
            Route("/files/{name}", file),
            Route("/html/{rest:path}", html),
            Route("/broken", _Broken()),
        ]
    )
