"""plughost.omniview: typed clients built at run time from Omniview's SDK.

The SDK is the real one, next to the checkout (``../shared/third_party/omniview-plugin-sdk``,
found through ``PLUGHOST_OMNIVIEW_SDK``); plughost ships none of it. Its services are
served here by in-process ``grpc.aio`` servers built from the same generated classes,
on real unix sockets, and called through a real ``PluginClient``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cli_helpers import clean_env, cli
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2
from toolchains import unavailable

from plughost.errors import OmniviewSdkNotFoundError, PluginCallError, ValidationError
from plughost.host.client import PluginClient
from plughost.omniview import (
    ENV_VAR,
    OmniviewSdk,
    ResourcePage,
    Setting,
    SettingsClient,
    decode_value,
    encode_value,
    load_sdk,
    locate_sdk,
    snake_case,
)
from plughost.phases import Phase
from plughost.settings import Settings

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
SDK_DIR = REPO.parent / "shared" / "third_party" / "omniview-plugin-sdk"
V1_PACKAGES = {
    "lifecycle",
    "settings",
    "resource",
    "exec",
    "networker",
    "logs",
    "metric",
    "command",
}


def _require_sdk() -> Path:
    if not (SDK_DIR / "proto" / "v1").is_dir():
        unavailable(
            f"Omniview's plugin SDK is not at {SDK_DIR}",
            "put github.com/omniviewdev/plugin-sdk v0.5.0 there (see "
            "../shared/third_party/README.md), e.g. a copy of $(go env GOMODCACHE)/"
            "github.com/omniviewdev/plugin-sdk@v0.5.0 after 'go mod download "
            "github.com/omniviewdev/plugin-sdk@v0.5.0'",
        )
    return SDK_DIR


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmniviewSdk]:
    """The SDK, found through $PLUGHOST_OMNIVIEW_SDK, compiled into a private cache."""
    path = _require_sdk()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_VAR, str(path))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        loaded = load_sdk()
        assert loaded.location.source == f"${ENV_VAR}"
        assert loaded.path == path.resolve()
        yield loaded


# -- finding the SDK -------------------------------------------------------------------
def _proto_services(path: Path) -> dict[str, dict[str, tuple[bool, bool]]]:
    """What a .proto declares, read from its text: service -> rpc -> (client, server) streaming."""
    text = re.sub(r"//[^\n]*", "", path.read_text())
    found: dict[str, dict[str, tuple[bool, bool]]] = {}
    for service, body in re.findall(r"service\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        rpcs = re.findall(
            r"rpc\s+(\w+)\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?", body
        )
        found[service] = {name: (bool(cs), bool(ss)) for name, cs, ss in rpcs}
    return found


def test_the_sdk_is_found_in_each_place_in_order(tmp_path: Path) -> None:
    path = _require_sdk()
    assert locate_sdk(path, environ={}).source == "argument"
    assert locate_sdk(environ={ENV_VAR: str(path)}).source == f"${ENV_VAR}"
    root = tmp_path / "root"
    root.mkdir()
    relative = os.path.relpath(path, root)
    (root / "plughost.toml").write_text(f"omniview_sdk = {json.dumps(relative)}\n")
    found = locate_sdk(root=root, environ={})
    assert found.path == path.resolve()
    assert found.source == f"setting omniview_sdk in {root / 'plughost.toml'}"
    # Go's module cache: the newest plugin-sdk@v* (semantic order, releases after their rcs).
    cache = tmp_path / "modcache"
    for version in ("v0.4.0", "v0.10.0-rc.1", "v0.10.0", "v0.9.3"):
        protos = cache / "github.com/omniviewdev" / f"plugin-sdk@{version}" / "proto/v1/settings"
        protos.mkdir(parents=True)
        (protos / "settings.proto").write_text('syntax = "proto3";\n')
    (cache / "github.com/omniviewdev/plugin-sdk@v0.11.0").mkdir()  # no protos: not an SDK
    env = {"GOMODCACHE": str(cache), "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    found = locate_sdk(settings=Settings(), environ=env)
    assert (found.version, found.path.name) == ("v0.10.0", "plugin-sdk@v0.10.0")
    assert found.source.startswith("Go module cache")


def test_a_missing_sdk_names_every_place_looked_at_and_how_to_point_at_one(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    empty = tmp_path / "empty-modcache"
    env = {"GOMODCACHE": str(empty), "HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    with pytest.raises(OmniviewSdkNotFoundError) as caught:
        locate_sdk(root=root, environ=env)
    error = caught.value
    assert error.type == "omniview_sdk_not_found" and error.status == 412
    assert "no path was passed" in error.detail
    assert f"${ENV_VAR} is not set" in error.detail
    assert f"setting omniview_sdk is not set in {root / 'plughost.toml'}" in error.detail
    assert f"Go's module cache {empty}" in error.detail
    hints = " | ".join(error.suggestions)
    assert f"{ENV_VAR}=/path/to/plugin-sdk" in hints
    assert f'omniview_sdk = "/path/to/plugin-sdk" in {root / "plughost.toml"}' in hints
    assert "go mod download github.com/omniviewdev/plugin-sdk@v0.5.0" in hints
    # A place that is given but wrong is an error too, naming it, never skipped.
    with pytest.raises(OmniviewSdkNotFoundError, match=f"{tmp_path}.*{ENV_VAR}.*does not exist"):
        locate_sdk(environ={ENV_VAR: str(tmp_path / "nowhere")})
    with pytest.raises(OmniviewSdkNotFoundError, match=r"argument\).*no proto/v1"):
        load_sdk(tmp_path)


# -- generation ------------------------------------------------------------------------
class _Recorder:
    """A channel that records what kind of multicallable a stub asks for, per method path."""

    def __init__(self) -> None:
        self.made: dict[str, str] = {}

    def __getattr__(self, kind: str) -> Any:
        def make(path: str, **_: Any) -> str:
            self.made[path] = kind
            return kind

        return make


def test_every_v1_service_is_generated_as_its_proto_declares(sdk: OmniviewSdk) -> None:
    assert set(sdk.packages) >= V1_PACKAGES | {"common"}
    kinds = {
        (False, False): "unary_unary",
        (False, True): "unary_stream",
        (True, False): "stream_unary",
        (True, True): "stream_stream",
    }
    seen = declared = 0
    for proto in sorted((sdk.path / "proto" / "v1").glob("*/*.proto")):
        package = proto.parent.name
        declared += len(re.findall(r"(?m)^\s*rpc\s", proto.read_text()))
        for service, rpcs in _proto_services(proto).items():
            assert service in sdk.services(package), (proto, service)
            recorder = _Recorder()
            stub = sdk.stub(package, service)(recorder)
            full = f"omniview.sdk.{package}.v1.{service}"
            assert recorder.made == {f"/{full}/{n}": kinds[flags] for n, flags in rpcs.items()}
            assert all(getattr(stub, n) == kinds[flags] for n, flags in rpcs.items())
            seen += len(rpcs)
    assert {p.parent.name for p in (sdk.path / "proto/v1").glob("*/*.proto")} >= V1_PACKAGES
    assert seen == declared == 66, "every rpc line of the .proto files was compared"
    # Aliases of plugin.yaml's capability names; errors name what there is.
    assert sdk.package("log") == "omniview.sdk.logs.v1"
    assert sdk.services("command") == ["Command", "Stream"]
    with pytest.raises(ValidationError, match="no package 'kubernetes'") as caught:
        sdk.messages("kubernetes")
    assert "settings" in caught.value.suggestions[0]
    with pytest.raises(ValidationError, match="Command, Stream"):
        sdk.stub("command", "Nope")
    assert load_sdk(sdk.path) is sdk, "one SDK is compiled once per process"


def test_the_classes_do_not_touch_protobufs_global_pool(sdk: OmniviewSdk) -> None:
    """plughost's own lifecycle copy and the SDK's live side by side."""
    from plughost._proto import lifecycle_pb2

    ours = lifecycle_pb2.GetInfoResponse(plugin_id="a", version="1")
    theirs = sdk.messages("lifecycle").GetInfoResponse.FromString(ours.SerializeToString())
    assert (theirs.plugin_id, theirs.version) == ("a", "1")
    assert sdk.messages("lifecycle").SERVING_STATUS_SERVING == 1


def test_typed_messages_round_trip(sdk: OmniviewSdk) -> None:
    # Every message of every package: defaults round-trip.
    for package in sdk.packages:
        namespace = sdk.messages(package)
        for name in namespace:
            cls = getattr(namespace, name)
            if isinstance(cls, type):
                assert cls.FromString(cls().SerializeToString()) == cls(), f"{package}.{name}"
    s = sdk.messages("settings")
    setting = s.Setting(
        id="theme",
        label="Theme",
        type=s.SETTING_TYPE_SELECT,
        options=[s.SettingOption(label="Dark", value=sdk.convert(encode_value("dark")))],
        file_selection={"enabled": True, "extensions": [".yaml"]},
    )
    setting.value.Pack(wrappers_pb2.BytesValue(value=b'"dark"'))
    again = s.Setting.FromString(setting.SerializeToString())
    assert again == setting and again.HasField("file_selection")
    assert decode_value(again.value) == "dark" and decode_value(again.options[0].value) == "dark"
    assert s.SettingType.Name(again.type) == "SETTING_TYPE_SELECT"
    listed = s.ListSettingsResponse(settings={"theme": setting})
    assert (
        s.ListSettingsResponse.FromString(listed.SerializeToString()).settings["theme"] == setting
    )
    # Nested messages, maps, Struct and Timestamp fields, JSON both ways.
    common = sdk.messages("common")
    connection = common.Connection(
        id="c1", labels={"env": "dev"}, data={"port": 8443, "tags": ["a", "b"]}
    )
    assert common.Connection.FromString(connection.SerializeToString()) == connection
    as_dict = sdk.to_dict(connection)
    assert as_dict["data"] == {"port": 8443, "tags": ["a", "b"]} and as_dict["labels"] == {
        "env": "dev"
    }
    assert sdk.from_dict("omniview.sdk.common.v1.Connection", as_dict) == connection
    r = sdk.messages("resource")
    listing = r.ListRequest(
        resource_key="core::v1::Pod",
        order=[{"path": "metadata.name", "descending": True}],
        pagination={"page": 2, "page_size": 50},
    )
    assert r.ListRequest.FromString(listing.SerializeToString()).pagination.page_size == 50
    session = sdk.messages("exec").Session(id="s1")
    session.created_at.FromJsonString("2026-03-20T10:00:00Z")
    assert sdk.to_dict(session)["created_at"] == "2026-03-20T10:00:00Z"
    # A message of another pool is converted; a wrong one refused.
    assert sdk.convert(struct_pb2.Struct()) == sdk.message("google.protobuf.Struct")()
    with pytest.raises(ValidationError, match="not a valid"):
        sdk.from_dict("omniview.sdk.resource.v1.ListRequest", {"pagination": {"page": "x"}})


def test_values_convert_like_the_go_sdk() -> None:
    packed = encode_value({"a": [1, 2.5, True, None]})
    assert packed.type_url == "type.googleapis.com/google.protobuf.BytesValue"
    inner = wrappers_pb2.BytesValue()
    assert packed.Unpack(inner) and json.loads(inner.value) == {"a": [1, 2.5, True, None]}
    assert decode_value(packed) == {"a": [1, 2.5, True, None]}
    other = encode_value(0)
    other.Pack(wrappers_pb2.StringValue(value="plain"))
    assert decode_value(other) == "plain"
    assert decode_value(None) is None and decode_value(type(packed)()) is None
    with pytest.raises(ValidationError, match="setting value"):
        encode_value(float("nan"))
    with pytest.raises(ValidationError, match="setting value"):
        encode_value(object())
    assert snake_case("GetSupportedPortForwardTargets") == "get_supported_port_forward_targets"


# -- plughost omniview stubs -----------------------------------------------------------
def _run_python(code: str, path: Path) -> str:
    env = clean_env(PYTHONPATH=str(path))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_stubs_command_writes_importable_modules(sdk: OmniviewSdk, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    result = cli("omniview", "stubs", "--sdk", sdk.path, "-o", plain).ok()
    assert "proto.v1.settings.settings_pb2" in result.stdout
    for package in V1_PACKAGES:
        assert (plain / "proto/v1" / package / f"{package}_pb2.py").is_file()
        assert (plain / "proto/v1" / package / f"{package}_pb2.pyi").is_file()
        assert (plain / "proto/v1" / package / f"{package}_pb2_grpc.py").is_file()
        assert str(plain / "proto/v1" / package / f"{package}_pb2_grpc.py") in result.stdout
    # The checked-in classes and the run-time ones speak the same bytes.
    setting = sdk.messages("settings").Setting(id="retries", label="Retries", type=3)
    setting.value.CopyFrom(sdk.convert(encode_value(5)))
    code = (
        "import sys\n"
        "from proto.v1.settings import settings_pb2, settings_pb2_grpc\n"
        "from proto.v1.resource import resource_pb2_grpc\n"
        "from google.protobuf import wrappers_pb2\n"
        f"s = settings_pb2.Setting.FromString({setting.SerializeToString()!r})\n"
        "v = wrappers_pb2.BytesValue(); s.value.Unpack(v)\n"
        "print(s.id, settings_pb2.SettingType.Name(s.type), v.value.decode())\n"
        "print(settings_pb2_grpc.SettingsPluginStub.__name__, "
        "hasattr(resource_pb2_grpc, 'add_ResourcePluginServicer_to_server'))\n"
    )
    out = _run_python(code, plain)
    assert out.split("\n")[:2] == ["retries SETTING_TYPE_INTEGER 5", "SettingsPluginStub True"]
    # --package: nested in the application's own package, imports rewritten.
    nested = tmp_path / "app"
    data = (
        cli(
            "omniview",
            "stubs",
            "--sdk",
            sdk.path,
            "-o",
            nested,
            "--package",
            "myapp.omni",
            "--json",
        )
        .ok()
        .json()
    )
    assert data["sdk"] == str(sdk.path) and data["sha256"] == sdk.digest
    assert str(nested / "myapp/__init__.py") in data["files"]
    out = _run_python(
        "from myapp.omni.proto.v1.resource import resource_pb2\n"
        "print(resource_pb2.GetRequest.__module__, resource_pb2.GetRequest(id='p').id)\n",
        nested,
    )
    assert out.split() == ["myapp.omni.proto.v1.resource.resource_pb2", "p"]
    refused = cli("omniview", "stubs", "--sdk", tmp_path, "-o", tmp_path / "x")
    assert refused.returncode == 1 and "Omniview plugin SDK not found" in refused.out


# -- the typed clients, against fake plugins -------------------------------------------
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


@contextlib.asynccontextmanager
async def _serve(
    sdk: OmniviewSdk, package: str, servicer: object, tmp_path: Path, plugin_id: str
) -> AsyncIterator[PluginClient]:
    server = grpc.aio.server()
    sdk.add_to_server(package, servicer, server)
    address = f"unix:{tmp_path / f'{package}.sock'}"
    server.add_insecure_port(address)
    await server.start()
    channel = grpc.aio.insecure_channel(address)
    try:
        yield PluginClient(_Table(_Backend(channel)), plugin_id)  # type: ignore[arg-type]
    finally:
        await channel.close()
        await server.stop(None)


class FakeSettings:
    """omniview.sdk.settings.v1.SettingsPlugin as the Go SDK serves it: values are
    Any(BytesValue(JSON)), a value of the wrong type fails with the SDK's message."""

    def __init__(self, sdk: OmniviewSdk) -> None:
        self.m = sdk.messages("settings")
        self.sdk = sdk
        self.values: dict[str, Any] = {
            "greeting": "hello",
            "retries": 3,
            "ratio": 0.5,
            "verbose": False,
            "theme": "dark",
        }
        self.types = {
            "greeting": "TEXT",
            "retries": "INTEGER",
            "ratio": "FLOAT",
            "verbose": "TOGGLE",
            "theme": "SELECT",
        }
        self.sets: list[str] = []

    def _setting(self, key: str) -> Any:
        options = []
        if key == "theme":
            options = [
                self.m.SettingOption(label=v.title(), value=self._pack(v))
                for v in ("dark", "light")
            ]
        return self.m.Setting(
            id=key,
            label=key.title(),
            description=f"the {key}",
            type=self.m.SettingType.Value(f"SETTING_TYPE_{self.types[key]}"),
            value=self._pack(self.values[key]),
            options=options,
        )

    def _pack(self, value: Any) -> Any:
        packed = self.sdk.message("google.protobuf.Any")()
        packed.Pack(wrappers_pb2.BytesValue(value=json.dumps(value).encode()))
        return packed

    def _unpack(self, packed: Any, context: Any) -> Any:
        assert packed.type_url == "type.googleapis.com/google.protobuf.BytesValue"
        inner = wrappers_pb2.BytesValue()
        packed.Unpack(inner)
        return json.loads(inner.value)

    async def _known(self, key: str, context: grpc.aio.ServicerContext) -> None:
        if key not in self.values:
            await context.abort(
                grpc.StatusCode.INTERNAL, "failed to get setting: setting not found"
            )

    async def ListSettings(self, request: Any, context: Any) -> Any:
        return self.m.ListSettingsResponse(settings={k: self._setting(k) for k in self.values})

    async def GetSetting(self, request: Any, context: Any) -> Any:
        await self._known(request.id, context)
        return self._setting(request.id)

    async def GetSettingValue(self, request: Any, context: Any) -> Any:
        await self._known(request.id, context)
        return self.m.GetSettingValueResponse(value=self._pack(self.values[request.id]))

    async def _set(self, key: str, value: Any, context: Any) -> None:
        await self._known(key, context)
        current = self.values[key]
        ok = type(value) is type(current) or (isinstance(current, float) and type(value) is int)
        if not ok:
            go = {str: "string", int: "int", float: "float64", bool: "bool"}
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"failed to set setting: setting type mismatch for setting '{key}'. currently "
                f"has {go[type(current)]}, tried to assign {go.get(type(value), 'other')}",
            )
        self.values[key] = value
        self.sets.append(key)

    async def SetSetting(self, request: Any, context: Any) -> Any:
        await self._set(request.id, self._unpack(request.value, context), context)
        return empty_pb2.Empty()

    async def SetSettings(self, request: Any, context: Any) -> Any:
        for key in request.settings:
            await self._set(key, self._unpack(request.settings[key], context), context)
        return empty_pb2.Empty()


async def test_the_settings_client_lists_gets_and_sets_python_values(
    sdk: OmniviewSdk, tmp_path: Path
) -> None:
    fake = FakeSettings(sdk)
    async with _serve(sdk, "settings", fake, tmp_path, "fakesettings") as plugin:
        settings = sdk.settings(plugin)
        assert isinstance(settings, SettingsClient)
        listed = await settings.list(timeout=5)
        assert list(listed) == ["greeting", "ratio", "retries", "theme", "verbose"]
        assert all(isinstance(s, Setting) for s in listed.values())
        assert {k: (s.type, s.value) for k, s in listed.items()} == {
            "greeting": ("text", "hello"),
            "ratio": ("float", 0.5),
            "retries": ("integer", 3),
            "theme": ("select", "dark"),
            "verbose": ("toggle", False),
        }
        theme = await settings.setting("theme", timeout=5)
        assert [(o.label, o.value) for o in theme.options] == [("Dark", "dark"), ("Light", "light")]
        assert theme.description == "the theme" and theme.message.id == "theme"
        assert await settings.get("retries", timeout=5) == 3
        await settings.set("retries", 5, timeout=5)
        await settings.set("ratio", 1, timeout=5)  # an int is a fine float
        await settings.set("theme", "light", timeout=5)
        await settings.set_many({"greeting": "hi", "verbose": True}, timeout=5)
        assert fake.values == {
            "greeting": "hi",
            "retries": 5,
            "ratio": 1,
            "verbose": True,
            "theme": "light",
        }
        assert await settings.get("verbose", timeout=5) is True
        # The raw RPCs are there too, by either name, taking dicts or keywords.
        raw = await settings.get_setting_value({"id": "greeting"}, timeout=5)
        assert decode_value(raw.value) == "hi"
        assert (await settings.GetSetting(id="retries", timeout=5)).label == "Retries"
        assert "list_settings" in settings.methods

        # A wrong type, sent anyway: the plugin's own message, as a typed plughost error.
        with pytest.raises(PluginCallError) as caught:
            await settings.set("retries", "many", check=False, timeout=5)
        error = caught.value
        assert error.plugin_id == "fakesettings" and error.grpc_code == "INTERNAL"
        assert error.detail == (
            "SettingsPlugin/SetSetting answered INTERNAL: failed to set setting: setting type "
            "mismatch for setting 'retries'. currently has int, tried to assign string"
        )
        assert error.to_dict()["grpcCode"] == "INTERNAL"
        # Checked first (the default): refused before it is sent, naming the type.
        sent = len(fake.sets)
        with pytest.raises(ValidationError, match=r"'retries' is integer.*an integer; got 'many'"):
            await settings.set("retries", "many", timeout=5)
        with pytest.raises(ValidationError, match=r"one of \['dark', 'light'\]"):
            await settings.set("theme", "blue", timeout=5)
        with pytest.raises(ValidationError, match="true or false"):
            await settings.set_many({"greeting": "x", "verbose": 1}, timeout=5)
        assert len(fake.sets) == sent and fake.values["retries"] == 5
        with pytest.raises(PluginCallError, match="setting not found"):
            await settings.get("nope", timeout=5)
        with pytest.raises(ValidationError, match="setting value"):
            await settings.set("greeting", {1, object()}, timeout=5)
        with pytest.raises(AttributeError):
            settings.no_such_rpc  # noqa: B018


class FakeResources:
    """A few RPCs of omniview.sdk.resource.v1.ResourcePlugin, errors in-band like the SDK's."""

    def __init__(self, sdk: OmniviewSdk) -> None:
        self.r = sdk.messages("resource")
        self.c = sdk.messages("common")
        self.pods = {"web": {"name": "web", "ready": True}, "db": {"name": "db", "ready": False}}
        self.requests: list[Any] = []

    async def Get(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.id not in self.pods:
            error = self.c.ResourceError(
                code=self.c.RESOURCE_ERROR_NOT_FOUND,
                title="Pod not found",
                message=f"pod {request.id} not found in {request.namespace}",
                suggestions=["check the namespace"],
            )
            return self.r.GetResponse(error=error)
        return self.r.GetResponse(data=json.dumps(self.pods[request.id]).encode())

    async def List(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        items = [json.dumps(p).encode() for p in self.pods.values()]
        return self.r.ListResponse(items=items, total=len(items), next_cursor="c2")

    async def Create(self, request: Any, context: Any) -> Any:
        created = json.loads(request.data)
        self.pods[created["name"]] = created
        return self.r.CreateResponse(data=request.data)

    async def ListenForEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        for pod in self.pods:
            event = self.r.WatchEvent()
            event.add.id = pod
            yield event


async def test_the_resource_client_decodes_resources_and_raises_resource_errors(
    sdk: OmniviewSdk, tmp_path: Path
) -> None:
    fake = FakeResources(sdk)
    async with _serve(sdk, "resource", fake, tmp_path, "fakeresource") as plugin:
        resources = sdk.resource(plugin)
        pod = await resources.get("core::v1::Pod", "web", connection="dev", namespace="default")
        assert pod == {"name": "web", "ready": True}
        sent = fake.requests[-1]
        assert (sent.resource_key, sent.connection_id, sent.id, sent.namespace) == (
            "core::v1::Pod",
            "dev",
            "web",
            "default",
        )
        page = await resources.list(
            "core::v1::Pod",
            connection="dev",
            namespaces=["default"],
            order=[("name", True)],
            page_size=10,
            timeout=5,
        )
        assert page == ResourcePage(
            [{"name": "web", "ready": True}, {"name": "db", "ready": False}], 2, "c2"
        )
        listed = fake.requests[-1]
        assert listed.pagination.page_size == 10 and listed.order[0].descending
        assert await resources.create("core::v1::Pod", {"name": "q"}, connection="dev") == {
            "name": "q"
        }
        with pytest.raises(PluginCallError) as caught:
            await resources.get("core::v1::Pod", "gone", connection="dev", namespace="x")
        error = caught.value
        assert error.title == "Pod not found" and error.suggestions == ["check the namespace"]
        assert (
            "RESOURCE_ERROR_NOT_FOUND" in error.detail and "pod gone not found in x" in error.detail
        )
        # A server-streaming RPC through the generic client.
        events = [e.add.id async for e in resources.listen_for_events(timeout=5)]
        assert events == ["web", "db", "q"]
        with pytest.raises(ValidationError, match="stream"):
            await resources.call("ListenForEvents")
        # An RPC the fake does not serve: UNIMPLEMENTED, with a hint.
        with pytest.raises(PluginCallError) as caught:
            await resources.get_resource_groups(connection_id="dev", timeout=5)
        assert caught.value.grpc_code == "UNIMPLEMENTED"
        assert "declares the capability" in caught.value.suggestions[0]
        with pytest.raises(ValidationError, match="cannot build"):
            await resources.call("Get", no_such_field=1)


# -- a real Omniview SDK plugin ----------------------------------------------------------
@pytest.mark.interop
@pytest.mark.timeout(300)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics")
async def test_the_settings_client_against_the_real_go_sdk(
    sdk: OmniviewSdk,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """omnisettings (tests/goplugins/omnisdk), built with plugin-sdk v0.5.0, under the
    Omniview profile, called through manager.client()."""
    from gobuild import go_plugins

    from plughost.host.manager import PluginManager
    from plughost.settings import SettingsProvider

    build = go_plugins(tmp_path_factory, ("omnisettings",))
    home = tmp_path / "home"
    (home / ".omniview" / "plugins").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))  # the SDK reads $HOME/.omniview/plugins/<id>/
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)
    shutil.copytree(build / "omnisettings", home / ".omniview" / "plugins" / "omnisettings")
    timings = {"start_timeout": 30.0, "stop_grace": 10.0, "health_timeout": 10.0}
    manager = PluginManager(
        home / ".omniview", profile="omniview", settings=SettingsProvider(None, timings)
    )
    await manager.initialize()
    try:
        settings = sdk.settings(manager.client("omnisettings"))
        listed = await settings.list(timeout=30)
        assert {k: (s.type, s.value) for k, s in listed.items()} == {
            "greeting": ("text", "hello"),
            "ratio": ("float", 0.5),
            "retries": ("integer", 3),
            "theme": ("select", "dark"),
            "token": ("password", ""),
            "verbose": ("toggle", False),
        }
        assert [o.value for o in listed["theme"].options] == ["dark", "light"]
        assert listed["retries"].description == "How many times a failed call is retried"
        await settings.set("retries", 7, timeout=10)
        await settings.set("theme", "light", timeout=10)
        await settings.set_many({"greeting": "hi", "verbose": True, "ratio": 1}, timeout=10)
        got = {k: await settings.get(k, timeout=10) for k in ("retries", "theme", "greeting")}
        assert got == {"retries": 7, "theme": "light", "greeting": "hi"}
        assert await settings.get("verbose", timeout=10) is True
        # The SDK's own answer to a wrong type (a recovered panic), as a typed error ...
        with pytest.raises(PluginCallError) as caught:
            await settings.set("retries", "many", check=False, timeout=10)
        assert caught.value.grpc_code == "INTERNAL" and caught.value.plugin_id == "omnisettings"
        assert "cannot be converted to type int" in caught.value.detail
        # ... and a wrong type it drops without a word, which is why set() checks first.
        await settings.set("verbose", "yes", check=False, timeout=10)
        assert await settings.get("verbose", timeout=10) is True
        with pytest.raises(ValidationError, match="true or false"):
            await settings.set("verbose", "yes", timeout=10)
        with pytest.raises(PluginCallError, match="setting not found"):
            await settings.get("nope", timeout=10)
        lifecycle = sdk.lifecycle(manager.client("omnisettings"))
        assert list((await lifecycle.get_capabilities(timeout=10)).capabilities) == ["settings"]
        # The client follows the plugin through a reload.
        await manager.reload_plugin("omnisettings")
        assert isinstance(await settings.get("greeting", timeout=30), str)
        assert manager.get_plugin("omnisettings").phase is Phase.RUNNING
    finally:
        await manager.shutdown()


@pytest.mark.timeout(300)  # the first Go build of the SDK plugins is slow
async def test_the_resource_client_against_the_real_go_sdk(
    sdk: OmniviewSdk,
    tmp_path_factory: pytest.TempPathFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """omniresource's second capability (resource) through the typed client, as an
    application would call it: connections, start one, list, get, a missing one."""
    from gobuild import go_plugins

    from plughost.host.manager import PluginManager
    from plughost.settings import SettingsProvider

    build = go_plugins(tmp_path_factory, ("omniresource",))
    home = tmp_path / "home"
    (home / ".omniview" / "plugins").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PLUGHOST_HOME", raising=False)
    shutil.copytree(build / "omniresource", home / ".omniview" / "plugins" / "omniresource")
    timings = {"start_timeout": 30.0, "stop_grace": 10.0, "health_timeout": 10.0}
    manager = PluginManager(
        home / ".omniview", profile="omniview", settings=SettingsProvider(None, timings)
    )
    await manager.initialize()
    try:
        resources = sdk.resource(manager.client("omniresource"))
        assert [c.id for c in await resources.connections(timeout=30)] == ["local"]
        await resources.start_connection(connection_id="local", timeout=10)
        page = await resources.list("demo::v1::Widget", connection="local", timeout=10)
        assert [(w["id"], w["name"]) for w in page.items] == [("w1", "first"), ("w2", "second")]
        widget = await resources.get("demo::v1::Widget", "w2", connection="local", timeout=10)
        assert widget["name"] == "second"
        with pytest.raises(PluginCallError):
            await resources.get("demo::v1::Widget", "nope", connection="local", timeout=10)
    finally:
        await manager.shutdown()
