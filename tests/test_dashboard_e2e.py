"""The web dashboard end to end: headless Chromium (Debian's) driven by Playwright.

Each test runs a real manager with real example plugins in a fresh root, serves
it with ``serve_dashboard`` in the test's own event loop, signs in with the
one-time link and works through the page as a user would. Screenshots of the
main views (1280x800) go to the test's temporary directory, so a run leaves the
working tree alone; with PLUGHOST_UPDATE_SCREENSHOTS=1 (scripts/update_screenshots.sh)
they replace the tracked ones in docs/screenshots/.

Without /usr/bin/chromium (or the playwright package) these tests skip locally
and fail in CI (CI=true), as tests/toolchains.py decides:
scripts/install_browser.sh installs the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import wrappers_pb2
from waiting import async_wait_until

from plughost._proto import hello_pb2_grpc
from plughost.dev.watch import DevServerManager
from plughost.host.manager import PluginManager
from plughost.packages import archive
from plughost.phases import Phase
from plughost.registry import create_app as registry_app
from plughost.registry import running_server
from plughost.registry.index import RegistryIndex, add_review, publish
from plughost.service.dashboard.serve import DashboardServer, serve_dashboard
from plughost.settings import SettingsProvider

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "src" / "plughost" / "examples"
SHOTS = REPO / "docs" / "screenshots"
# Read at import: the autouse clean_environ fixture drops PLUGHOST_* variables from each test.
UPDATE_SCREENSHOTS = os.environ.get("PLUGHOST_UPDATE_SCREENSHOTS") == "1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1280, "height": 800}
FAST: dict[str, Any] = {
    "start_timeout": 20.0,
    "stop_grace": 1.0,
    "kill_grace": 1.0,
    "backoff_initial": 0.5,  # long enough to see Recovering, short enough for a test
    "backoff_max": 2.0,
    "stable_time": 0.5,
    "extra_env": {"SLOWSTART_MS": "200", "CRASHER_AFTER_MS": "-1"},
}
T = 15_000  # ms: generous for a loaded CI machine; passing runs do not wait for it


# -- plugins on disk ---------------------------------------------------------------------
def copy_example(dest: Path, example: str, plugin_id: str | None = None, **fields: str) -> Path:
    """``examples/<example>`` at ``dest``, with its plugin.yaml's id (and fields) replaced."""
    shutil.copytree(EXAMPLES / example, dest, ignore=shutil.ignore_patterns("__pycache__"))
    meta = dest / "plugin.yaml"
    text = meta.read_text()
    for key, value in {"id": plugin_id or example, **fields}.items():
        text, found = re.subn(rf"(?m)^{key}: .*$", f"{key}: {value}", text)
        if not found:
            text += f"{key}: {value}\n"
    meta.write_text(text)
    return dest


BROKEN = (
    "import sys\nsys.stderr.write('[ERROR] broken: cannot import greeter_lib\\n')\nsys.exit(2)\n"
)


def install_broken(root: Path, plugin_id: str = "broken") -> Path:
    """A hello copy whose program dies before its handshake (Failed at load)."""
    location = copy_example(root / "plugins" / plugin_id, "hello", plugin_id, name="Broken")
    (location / "plugin.py").write_text(BROKEN)
    return location


# -- the host and the page -------------------------------------------------------------------
@dataclass
class Host:
    manager: PluginManager
    server: DashboardServer
    url: str
    page: Any
    browser: Any
    shots: Path

    async def sign_in(self) -> None:
        await self.page.goto(self.url)
        await self.page.wait_for_url(re.compile(r"/ui/$"))  # the token is gone from the URL
        await self.page.locator("#conn[data-state=live]").wait_for(timeout=T)

    async def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        await self.page.mouse.move(0, 0)
        await self.page.evaluate("() => document.activeElement?.blur()")
        path = self.shots / f"{name}.png"
        await self.page.screenshot(path=str(path))
        assert path.read_bytes().startswith(PNG_SIGNATURE), f"no PNG screenshot at {path}"

    def row(self, plugin_id: str) -> Any:
        return self.page.locator(f'tr[data-plugin="{plugin_id}"]')

    def badge(self, plugin_id: str) -> Any:
        return self.row(plugin_id).locator(".phase-cell .badge")

    async def confirm(self, ok: bool = True) -> None:
        dialog = self.page.locator("dialog#confirm")
        await dialog.wait_for(state="visible", timeout=T)
        await dialog.locator("#confirm-ok" if ok else "#confirm-cancel").click()
        await dialog.wait_for(state="hidden", timeout=T)


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where screenshots go: the test's temporary directory, or docs/screenshots when
    PLUGHOST_UPDATE_SCREENSHOTS=1 (scripts/update_screenshots.sh)."""
    return SHOTS if UPDATE_SCREENSHOTS else tmp_path / "screenshots"


@contextlib.asynccontextmanager
async def dashboard(
    browser: Any,
    root: Path,
    shots: Path,
    *,
    settings: dict[str, Any] | None = None,
    dev: bool = False,
) -> AsyncIterator[Host]:
    manager = PluginManager(root, settings=SettingsProvider(None, {**FAST, **(settings or {})}))
    dsm = None
    if dev:
        dsm = DevServerManager(
            manager.table, debounce_ms=200, step_ms=30, devinfo_check_interval=0.3
        )
        manager.set_dev_server_manager(dsm)
    await manager.initialize()
    server, url = await serve_dashboard(manager)
    context = await browser.new_context(viewport=VIEWPORT, color_scheme="light")
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield Host(manager, server, url, page, browser, shots)
        assert errors == [], f"JavaScript errors on the page: {errors}"
    finally:
        await context.close()
        await server.stop()
        await manager.shutdown()  # closes the dev servers too


async def greet(manager: PluginManager, plugin_id: str, name: str) -> str:
    backend = manager.backend(plugin_id)
    assert backend is not None
    stub: Any = backend.stub(hello_pb2_grpc.GreeterStub)
    reply = await stub.Greet(wrappers_pb2.StringValue(value=name), timeout=5)
    return str(reply.value)


def expect(target: Any) -> Any:
    from playwright.async_api import expect as pw_expect

    return pw_expect(target)


# -- 1 and 2: the list, live badges, sign-in -------------------------------------------------
async def test_list_shows_plugins_and_a_killed_plugin_recovers_without_reload(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    copy_example(root / "plugins" / "hello", "hello")
    copy_example(root / "plugins" / "slowstart", "slowstart")
    copy_example(root / "plugins" / "crasher", "crasher")
    install_broken(root)
    copy_example(root / "plugins" / "hanger", "hanger")
    (root / "plugin_state.json").write_text(
        json.dumps(
            [
                {
                    "id": "hanger",
                    "phase": "Stopped",
                    "enabled": False,
                    "metadata": {"id": "hanger", "version": "1.0.0", "capabilities": ["exec"]},
                }
            ]
        )
    )
    async with dashboard(browser, root, shots) as host:
        page = host.page
        # Without the cookie: 401 problem JSON, even for the page itself.
        other = await browser.new_context()
        anonymous = await other.request.get(host.server.base_url + "/ui/")
        assert anonymous.status == 401
        assert (await anonymous.json())["errorType"] == "unauthorized"

        await host.sign_in()
        [cookie] = await page.context.cookies()
        assert cookie["name"] == f"plughost_ui_{host.server.port}"
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        # The used link does not work for a second client.
        second = await other.new_page()
        answer = await second.goto(host.url)
        assert answer is not None and answer.status == 401
        assert "already used" in (await answer.json())["detail"]
        await other.close()

        for plugin_id in ("hello", "slowstart", "crasher"):
            await expect(host.badge(plugin_id)).to_have_attribute("data-phase", "Running")
        await expect(host.badge("broken")).to_have_attribute("data-phase", "Failed")
        await expect(host.row("broken")).to_contain_text("cannot import greeter_lib")
        await expect(host.badge("hanger")).to_have_attribute("data-phase", "Stopped")
        await expect(host.row("hanger")).to_contain_text("disabled")
        await expect(host.row("hello")).to_contain_text("exec")
        await expect(host.row("hello")).to_contain_text("1.0.0")
        await expect(page.locator("#host-counts")).to_have_text("3 of 5 running")
        await host.shot("plugins")

        # SIGKILL the plugin: Recovering, then Running again, in the same document.
        await page.evaluate("window.__marker = 'same page'")
        old_pid = host.manager.get_plugin("hello").pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        # Checked on every frame: Recovering lasts about backoff_initial (0.5 s).
        await page.wait_for_function(
            """() => {
                const row = document.querySelector('tr[data-plugin="hello"]');
                return row?.querySelector('.badge')?.dataset.phase === 'Recovering'
                    && row.textContent.includes('attempt 1/3');
            }""",
            polling="raf",
            timeout=T,
        )
        toast = page.locator("[data-testid=crash-toast]")
        await expect(toast).to_contain_text("hello crashed")
        await expect(toast).to_contain_text("signal SIGKILL")
        await expect(host.badge("hello")).to_have_attribute("data-phase", "Running", timeout=T)
        assert await page.evaluate("window.__marker") == "same page"
        new_pid = host.manager.get_plugin("hello").pid
        assert new_pid not in (None, old_pid)


# -- 4: the plugin page ----------------------------------------------------------------------
async def test_plugin_page_metadata_history_live_logs_and_crash(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    copy_example(root / "plugins" / "hello", "hello")
    async with dashboard(browser, root, shots) as host:
        page = host.page
        await host.sign_in()
        await page.evaluate("window.__marker = 'same page'")
        await host.row("hello").locator("a.plugin-name").click()
        await page.wait_for_url(re.compile(r"#/plugins/hello$"))

        await expect(page.locator("h1")).to_contain_text("Hello")
        await expect(page.locator("[data-field=description]")).to_contain_text(
            "Greets whoever asks"
        )
        await expect(page.locator("[data-field=pid]")).to_have_text(
            str(host.manager.get_plugin("hello").pid)
        )
        history = page.locator("[data-testid=history] tbody tr")
        await expect(history.first).to_contain_text("Running")
        await expect(page.locator("[data-testid=history]")).to_contain_text("Validating")

        # The log tail: what is there, then what comes (live).
        logs = page.locator("[data-testid=logs]")
        await expect(logs).to_contain_text("hello plugin starting")
        assert await greet(host.manager, "hello", "dashboard") == "hello, dashboard"
        await expect(logs).to_contain_text("greeting dashboard")

        # Search (a regular expression) and the level filter.
        await page.locator("[data-testid=log-search]").fill("greet.*board")
        await expect(logs.locator(".line")).to_have_count(1)
        await expect(logs).not_to_contain_text("hello plugin starting")
        await page.locator("[data-testid=log-search]").fill("")
        await page.locator("[data-testid=log-level]").select_option("error")
        await expect(logs.locator(".line")).to_have_count(0)

        # A crash, as it happens: notification, crash panel, error line, history.
        pid = host.manager.get_plugin("hello").pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await expect(page.locator("[data-testid=crash-toast]")).to_contain_text("hello crashed")
        panel = page.locator("[data-testid=crash-panel]")
        await expect(panel).to_be_visible()
        await expect(panel.locator("[data-field=kind]")).to_have_text("crashed")
        await expect(panel.locator("[data-field=exit]")).to_have_text("SIGKILL")
        await expect(panel.locator("[data-field=attempt]")).to_have_text("1 of 3")
        await expect(panel.locator("[data-field=next-retry]")).not_to_be_empty()
        await expect(logs.locator(".line.level-error")).to_contain_text("plugin crashed")
        await expect(page.locator("[data-testid=history]")).to_contain_text("Recovering")
        await expect(page.locator("h1 .badge")).to_have_attribute(
            "data-phase", "Running", timeout=T
        )
        await expect(panel).to_contain_text("recovered")
        await page.locator("[data-testid=log-level]").select_option("")
        await expect(logs).to_contain_text("recovery attempt 1")
        for name in ("Ada", "Grace", "Linus"):
            await greet(host.manager, "hello", name)
        await expect(logs).to_contain_text("greeting Linus")
        assert await page.evaluate("window.__marker") == "same page"
        await host.shot("plugin")


async def test_plugin_page_shows_services_and_lifecycle_answers(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    """What the running plugin serves and answers, from /introspect."""
    root = tmp_path / "root"
    copy_example(root / "plugins" / "hello", "hello")
    async with dashboard(browser, root, shots) as host:
        page = host.page
        await host.sign_in()
        await host.row("hello").locator("a.plugin-name").click()
        await page.wait_for_url(re.compile(r"#/plugins/hello$"))
        panel = page.locator("[data-testid=services-panel]")
        services = panel.locator("[data-testid=services] li")
        await expect(services).to_have_text(
            [
                "grpc.health.v1.Health",
                "omniview.sdk.lifecycle.v1.PluginLifecycle",
                "plugin.GRPCController",
                "plugin.GRPCStdio",
            ]
        )
        await expect(panel).to_contain_text("no server reflection")
        lifecycle = panel.locator("[data-testid=lifecycle]")
        await expect(lifecycle.locator("[data-field=lifecycle]")).to_have_text(
            "omniview.sdk.lifecycle.v1.PluginLifecycle"
        )
        await expect(lifecycle.locator("[data-field=plugin-id]")).to_have_text("hello")
        await expect(lifecycle.locator("[data-field=version]")).to_have_text("1.0.0")
        await expect(lifecycle.locator("[data-field=sdk-protocol]")).to_have_text("1")
        await expect(lifecycle.locator("[data-field=reports]")).to_have_text("exec")
        await expect(lifecycle.locator("[data-field=protocol]")).to_have_text("1")
        await expect(lifecycle.locator("[data-field=address]")).to_contain_text(
            f"unix {root / 'run'}"
        )
        # Stopped: the panel says so; started again: the new process's answers.
        await host.manager.unload_plugin("hello")
        await expect(panel.locator("[data-testid=services-note]")).to_contain_text("Not running")
        await host.manager.load_plugin("hello")
        await expect(lifecycle.locator("[data-field=plugin-id]")).to_have_text("hello", timeout=T)


# -- 3: the marketplace ------------------------------------------------------------------------
README = """# Greeter

Greets **whoever asks**, in a _friendly_ way.

## Features

- answers `Greet` over gRPC
- logs every greeting
- starts in well under a second

## Usage

```sh
plughost install greeter
```

See [the plughost docs](https://example.org/plughost) for more, and [the guide](`guide.md`).

<script>window.__xss = 1</script> [click me](javascript:window.__xss=2)
"""


class SlowArtifacts:
    """ASGI wrapper: package downloads take ``delay`` seconds (the progress bar shows)."""

    def __init__(self, app: Any, delay: float) -> None:
        self.app, self.delay = app, delay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/artifacts/"):
            await asyncio.sleep(self.delay)
        await self.app(scope, receive, send)


def build_registry(tmp: Path) -> tuple[Path, str]:
    """A registry with greeter 1.0.0 and 1.1.0 (readme, reviews, 30 days of downloads),
    timekeeper (another category) and hello 1.2.0 (an update of the installed 1.0.0).
    Returns its directory and public key."""
    directory = tmp / "registry"
    packages = tmp / "packages"
    fields = {
        "name": "Greeter",
        "description": "Friendly greetings over gRPC; the hello example, published.",
    }
    source = copy_example(tmp / "src" / "greeter", "hello", "greeter", **fields)
    for version, changelog in (("1.0.0", "First release."), ("1.1.0", "Friendlier greetings.")):
        meta = source / "plugin.yaml"
        meta.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", meta.read_text()))
        package = archive.pack(source, packages / f"greeter-{version}.tar.gz")
        result = publish(directory, package, readme=README, changelog=changelog)
    clock = copy_example(
        tmp / "src" / "timekeeper",
        "slowstart",
        "timekeeper",
        name="Timekeeper",
        category="tools",
        description="Keeps time for other plugins (starts a little slowly).",
    )
    publish(directory, archive.pack(clock, packages / "timekeeper-0.3.0.tar.gz"))
    newer_hello = copy_example(tmp / "src" / "hello", "hello", version="1.2.0")
    publish(directory, archive.pack(newer_hello, packages / "hello-1.2.0.tar.gz"))
    add_review(directory, "greeter", rating=5, title="Does what it says", body="Fast and tiny.")
    add_review(
        directory,
        "greeter",
        rating=4,
        title="Nice",
        body="Would like more languages.",
        response="Coming in 1.2!",
    )
    index = RegistryIndex(directory)
    today = datetime.now(UTC).date()
    for days_ago in range(30):
        for n in range((days_ago * 7) % 11 + (3 if days_ago < 10 else 0)):
            version = "1.1.0" if n % 3 else "1.0.0"
            index.record_download(
                "greeter", version, "linux_amd64", day=today - timedelta(days=days_ago)
            )
    return directory, result.public_key_hex


async def test_marketplace_search_detail_and_install_with_progress(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    directory, public_key = build_registry(tmp_path)
    root = tmp_path / "root"
    copy_example(root / "plugins" / "hello", "hello")
    app = SlowArtifacts(registry_app(directory), delay=1.0)
    with running_server(app) as registry_url:
        settings = {"marketplace_url": registry_url, "registry_public_key": public_key}
        async with dashboard(browser, root, shots, settings=settings) as host:
            page = host.page
            await host.sign_in()
            await page.evaluate("window.__marker = 'same page'")
            await page.locator("[data-tab=marketplace]").click()
            results = page.locator("[data-testid=market-results]")
            cards = results.locator(".market-card")
            await expect(cards).to_have_count(3)
            await expect(cards.first).to_contain_text("Greeter")  # most downloaded first
            await expect(page.locator("[data-testid=market-category] option")).to_have_count(3)
            hello_card = results.locator('.market-card[data-plugin="hello"]')
            await expect(hello_card.locator("[data-install]")).to_have_text("Update to 1.2.0")
            await expect(hello_card).to_contain_text("update: 1.0.0 → 1.2.0")
            await host.shot("marketplace")

            await page.locator("[data-testid=market-search]").fill("time")
            await expect(cards).to_have_count(1)
            await expect(cards.first).to_contain_text("Timekeeper")
            await page.locator("[data-testid=market-search]").fill("")
            await page.locator("[data-testid=market-category]").select_option("tools")
            await expect(cards).to_have_count(1)
            await expect(cards.first).to_contain_text("Timekeeper")
            await page.locator("[data-testid=market-category]").select_option("")
            await page.locator("[data-testid=market-sort]").select_option("name")
            await expect(cards).to_have_count(3)
            await expect(cards.last).to_contain_text("Timekeeper")

            # The detail page: rendered readme (safely), chart, versions, reviews.
            await cards.filter(has_text="Greeter").locator("a.card-link").click()
            await page.wait_for_url(re.compile(r"#/marketplace/greeter$"))
            readme = page.locator("[data-testid=readme]")
            await expect(readme.locator("h1")).to_have_text("Greeter")
            await expect(readme.locator("li")).to_have_count(3)
            await expect(readme.locator("pre code")).to_contain_text("plughost install greeter")
            await expect(readme.locator("strong")).to_have_text("whoever asks")
            link = readme.locator("a", has_text="the plughost docs")
            await expect(link).to_have_attribute("href", "https://example.org/plughost")
            guide = readme.locator("a", has_text="the guide")  # a code span as the target
            await expect(guide).to_have_attribute("href", "`guide.md`")
            await expect(readme.locator("script")).to_have_count(0)
            await expect(readme.locator("a[href^='javascript']")).to_have_count(0)
            await expect(readme).to_contain_text("<script>window.__xss = 1</script>")
            assert await page.evaluate("window.__xss") is None
            bars = page.locator("[data-testid=downloads-chart] rect.chart-bar")
            await expect(bars).to_have_count(30)
            assert await bars.last.get_attribute("data-count") == "3"  # today: 0 % 11 + 3
            await expect(page.locator("[data-testid=versions] li")).to_have_count(2)
            await expect(page.locator("[data-testid=versions]")).to_contain_text(
                "Friendlier greetings."
            )
            await expect(page.locator("[data-testid=reviews] li")).to_have_count(2)
            await expect(page.locator("[data-testid=reviews]")).to_contain_text("Coming in 1.2!")
            await host.shot("marketplace-detail")

            # Install the latest version, with a progress indicator, then see it Running.
            await page.locator(".detail-actions [data-install=greeter]").click()
            progress = page.locator(".detail-actions [data-testid=install-progress]")
            await expect(progress).to_be_visible()
            await expect(progress).to_have_attribute("data-state", "downloading")
            await expect(progress).to_have_attribute("data-state", "done", timeout=T)
            await expect(progress).to_contain_text("Installed · Running")
            info = host.manager.get_plugin("greeter")
            assert (info.version, info.phase) == ("1.1.0", Phase.RUNNING)
            await expect(page.locator(".detail-actions .chip.ok")).to_contain_text(
                "installed 1.1.0"
            )
            await page.locator("[data-tab=plugins]").click()
            await expect(host.badge("greeter")).to_have_attribute("data-phase", "Running")
            await expect(host.row("greeter")).to_contain_text("1.1.0")
            assert await page.evaluate("window.__marker") == "same page"


# -- 5: dev plugins ------------------------------------------------------------------------------
async def test_dev_view_shows_build_status_duration_and_errors(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    source = copy_example(tmp_path / "src" / "devhello", "hello", "devhello", name="Dev Hello")
    broken = copy_example(tmp_path / "src" / "devbroken", "hello", "devbroken", name="Dev Broken")
    plugin_py = broken / "plugin.py"
    plugin_py.write_text(plugin_py.read_text().replace("import logging", "import logging +"))
    async with dashboard(browser, tmp_path / "root", shots, dev=True) as host:
        page = host.page
        ok = await host.manager.install_in_dev_mode(source)
        assert ok.phase is Phase.RUNNING, ok.last_error
        failed = await host.manager.install_in_dev_mode(broken)
        assert failed.phase is Phase.BUILD_FAILED
        await host.sign_in()
        await page.locator("[data-tab=dev]").click()
        cards = page.locator("[data-testid=dev-list] .dev-card")
        await expect(cards).to_have_count(2)
        good = cards.filter(has_text="Dev Hello")
        bad = cards.filter(has_text="Dev Broken")
        await expect(good.locator("[data-testid=build-status]")).to_have_text("build: running")
        await expect(good.locator("[data-testid=build-duration]")).to_have_text(
            re.compile(r"^\d+(\.\d+)? m?s$")
        )
        await expect(bad.locator("[data-testid=build-status]")).to_have_text("build: error")
        errors = bad.locator("[data-testid=build-errors] li")
        await expect(errors).to_have_count(1)
        await expect(errors.first.locator(".where")).to_have_text(re.compile(r"^plugin\.py:5"))
        await expect(errors.first).to_contain_text("SyntaxError")
        await expect(bad.locator(".badge[data-phase]")).to_have_attribute(
            "data-phase", "BuildFailed"
        )

        # A save that breaks the good one shows up live; the running plugin stays.
        code = source / "plugin.py"
        code.write_text(
            code.read_text().replace("def register(server: Any) -> None:", "def register(server:")
        )
        await expect(good.locator("[data-testid=build-status]")).to_have_text(
            "build: error", timeout=T
        )
        await expect(good.locator("[data-testid=build-errors] .where")).to_have_text(
            re.compile(r"^plugin\.py:\d+")
        )
        await expect(good.locator(".badge[data-phase]")).to_have_attribute("data-phase", "Running")
        await expect(good.locator(".keep-running")).to_be_visible()
        await good.locator(".dev-output-box summary").click()
        await expect(good.locator(".dev-output")).to_contain_text("changed: plugin.py")
        await host.shot("dev")


# -- 6: actions with confirmation ---------------------------------------------------------------
async def test_actions_reload_retry_disable_enable_uninstall_with_confirmation(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    copy_example(root / "plugins" / "hello", "hello")
    install_broken(root)
    async with dashboard(browser, root, shots) as host:
        page = host.page
        manager = host.manager
        await host.sign_in()
        await expect(host.badge("hello")).to_have_attribute("data-phase", "Running")
        await expect(host.badge("broken")).to_have_attribute("data-phase", "Failed")

        # Reload: cancelled changes nothing; confirmed restarts the process.
        pid = manager.get_plugin("hello").pid
        await host.row("hello").locator("[data-action=reload]").click()
        await expect(page.locator("#confirm-title")).to_have_text("Reload Hello?")
        await host.confirm(ok=False)
        assert manager.get_plugin("hello").pid == pid
        await host.row("hello").locator("[data-action=reload]").click()
        await host.confirm()
        await async_wait_until(
            lambda: manager.get_plugin("hello").pid not in (None, pid),
            timeout=15,
            interval=0.02,
            message="a new pid",
        )
        await expect(host.badge("hello")).to_have_attribute("data-phase", "Running")

        # Disable, then enable.
        await host.row("hello").locator("[data-action=disable]").click()
        await host.confirm()
        await expect(host.badge("hello")).to_have_attribute("data-phase", "Stopped")
        await expect(host.row("hello")).to_contain_text("disabled")
        assert not manager.get_plugin("hello").enabled
        await host.row("hello").locator("[data-action=enable]").click()
        await host.confirm()
        await expect(host.badge("hello")).to_have_attribute("data-phase", "Running")
        assert manager.get_plugin("hello").enabled

        # Retry a Failed plugin once its cause is fixed.
        shutil.copy(EXAMPLES / "hello" / "plugin.py", root / "plugins" / "broken" / "plugin.py")
        await host.row("broken").locator("[data-action=retry]").click()
        await host.confirm()
        await expect(host.badge("broken")).to_have_attribute("data-phase", "Running")

        # Uninstall (a danger confirmation): the row goes, so do the files.
        await host.row("broken").locator("[data-action=uninstall]").click()
        await expect(page.locator("#confirm-ok")).to_have_class(re.compile(r"\bdanger\b"))
        await host.confirm()
        await expect(host.row("broken")).to_have_count(0)
        assert [i.id for i in manager.list_plugins()] == ["hello"]
        assert not (root / "plugins" / "broken").exists()


# -- permissions: shown at install and on the plugin page, a held update granted -------------
def hostile_package(tmp: Path, version: str, permissions: dict[str, Any]) -> Path:
    """The sandbox tests' hostile plugin (tests/plugins/hostile), asking for ``permissions``."""
    import yaml

    source = tmp / "src" / f"hostile-{version}"
    hostile = Path(__file__).resolve().parent / "plugins" / "hostile"
    shutil.copytree(hostile, source, ignore=shutil.ignore_patterns("__pycache__"))
    meta = yaml.safe_load((source / "plugin.yaml").read_text())
    meta["version"], meta["permissions"] = version, permissions
    (source / "plugin.yaml").write_text(yaml.safe_dump(meta))
    return archive.pack(source, tmp / "packages" / f"hostile-{version}.tar.gz")


async def test_permissions_are_asked_at_install_shown_and_a_held_update_granted(
    browser: Any, shots: Path, tmp_path: Path
) -> None:
    from toolchains import unavailable

    from plughost.process.sandbox import probe

    if not probe().usable:
        unavailable(probe().reason, "run scripts/install_sandbox.sh")
    directory = tmp_path / "registry"
    result = publish(directory, hostile_package(tmp_path, "1.0.0", {"network": "loopback"}))
    root = tmp_path / "root"
    root.mkdir()
    with running_server(registry_app(directory)) as registry_url:
        settings = {
            "marketplace_url": registry_url,
            "registry_public_key": result.public_key_hex,
            "extra_env": {"HOSTILE_FORKS": "1"},
        }
        async with dashboard(browser, root, shots, settings=settings) as host:
            page = host.page
            await host.sign_in()
            await page.evaluate("location.hash = '#/marketplace/hostile'")
            await page.locator(".detail-actions [data-install=hostile]").click()
            # Downloaded and verified, then asked before it starts.
            dialog = page.locator("dialog#confirm")
            await expect(dialog).to_be_visible(timeout=T)
            await expect(dialog).to_contain_text("connect to services on this computer")
            assert host.manager.get_plugin("hostile").phase == Phase.STOPPED
            await host.confirm(ok=True)
            await async_wait_until(
                lambda: host.manager.get_plugin("hostile").phase != Phase.STOPPED, timeout=T / 1000
            )
            await expect(
                page.locator(".detail-actions [data-testid=install-progress]")
            ).to_contain_text("Installed · Running", timeout=T)
            info = host.manager.get_plugin("hostile")
            assert info.phase == Phase.RUNNING, info.last_error

            await page.evaluate("location.hash = '#/plugins/hostile'")
            panel = page.locator("[data-testid=permissions-panel]")
            await expect(panel.locator("[data-testid=granted]")).to_contain_text(
                "connect to services on this computer (127.0.0.1)"
            )
            await expect(panel.locator("[data-testid=enforcement]")).to_contain_text(
                "enforced by bubblewrap"
            )
            await expect(panel.locator("[data-testid=held]")).to_have_count(0)

            # An update asking for more is held; the page says what more and grants it.
            update = hostile_package(tmp_path, "2.0.0", {"filesystem": {"~/.kube": "ro"}})
            await host.manager.installer.install_from_path(update, grant=False)
            await page.reload()
            held = panel.locator("[data-testid=held]")
            await expect(held).to_contain_text("version 2.0.0 asks for more", timeout=T)
            await expect(held.locator("[data-testid=more]")).to_contain_text("read ~/.kube")
            await host.shot("permissions-held")
            await held.locator("[data-testid=grant]").click()
            await host.confirm(ok=True)
            await expect(panel.locator("[data-testid=granted]")).to_contain_text(
                "read ~/.kube", timeout=T
            )
            await expect(held).to_have_count(0)
            await async_wait_until(
                lambda: host.manager.get_plugin("hostile").phase == Phase.RUNNING, timeout=T / 1000
            )
            assert host.manager.get_plugin("hostile").version == "2.0.0"
