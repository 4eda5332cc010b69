"""Calling plugins from the outside: ``plughost call``, ``plughost info``
and the local service's ``/services``, ``/introspect`` and ``/call`` routes.

One ``plughost run`` on a fresh root (the bundled Python examples, installed from
its local registry) serves most tests; the Go plugin gohello is packed and
installed into it. omnihello (built with Omniview's real Go SDK, whose settings
service only server reflection can describe) runs under a second host with the
Omniview profile. Real processes everywhere: nothing is mocked.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Host, clean_env, cli, new_root
from gobuild import go_plugins
from waiting import wait_until

pytestmark = pytest.mark.timeout(180)

HEALTH_CHECK = "grpc.health.v1.Health/Check"
LIFECYCLE = "omniview.sdk.lifecycle.v1.PluginLifecycle"
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = new_root(tmp_path_factory.mktemp("calls") / "root")
    running = Host(root)
    try:
        yield running
    finally:
        output = running.stop()
    assert "host stopped; no plugin process left running" in output


def phase(host: Host, plugin_id: str) -> str:
    with host.api() as api:
        return str(api.get(f"/v1/plugins/{plugin_id}").json()["phase"])


def wait_running(host: Host, plugin_id: str) -> None:
    wait_until(
        lambda: phase(host, plugin_id) == "Running",
        timeout=30,
        interval=0.05,
        message=lambda: f"{plugin_id} Running (is {phase(host, plugin_id)})",
    )


def error_of(result: Any) -> dict[str, Any]:
    assert result.returncode == 1, result.out
    error: dict[str, Any] = result.json()["error"]
    return error


@pytest.fixture(scope="module")
def go_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built Go plugins (skipped without Go on a developer's machine, failed in CI)."""
    return go_plugins(tmp_path_factory)


@pytest.fixture(scope="module")
def gohello(host: Host, go_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """gohello, packed and installed into the running host."""
    package = tmp_path_factory.mktemp("gohello") / "gohello.tar.gz"
    cli("pack", go_dir / "gohello", "-o", package).ok()
    cli("install", package, root=host.root).ok()
    wait_running(host, "gohello")
    return "gohello"


# --------------------------------------------------------------------------- plughost call
def test_call_health_check_prints_the_status(host: Host) -> None:
    assert cli("call", "hello", HEALTH_CHECK, "{}", root=host.root).ok().stdout == "SERVING\n"
    answer = cli("call", "hello", HEALTH_CHECK, "{}", "--json", root=host.root).ok().json()
    assert answer == {"status": "SERVING"}
    # go-plugin's own health name, and no request at all (an empty message)
    named = cli("call", "hello", HEALTH_CHECK, '{"service": "plugin"}', root=host.root).ok()
    assert named.stdout == "SERVING\n"
    assert cli("call", "hello", HEALTH_CHECK, root=host.root).ok().stdout == "SERVING\n"
    piped = cli("call", "hello", HEALTH_CHECK, "-", input='{"service": ""}', root=host.root)
    assert piped.ok().stdout == "SERVING\n"


def test_call_the_lifecycle_under_both_names_without_reflection(host: Host) -> None:
    info = cli("call", "hello", f"{LIFECYCLE}/GetInfo", "--json", root=host.root).ok().json()
    assert info == {"pluginId": "hello", "version": "1.0.0", "sdkProtocolVersion": 1}
    legacy = "com.omniview.pluginsdk.PluginLifecycle/GetCapabilities"
    caps = cli("call", "hello", legacy, "--json", root=host.root).ok().json()
    assert caps == {"capabilities": ["exec"]}
    pretty = cli("call", "hello", f"{LIFECYCLE}/GetInfo", root=host.root).ok().stdout
    assert '"pluginId": "hello"' in pretty  # more than one field: JSON


def test_call_errors_say_what_is_wrong(host: Host) -> None:
    def fails(*args: str) -> dict[str, Any]:
        return error_of(cli("call", *args, "--json", root=host.root))

    unknown_method = fails("hello", "grpc.health.v1.Health/Nope")
    assert unknown_method["title"] == "Unknown method"
    assert "its methods: Check, List, Watch" in unknown_method["detail"]

    bad_json = fails("hello", HEALTH_CHECK, "{service:")
    assert bad_json["type"] == "validation" and bad_json["title"] == "Invalid request JSON"
    assert "line 1 column 2" in bad_json["detail"]

    bad_field = fails("hello", HEALTH_CHECK, '{"servic": "plugin"}')
    assert bad_field["title"] == "Invalid request message"
    assert 'no field named "servic"' in bad_field["detail"] and "service" in bad_field["detail"]
    wrong_type = fails("hello", HEALTH_CHECK, '{"service": 3}')
    assert "service field" in wrong_type["detail"]
    not_an_object = fails("hello", HEALTH_CHECK, "[1]")
    assert "expected a JSON object" in not_an_object["detail"]

    streaming = fails("hello", "grpc.health.v1.Health/Watch")
    assert streaming["title"] == "Streaming method" and "server-streaming" in streaming["detail"]

    # hello serves hello.v1.Greeter, but no reflection to describe it with
    undescribed = fails("hello", "hello.v1.Greeter/Greet", '"you"')
    assert undescribed["title"] == "Cannot describe the method"
    assert "serves no gRPC server reflection" in undescribed["detail"]
    assert "grpc.health.v1.Health" in undescribed["detail"]  # what it can call instead

    assert fails("hello", "no-slash")["title"] == "Invalid method name"
    missing = fails("nope", HEALTH_CHECK)
    assert missing["type"] == "plugin_not_found" and missing["status"] == 404

    plugin_said_no = fails("hello", HEALTH_CHECK, '{"service": "zzz"}')
    assert plugin_said_no["type"] == "plugin_call_failed" and plugin_said_no["status"] == 502
    assert plugin_said_no["grpcCode"] == "NOT_FOUND"

    # On a terminal: title, detail and hints, exit 1.
    plain = cli("call", "hello", "grpc.health.v1.Health/Nope", root=host.root)
    assert plain.returncode == 1
    assert "Unknown method" in plain.stderr and "Check, List, Watch" in plain.stderr


def test_a_stopped_plugin_is_unavailable_and_info_says_so(host: Host) -> None:
    cli("disable", "slowstart", root=host.root).ok()
    try:
        error = error_of(cli("call", "slowstart", HEALTH_CHECK, "--json", root=host.root))
        assert error["type"] == "plugin_unavailable" and error["status"] == 503
        assert "not running (Stopped, disabled)" in error["detail"]
        assert error["phase"] == "Stopped"
        with host.api() as api:
            for method, path, body in (
                ("GET", "/v1/plugins/slowstart/services", None),
                ("GET", "/v1/plugins/slowstart/introspect", None),
                ("POST", "/v1/plugins/slowstart/call", {"method": HEALTH_CHECK}),
            ):
                response = api.request(method, path, json=body)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["content-type"].startswith(PROBLEM)
                assert response.json()["errorType"] == "plugin_unavailable"
        data = cli("info", "slowstart", "--json", root=host.root).ok().json()
        assert data["phase"] == "Stopped" and data["services"] is None
        assert "not running" in data["introspectErrors"]["plugin"]
        shown = cli("info", "slowstart", root=host.root).ok().stdout
        assert "unknown: plugin 'slowstart' is not running" in shown
    finally:
        cli("enable", "slowstart", root=host.root).ok()
    wait_running(host, "slowstart")
    assert cli("call", "slowstart", HEALTH_CHECK, root=host.root).ok().stdout == "SERVING\n"


# --------------------------------------------------------------------------- plughost info
def test_info_shows_services_lifecycle_protocol_and_address(host: Host) -> None:
    data = cli("info", "hello", "--json", root=host.root).ok().json()
    assert data["id"] == "hello" and data["phase"] == "Running"  # what it showed before
    assert data["protocolVersion"] == 1
    assert data["services"] == sorted(
        ["grpc.health.v1.Health", LIFECYCLE, "plugin.GRPCController", "plugin.GRPCStdio"]
    )
    assert data["reflection"] is False
    assert data["lifecycle"] == {
        "service": LIFECYCLE,
        "info": {"pluginID": "hello", "version": "1.0.0", "sdkProtocolVersion": 1},
        "capabilities": ["exec"],
    }
    assert data["address"]["network"] == "unix"
    assert Path(data["address"]["address"]).is_socket()
    assert data["introspectErrors"] == {}
    shown = cli("info", "hello", root=host.root).ok().stdout
    for text in ("Greets whoever asks", "serves", "plugin.GRPCController", "GetInfo",
                 "id hello, version 1.0.0, SDK protocol 1", data["address"]["address"]):  # fmt: skip
        assert text in shown, (text, shown)


# --------------------------------------------------------------------------- the API
def test_api_routes(host: Host) -> None:
    with host.api() as api:
        services = api.get("/v1/plugins/hello/services")
        assert services.status_code == 200 and "grpc.health.v1.Health" in services.json()
        introspect = api.get("/v1/plugins/hello/introspect", params={"timeout": 5}).json()
        assert introspect["pluginID"] == "hello" and introspect["protocolVersion"] == 1
        assert introspect["lifecycle"]["info"]["pluginID"] == "hello"
        assert introspect["pid"] == api.get("/v1/plugins/hello").json()["pid"]

        body = {"method": HEALTH_CHECK, "request": {"service": "plugin"}, "timeout": 5}
        answer = api.post("/v1/plugins/hello/call", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"response": {"status": "SERVING"}, "describedBy": "built-in"}
        no_request = api.post("/v1/plugins/hello/call", json={"method": f"/{HEALTH_CHECK}"})
        assert no_request.json()["response"] == {"status": "SERVING"}

        def problem(path: str, body: Any, status: int, error_type: str) -> dict[str, Any]:
            response = api.post(path, json=body)
            assert response.status_code == status, response.text
            assert response.headers["content-type"].startswith(PROBLEM)
            found: dict[str, Any] = response.json()
            assert found["errorType"] == error_type and found["detail"], found
            return found

        call = "/v1/plugins/hello/call"
        problem(call, {"method": "grpc.health.v1.Health/Nope"}, 400, "validation")
        problem(call, {"method": HEALTH_CHECK, "request": {"nope": 1}}, 400, "validation")
        problem(
            call, {"method": HEALTH_CHECK, "request": "x" * (1024 * 1024)}, 413, "request_too_large"
        )
        problem(call, {"method": HEALTH_CHECK, "timeout": 0}, 422, "validation")
        problem(call, {"request": {}}, 422, "validation")
        problem("/v1/plugins/nope/call", {"method": HEALTH_CHECK}, 404, "plugin_not_found")
        assert api.get("/v1/plugins/nope/introspect").status_code == 404
        assert "/v1/plugins/{plugin_id}/call" in api.get("/openapi.json").json()["paths"]


def test_without_a_host_call_says_to_start_one(tmp_path: Path) -> None:
    root = new_root(tmp_path / "idle")
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "src" / "plughost" / "examples" / "hello",
        root / "plugins" / "hello",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    result = cli("call", "hello", HEALTH_CHECK, root=root)
    assert result.returncode == 1
    assert "no host is running root" in result.stderr and "plughost run" in result.stderr
    data = cli("info", "hello", "--json", root=root).ok().json()  # what it can, as before
    assert data["id"] == "hello" and data["services"] is None
    assert data["introspectErrors"] == {"plugin": "no host is running this root"}


# --------------------------------------------------------------------------- Go plugins
def test_go_plugin_health_is_described_by_reflection(host: Host, go: str, gohello: str) -> None:
    assert cli("call", gohello, HEALTH_CHECK, '{"service": "plugin"}', root=host.root).ok()
    with host.api() as api:
        body = {"method": HEALTH_CHECK, "request": {"service": "plugin"}}
        answer = api.post(f"/v1/plugins/{gohello}/call", json=body).json()
    assert answer == {"response": {"status": "SERVING"}, "describedBy": "reflection"}
    # The plugin's own error comes back with its gRPC code.
    refused = cli("call", gohello, HEALTH_CHECK, '{"service": "zzz"}', "--json", root=host.root)
    error = error_of(refused)
    assert error["type"] == "plugin_call_failed" and error["grpcCode"] == "NOT_FOUND"
    data = cli("info", gohello, "--json", root=host.root).ok().json()
    assert data["reflection"] is True and "hello.v1.Greeter" in data["services"]
    assert data["lifecycle"] is None and data["protocolVersion"] == 1
    assert data["address"]["network"] == "unix"


def test_go_plugin_service_declared_by_hand_cannot_be_described(
    host: Host, go: str, gohello: str
) -> None:
    result = cli("call", gohello, "hello.v1.Greeter/Greet", '"you"', "--json", root=host.root)
    error = error_of(result)
    assert error["title"] == "Cannot describe the method"
    assert "lists hello.v1.Greeter in its server reflection" in error["detail"]
    assert "reflection cannot describe it" in error["detail"]
    # A built-in service it does not serve: the plugin's answer, with what it serves.
    absent = error_of(cli("call", gohello, f"{LIFECYCLE}/GetInfo", "--json", root=host.root))
    assert absent["title"] == "Unknown service"
    assert f"does not serve {LIFECYCLE}" in absent["detail"]
    assert "hello.v1.Greeter" in absent["detail"]
    unknown = error_of(cli("call", gohello, "nope.v1.Nope/Nope", "--json", root=host.root))
    assert unknown["title"] == "Unknown service" and "plugin.GRPCStdio" in unknown["detail"]


@pytest.fixture(scope="module")
def omni_host(go_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """``plughost run --profile omniview`` on ``$HOME/.omniview`` holding omnihello."""
    home = tmp_path_factory.mktemp("omni-home")
    root = home / ".omniview"
    shutil.copytree(go_dir / "omnihello", root / "plugins" / "omnihello")
    new_root(root)
    running = Host(root, "--profile", "omniview", "--no-examples", env=clean_env(HOME=str(home)))
    try:
        yield running
    finally:
        running.stop()


def test_omnihello_settings_are_described_only_by_reflection(go: str, omni_host: Host) -> None:
    wait_running(omni_host, "omnihello")
    method = "omniview.sdk.settings.v1.SettingsPlugin/ListSettings"
    answer = cli("call", "omnihello", method, "{}", "--json", root=omni_host.root).ok().json()
    assert answer == {"settings": {}}  # no settings declared: the SDK answers an empty map
    with omni_host.api() as api:
        described = api.post("/v1/plugins/omnihello/call", json={"method": method}).json()
    assert described["describedBy"] == "reflection"
    info = cli("call", "omnihello", f"{LIFECYCLE}/GetInfo", "--json", root=omni_host.root)
    assert info.ok().json() == {
        "pluginId": "omnihello",
        "version": "0.1.0",
        "sdkProtocolVersion": 1,
    }
    data = cli("info", "omnihello", "--json", root=omni_host.root).ok().json()
    assert data["lifecycle"]["capabilities"] == ["settings"]
    assert "omniview.sdk.settings.v1.SettingsPlugin" in data["services"]
    # Reflection names the methods there are.
    method = "omniview.sdk.settings.v1.SettingsPlugin/Nope"
    unknown = error_of(cli("call", "omnihello", method, "--json", root=omni_host.root))
    assert unknown["title"] == "Unknown method"
    assert unknown["detail"].endswith(
        "its methods: GetSetting, GetSettingValue, ListSettings, SetSetting, SetSettings"
    )
    # The SDK's own answer for a setting it does not have, passed on as the plugin's.
    method = "omniview.sdk.settings.v1.SettingsPlugin/GetSetting"
    missing = cli("call", "omnihello", method, '{"id": "nope"}', "--json", root=omni_host.root)
    failed = error_of(missing)
    assert (failed["title"], failed["grpcCode"]) == ("Plugin call failed", "INTERNAL")
    assert "failed to get setting: setting not found" in failed["detail"]
