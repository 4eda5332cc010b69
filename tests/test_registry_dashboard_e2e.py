"""The registry server's page in headless Chromium (Debian's, driven by Playwright): a
reviewer signs in at ``/dashboard``, sees a publisher's submissions and their status,
approves one (the catalog then lists it) and rejects another with notes; and approves
a ``plughost login`` on ``/device``, after which the command line holds a token.

Without /usr/bin/chromium (or the playwright package) these tests skip locally and
fail in CI, as tests/toolchains.py decides: scripts/install_browser.sh installs it.
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import PLUGHOST, clean_env, new_root
from registry_accounts_helpers import PASSWORD, Live, live_registry
from test_dashboard_e2e import CHROMIUM_ARGS
from test_registry_server import make_package
from test_registry_submissions import submit_package

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
T = 15_000  # ms: generous for a loaded machine; passing runs do not wait for it


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    yield from live_registry(tmp_path / "registry")


@pytest.fixture
async def page(chromium: Path) -> AsyncIterator[Any]:
    """A fresh tab; fails the test on any JavaScript error in it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            tab = await context.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            yield tab
            assert errors == [], f"JavaScript errors on the page: {errors}"
        finally:
            await browser.close()


def expect(target: Any) -> Any:
    from playwright.async_api import expect as pw_expect

    return pw_expect(target)


async def sign_in(page: Any, url: str, who: str) -> None:
    await page.goto(url)
    await page.fill("#email", f"{who}@example.invalid")
    await page.fill("#password", PASSWORD)
    await page.click("#login-form button[type=submit]")
    await expect(page.locator("#who")).to_contain_text(f"{who}@example.invalid", timeout=T)


async def test_reviewer_approves_and_rejects_on_the_dashboard(
    live: Live, page: Any, tmp_path: Path
) -> None:
    good = submit_package(live, make_package(tmp_path, "dashgood", "1.0.0"), "dashgood", "1.0.0")
    bad = submit_package(live, make_package(tmp_path, "dashbad", "0.1.0"), "dashbad", "0.1.0")
    await sign_in(page, f"{live.url}/dashboard", "admin")
    await expect(page.locator("#queue")).to_be_visible(timeout=T)

    await page.fill("#slug", "acme")
    await page.click("#publisher-form button[type=submit]")
    shown = page.locator("#submissions tbody tr")
    for sub in (good, bad):
        row = page.locator(f'#submissions tr[data-id="{sub["id"]}"]')
        await expect(row.locator(".status")).to_have_text("pending_review", timeout=T)
        await expect(row).to_contain_text(sub["plugin_id"])
        await expect(row).to_contain_text("ok")  # validation, per architecture
    assert await shown.count() == 2

    queued = page.locator(f'#pending tr[data-id="{good["id"]}"]')
    await queued.locator("button.approve").click()
    published = page.locator(f'#submissions tr[data-id="{good["id"]}"]')
    await expect(published.locator(".status")).to_have_text("published", timeout=T)
    await expect(page.locator(f'#pending tr[data-id="{good["id"]}"]')).to_have_count(0)

    queued = page.locator(f'#pending tr[data-id="{bad["id"]}"]')
    await queued.locator("input.notes").fill("needs a readme")
    await queued.locator("button.reject").click()
    rejected = page.locator(f'#submissions tr[data-id="{bad["id"]}"]')
    await expect(rejected.locator(".status")).to_have_text("rejected", timeout=T)
    await expect(rejected).to_contain_text("needs a readme")
    await expect(page.locator("#pending tbody tr")).to_have_count(0)

    # What the page did is what the API says: one published and listed, one rejected.
    listed = [p["id"] for p in live.data("GET", "/v1/plugins")]
    assert "dashgood" in listed and "dashbad" not in listed
    assert live.data("GET", f"/v1/submissions/{bad['id']}", "dev")["reviewer_notes"] == (
        "needs a readme"
    )


async def test_publisher_member_sees_status_but_no_review_queue(live: Live, page: Any) -> None:
    await sign_in(page, f"{live.url}/dashboard", "dev")
    await expect(page.locator("#publisher")).to_be_visible(timeout=T)
    await expect(page.locator("#queue")).to_be_hidden()
    await page.fill("#slug", "other")  # not dev's publisher
    await page.click("#publisher-form button[type=submit]")
    await expect(page.locator("#message")).to_have_class("error", timeout=T)


async def _json_object(stream: asyncio.StreamReader) -> dict[str, Any]:
    """The next pretty-printed JSON object the command prints (it ends with a "}" line)."""
    lines: list[str] = []
    while True:
        line = (await stream.readline()).decode()
        assert line, f"the command ended before printing a whole object: {''.join(lines)!r}"
        lines.append(line)
        if line.rstrip() == "}":
            found: dict[str, Any] = json.loads("".join(lines))
            return found


async def test_device_flow_approved_in_the_browser(live: Live, page: Any, tmp_path: Path) -> None:
    root = new_root(tmp_path / "root")
    login = await asyncio.create_subprocess_exec(
        *PLUGHOST, "login", "--registry", live.url, "--root", str(root), "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=clean_env(),
    )  # fmt: skip
    try:
        assert login.stdout is not None and login.stderr is not None
        shown = await asyncio.wait_for(_json_object(login.stdout), 60)
        code = str(shown["user_code"])
        await sign_in(page, f"{live.url}/dashboard", "dev")
        await page.goto(str(shown["verification_uri"]))  # the tab keeps its sign-in
        await expect(page.locator("#device")).to_be_visible(timeout=T)
        await expect(page.locator("#user-code")).to_have_value(code)
        await page.click("#device-approve")
        await expect(page.locator("#message")).to_have_text(
            "the command line is signed in", timeout=T
        )
        out, err = await asyncio.wait_for(login.communicate(), 60)
    finally:
        if login.returncode is None:
            login.kill()
            await login.wait()
    assert login.returncode == 0, err.decode()
    signed = json.loads(out)
    assert signed["user"]["email"] == "dev@example.invalid"
    credentials = root / "registry-credentials.json"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    token = json.loads(credentials.read_text())[live.url]
    me = httpx.get(f"{live.url}/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["data"]["email"] == "dev@example.invalid"
    # A code is good once: approving it again is refused.
    await page.click("#device-approve")
    await expect(page.locator("#message")).to_have_class("error", timeout=T)
