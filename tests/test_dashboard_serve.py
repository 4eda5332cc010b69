"""The dashboard's server side without a browser: sign-in, the socket proxy, its JSON routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_client import page_token, sign_in
from waiting import async_wait_until

from plughost.dev.watch import DevServerState
from plughost.errors import PlughostError
from plughost.host.manager import PluginManager
from plughost.packages import archive
from plughost.service.api import LocalService, create_app
from plughost.service.dashboard.serve import (
    MAX_PROXY_BODY,
    SESSION_HEADER,
    DashboardServer,
    HostNotRunningError,
    run_ui,
    serve_dashboard,
    serve_socket_dashboard,
)
from plughost.settings import SettingsProvider

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples"
PROBLEM = "application/problem+json"


@contextlib.asynccontextmanager
async def host(root: Path, **options: Any) -> AsyncIterator[PluginManager]:
    manager = PluginManager(root, settings=SettingsProvider(None, {}), **options)
    await manager.initialize()
    try:
        yield manager
    finally:
        await manager.shutdown()


@contextlib.asynccontextmanager
async def dashboard(manager: PluginManager) -> AsyncIterator[tuple[DashboardServer, str]]:
    server, url = await serve_dashboard(manager)
    try:
        yield server, url
    finally:
        await server.stop()


async def test_sign_in_link_works_once_and_sets_a_strict_http_only_cookie(tmp_path: Path) -> None:
    async with host(tmp_path) as manager, dashboard(manager) as (server, url):
        assert url.startswith("http://127.0.0.1:") and "/ui/?token=" in url
        base = server.base_url
        async with httpx.AsyncClient() as anonymous:
            for path in ("/ui/", "/v1/plugins", "/v1/ui/events"):
                denied = await anonymous.get(base + path)
                assert denied.status_code == 401
                assert denied.headers["content-type"] == PROBLEM
                assert denied.json()["errorType"] == "unauthorized"

        async with httpx.AsyncClient() as first:
            signed = await first.get(url + "&view=1")
            assert signed.status_code == 303
            # The token is dropped; the page's session token travels in the fragment.
            location = signed.headers["location"]
            assert location.startswith("/ui/?view=1#plughost-session=")
            session = {SESSION_HEADER: page_token(location)}
            cookie = signed.headers["set-cookie"]
            assert server.cookie_name == f"plughost_ui_{server.port}"
            assert cookie.startswith(f"{server.cookie_name}=")
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
            page = await first.get(base + "/ui/")  # the page's files: the cookie is enough
            assert page.status_code == 200 and '<script type="module" src="app.js">' in page.text
            assert "default-src 'self'" in page.headers["content-security-policy"]
            assert (await first.get(base + "/v1/plugins", headers=session)).json() == []
            alone = await first.get(base + "/v1/plugins")  # the cookie without the token
            assert alone.status_code == 403 and alone.headers["content-type"] == PROBLEM
            assert alone.json()["errorType"] == "session"
            assert SESSION_HEADER in alone.json()["detail"] and alone.json()["suggestions"]
            again = await first.get(url)  # a bookmarked link, already signed in
            assert again.status_code == 303 and again.headers["location"] == "/ui/"

            # DNS rebinding and other origins are refused even with cookie and token.
            rebound = await first.get(
                base + "/v1/plugins", headers={"host": "evil.example", **session}
            )
            assert rebound.status_code == 403
            cross = await first.put(
                base + "/v1/plugins/x/enabled",
                json={"enabled": False},
                headers={"origin": "http://evil.example", **session},
            )
            assert cross.status_code == 403 and cross.json()["errorType"] == "origin"

        async with httpx.AsyncClient() as second:
            reused = await second.get(url)
            assert reused.status_code == 401 and "already used" in reused.json()["detail"]
            assert (await second.get(base + "/v1/plugins", headers=session)).status_code == 401

        bearer = {"authorization": f"Bearer {server.api_token}"}
        wrong = {"authorization": "Bearer nope"}
        async with httpx.AsyncClient(base_url=base) as script:
            assert (await script.get("/v1/health", headers=bearer)).status_code == 200
            assert (await script.get("/v1/health", headers=wrong)).status_code == 401
            own = {"origin": base, **bearer}
            put = await script.put("/v1/plugins/x/enabled", json={"enabled": True}, headers=own)
            assert put.status_code == 404 and put.json()["errorType"] == "plugin_not_found"


async def test_foreign_malformed_cookies_do_not_hide_the_session(tmp_path: Path) -> None:
    """Other apps on 127.0.0.1 share the browser's cookies, some of them not RFC 6265."""
    async with host(tmp_path) as manager, dashboard(manager) as (server, url):
        async with httpx.AsyncClient() as client:
            session = await sign_in(client, url)
            value = client.cookies[server.cookie_name]
        mine = f"{server.cookie_name}={value}"
        async with httpx.AsyncClient(base_url=server.base_url) as browser:
            for header in (
                f'prefs={{"theme":"dark"}}; {mine}',
                f'{mine}; prefs={{"theme":"dark"}}; x=a b "c"',
                f"broken; =; ;;{mine}; plughost_ui=stale",
                f'plughost_ui_1=other-port; {server.cookie_name}="{value}"',
            ):
                answer = await browser.get("/v1/plugins", headers={"cookie": header, **session})
                assert answer.status_code == 200, (header, answer.text)
            wrong = f'prefs={{"theme":"dark"}}; {server.cookie_name}=nope'
            answer = await browser.get("/v1/plugins", headers={"cookie": wrong, **session})
            assert answer.status_code == 401


async def test_a_new_login_url_replaces_the_unused_one(tmp_path: Path) -> None:
    async with host(tmp_path) as manager, dashboard(manager) as (server, old):
        new = server.login_url()
        async with httpx.AsyncClient() as client:
            assert (await client.get(old)).status_code == 401
            assert (await client.get(new)).status_code == 303


async def test_only_loopback_addresses(tmp_path: Path) -> None:
    async with host(tmp_path) as manager:
        with pytest.raises(PlughostError, match="loopback"):
            await serve_dashboard(manager, host="0.0.0.0")


async def test_proxy_in_front_of_the_unix_socket_relays_json_errors_and_events(
    tmp_path: Path,
) -> None:
    async with host(tmp_path) as manager:
        service = LocalService(manager)
        await service.start()
        try:
            server, url = await serve_socket_dashboard(service.socket)
            try:
                async with httpx.AsyncClient() as client:
                    client.headers.update(await sign_in(client, url))
                    base = server.base_url
                    health = await client.get(base + "/v1/health")
                    assert health.status_code == 200 and health.json()["root"] == str(tmp_path)
                    assert "app.js" in (await client.get(base + "/ui/")).text
                    assert (await client.get(base + "/ui/markdown.js")).status_code == 200
                    missing = await client.put(
                        base + "/v1/plugins/nope/enabled", json={"enabled": True}
                    )
                    assert missing.status_code == 404
                    assert missing.headers["content-type"] == PROBLEM
                    assert missing.json()["errorType"] == "plugin_not_found"
                    home = await client.get(base + "/")
                    assert home.status_code == 303 and home.headers["location"] == "/ui/"

                    # Server-sent events stream through the proxy as they happen.
                    subscribers = manager.bus.subscriber_count()
                    async with client.stream("GET", base + "/v1/ui/events") as stream:
                        assert stream.headers["content-type"].startswith("text/event-stream")
                        await async_wait_until(  # the host subscribes when the stream opens
                            lambda: manager.bus.subscriber_count() > subscribers,
                            timeout=10,
                            message="the event stream's subscription on the host's bus",
                        )
                        manager.bus.publish("plugin/init_complete", {"plugins": 0})
                        manager.bus.publish("plugin/process/log", {"pluginID": "x"})  # filtered
                        manager.bus.publish("plugin/recovered", {"pluginID": "x", "attempt": 1})
                        names = []
                        async with asyncio.timeout(10):
                            async for line in stream.aiter_lines():
                                if line.startswith("event: "):
                                    names.append(line.removeprefix("event: "))
                                if len(names) == 2:
                                    break
                        assert names == ["plugin/init_complete", "plugin/recovered"]
            finally:
                await server.stop()
        finally:
            await service.stop()


async def raw_request(port: int, head: str, body: list[bytes]) -> bytes:
    """Send ``head`` and the ``body`` chunks (chunked, never finished) over a plain
    socket, then read the answer's status line and headers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n")
        for chunk in body:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        async with asyncio.timeout(10):  # a proxy that waits for the whole body never answers
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


async def test_proxy_refuses_bodies_over_its_limit_without_reading_them(tmp_path: Path) -> None:
    async with host(tmp_path, start_plugins=False) as manager:
        service = LocalService(manager)
        await service.start()
        server, url = await serve_socket_dashboard(service.socket)
        try:
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                session = await sign_in(client, url)
                cookie = f"{server.cookie_name}={client.cookies[server.cookie_name]}"
                at_limit = b"x" * MAX_PROXY_BODY
                answer = await client.post("/v1/ui/install", content=at_limit, headers=session)
                assert answer.status_code == 422  # through to the host, which reads it
                over = await client.post("/v1/ui/install", content=at_limit + b"x", headers=session)
                assert over.status_code == 413 and over.headers["content-type"] == PROBLEM
                problem = over.json()
                assert problem["errorType"] == "request_too_large" and "1 MiB" in problem["detail"]
                assert problem["suggestions"]

            head = (
                f"POST /v1/ui/install HTTP/1.1\nHost: 127.0.0.1:{server.port}\n"
                f"Cookie: {cookie}\n{SESSION_HEADER}: {session[SESSION_HEADER]}\n"
                "Content-Type: application/json\n"
            )
            # A declared length over the limit: refused before any of the body arrives.
            said = await raw_request(
                server.port, head + f"Content-Length: {2 * MAX_PROXY_BODY}\n", []
            )
            assert said.startswith(b"HTTP/1.1 413 ")
            # A chunked body that never ends: refused once it passes the limit.
            chunks = [b"y" * (64 << 10)] * (MAX_PROXY_BODY // (64 << 10) + 1)
            said = await raw_request(server.port, head + "Transfer-Encoding: chunked\n", chunks)
            assert said.startswith(b"HTTP/1.1 413 ") and b"connection: close" in said.lower()
        finally:
            await server.stop()
            await service.stop()


async def test_socket_dashboard_needs_a_running_host(tmp_path: Path) -> None:
    with pytest.raises(HostNotRunningError) as caught:
        await serve_socket_dashboard(tmp_path / "run" / "plughost.sock")
    assert "plughost run" in caught.value.suggestions[0]


def test_run_ui_without_a_host_says_how_to_start_one(tmp_path: Path) -> None:
    with pytest.raises(HostNotRunningError):
        run_ui(tmp_path, echo=lambda _: None)


class FakeDevServers:
    def __init__(self) -> None:
        state = DevServerState("hello", mode="managed", dev_path="/src/hello", status="error")
        state.last_build_duration = 812.5
        self.states = {"hello": state}

    def list_states(self) -> list[DevServerState]:
        return list(self.states.values())

    def get_state(self, plugin_id: str) -> DevServerState:
        return self.states.get(plugin_id) or DevServerState(plugin_id)

    def get_logs(self, plugin_id: str, n: int = 200) -> list[dict[str, Any]]:
        return [{"message": "build failed", "pluginID": plugin_id}][:n]

    def is_managed(self, plugin_id: str) -> bool:
        return plugin_id in self.states


async def test_dev_routes_with_and_without_a_dev_server_manager(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "hello", tmp_path / "plugins" / "hello")
    async with host(tmp_path, start_plugins=False) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/v1/dev")).json() == []
            off = await client.get("/v1/dev/hello")
            assert off.status_code == 404 and off.json()["title"] == "Dev mode is off"
            assert (await client.get("/v1/ui/summary")).json()["devAvailable"] is False

            manager.set_dev_server_manager(FakeDevServers())
            [state] = (await client.get("/v1/dev")).json()
            assert state["pluginID"] == "hello" and state["lastBuildDuration"] == 812.5
            assert (await client.get("/v1/dev/hello")).json()["status"] == "error"
            logs = (await client.get("/v1/dev/hello/logs?n=5")).json()
            assert logs[0]["message"] == "build failed"
            assert (await client.get("/v1/dev/nope")).status_code == 404
            assert (await client.get("/v1/ui/summary")).json()["devAvailable"] is True
            manager.set_dev_server_manager(None)


async def test_plugin_views_carry_crash_and_recovery(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES / "hello", tmp_path / "plugins" / "hello")
    async with host(tmp_path, start_plugins=False) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            [view] = (await client.get("/v1/ui/plugins")).json()
            assert view["id"] == "hello" and view["crash"] is None
            assert view["recovery"] == {
                "recovering": False,
                "attempt": 0,
                "maxAttempts": 3,
                "inCycle": False,
            }
            manager.health.state("hello").last_crash = {"kind": "hung", "attempt": 2}
            one = (await client.get("/v1/ui/plugins/hello")).json()
            assert one["crash"]["kind"] == "hung"
            assert (await client.get("/v1/ui/plugins/nope")).status_code == 404


async def finished(client: httpx.AsyncClient, job: dict[str, Any], timeout: float) -> Any:
    """The install job once it is done or has failed (polled through its route)."""
    if job["state"] in ("done", "error"):
        return job

    async def ended() -> Any:
        current = (await client.get(f"/v1/ui/jobs/{job['id']}")).json()
        return current if current["state"] in ("done", "error") else None

    return await async_wait_until(
        ended, timeout=timeout, interval=0.02, message=f"install job {job['id']} to end"
    )


async def test_install_job_from_a_package_file(tmp_path: Path) -> None:
    source = tmp_path / "src"
    shutil.copytree(EXAMPLES / "hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    meta = source / "plugin.yaml"
    meta.write_text(meta.read_text().replace("id: hello", "id: packaged"))
    package = archive.pack(source, tmp_path / "packaged.tar.gz")
    async with host(tmp_path / "root", start_plugins=False) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            bad = await client.post("/v1/ui/install", json={})
            assert bad.status_code == 400 and bad.headers["content-type"] == PROBLEM
            started = await client.post("/v1/ui/install", json={"path": str(package)})
            assert started.status_code == 202
            job = await finished(client, started.json(), timeout=20)
            assert job["state"] == "done", json.dumps(job)
            assert (job["pluginID"], job["version"], job["phase"]) == (
                "packaged",
                "1.0.0",
                "Installed",
            )
            assert job["done"] > 0 and job["finished"] is not None
            assert manager.get_plugin("packaged").version == "1.0.0"

            failed = await client.post("/v1/ui/install", json={"path": str(tmp_path / "no.tgz")})
            job = await finished(client, failed.json(), timeout=10)
            assert job["state"] == "error" and "no such file" in job["error"]["detail"]
            assert (await client.get("/v1/ui/jobs/job-999")).status_code == 404


async def test_marketplace_routes_say_what_setting_is_missing(tmp_path: Path) -> None:
    async with host(tmp_path) as manager:
        transport = httpx.ASGITransport(app=create_app(manager))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/v1/ui/marketplace/plugins?q=x", "/v1/ui/marketplace/categories"):
                answer = await client.get(path)
                assert answer.status_code == 412, answer.text
                assert answer.json()["errorType"] == "settings_missing_config"
