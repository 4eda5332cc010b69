"""Plugins built with Omniview's real Go SDK, run by plughost's Omniview profile.

The plugins are the mains of tests/goplugins/omnisdk, written with
``github.com/omniviewdev/plugin-sdk`` v0.5.0 and built by
scripts/build_go_plugins.sh (tests/gobuild.py):

- ``omnihello``: ``sdk.NewPlugin(sdk.PluginOpts{ID: "omnihello"}).Serve()``;
- ``omnisettings``: declares text, integer, float, toggle, select and password
  settings with defaults;
- ``omniresource``: registers the ``resource`` capability as Omniview's own
  plugins do, over an in-memory "demo::v1::Widget" store;
- ``omnipanic``: panics before serving (the SDK's "plugin.yaml not found", or
  its own panic with ``OMNIPANIC=explicit``).

Each runs under ``PluginManager(..., profile="omniview")`` on ``$HOME/.omniview``
of a temporary HOME: the SDK reads ``$HOME/.omniview/plugins/<id>/plugin.yaml``
itself, and the host passes HOME through its environment allow-list. The SDK's
own services are called with messages built from the plugin's server
reflection, so nothing here depends on generated Python code for them.

The last test builds the plugins the way the script does where the Go module
proxy refuses the SDK: against ``../shared/third_party/omniview-plugin-sdk``
through a throw-away copy of the module.

No Go (or no SDK source for that test): skipped with a note on a developer's
machine, failed in CI.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from gobuild import BUILD_SCRIPT, REPO, go_plugins
from google.protobuf import descriptor_pool, json_format, message_factory, wrappers_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from toolchains import require_go, unavailable
from waiting import async_wait_until

from plughost.host.manager import PluginManager
from plughost.paths import resolve_root
from plughost.phases import Phase
from plughost.process.local import ProcessBackend
from plughost.settings import SettingsProvider

pytestmark = [
    pytest.mark.interop,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

WAIT = 30.0
MANAGER_SETTINGS: dict[str, Any] = {
    "start_timeout": WAIT,
    "stop_grace": 10.0,
    "kill_grace": 5.0,
    "health_timeout": 10.0,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
}
LIFECYCLE = "omniview.sdk.lifecycle.v1.PluginLifecycle"
SETTINGS = "omniview.sdk.settings.v1.SettingsPlugin"
RESOURCE = "omniview.sdk.resource.v1.ResourcePlugin"
# What every go-plugin server has, besides the SDK's services.
GO_PLUGIN_SERVICES = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "plugin.GRPCBroker",
    "plugin.GRPCController",
    "plugin.GRPCStdio",
}


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sdk_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private directory with the built plugin directories (omnihello/, omnisettings/, ...)."""
    return go_plugins(tmp_path_factory, ("omnihello", "omnisettings", "omniresource", "omnipanic"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary HOME; the Omniview profile's root is its ``.omniview``."""
    home = tmp_path / "home"
    (home / ".omniview" / "plugins").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)  # conftest sets it; the profile decides
    assert resolve_root(None, "omniview") == home / ".omniview"
    return home


def install(build: Path, home: Path, *plugin_ids: str) -> None:
    """Put the built plugins where Omniview (and so its SDK) keeps them."""
    for plugin_id in plugin_ids:
        shutil.copytree(build / plugin_id, home / ".omniview" / "plugins" / plugin_id)


@contextlib.asynccontextmanager
async def omniview_manager(home: Path, **overrides: Any) -> AsyncIterator[PluginManager]:
    """An initialized PluginManager with the Omniview profile; shut down afterwards."""
    settings = SettingsProvider(None, {**MANAGER_SETTINGS, **overrides})
    manager = PluginManager(home / ".omniview", profile="omniview", settings=settings)
    await manager.initialize()
    try:
        yield manager
    finally:
        await manager.shutdown()


def live_backend(manager: PluginManager, plugin_id: str) -> ProcessBackend:
    info = manager.get_plugin(plugin_id)
    assert info.phase is Phase.RUNNING, (plugin_id, info.phase, info.last_error)
    backend = manager.backend(plugin_id)
    assert isinstance(backend, ProcessBackend) and backend.pid is not None
    return backend


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid)


def read_pid_file(home: Path) -> Any:
    return json.loads((home / ".omniview" / "plugin_pids.json").read_text())


class Reflected:
    """Unary calls to a plugin with messages built from its own server reflection.

    ``call("pkg.Service/Method", {...})`` takes and returns the proto3 JSON form
    (field names as in the .proto); ``Any`` fields come back as
    ``{"@type": ..., "value": <base64>}``.
    """

    def __init__(self, backend: ProcessBackend) -> None:
        handshake = backend.handshake
        assert handshake is not None
        self._target = handshake.grpc_target

    async def call(self, method: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._call, method, request or {})

    def _call(self, method: str, request: dict[str, Any]) -> dict[str, Any]:
        service_name, method_name = method.rsplit("/", 1)
        with grpc.insecure_channel(self._target) as channel:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            found = pool.FindServiceByName(service_name).FindMethodByName(method_name)
            request_class = message_factory.GetMessageClass(found.input_type)
            reply_class = message_factory.GetMessageClass(found.output_type)
            rpc: Any = channel.unary_unary(
                f"/{service_name}/{method_name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=reply_class.FromString,
            )
            reply = rpc(json_format.ParseDict(request, request_class()), timeout=WAIT)
            return json_format.MessageToDict(reply, preserving_proto_field_name=True)


# Importing wrappers_pb2 puts BytesValue in the default pool, where json_format
# looks up the type of an Any.
BYTES_VALUE = f"type.googleapis.com/{wrappers_pb2.BytesValue.DESCRIPTOR.full_name}"


def any_json(value: dict[str, Any]) -> Any:
    """The SDK's settings values: an Any holding a BytesValue holding JSON."""
    assert value["@type"] == BYTES_VALUE, value
    return json.loads(base64.b64decode(value["value"]))


def packed_json(value: Any) -> dict[str, Any]:
    """``value`` the way the SDK packs it, in proto3 JSON: Any(BytesValue(json))."""
    return {"@type": BYTES_VALUE, "value": base64.b64encode(json.dumps(value).encode()).decode()}


# -- every SDK plugin: start, health, stop ------------------------------------------------


async def test_sdk_plugins_run_answer_health_and_stop_cleanly(sdk_build: Path, home: Path) -> None:
    ids = ("omnihello", "omnisettings", "omniresource")
    install(sdk_build, home, *ids)
    async with omniview_manager(home) as manager:
        pids: dict[str, int] = {}
        for plugin_id in ids:
            backend = live_backend(manager, plugin_id)
            assert backend.pid is not None
            pids[plugin_id] = backend.pid
            info = manager.get_plugin(plugin_id)
            assert info.pid == backend.pid and info.protocol_version == 1

            env = psutil.Process(backend.pid).environ()
            assert env.get("OMNIVIEW") == plugin_id  # the SDK's cookie: OMNIVIEW=<plugin.yaml id>
            assert env.get("HOME") == str(home)  # where the SDK found its plugin.yaml
            assert "PLUGHOST" not in env

            hs = backend.handshake
            assert hs is not None
            assert (hs.core_version, hs.app_version, hs.network, hs.protocol) == (
                1,
                1,
                "unix",
                "grpc",
            )
            assert hs.server_cert is None and hs.multiplex is False
            assert await backend.healthy() is True
            assert read_pid_file(home)[plugin_id]["pid"] == backend.pid

        # The SDK's own services, next to go-plugin's; listed by server reflection.
        served = {i: set(await manager.client(i).services()) for i in ids}
        assert served["omnihello"] == GO_PLUGIN_SERVICES | {LIFECYCLE, SETTINGS}
        assert served["omnisettings"] == GO_PLUGIN_SERVICES | {LIFECYCLE, SETTINGS}
        assert served["omniresource"] == GO_PLUGIN_SERVICES | {LIFECYCLE, SETTINGS, RESOURCE}

        # go-plugin's default logger (the SDK passes none): hclog JSON on stderr.
        def address_logged() -> bool:
            return any(
                e.message == "plugin address" and e.level == "debug" and e.source == "stderr"
                for e in manager.logs.get_logs("omnihello", 1000)
            )

        await async_wait_until(address_logged, timeout=WAIT, message="'plugin address' logged")

        # One stopped on its own: go-plugin's Shutdown, exit 0, nothing left.
        backend = live_backend(manager, "omnihello")
        await manager.unload_plugin("omnihello")
        assert manager.get_plugin("omnihello").phase is Phase.STOPPED
        assert backend.returncode == 0
        assert gone(pids["omnihello"])
        assert "omnihello" not in read_pid_file(home)
        for other in ("omnisettings", "omniresource"):
            assert live_backend(manager, other).pid == pids[other]

    for pid in pids.values():
        assert gone(pid), pid
    assert read_pid_file(home) == {}


# -- omnisettings: what it declares is what the host sees ---------------------------------


async def test_omnisettings_lifecycle_and_settings_are_what_it_declares(
    sdk_build: Path, home: Path
) -> None:
    install(sdk_build, home, "omnisettings")
    async with omniview_manager(home) as manager:
        backend = live_backend(manager, "omnisettings")
        # GetInfo: id and version from plugin.yaml, the SDK's protocol version.
        assert await backend.get_info() == {
            "pluginID": "omnisettings",
            "version": "0.2.0",
            "sdkProtocolVersion": 1,
        }
        # GetCapabilities: the plugin map's keys before "lifecycle" is added.
        assert await backend.detect_capabilities() == ["settings"]
        assert manager.get_plugin("omnisettings").capabilities == ["settings"]

        plugin = Reflected(backend)
        listed = (await plugin.call(f"{SETTINGS}/ListSettings"))["settings"]
        assert sorted(listed) == ["greeting", "ratio", "retries", "theme", "token", "verbose"]
        declared = [
            # (id, type, label, description, value: the default until set)
            ("greeting", "TEXT", "Greeting", "The word the plugin greets with", "hello"),
            ("retries", "INTEGER", "Retries", "How many times a failed call is retried", 3),
            ("ratio", "FLOAT", "Ratio", "A fraction between 0 and 1", 0.5),
            ("verbose", "TOGGLE", "Verbose", "Log every call", False),
            ("theme", "SELECT", "Theme", "Colour scheme of the plugin's views", "dark"),
            ("token", "PASSWORD", "API token", "Secret used to reach the backend", ""),
        ]
        for setting_id, kind, label, description, value in declared:
            setting = listed[setting_id]
            assert setting["id"] == setting_id
            # proto3 JSON leaves out the enum's zero value, SETTING_TYPE_TEXT.
            assert setting.get("type", "SETTING_TYPE_TEXT") == f"SETTING_TYPE_{kind}", setting
            assert (setting["label"], setting["description"]) == (label, description)
            assert any_json(setting["value"]) == value, setting
            # The SDK (v0.5.0) never fills Setting.default on the wire: the default
            # arrives as the value.
            assert "default" not in setting, setting
        options = [
            (o["label"], o["description"], any_json(o["value"])) for o in listed["theme"]["options"]
        ]
        assert options == [
            ("Dark", "Light text on a dark background", "dark"),
            ("Light", "Dark text on a light background", "light"),
        ]

        # Setting a value changes what the plugin answers.
        await plugin.call(f"{SETTINGS}/SetSetting", {"id": "retries", "value": packed_json(7)})
        got = await plugin.call(f"{SETTINGS}/GetSettingValue", {"id": "retries"})
        assert any_json(got["value"]) == 7
        with pytest.raises(grpc.RpcError) as caught:
            await plugin.call(f"{SETTINGS}/GetSetting", {"id": "nope"})
        assert caught.value.code() is grpc.StatusCode.INTERNAL  # the SDK's answer
        assert "setting not found" in str(caught.value.details())


# -- omniresource: a second capability -----------------------------------------------------


async def test_omniresource_reports_and_serves_its_resource_capability(
    sdk_build: Path, home: Path
) -> None:
    install(sdk_build, home, "omniresource")
    async with omniview_manager(home) as manager:
        backend = live_backend(manager, "omniresource")
        assert await backend.get_info() == {
            "pluginID": "omniresource",
            "version": "0.3.0",
            "sdkProtocolVersion": 1,
        }
        # Detected from the plugin (sorted plugin-map keys), not plugin.yaml's [resource].
        assert await backend.detect_capabilities() == ["resource", "settings"]
        info = manager.get_plugin("omniresource")
        assert info.capabilities == ["resource", "settings"]
        assert info.metadata.capabilities == ["resource"]

        # Enough of the resource protocol for a typed client: connect, list, get.
        plugin = Reflected(backend)
        loaded = await plugin.call(f"{RESOURCE}/LoadConnections")
        assert [(c["id"], c["name"]) for c in loaded["connections"]] == [("local", "Local")]
        started = await plugin.call(f"{RESOURCE}/StartConnection", {"connection_id": "local"})
        assert started["status"]["state"] == "CONNECTION_STATE_CONNECTED", started
        key = "demo::v1::Widget"
        listed = await plugin.call(
            f"{RESOURCE}/List", {"resource_key": key, "connection_id": "local"}
        )
        widgets = [json.loads(base64.b64decode(item)) for item in listed["items"]]
        assert [(w["id"], w["name"]) for w in widgets] == [("w1", "first"), ("w2", "second")]
        got = await plugin.call(
            f"{RESOURCE}/Get", {"resource_key": key, "connection_id": "local", "id": "w2"}
        )
        assert json.loads(base64.b64decode(got["data"]))["name"] == "second"
        assert await backend.healthy() is True


# -- omnipanic: a plugin that dies before its handshake ------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "panic: plugin.yaml not found"),
        ({"OMNIPANIC": "explicit"}, "panic: omnipanic: exploding before Serve"),
    ],
    ids=["sdk-panic", "explicit-panic"],
)
async def test_omnipanic_ends_failed_with_the_panic_line(
    sdk_build: Path, home: Path, env: dict[str, str], message: str
) -> None:
    install(sdk_build, home, "omnipanic")
    async with omniview_manager(home, extra_env=env) as manager:
        info = manager.get_plugin("omnipanic")
        assert info.phase is Phase.FAILED, (info.phase, info.last_error)
        # Exit code 2, nothing on stdout: the start failed, with the panic in the error.
        assert "exited before printing its handshake line" in info.last_error, info.last_error
        assert message in info.last_error, info.last_error
        assert manager.backend("omnipanic") is None
        # The whole trace is in the plugin's log, from stderr.
        lines = [e.message for e in manager.logs.get_logs("omnipanic", 1000)]
        assert any(message in line for line in lines), lines
    assert read_pid_file(home) == {}


async def test_an_sdk_panic_names_the_file_the_sdk_looked_for(sdk_build: Path, home: Path) -> None:
    install(sdk_build, home, "omnipanic")
    async with omniview_manager(home) as manager:
        error = manager.get_plugin("omnipanic").last_error
    first = error.splitlines()[0]
    assert first.startswith("the plugin panicked at start: panic: plugin.yaml not found"), error
    expected = home / ".omniview" / "plugins" / "omnipanic" / "plugin.yaml"
    assert str(expected) in first, first


async def test_a_cookie_refusal_names_the_cookie_and_the_id(sdk_build: Path, home: Path) -> None:
    """The usual mistake: plugin.yaml's id is not the id compiled into the plugin."""
    target = home / ".omniview" / "plugins" / "renamed"
    shutil.copytree(sdk_build / "omnihello", target)
    meta = target / "plugin.yaml"
    meta.write_text(re.sub(r"(?m)^id: .*$", "id: renamed", meta.read_text()))
    install(sdk_build, home, "omnihello")  # so the SDK finds its own plugin.yaml
    async with omniview_manager(home) as manager:
        info = manager.get_plugin("renamed")
    assert info.phase is Phase.FAILED
    first = info.last_error.splitlines()[0]
    assert "refused the magic cookie plughost sent (OMNIVIEW=renamed" in first, info.last_error
    assert "This binary is a plugin" in info.last_error


# -- the build script's way around a proxy that refuses the SDK ------------------------------


def test_build_script_builds_against_the_sdk_source_next_to_the_checkout(tmp_path: Path) -> None:
    """``OMNISDK_SOURCE=third_party`` takes the path used where the proxy refuses the SDK."""
    go = require_go(purpose="the Go build script test")
    sdk_dir = REPO.parent / "shared" / "third_party" / "omniview-plugin-sdk"
    if not (sdk_dir / "go.mod").is_file():
        unavailable(
            f"the Omniview SDK source is not at {sdk_dir}",
            "put github.com/omniviewdev/plugin-sdk v0.5.0 there (../shared/third_party/README.md)",
        )
    module = REPO / "tests" / "goplugins" / "omnisdk"
    committed = {name: (module / name).read_bytes() for name in ("go.mod", "go.sum")}
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "GO": go, "OMNISDK_SOURCE": "third_party"},
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"building against the SDK from {sdk_dir.resolve()}" in result.stderr
    # The throw-away copy (removed after the build) had the replace; the script shows it.
    assert f"replace github.com/omniviewdev/plugin-sdk => {sdk_dir.resolve()}" in result.stderr
    # The committed module is what a user with the proxy builds: untouched.
    assert {name: (module / name).read_bytes() for name in committed} == committed
    assert "github.com/omniviewdev/plugin-sdk v0.5.0" in committed["go.mod"].decode()
    for plugin_id in ("omnihello", "omnisettings", "omniresource", "omnipanic", "omnilegacy"):
        assert os.access(out / plugin_id / "bin" / "plugin", os.X_OK), plugin_id
        assert (out / plugin_id / "plugin.yaml").read_bytes() == (
            module / "cmd" / plugin_id / "plugin.yaml"
        ).read_bytes()
    assert not (out / ".omnisdk-bin").exists()
