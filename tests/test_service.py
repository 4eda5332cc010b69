"""The local service through its real unix socket.

A real manager with the hello example running, the service on
``<root>/run/plughost.sock`` (and on 127.0.0.1 with a bearer token), and a
real registry server for the marketplace routes. Every route is called;
every error must be problem JSON with an ``errorType``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from waiting import async_wait_until

from plughost.dev.scaffold import scaffold
from plughost.host.manager import PluginManager
from plughost.packages.archive import pack
from plughost.registry.index import add_review, publish
from plughost.registry.server import create_app as registry_app
from plughost.registry.server import running_server
from plughost.service import sse as sse_module
from plughost.service.api import LocalService
from plughost.service.client import parse_sse

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(120)]

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples"
TOKEN = "s3cret-token"


def example_copy(tmp: Path, example: str, version: str | None = None) -> Path:
    target = tmp / f"{example}-{version or 'src'}"
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns("__pycache__"))
    if version:
        meta = target / "plugin.yaml"
        meta.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", meta.read_text()))
    return target


def package(tmp: Path, example: str, version: str) -> Path:
    return pack(example_copy(tmp, example, version), tmp / f"{example}-{version}.tar.gz")


@dataclass
class Service:
    root: Path
    tmp: Path
    manager: PluginManager
    service: LocalService
    api: httpx.AsyncClient


@contextlib.contextmanager
def registry(tmp: Path) -> Iterator[tuple[str, str]]:
    directory = tmp / "registry"
    for version in ("1.0.0", "1.1.0"):
        result = publish(directory, package(tmp, "hello", version), readme="# Hello\n\nHi.")
    add_review(directory, "hello", rating=4, title="Nice", body="Works.")
    with running_server(registry_app(directory)) as url:
        yield url, result.public_key_hex


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def svc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    tmp = tmp_path_factory.mktemp("service")
    root = tmp / "root"
    shutil.copytree(EXAMPLES / "hello", root / "plugins" / "hello")
    with registry(tmp) as (url, key):
        (root / "plughost.toml").write_text(
            f'marketplace_url = "{url}"\nregistry_public_key = "{key}"\n'
            "stop_grace = 2.0\nkill_grace = 1.0\nstart_timeout = 20.0\n"
        )
        manager = PluginManager(root)
        await manager.initialize()
        service = LocalService(manager, tcp_port=0, token=TOKEN)
        await service.start()
        transport = httpx.AsyncHTTPTransport(uds=str(service.socket))
        api = httpx.AsyncClient(transport=transport, base_url="http://plughost", timeout=30)
        try:
            yield Service(root, tmp, manager, service, api)
        finally:
            await api.aclose()
            await service.stop()
            await manager.shutdown()
    assert not service.socket.exists()


def assert_problem(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["errorType"] == error_type, body
    assert body["type"] == f"urn:plughost:error:{error_type}"
    assert body["status"] == status and body["title"] and body["detail"]
    return body


async def sse(
    api: httpx.AsyncClient,
    method: str,
    path: str,
    *,
    opened: asyncio.Event | None = None,
    **kwargs: Any,
) -> AsyncIterator[tuple[str, Any]]:
    """Server-sent events of one request, as (name, data); ``opened`` is set once the
    response's headers have arrived."""
    headers = {"Accept": "text/event-stream"}
    async with api.stream(method, path, headers=headers, timeout=None, **kwargs) as response:
        assert response.status_code == 200
        if opened is not None:
            opened.set()
        buffer: list[str] = []
        async for line in response.aiter_lines():
            buffer.append(line)
            if line == "":
                for item in parse_sse(iter(buffer)):
                    yield item
                buffer = []


# --------------------------------------------------------------------------- tests
async def test_health_openapi_and_socket_mode(svc: Service) -> None:
    health = (await svc.api.get("/v1/health")).json()
    assert health["status"] == "ok" and health["root"] == str(svc.root)
    assert svc.service.socket.stat().st_mode & 0o777 == 0o600
    spec = (await svc.api.get("/openapi.json")).json()
    paths = set(spec["paths"])
    for path in (
        "/v1/plugins",
        "/v1/plugins/{plugin_id}/reload",
        "/v1/plugins/{plugin_id}/rollback",
        "/v1/plugins/{plugin_id}/enabled",
        "/v1/install",
        "/v1/dev",
        "/v1/marketplace/plugins",
        "/v1/marketplace/plugins/{plugin_id}/stats",
        "/v1/marketplace/categories",
        "/v1/plugins/{plugin_id}/logs/stream",
        "/v1/events",
    ):
        assert path in paths, path


async def test_plugin_queries(svc: Service) -> None:
    listed = (await svc.api.get("/v1/plugins")).json()
    assert [p["id"] for p in listed] == ["hello"] and listed[0]["phase"] == "Running"
    one = (await svc.api.get("/v1/plugins/hello")).json()
    assert one["pid"] and one["metadata"]["name"] == "Hello"
    meta = (await svc.api.get("/v1/plugins/hello/meta")).json()
    assert meta["id"] == "hello" and meta["capabilities"] == ["exec"]
    history = (await svc.api.get("/v1/plugins/hello/history")).json()
    assert history[-1]["to"] == "Running"


async def test_actions_and_enabled(svc: Service) -> None:
    api = svc.api
    assert (await api.post("/v1/plugins/hello/unload")).json()["phase"] == "Stopped"
    loaded = (await api.post("/v1/plugins/hello/load")).json()
    assert loaded["phase"] == "Running"
    reloaded = (await api.post("/v1/plugins/hello/reload")).json()
    assert reloaded["phase"] == "Running" and reloaded["pid"] != loaded["pid"]
    assert (await api.post("/v1/plugins/hello/retry")).json()["phase"] == "Running"
    off = (await api.put("/v1/plugins/hello/enabled", json={"enabled": False})).json()
    assert off["enabled"] is False and off["phase"] == "Stopped" and off["pid"] is None
    state = json.loads((svc.root / "plugin_state.json").read_text())
    assert [s["enabled"] for s in state if s["id"] == "hello"] == [False]
    on = (await api.put("/v1/plugins/hello/enabled", json={"enabled": True})).json()
    assert on["enabled"] is True and on["phase"] == "Running"


async def test_events_stream_delivers_a_reload(
    svc: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse_module, "HEARTBEAT", 0.1)  # heartbeats must not end a stream
    seen: list[tuple[str, dict[str, Any]]] = []
    heartbeats: list[str] = []

    async def reader(ready: asyncio.Event) -> None:
        headers = {"Accept": "text/event-stream"}
        async with svc.api.stream("GET", "/v1/events", headers=headers, timeout=None) as response:
            ready.set()  # headers are sent once the subscription exists
            lines: list[str] = []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    heartbeats.append(line)
                lines.append(line)
                if line:
                    continue
                for name, data in parse_sse(iter(lines)):
                    seen.append((name, data))
                    if name == "plugin/state_change" and data["payload"]["to"] == "Running":
                        return
                lines = []

    ready = asyncio.Event()
    task = asyncio.create_task(reader(ready))
    await asyncio.wait_for(ready.wait(), 10)
    await async_wait_until(
        lambda: task.done() or len(heartbeats) >= 3,
        timeout=10,
        message="a few heartbeats on the stream",
    )
    assert not task.done(), "the heartbeats ended the stream"
    await svc.api.post("/v1/plugins/hello/reload")
    await asyncio.wait_for(task, 20)
    changes = [d["payload"] for n, d in seen if n == "plugin/state_change"]
    moves = [(c["from"], c["to"]) for c in changes]
    assert ("Running", "Stopping") in moves and ("Starting", "Running") in moves
    assert all(c["pluginID"] == "hello" for c in changes)
    assert all(d["name"] == n and "seq" in d for n, d in seen)


async def test_logs_tail_filters_and_follow(svc: Service) -> None:
    api = svc.api
    tail = (await api.get("/v1/plugins/hello/logs", params={"n": 1})).json()
    assert len(tail) == 1 and tail[0]["pluginID"] == "hello"
    grep = (await api.get("/v1/plugins/hello/logs", params={"grep": "plugin starting"})).json()
    assert grep and all("plugin starting" in e["message"] for e in grep)
    errors = (await api.get("/v1/plugins/hello/logs", params={"level": "error"})).json()
    assert all(e["level"] == "error" for e in errors)
    bad = await api.get("/v1/plugins/hello/logs", params={"grep": "("})
    assert_problem(bad, 400, "validation")
    assert_problem(
        await api.get("/v1/plugins/hello/logs", params={"level": "loud"}), 400, "validation"
    )

    opened = asyncio.Event()

    async def first_line() -> dict[str, Any]:
        path = "/v1/plugins/hello/logs/stream"
        async for name, data in sse(api, "GET", path, opened=opened):
            if name == "log" and "plugin starting" in data["message"]:
                return dict(data)
        raise AssertionError("stream ended")

    follower = asyncio.create_task(first_line())
    # The route subscribes to the log before it answers: headers mean the subscription exists.
    await async_wait_until(
        lambda: opened.is_set() or follower.done(), timeout=10, message="the log stream to open"
    )
    await api.post("/v1/plugins/hello/reload")
    entry = await asyncio.wait_for(follower, 20)
    assert entry["pluginID"] == "hello" and entry["level"] == "info"


async def test_install_from_path_and_rollback(svc: Service) -> None:
    path = package(svc.tmp, "hello", "1.2.0")
    installed = (await svc.api.post("/v1/install", json={"path": str(path)})).json()
    assert installed["version"] == "1.2.0" and installed["phase"] == "Running"
    back = (await svc.api.post("/v1/plugins/hello/rollback")).json()
    assert back["version"] == "1.0.0" and back["phase"] == "Running"


async def test_install_from_the_marketplace_streams_progress(svc: Service) -> None:
    events = [
        item
        async for item in sse(
            svc.api, "POST", "/v1/install", json={"id": "hello", "version": "1.1.0"}
        )
    ]
    names = [name for name, _ in events]
    assert names[-1] == "result" and "progress" in names, events
    progress = [data for name, data in events if name == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] > 0
    assert events[-1][1]["version"] == "1.1.0" and events[-1][1]["phase"] == "Running"
    # without a version: the latest; without streaming: a plain answer
    latest = (await svc.api.post("/v1/install", json={"id": "hello"})).json()
    assert latest["version"] == "1.1.0"
    failing = [item async for item in sse(svc.api, "POST", "/v1/install", json={"id": "nope"})]
    assert failing[-1][0] == "error" and failing[-1][1]["errorType"] == "plugin_not_found"


async def test_install_errors_are_problems(svc: Service) -> None:
    api = svc.api
    assert_problem(await api.post("/v1/install", json={}), 400, "validation")
    assert_problem(await api.post("/v1/install", json={"id": "nope"}), 404, "plugin_not_found")
    missing = await api.post("/v1/install", json={"path": str(svc.tmp / "none.tar.gz")})
    assert_problem(missing, 400, "plugin_install_failed")
    no_previous = await api.post("/v1/plugins/nope/rollback")
    assert_problem(no_previous, 404, "plugin_not_found")


async def test_marketplace_routes(svc: Service) -> None:
    api = svc.api
    found = (await api.get("/v1/marketplace/plugins", params={"q": "greets"})).json()
    assert [p["id"] for p in found] == ["hello"] and found[0]["installed"] is True
    by_cat = (await api.get("/v1/marketplace/plugins", params={"category": "examples"})).json()
    assert [p["id"] for p in by_cat] == ["hello"]
    assert (await api.get("/v1/marketplace/plugins", params={"category": "none"})).json() == []
    sorted_ = await api.get("/v1/marketplace/plugins", params={"sort": "-name"})
    assert sorted_.status_code == 200
    assert_problem(
        await api.get("/v1/marketplace/plugins", params={"sort": "x"}), 400, "validation"
    )
    categories = (await api.get("/v1/marketplace/categories")).json()
    assert {"category": "examples", "count": 1} in categories
    plugin = (await api.get("/v1/marketplace/plugins/hello")).json()
    assert plugin["readme"].startswith("# Hello") and plugin["latest_version"] == "1.1.0"
    versions = (await api.get("/v1/marketplace/plugins/hello/versions")).json()
    assert [v["version"] for v in versions] == ["1.1.0", "1.0.0"]
    reviews = (await api.get("/v1/marketplace/plugins/hello/reviews", params={"page": 1})).json()
    assert reviews[0]["title"] == "Nice" and reviews[0]["rating"] == 4
    stats = (await api.get("/v1/marketplace/plugins/hello/stats")).json()
    assert set(stats) == {"plugin_id", "total", "by_version", "daily"}
    assert len(stats["daily"]) == 30 and stats["total"] == sum(
        b["count"] for b in stats["by_version"]
    )
    assert_problem(await api.get("/v1/marketplace/plugins/nope"), 404, "plugin_not_found")


async def test_dev_install(svc: Service) -> None:
    source = scaffold("devsvc", "python", svc.tmp)
    info = (await svc.api.post("/v1/dev", json={"path": str(source)})).json()
    assert info["id"] == "devsvc" and info["devMode"] is True and info["phase"] == "Running"
    bad = await svc.api.post("/v1/dev", json={"path": str(svc.tmp / "nowhere")})
    assert_problem(bad, 400, "validation")
    gone = (await svc.api.delete("/v1/plugins/devsvc")).json()
    assert gone["phase"] == "Uninstalled"


async def test_uninstall_and_unknown_plugins(svc: Service) -> None:
    path = package(svc.tmp, "slowstart", "1.0.0")
    await svc.api.post("/v1/install", json={"path": str(path)})
    assert (await svc.api.delete("/v1/plugins/slowstart")).json()["phase"] == "Uninstalled"
    assert not (svc.root / "plugins" / "slowstart").exists()
    for method, path_ in (
        ("GET", "/v1/plugins/slowstart"),
        ("POST", "/v1/plugins/slowstart/reload"),
        ("DELETE", "/v1/plugins/slowstart"),
        ("GET", "/v1/plugins/slowstart/logs"),
    ):
        body = assert_problem(await svc.api.request(method, path_), 404, "plugin_not_found")
        assert body["pluginID"] == "slowstart" and body["suggestions"]


async def test_http_errors_are_problems(svc: Service) -> None:
    api = svc.api
    assert_problem(await api.get("/v1/nothing-here"), 404, "not_found")
    assert_problem(await api.put("/v1/plugins/hello/enabled", json={"on": 1}), 422, "validation")
    assert_problem(await api.get("/v1/install"), 405, "method_not_allowed")


async def test_bearer_token_on_tcp(svc: Service) -> None:
    address = svc.service.tcp_address
    assert address is not None and address[0] == "127.0.0.1"
    base = f"http://{address[0]}:{address[1]}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        assert_problem(await client.get("/v1/health"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer nope"}
        assert_problem(await client.get("/v1/plugins", headers=wrong), 401, "unauthorized")
        right = {"Authorization": f"Bearer {TOKEN}"}
        answer = await client.get("/v1/health", headers=right)
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
