"""go-plugin's handshake: the environment a plugin gets and the line it prints.

Pure functions, no I/O, so every form of the line is unit-tested and fuzzed.
The line is ``CORE|APP|NETWORK|ADDR|PROTOCOL[|CERT[|MUX]]``; go-plugin 1.x
always prints the sixth field (empty without AutoMTLS) and the seventh only
when the host asked for multiplexing, so the parser tolerates 5, 6 or 7 fields
(and ignores further ones, as old ``SplitN`` readers taught go-plugin to).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from ..errors import HandshakeError

if TYPE_CHECKING:
    from ..metadata import PluginMeta

__all__ = [
    "CORE_PROTOCOL_VERSION",
    "ENV_ALLOW_LIST",
    "Handshake",
    "build_plugin_env",
    "format_handshake",
    "looks_like_handshake",
    "parse_handshake",
]

CORE_PROTOCOL_VERSION = 1

# Host variables a plugin may see. Everything else (tokens, cloud keys ...) stays
# in the host: the environment is built from this list, never copied wholesale.
ENV_ALLOW_LIST: tuple[str, ...] = ("PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER", "TERM")
ENV_ALLOW_PREFIXES: tuple[str, ...] = ("LC_",)


@dataclasses.dataclass(frozen=True, slots=True)
class Handshake:
    """What the plugin told the host about where and how to reach it."""

    core_version: int
    app_version: int
    network: str  # "unix" or "tcp"
    address: str
    protocol: str
    server_cert: bytes | None = None  # DER, when the plugin serves AutoMTLS
    multiplex: bool = False

    @property
    def grpc_target(self) -> str:
        return f"unix:{self.address}" if self.network == "unix" else self.address


def looks_like_handshake(line: str) -> bool:
    """Cheap test: does this stdout line try to be a handshake at all?"""
    parts = line.strip().split("|")
    return len(parts) >= 4 and parts[0].strip().isdigit()


def _decode_cert(field: str) -> bytes | None:
    field = field.strip()
    if len(field) <= 50:  # go-plugin ignores shorter values too
        return None
    padded = field + "=" * (-len(field) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HandshakeError(
            "the server certificate in the handshake is not valid base64",
            suggestions=["the plugin's go-plugin or SDK version may be broken; rebuild it"],
        ) from exc


def _fail(detail: str, *suggestions: str) -> HandshakeError:
    return HandshakeError(detail, suggestions=list(suggestions))


def _int_field(value: str, name: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise _fail(f"malformed handshake: {name} {value!r} is not a number") from None


def parse_handshake(
    line: str,
    offered_versions: Iterable[int] = (1,),
    *,
    allowed_protocols: Sequence[str] = ("grpc",),
) -> Handshake:
    """Parse and check one handshake line; raises HandshakeError saying what is wrong."""
    parts = line.strip().split("|")
    if len(parts) < 4:
        raise _fail(
            f"unrecognised handshake line {line.strip()[:200]!r}: expected "
            "CORE|APP|NETWORK|ADDR|PROTOCOL",
            "is the executable a go-plugin plugin? it printed something else first",
        )
    core = _int_field(parts[0], "core version")
    if core != CORE_PROTOCOL_VERSION:
        raise _fail(
            f"incompatible core API version {core}; this host speaks {CORE_PROTOCOL_VERSION}",
            "the plugin was built with an incompatible go-plugin; rebuild it",
        )
    app = _int_field(parts[1], "app protocol version")
    offered = sorted(set(offered_versions))
    if app not in offered:
        raise _fail(
            f"plugin speaks app protocol version {app}, but the host offered {offered}",
            "update the plugin (or the host) so that they share a protocol version",
        )
    network, address = parts[2].strip(), parts[3].strip()
    if network not in ("unix", "tcp"):
        raise _fail(f"unsupported network type {network!r}; expected unix or tcp")
    if not address:
        raise _fail("malformed handshake: the address field is empty")
    protocol = parts[4].strip() if len(parts) > 4 and parts[4].strip() else "netrpc"
    if protocol not in allowed_protocols:
        raise _fail(
            f"plugin speaks protocol {protocol!r}, but this host only speaks "
            f"{', '.join(allowed_protocols)}",
            "serve the plugin with go-plugin's GRPCServer (plugin.DefaultGRPCServer)",
        )
    cert = _decode_cert(parts[5]) if len(parts) > 5 else None
    multiplex = len(parts) > 6 and parts[6].strip().lower() == "true"
    return Handshake(core, app, network, address, protocol, cert, multiplex)


def format_handshake(hs: Handshake, *, with_mux_field: bool = False) -> str:
    """The line a plugin prints (used by the Python SDK), always with field six."""
    cert = base64.b64encode(hs.server_cert).decode().rstrip("=") if hs.server_cert else ""
    fields = [
        str(hs.core_version),
        str(hs.app_version),
        hs.network,
        hs.address,
        hs.protocol,
        cert,
    ]
    if with_mux_field:
        fields.append("true" if hs.multiplex else "false")
    return "|".join(fields)


def build_plugin_env(
    *,
    cookie_key: str,
    cookie_value: str,
    plugin_id: str,
    protocol_versions: Sequence[int],
    min_port: int,
    max_port: int,
    socket_dir: str | None,
    client_cert_pem: str | None = None,
    allow: Iterable[str] = (),
    extra: Mapping[str, str] | None = None,
    host_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The plugin's whole environment: allow-listed host variables plus go-plugin's.

    go-plugin's own variables are set last so nothing in ``extra`` can spoof them.
    """
    source = os.environ if host_env is None else host_env
    allowed = set(ENV_ALLOW_LIST) | set(allow)
    env = {k: v for k, v in source.items() if k in allowed or k.startswith(ENV_ALLOW_PREFIXES)}
    env.update(extra or {})
    env[cookie_key] = cookie_value
    env["PLUGIN_PROTOCOL_VERSIONS"] = ",".join(str(v) for v in protocol_versions)
    env["PLUGIN_MIN_PORT"] = str(min_port)
    env["PLUGIN_MAX_PORT"] = str(max_port)
    env["PLUGHOST_PLUGIN_ID"] = plugin_id
    if socket_dir:
        env["PLUGIN_UNIX_SOCKET_DIR"] = socket_dir
    if client_cert_pem:
        env["PLUGIN_CLIENT_CERT"] = client_cert_pem
    return env


def plugin_meta_env(meta: PluginMeta) -> dict[str, str]:
    """The plugin's version and capabilities from its plugin.yaml, for the SDK to read
    instead of parsing the file (and importing a YAML parser) at every start."""
    return {
        "PLUGHOST_PLUGIN_VERSION": meta.version,
        "PLUGHOST_PLUGIN_CAPABILITIES": ",".join(meta.capabilities),
    }
