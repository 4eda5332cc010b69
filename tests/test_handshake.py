"""go-plugin's handshake line and the plugin's environment: pure functions, every form."""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from plughost.errors import HandshakeError, PluginLoadError
from plughost.process.handshake import (
    CORE_PROTOCOL_VERSION,
    ENV_ALLOW_LIST,
    Handshake,
    build_plugin_env,
    format_handshake,
    looks_like_handshake,
    parse_handshake,
)
from plughost.process.mtls import generate_cert_pair


def raw_b64(data: bytes) -> str:
    """Go's base64.RawStdEncoding: standard alphabet, no padding."""
    return base64.b64encode(data).decode().rstrip("=")


# -- the accepted forms -------------------------------------------------------------


def test_five_fields() -> None:
    hs = parse_handshake("1|1|unix|/tmp/plugin123/sock|grpc")
    assert hs == Handshake(1, 1, "unix", "/tmp/plugin123/sock", "grpc", None, False)
    assert hs.grpc_target == "unix:/tmp/plugin123/sock"


def test_go_plugin_1x_six_fields_with_empty_cert() -> None:
    hs = parse_handshake("1|1|tcp|127.0.0.1:41234|grpc|\n")
    assert hs == Handshake(1, 1, "tcp", "127.0.0.1:41234", "grpc", None, False)
    assert hs.grpc_target == "127.0.0.1:41234"


def test_six_fields_with_a_certificate_without_padding() -> None:
    der = generate_cert_pair().cert_der
    blob = bytes(range(64))  # 64 bytes: standard base64 would end in "=="
    for data in (der, blob):
        field = raw_b64(data)
        assert "=" not in field
        hs = parse_handshake(f"1|1|tcp|127.0.0.1:41234|grpc|{field}")
        assert hs.server_cert == data
    # Padding, if a plugin sends it anyway, is accepted too.
    padded = base64.b64encode(blob).decode()
    assert padded.endswith("==")
    assert parse_handshake(f"1|1|unix|/s|grpc|{padded}").server_cert == blob


def test_seven_fields_multiplex() -> None:
    assert parse_handshake("1|1|unix|/tmp/s|grpc||true").multiplex is True
    assert parse_handshake("1|1|unix|/tmp/s|grpc||TRUE").multiplex is True
    assert parse_handshake("1|1|unix|/tmp/s|grpc||false").multiplex is False
    cert = generate_cert_pair().cert_der
    hs = parse_handshake(f"1|1|tcp|127.0.0.1:1|grpc|{raw_b64(cert)}|true")
    assert hs.server_cert == cert and hs.multiplex is True


def test_extra_fields_and_whitespace_are_tolerated() -> None:
    hs = parse_handshake("  1 | 1 | unix | /tmp/s | grpc || false | future \r\n")
    assert hs == Handshake(1, 1, "unix", "/tmp/s", "grpc", None, False)


def test_short_cert_field_is_ignored_like_go_plugin() -> None:
    # go-plugin only uses the field when it is longer than 50 characters.
    assert parse_handshake("1|1|tcp|127.0.0.1:1|grpc|" + "A" * 50).server_cert is None


def test_offered_versions_pick_what_the_plugin_chose() -> None:
    assert parse_handshake("1|3|unix|/s|grpc|", offered_versions=[1, 2, 3]).app_version == 3


# -- each failure, with a clear message ----------------------------------------------

FAILURES = [
    ("2|1|unix|/s|grpc|", "incompatible core API version 2; this host speaks 1"),
    ("0|1|unix|/s|grpc|", "incompatible core API version 0"),
    ("1|2|unix|/s|grpc|", "app protocol version 2, but the host offered [1]"),
    ("1|1|unix|/s|netrpc|", "plugin speaks protocol 'netrpc', but this host only speaks grpc"),
    ("1|1|unix|/s", "protocol 'netrpc'"),  # no protocol field means netrpc
    ("1|1|unix|/s|", "protocol 'netrpc'"),
    ("1|1|unix|/s|http|", "protocol 'http'"),
    ("1|1|unix", "unrecognised handshake line '1|1|unix'"),
    ("", "unrecognised handshake line ''"),
    ("hello world", "unrecognised handshake line 'hello world'"),
    ("x|1|unix|/s|grpc|", "core version 'x' is not a number"),
    ("1|one|unix|/s|grpc|", "app protocol version 'one' is not a number"),
    ("1||unix|/s|grpc|", "app protocol version '' is not a number"),
    ("1|1|udp|/s|grpc|", "unsupported network type 'udp'; expected unix or tcp"),
    ("1|1||/s|grpc|", "unsupported network type ''"),
    ("1|1|unix||grpc|", "the address field is empty"),
    ("1|1|tcp|  |grpc|", "the address field is empty"),
    ("1|1|tcp|127.0.0.1:1|grpc|" + "!" * 60, "not valid base64"),
    ("1|1|tcp|127.0.0.1:1|grpc|" + "A" * 53, "not valid base64"),  # impossible length
]


@pytest.mark.parametrize(("line", "message"), FAILURES)
def test_failure_is_a_clear_handshake_error(line: str, message: str) -> None:
    with pytest.raises(HandshakeError) as info:
        parse_handshake(line)
    err = info.value
    assert isinstance(err, PluginLoadError)  # a load failure like any other
    assert message in str(err)
    assert err.type == "handshake_failed"


def test_wrong_app_version_names_what_was_offered() -> None:
    with pytest.raises(HandshakeError, match=r"offered \[1, 2\]") as info:
        parse_handshake("1|3|unix|/s|grpc|", offered_versions=[2, 1, 2])
    assert info.value.suggestions


def test_netrpc_is_accepted_only_when_allowed() -> None:
    hs = parse_handshake("1|1|unix|/s", allowed_protocols=("grpc", "netrpc"))
    assert hs.protocol == "netrpc"


def test_looks_like_handshake() -> None:
    assert looks_like_handshake("1|1|unix|/s|grpc|")
    assert looks_like_handshake("2|1|unix|/s")
    assert not looks_like_handshake("loading | 3 | modules")
    assert not looks_like_handshake("1|1|unix")
    assert not looks_like_handshake("starting plugin...")


# -- fuzzing ---------------------------------------------------------------------------

_fields = st.one_of(
    st.sampled_from(["1", "2", "0", "-1", "99999999999999999999", "", " ", "unix", "tcp"]),
    st.sampled_from(
        ["grpc", "netrpc", "true", "false", "/tmp/s", "127.0.0.1:1", "\u0661", "\u00b2"]
    ),
    st.text(max_size=80),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=120
    ),
)


@given(st.text())
@example("1|1|unix|/s|grpc|" + "A" * 51)
@example("1|1|unix|/s|grpc|" + "é" * 60)
@example("²|1|unix|/s|grpc")
@example("1|1|unix|/s|grpc|\x00" * 3)
def test_parse_never_raises_anything_else_on_text(line: str) -> None:
    try:
        hs = parse_handshake(line)
    except HandshakeError as exc:
        assert str(exc)
    else:
        assert hs.core_version == CORE_PROTOCOL_VERSION and hs.protocol == "grpc"


@given(st.lists(_fields, min_size=0, max_size=9), st.sets(st.integers(0, 5), min_size=1))
def test_parse_never_raises_anything_else_on_field_lists(
    fields: list[str], offered: set[int]
) -> None:
    try:
        hs = parse_handshake("|".join(fields), offered)
    except HandshakeError:
        return
    assert hs.app_version in offered
    assert hs.network in ("unix", "tcp") and hs.address


_address = st.text(
    alphabet=st.characters(blacklist_characters="|\r\n\x1c\x1d\x1e\x85\u2028\u2029"),
    min_size=1,
    max_size=60,
).filter(lambda s: s.strip() == s and s != "")


@given(
    app=st.integers(1, 50),
    network=st.sampled_from(["unix", "tcp"]),
    address=_address,
    cert=st.one_of(st.none(), st.binary(min_size=38, max_size=600)),
    mux=st.one_of(st.none(), st.booleans()),
)
def test_format_parse_round_trip(
    app: int, network: str, address: str, cert: bytes | None, mux: bool | None
) -> None:
    hs = Handshake(CORE_PROTOCOL_VERSION, app, network, address, "grpc", cert, bool(mux))
    line = format_handshake(hs, with_mux_field=mux is not None)
    assert "\n" not in line
    assert len(line.split("|")) == (7 if mux is not None else 6)  # field six always there
    assert parse_handshake(line, offered_versions=[app]) == hs


def test_format_is_what_go_plugin_prints() -> None:
    hs = Handshake(1, 1, "tcp", "127.0.0.1:41234", "grpc")
    assert format_handshake(hs) == "1|1|tcp|127.0.0.1:41234|grpc|"
    assert format_handshake(hs, with_mux_field=True) == "1|1|tcp|127.0.0.1:41234|grpc||false"
    cert = bytes(range(64))
    line = format_handshake(Handshake(1, 1, "unix", "/s", "grpc", cert))
    assert line == f"1|1|unix|/s|grpc|{raw_b64(cert)}"
    assert not line.endswith("=")


# -- the plugin's environment ------------------------------------------------------------

HOST_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/me",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "LC_TIME": "en_GB.UTF-8",
    "TZ": "UTC",
    "TMPDIR": "/tmp",
    "USER": "me",
    "AWS_SECRET_ACCESS_KEY": "fake-secret",
    "GITHUB_TOKEN": "ghp_fake",
    "DATABASE_URL": "postgres://user:pass@db/x",
    "PLUGHOST": "host-own-cookie",
    "PLUGIN_CLIENT_CERT": "stale",
    "MY_TOOL_HOME": "/opt/tool",
    "LD_PRELOAD": "/evil.so",
}


def env(**kw: object) -> dict[str, str]:
    args: dict[str, object] = {
        "cookie_key": "PLUGHOST",
        "cookie_value": "hello",
        "plugin_id": "hello",
        "protocol_versions": [1],
        "min_port": 10000,
        "max_port": 25000,
        "socket_dir": "/root/run",
        "host_env": HOST_ENV,
    }
    args.update(kw)
    return build_plugin_env(**args)  # type: ignore[arg-type]


def test_env_is_built_from_the_allow_list_only() -> None:
    built = env()
    assert built == {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/me",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "LC_TIME": "en_GB.UTF-8",
        "TZ": "UTC",
        "TMPDIR": "/tmp",
        "USER": "me",
        "PLUGHOST": "hello",
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "PLUGIN_MIN_PORT": "10000",
        "PLUGIN_MAX_PORT": "25000",
        "PLUGHOST_PLUGIN_ID": "hello",
        "PLUGIN_UNIX_SOCKET_DIR": "/root/run",
    }
    assert not {"AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DATABASE_URL", "LD_PRELOAD"} & set(built)
    assert set(ENV_ALLOW_LIST) >= {"PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"}


def test_env_settings_allow_and_extra() -> None:
    built = env(allow=["MY_TOOL_HOME"], extra={"FEATURE_FLAG": "on"})
    assert built["MY_TOOL_HOME"] == "/opt/tool"
    assert built["FEATURE_FLAG"] == "on"
    assert "AWS_SECRET_ACCESS_KEY" not in built


def test_env_go_plugin_variables() -> None:
    built = env(
        cookie_key="OMNIVIEW",
        cookie_value="kubernetes",
        plugin_id="kubernetes",
        protocol_versions=[1, 2],
        min_port=20000,
        max_port=20010,
        socket_dir=None,
        client_cert_pem="-----BEGIN CERTIFICATE-----\n...\n",
    )
    assert built["OMNIVIEW"] == "kubernetes"
    assert built["PLUGIN_PROTOCOL_VERSIONS"] == "1,2"
    assert (built["PLUGIN_MIN_PORT"], built["PLUGIN_MAX_PORT"]) == ("20000", "20010")
    assert built["PLUGHOST_PLUGIN_ID"] == "kubernetes"
    assert built["PLUGIN_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")
    assert "PLUGIN_UNIX_SOCKET_DIR" not in built


def test_env_host_plughost_cookie_is_never_copied() -> None:
    built = env(cookie_key="OMNIVIEW", cookie_value="k", plugin_id="k")
    assert "PLUGHOST" not in built  # the host's own PLUGHOST is not on the allow-list


def test_extra_cannot_override_the_cookie_or_go_plugin_variables() -> None:
    built = env(
        extra={
            "PLUGHOST": "other-plugin",
            "PLUGIN_PROTOCOL_VERSIONS": "9",
            "PLUGIN_MIN_PORT": "1",
            "PLUGHOST_PLUGIN_ID": "other-plugin",
            "PLUGIN_UNIX_SOCKET_DIR": "/elsewhere",
            "PLUGIN_CLIENT_CERT": "forged",
        },
        client_cert_pem="real-cert",
    )
    assert built["PLUGHOST"] == "hello"
    assert built["PLUGIN_PROTOCOL_VERSIONS"] == "1"
    assert built["PLUGIN_MIN_PORT"] == "10000"
    assert built["PLUGHOST_PLUGIN_ID"] == "hello"
    assert built["PLUGIN_UNIX_SOCKET_DIR"] == "/root/run"
    assert built["PLUGIN_CLIENT_CERT"] == "real-cert"


def test_env_defaults_to_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPER_SECRET_TOKEN", "fake")
    monkeypatch.setenv("PATH", "/only/this")
    built = build_plugin_env(
        cookie_key="PLUGHOST",
        cookie_value="hello",
        plugin_id="hello",
        protocol_versions=[1],
        min_port=10000,
        max_port=25000,
        socket_dir="/r",
    )
    assert built["PATH"] == "/only/this"
    assert "SUPER_SECRET_TOKEN" not in built
