"""The dashboard's session against a local thief: cookies are not scoped by port.

Any other server on 127.0.0.1 that the user's browser visits (a link in a
plugin's readme) receives the dashboard's cookie, SameSite=Strict or not: all
127.0.0.1 ports are one site. These tests steal it that way, through a real
browser and a real listener, and replay it: without the page's own session
token (kept in the tab's sessionStorage, never sent to another origin) it opens
nothing, while the page itself keeps working.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_dashboard_e2e import CHROMIUM_ARGS, T, copy_example, expect
from waiting import async_wait_until

from plughost.host.manager import PluginManager
from plughost.packages import archive
from plughost.service.api import LocalService
from plughost.service.dashboard.serve import (
    SESSION_HEADER,
    DashboardServer,
    serve_socket_dashboard,
)
from plughost.settings import SettingsProvider

REPO = Path(__file__).resolve().parents[1]
MARKDOWN_JS = REPO / "src" / "plughost" / "service" / "dashboard" / "static" / "markdown.js"
FOREIGN_COOKIE = '{"theme":"dark"}'  # another app's cookie "prefs": not RFC 6265


@contextlib.contextmanager
def thief() -> Iterator[tuple[str, list[str]]]:
    """A server on another 127.0.0.1 port that keeps every Cookie header it is sent."""
    stolen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stolen.append(self.headers.get("Cookie", ""))
            body = b"<!doctype html><title>thanks</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", stolen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass
class Dashboard:
    """What ``plughost ui`` runs: the dashboard in front of a host's unix socket."""

    manager: PluginManager
    server: DashboardServer
    url: str


@contextlib.asynccontextmanager
async def ui(root: Path) -> AsyncIterator[Dashboard]:
    copy_example(root / "plugins" / "hello", "hello")
    manager = PluginManager(root, settings=SettingsProvider(None, {"stop_grace": 1.0}))
    await manager.initialize()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(manager.shutdown)
        service = LocalService(manager)
        await service.start()
        stack.push_async_callback(service.stop)
        server, url = await serve_socket_dashboard(service.socket)
        stack.push_async_callback(server.stop)
        yield Dashboard(manager, server, url)


@pytest.mark.browser
async def test_a_cookie_stolen_through_another_port_opens_nothing(
    chromium: Path, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    source = copy_example(tmp_path / "src" / "evil", "hello", "evil")
    package = archive.pack(source, tmp_path / "evil.tar.gz")
    async with (
        ui(tmp_path / "root") as dash,
        async_playwright() as pw,
    ):
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        context = await browser.new_context()
        base = dash.server.base_url
        await context.add_cookies([{"name": "prefs", "value": FOREIGN_COOKIE, "url": base}])
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(dash.url)
        await page.wait_for_url(f"{base}/ui/")  # signed in; the token is out of the address
        await page.locator("#conn[data-state=live]").wait_for(timeout=T)
        badge = page.locator('tr[data-plugin="hello"] .phase-cell .badge')
        await expect(badge).to_have_attribute("data-phase", "Running", timeout=T)

        # The user follows a readme's link to another local port: it gets the cookie.
        with thief() as (lure, stolen):
            await page.evaluate(
                """(href) => document.body.append(Object.assign(document.createElement("a"),
                    { id: "lure", href, target: "_blank", rel: "noopener noreferrer",
                      textContent: "the plugin's homepage" }))""",
                lure,
            )
            async with context.expect_page() as opened:
                await page.locator("#lure").click()
            await (await opened.value).close()
            cookie = await async_wait_until(
                lambda: stolen[0] if stolen else "", message="the theft"
            )
        assert f"{dash.server.cookie_name}=" in cookie and "prefs=" in cookie

        async with httpx.AsyncClient(base_url=base, headers={"cookie": cookie}) as replay:
            own, other = {"origin": base}, {"origin": lure.rstrip("/")}
            forged = {**own, "sec-fetch-site": "same-origin", "sec-fetch-mode": "cors"}
            for extra, refusal in ((None, "session"), (own, "session"), (forged, "session")):
                for method, path in (
                    ("POST", "/v1/install"),
                    ("POST", "/v1/ui/install"),
                    ("GET", "/v1/ui/plugins"),
                    ("GET", "/v1/plugins"),
                    ("GET", "/v1/plugins/hello/logs"),
                    ("GET", "/v1/ui/events"),
                    ("POST", "/v1/plugins/hello/disable"),
                ):
                    body = {"path": str(package)} if method == "POST" else None
                    answer = await replay.request(method, path, json=body, headers=extra)
                    assert answer.status_code == 403, (method, path, extra, answer.text)
                    assert answer.headers["content-type"] == "application/problem+json"
                    assert answer.json()["errorType"] == refusal
            refused = await replay.post("/v1/install", json={"path": str(package)}, headers=other)
            assert refused.status_code == 403 and refused.json()["errorType"] == "origin"
            assert [i.id for i in dash.manager.list_plugins()] == ["hello"]

            # The page's own token works with the cookie, but not from another origin or site.
            token = await page.evaluate("sessionStorage.getItem('plughost-session')")
            session = {SESSION_HEADER: token}
            assert (await replay.get("/v1/ui/plugins", headers=session)).status_code == 200
            for foreign in (
                other,
                {"origin": "null"},
                {"sec-fetch-site": "cross-site"},
                {"sec-fetch-site": "same-site"},  # another 127.0.0.1 port
            ):
                answer = await replay.post(
                    "/v1/install", json={"path": str(package)}, headers={**session, **foreign}
                )
                assert answer.status_code == 403 and answer.json()["errorType"] == "origin"
                got = await replay.get("/v1/ui/plugins", headers={**session, **foreign})
                assert got.status_code == 403, foreign
            assert [i.id for i in dash.manager.list_plugins()] == ["hello"]

        # The page itself still works: lists, stops and starts, live through its event stream.
        row = page.locator('tr[data-plugin="hello"]')
        await row.locator("[data-action=disable]").click()
        await page.locator("dialog#confirm #confirm-ok").click()
        await expect(badge).to_have_attribute("data-phase", "Stopped", timeout=T)
        assert not dash.manager.get_plugin("hello").enabled
        await row.locator("[data-action=enable]").click()
        await page.locator("dialog#confirm #confirm-ok").click()
        await expect(badge).to_have_attribute("data-phase", "Running", timeout=T)
        # A reload keeps the tab's session; a new tab has none and is refused.
        await page.reload()
        await expect(badge).to_have_attribute("data-phase", "Running", timeout=T)
        await page.locator("#conn[data-state=live]").wait_for(timeout=T)
        fresh = await context.new_page()
        await fresh.goto(f"{base}/ui/")
        await fresh.locator("#conn[data-state=down]").wait_for(timeout=T)
        await expect(fresh.locator("#conn")).to_contain_text("Signed out")
        await browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def test_readme_links_are_their_targets_exactly_or_not_links(node: str) -> None:
    """The readme renderer (markdown.js, run by node): http(s) or relative, escaped."""
    cases = {
        "[x](`code`)": '<a href="`code`" target="_blank" rel="noopener noreferrer">x</a>',
        "[`x`](https://a.example/b)": '<a href="https://a.example/b" target="_blank" '
        'rel="noopener noreferrer"><code>x</code></a>',
        '[q](https://a.example/?a=1&b="2")': '<a href="https://a.example/?a=1&amp;b=&quot;2&quot;"',
        '[e]("onmouseover=alert(1))': '<a href="&quot;onmouseover=alert(1)"',
        "[r](docs/guide.md)": '<a href="docs/guide.md"',
        "[j](JavaScript:alert(1))": "<p>j</p>",
        "[m](mailto:a@b.example)": "<p>m</p>",
        "[d](data:text/html,x)": "<p>d</p>",
        "[t](java\tscript:alert(1))": "<p>[t](java\tscript:alert(1))</p>",
        "`[c](https://a.example)`": "<p><code>[c](https://a.example)</code></p>",
    }
    script = (
        f"import {{ renderMarkdown }} from {json.dumps(MARKDOWN_JS.as_uri())};\n"
        f"const cases = {json.dumps(list(cases))};\n"
        "console.log(JSON.stringify(cases.map((c) => renderMarkdown(c))));\n"
    )
    done = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for (source, expected), html in zip(cases.items(), json.loads(done.stdout), strict=True):
        assert expected in html, (source, html)
