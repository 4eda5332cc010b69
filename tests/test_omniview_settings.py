"""An SDK plugin's own settings through the host, and reported vs declared capabilities.

A real ``plughost --profile omniview run`` (HOME in a temporary directory, so the
Omniview root is ``$HOME/.omniview``) runs the real omnisettings and omniresource
plugins (tests/goplugins/omnisdk, built with plugin-sdk v0.5.0). Its local service
serves ``/v1/plugins/{id}/settings`` with the typed clients of plughost.omniview,
built from the SDK next to the checkout (``PLUGHOST_OMNIVIEW_SDK``). Checked
through the CLI (``plughost settings``), the API and the dashboard (headless
Chromium through ``plughost ui``'s proxy), and ``plughost list``'s capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import httpx
import pytest
from cli_helpers import Host, Result, clean_env, cli, socket_of
from google.protobuf import empty_pb2, wrappers_pb2
from toolchains import unavailable
from waiting import wait_until

from plughost.errors import PluginCallError, ValidationError
from plughost.host.client import PluginClient
from plughost.omniview import ENV_VAR, OmniviewSdk, load_sdk
from plughost.phases import Phase
from plughost.service.plugin_settings import SettingNotFoundError, set_setting

REPO = Path(__file__).resolve().parents[1]
SDK_DIR = REPO.parent / "shared" / "third_party" / "omniview-plugin-sdk"
PROBLEM = "application/problem+json"
CELLS = r"[\s│]+"  # between two cells of a table row
TOML = """\
start_timeout = 30.0
stop_grace = 10.0
kill_grace = 5.0
health_timeout = 10.0
"""
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")

pytestmark = pytest.mark.timeout(300)


def _require_sdk() -> Path:
    if not (SDK_DIR / "proto" / "v1").is_dir():
        unavailable(
            f"Omniview's plugin SDK is not at {SDK_DIR}",
            "put github.com/omniviewdev/plugin-sdk v0.5.0 there (../shared/third_party/README.md)",
        )
    return SDK_DIR


@dataclass
class OmniHost:
    """A ``plughost --profile omniview run`` on ``home/.omniview``, and how to reach it."""

    home: Path
    env: dict[str, str]
    host: Host

    @property
    def root(self) -> Path:
        return self.home / ".omniview"

    def cli(self, *args: str) -> Result:
        return cli("--profile", "omniview", *args, env=self.env)

    def api(self) -> httpx.Client:
        return self.host.api()


def _omniview_home(tmp: Path, build: Path, *plugin_ids: str) -> Path:
    home = tmp / "home"
    plugins = home / ".omniview" / "plugins"
    plugins.mkdir(parents=True)
    (home / ".omniview" / "plughost.toml").write_text(TOML)
    for plugin_id in plugin_ids:  # where Omniview (and so its SDK) keeps them
        shutil.copytree(build / plugin_id, plugins / plugin_id)
    return home


def _start(home: Path, env: dict[str, str], *plugin_ids: str) -> Host:
    host = Host(home / ".omniview", "--profile", "omniview", "--no-examples", env=env)
    with host.api() as client:

        def running() -> bool:
            phases = {p["id"]: p["phase"] for p in client.get("/v1/plugins").json()}
            return all(phases.get(p) == Phase.RUNNING.value for p in plugin_ids)

        wait_until(running, timeout=60, interval=0.1, message=lambda: host.output)
    return host


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gobuild import go_plugins

    return go_plugins(tmp_path_factory, ("omnisettings", "omniresource"))


@pytest.fixture(scope="module")
def omni(build: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmniHost]:
    """One host for the module: omnisettings and omniresource, Running."""
    sdk = _require_sdk()
    tmp = tmp_path_factory.mktemp("omni")
    home = _omniview_home(tmp, build, "omnisettings", "omniresource")
    env = clean_env(HOME=str(home), XDG_CACHE_HOME=str(tmp / "cache"), **{ENV_VAR: str(sdk)})
    host = _start(home, env, "omnisettings", "omniresource")
    try:
        yield OmniHost(home, env, host)
    finally:
        host.stop()


# -- point 6: reported vs declared capabilities ---------------------------------------------
@pytest.mark.interop
@LINUX
def test_list_shows_reported_capabilities_and_flags_what_plugin_yaml_declares(
    omni: OmniHost,
) -> None:
    declared = (omni.root / "plugins" / "omniresource" / "plugin.yaml").read_text()
    assert re.search(r"(?m)^capabilities:\n  - resource\n(?!  -)", declared), declared
    table = omni.cli("list").ok().stdout
    [resource] = [line for line in table.splitlines() if "omniresource" in line]
    assert "resource, settings ≠ (plugin.yaml: resource)" in resource
    [settings] = [line for line in table.splitlines() if "omnisettings" in line]
    assert "settings" in settings and "≠" not in settings
    found = {p["id"]: p for p in omni.cli("list", "--json").ok().json()}
    assert found["omniresource"]["capabilities"] == ["resource", "settings"]  # GetCapabilities
    assert found["omniresource"]["declaredCapabilities"] == ["resource"]  # plugin.yaml
    assert found["omniresource"]["capabilitiesDiffer"] is True
    assert found["omnisettings"]["capabilities"] == ["settings"]
    assert found["omnisettings"]["declaredCapabilities"] == ["settings"]
    assert found["omnisettings"]["capabilitiesDiffer"] is False
    info = omni.cli("info", "omniresource").ok().stdout
    assert "resource, settings ≠ (plugin.yaml: resource)" in info


# -- point 3: the command line -----------------------------------------------------------------
@pytest.mark.interop
@LINUX
def test_settings_command_lists_reads_and_sets_one_of_each_type(omni: OmniHost) -> None:
    table = omni.cli("settings", "omnisettings").ok().stdout
    for row in (
        ("greeting", "text", "The word the plugin greets with"),
        ("retries", "integer", "How many times a failed call is retried"),
        ("ratio", "float", "A fraction between 0 and 1"),
        ("verbose", "toggle", "Log every call"),
        ("theme", "select: dark | light", "Colour scheme"),
        ("token", "password", "Secret used to reach the backend"),
    ):
        assert re.search(CELLS.join(map(re.escape, row[:2])) + ".*" + re.escape(row[2]), table), (
            row,
            table,
        )
    listed = {s["id"]: s for s in omni.cli("settings", "omnisettings", "--json").ok().json()}
    assert {k: s["type"] for k, s in listed.items()} == {
        "greeting": "text",
        "ratio": "float",
        "retries": "integer",
        "theme": "select",
        "token": "password",
        "verbose": "toggle",
    }
    assert [o["value"] for o in listed["theme"]["options"]] == ["dark", "light"]
    assert listed["token"]["sensitive"] is True and listed["greeting"]["sensitive"] is None

    # VALUE is parsed by the setting's type; each is read back, as JSON and as text.
    for key, text, value, shown in (
        ("greeting", "hi there", "hi there", "hi there"),
        ("retries", "7", 7, "7"),
        ("ratio", "0.25", 0.25, "0.25"),
        ("verbose", "true", True, "true"),
        ("theme", "Light", "light", "light"),  # an option's label names it too
        ("token", "s3cret", "s3cret", "s3cret"),
    ):
        said = omni.cli("settings", "omnisettings", key, text).ok().stdout
        assert said.strip() == f"omnisettings: {key} = {'(hidden)' if key == 'token' else shown}"
        got = omni.cli("settings", "omnisettings", key, "--json").ok().json()
        assert (got["id"], got["value"]) == (key, value)
        assert omni.cli("settings", "omnisettings", key).ok().stdout == f"{shown}\n"
    assert (
        omni.cli("settings", "omnisettings", "verbose", "false", "--json").ok().json()["value"]
        is False
    )

    # A sensitive value is shown only when asked for by its key.
    table = omni.cli("settings", "omnisettings").ok().stdout
    assert "s3cret" not in table and re.search(
        CELLS.join(["token", "password", r"\(hidden\)"]), table
    )
    token = next(
        s for s in omni.cli("settings", "omnisettings", "--json").ok().json() if s["id"] == "token"
    )
    assert (token["value"], token["redacted"], token["hasValue"]) == (None, True, True)

    # omniresource has the capability (the SDK always serves it) but declares no setting.
    assert (
        omni.cli("settings", "omniresource").ok().stdout.strip() == "omniresource has no settings"
    )
    assert omni.cli("settings", "omniresource", "--json").ok().json() == []


@pytest.mark.interop
@LINUX
def test_settings_command_refuses_a_wrong_value_with_what_the_setting_takes(
    omni: OmniHost,
) -> None:
    omni.cli("settings", "omnisettings", "retries", "4").ok()
    for key, text, says in (
        ("retries", "many", "setting 'retries' (integer) takes a whole number, not 'many'"),
        ("retries", "2.5", "takes a whole number, not '2.5'"),
        ("ratio", "half", "(float) takes a number"),
        ("verbose", "maybe", "(toggle) takes true or false"),
        ("theme", "blue", "'blue' is not an option of setting 'theme'; its options: dark, light"),
    ):
        refused = omni.cli("settings", "omnisettings", key, text)
        assert refused.returncode == 1, refused.out
        assert "Wrong setting value" in refused.stderr and says in refused.stderr, refused.out
    assert omni.cli("settings", "omnisettings", "retries").ok().stdout == "4\n"
    missing = omni.cli("settings", "omnisettings", "nope", "1", "--json")
    assert missing.returncode == 1
    error = missing.json()["error"]
    assert (error["type"], error["status"], error["pluginID"]) == (
        "setting_not_found",
        404,
        "omnisettings",
    )
    assert error["suggestions"] == ["its settings: greeting, ratio, retries, theme, token, verbose"]
    unknown = omni.cli("settings", "nosuchplugin")
    assert unknown.returncode == 1 and "Plugin not found" in unknown.stderr


# -- point 3: the local API --------------------------------------------------------------------
def _problem(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["errorType"] == error_type and body["status"] == status, body
    return body


@pytest.mark.interop
@LINUX
def test_settings_routes_list_get_and_put_typed_values(omni: OmniHost) -> None:
    base = "/v1/plugins/omnisettings/settings"
    with omni.api() as api:
        listed = api.get(base)
        assert listed.status_code == 200, listed.text
        first = listed.json()[0]
        assert set(first) == {
            "id",
            "label",
            "description",
            "type",
            "value",
            "default",
            "options",
            "sensitive",
            "devOnly",
            "fileSelection",
            "redacted",
            "hasValue",
        }
        assert [s["id"] for s in listed.json()] == sorted(s["id"] for s in listed.json())
        for key, value in (
            ("greeting", "from the api"),
            ("retries", 9),
            ("ratio", 1),  # an integer is a number
            ("verbose", True),
            ("theme", "dark"),
            ("token", "api-secret"),
        ):
            put = api.put(f"{base}/{key}", json={"value": value})
            assert put.status_code == 200, put.text
            redacted = key == "token"
            assert put.json()["value"] == (None if redacted else value)
            assert put.json()["redacted"] is redacted
            assert api.get(f"{base}/{key}").json()["value"] == value  # revealed when asked
        listed_token = next(s for s in api.get(base).json() if s["id"] == "token")
        assert listed_token["value"] is None and "api-secret" not in api.get(base).text

        # A wrong type: refused before it reaches the plugin, naming the type expected.
        wrong: list[tuple[str, Any, str]] = [
            ("retries", "many", "setting 'retries' of omnisettings (integer) takes an integer"),
            ("retries", 2.5, "takes an integer, got 2.5"),  # the SDK would store 2
            ("verbose", "yes", "(toggle) takes true or false"),  # the SDK would drop it silently
            ("greeting", 5, "(text) takes a string"),
            ("theme", "blue", "(select) takes one of ['dark', 'light']"),
            ("ratio", None, "(float) takes a number"),
        ]
        for key, value, says in wrong:
            body = _problem(api.put(f"{base}/{key}", json={"value": value}), 400, "validation")
            assert says in body["detail"] and body["title"] == "Wrong setting value", body
            assert body["pluginID"] == "omnisettings"
        refused = _problem(api.put(f"{base}/token", json={"value": 42}), 400, "validation")
        assert "(password) takes a string, got (hidden)" in refused["detail"]
        assert "api-secret" not in json.dumps(refused)
        assert api.get(f"{base}/retries").json()["value"] == 9  # nothing was sent
        assert api.get(f"{base}/verbose").json()["value"] is True

        # Everything else is problem JSON too.
        _problem(api.put(f"{base}/nope", json={"value": 1}), 404, "setting_not_found")
        _problem(api.get(f"{base}/nope"), 404, "setting_not_found")
        _problem(api.put(f"{base}/retries", json={}), 422, "validation")
        _problem(api.get("/v1/plugins/nosuchplugin/settings"), 404, "plugin_not_found")
        assert api.get("/v1/plugins/omniresource/settings").json() == []
        spec = api.get("/openapi.json").json()["paths"]
        assert {"get"} <= spec["/v1/plugins/{plugin_id}/settings"].keys()
        assert {"get", "put"} <= spec["/v1/plugins/{plugin_id}/settings/{key}"].keys()


@pytest.mark.interop
@LINUX
def test_without_the_sdk_the_routes_say_where_they_looked_and_without_a_host_the_cli_says_so(
    build: Path, tmp_path: Path
) -> None:
    home = _omniview_home(tmp_path, build, "omnisettings")
    empty = tmp_path / "modcache"  # Go's module cache, without the SDK in it
    env = clean_env(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "cache"), GOMODCACHE=str(empty))
    host = _start(home, env, "omnisettings")
    try:
        with host.api() as api:
            body = _problem(
                api.get("/v1/plugins/omnisettings/settings"), 412, "omniview_sdk_not_found"
            )
            assert f"${ENV_VAR} is not set" in body["detail"] and str(empty) in body["detail"]
            hints = " | ".join(body["suggestions"])
            assert f"{ENV_VAR}=/path/to/plugin-sdk" in hints and "go mod download" in hints
        shown = cli("--profile", "omniview", "settings", "omnisettings", env=env)
        assert shown.returncode == 1 and "Omniview plugin SDK not found" in shown.stderr
        assert "hint: point at a checkout" in shown.stderr
    finally:
        host.stop()
    for args in (("omnisettings",), ("omnisettings", "retries"), ("omnisettings", "retries", "1")):
        offline = cli("--profile", "omniview", "settings", *args, env=env)
        assert offline.returncode == 1, offline.out
        said = " ".join(offline.stderr.split())
        assert "settings live in the running plugin: start the host with plughost run" in said
        assert "hint: start the host: plughost --profile omniview run" in said
    missing = cli("--profile", "omniview", "settings", "nope", env=env)
    assert missing.returncode == 1 and "Plugin not found" in missing.stderr


# -- a value the plugin refuses: its own message -----------------------------------------------
class _Backend:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.exited = False


class _Slot:
    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.phase = Phase.RUNNING
        self._lock = asyncio.Lock()


class _Table:
    """Just enough of the plugin table for a real PluginClient: one Running plugin."""

    def __init__(self, backend: _Backend) -> None:
        self.slot = _Slot(backend)

    def get(self, plugin_id: str) -> _Slot:
        return self.slot

    def find(self, plugin_id: str) -> _Slot:
        return self.slot

    async def wait_change(self, plugin_id: str, timeout: float) -> None:
        await asyncio.sleep(min(timeout, 0.05))


class ValidatingSettings:
    """SettingsPlugin as the Go SDK serves a setting with a ``Validator``: the validator's
    error comes back as INTERNAL "failed to set setting: <its message>"."""

    def __init__(self, sdk: OmniviewSdk) -> None:
        self.m = sdk.messages("settings")
        self.sdk = sdk
        self.port = 8080

    def _pack(self, value: Any) -> Any:
        packed: Any = self.sdk.message("google.protobuf.Any")()
        packed.Pack(wrappers_pb2.BytesValue(value=json.dumps(value).encode()))
        return packed

    def _setting(self) -> Any:
        return self.m.Setting(
            id="port",
            label="Port",
            description="where it listens",
            type=self.m.SettingType.Value("SETTING_TYPE_INTEGER"),
            value=self._pack(self.port),
        )

    async def ListSettings(self, request: Any, context: Any) -> Any:
        return self.m.ListSettingsResponse(settings={"port": self._setting()})

    async def GetSetting(self, request: Any, context: Any) -> Any:
        return self._setting()

    async def GetSettingValue(self, request: Any, context: Any) -> Any:
        return self.m.GetSettingValueResponse(value=self._pack(self.port))

    async def SetSetting(self, request: Any, context: Any) -> Any:
        inner = wrappers_pb2.BytesValue()
        request.value.Unpack(inner)
        value = json.loads(inner.value)
        if not 1 <= value <= 65535:
            await context.abort(
                grpc.StatusCode.INTERNAL, "failed to set setting: port out of range"
            )
        self.port = value
        return empty_pb2.Empty()


@contextlib.asynccontextmanager
async def _served(sdk: OmniviewSdk, servicer: object, tmp_path: Path) -> AsyncIterator[Any]:
    server = grpc.aio.server()
    sdk.add_to_server("settings", servicer, server)
    address = f"unix:{tmp_path / 'settings.sock'}"
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        plugin = PluginClient(_Table(_Backend(channel)), "validating")  # type: ignore[arg-type]
        yield sdk.settings(plugin)
    finally:
        await channel.close()
        await server.stop(None)


async def test_a_value_the_plugin_refuses_is_refused_with_the_plugins_own_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(_require_sdk()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sdk = await asyncio.to_thread(load_sdk)
    async with _served(sdk, ValidatingSettings(sdk), tmp_path) as client:
        assert (await set_setting(client, "port", 9090)).value == 9090
        with pytest.raises(ValidationError) as caught:
            await set_setting(client, "port", 70000)
        error = caught.value
        assert error.title == "Setting value refused" and error.status == 400
        assert error.detail == "validating refused 70000 for setting 'port': " + (
            "failed to set setting: port out of range"
        )
        assert error.plugin_id == "validating"
        with pytest.raises(ValidationError, match=r"\(integer\) takes an integer, got \"x\""):
            await set_setting(client, "port", "x")
        with pytest.raises(SettingNotFoundError, match="has no setting 'host'"):
            await set_setting(client, "host", "x")
        assert await client.get("port") == 9090
        assert not isinstance(error, PluginCallError)


# -- the dashboard: a form from the plugin's own definitions ---------------------------------
@pytest.mark.browser
@pytest.mark.interop
@LINUX
async def test_dashboard_settings_form_saves_through_the_proxy_and_keeps_values(
    omni: OmniHost, chromium: Path
) -> None:
    from playwright.async_api import async_playwright
    from playwright.async_api import expect as pw_expect

    from plughost.service.dashboard.serve import serve_socket_dashboard

    with omni.api() as api:  # a known start
        for key, value in (("greeting", "hello"), ("retries", 3), ("verbose", False)):
            put = api.put(f"/v1/plugins/omnisettings/settings/{key}", json={"value": value})
            assert put.status_code == 200, put.text
        api.put("/v1/plugins/omnisettings/settings/theme", json={"value": "dark"})
        api.put("/v1/plugins/omnisettings/settings/token", json={"value": ""})

    server, url = await serve_socket_dashboard(socket_of(omni.root))  # `plughost ui`'s proxy
    errors: list[str] = []
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"]
            )
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url)
            await page.wait_for_url(re.compile(r"/ui/$"))
            await page.goto(f"{server.base_url}/ui/#/plugins/omnisettings")
            panel = page.locator("[data-testid=settings-panel]")

            def field(key: str) -> Any:
                return panel.locator(f'[data-setting="{key}"]')

            # Inputs by setting type, with descriptions.
            await pw_expect(field("greeting").locator("input")).to_have_attribute("type", "text")
            await pw_expect(field("greeting").locator("input")).to_have_value("hello")
            await pw_expect(field("retries").locator("input")).to_have_attribute("type", "number")
            await pw_expect(field("ratio").locator("input")).to_have_attribute("step", "any")
            await pw_expect(field("verbose").locator("input")).to_have_attribute("type", "checkbox")
            await pw_expect(field("theme").locator("select option")).to_have_text(["Dark", "Light"])
            await pw_expect(field("token").locator("input")).to_have_attribute("type", "password")
            await pw_expect(field("token")).to_contain_text("no value set")
            await pw_expect(field("retries")).to_contain_text(
                "How many times a failed call is retried"
            )

            # Set values, save, reload: they stay (the plugin has them).
            await field("greeting").locator("input").fill("from the browser")
            await field("retries").locator("input").fill("5")
            await field("verbose").locator("input").check()
            await field("theme").locator("select").select_option(label="Light")
            await field("token").locator("input").fill("browser-secret")
            await panel.locator("[data-testid=settings-save]").click()
            status = panel.locator("[data-testid=settings-status]")
            await pw_expect(status).to_have_text("Saved 5 settings.")
            await pw_expect(field("token")).to_contain_text("a value is set (hidden)")
            assert "browser-secret" not in await page.content()
            await page.reload()
            await pw_expect(field("greeting").locator("input")).to_have_value("from the browser")
            await pw_expect(field("retries").locator("input")).to_have_value("5")
            await pw_expect(field("verbose").locator("input")).to_be_checked()
            await pw_expect(field("theme").locator("select")).to_have_value("1")
            with omni.api() as api:
                got = api.get("/v1/plugins/omnisettings/settings/token").json()
                assert got["value"] == "browser-secret"
                assert api.get("/v1/plugins/omnisettings/settings/theme").json()["value"] == (
                    "light"
                )

            # A value the host refuses: the error inline, under its field.
            await field("retries").locator("input").fill("2.5")
            await panel.locator("[data-testid=settings-save]").click()
            error = field("retries").locator("[data-testid=setting-error]")
            await pw_expect(error).to_contain_text("(integer) takes an integer, got 2.5")
            await pw_expect(status).to_have_text("0 saved, 1 not saved: see below.")
            with omni.api() as api:
                assert api.get("/v1/plugins/omnisettings/settings/retries").json()["value"] == 5

            # A write from another origin is refused by the dashboard.
            other = await context.request.put(
                f"{server.base_url}/v1/plugins/omnisettings/settings/retries",
                data={"value": 1},
                headers={"Origin": "http://evil.example"},
            )
            assert other.status == 403 and (await other.json())["errorType"] == "origin"

            # omniresource: reported capabilities beside plugin.yaml's; no settings declared.
            await page.goto(f"{server.base_url}/ui/#/plugins/omniresource")
            await pw_expect(page.locator("[data-testid=declared-capabilities]")).to_have_text(
                "≠ plugin.yaml: resource"
            )
            await pw_expect(page.locator("[data-testid=settings-note]")).to_have_text(
                "This plugin declares no settings."
            )
            await context.close()
            await browser.close()
    finally:
        await server.stop()
    assert errors == [], f"JavaScript errors on the page: {errors}"
