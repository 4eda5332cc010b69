"""Fuzz target: go-plugin's handshake line (``plughost.process.handshake.parse_handshake``).

Property: any line either parses into a handshake the host can use (core version
1, an offered app version, unix or tcp, a non-empty address, grpc) that formats
back to a line parsing to the same handshake, or raises HandshakeError with a
message. Nothing else may come out. The line is what a plugin printed on
stdout, decoded as the host decodes it (UTF-8, undecodable bytes replaced).

    .venv/bin/python tests/fuzz/fuzz_handshake.py -atheris_runs=100000
"""

from __future__ import annotations

import base64

from _common import instrumented, main

with instrumented(__name__, "plughost.process.handshake"):
    from plughost.errors import HandshakeError
    from plughost.process.handshake import (
        CORE_PROTOCOL_VERSION,
        format_handshake,
        looks_like_handshake,
        parse_handshake,
    )

_CERT = base64.b64encode(bytes(range(200))).decode().rstrip("=")

SEEDS: list[bytes] = [
    b"\x01" + line.encode()
    for line in (
        "1|1|unix|/tmp/plugin123/sock|grpc",
        "1|1|tcp|127.0.0.1:41234|grpc|\n",
        f"1|1|tcp|127.0.0.1:41234|grpc|{_CERT}",
        f"1|1|tcp|127.0.0.1:1|grpc|{_CERT}|true",
        "  1 | 1 | unix | /tmp/s | grpc || false | future \r\n",
        "1|3|unix|/s|grpc|",
        "2|1|unix|/s|grpc|",
        "1|1|unix|/s",
        "1|1|udp|/s|grpc|",
        "1|1|tcp|127.0.0.1:1|grpc|" + "A" * 53,
        "\u00b2|1|unix|/s|grpc",
        "hello world",
    )
] + [b"\x07" + b"1|2|unix|/s|grpc|", b"\x00", b""]


def test_one_input(data: bytes) -> None:
    # First byte: the app versions the host offers (a non-empty subset of 1..8).
    offered = [v + 1 for v in range(8) if data[:1] and data[0] & (1 << v)] or [1]
    line = data[1:].decode("utf-8", errors="replace")
    looks_like_handshake(line)  # must not raise either
    try:
        hs = parse_handshake(line, offered)
    except HandshakeError as exc:
        assert str(exc) and exc.type == "handshake_failed"
        return
    assert hs.core_version == CORE_PROTOCOL_VERSION
    assert hs.app_version in offered
    assert hs.network in ("unix", "tcp") and hs.address and hs.address == hs.address.strip()
    assert hs.protocol == "grpc"
    assert hs.grpc_target
    # Round trip. go-plugin ignores cert fields of 50 characters or fewer, so a
    # certificate of under 38 bytes (or one sent with '=' padding) need not survive.
    again = parse_handshake(format_handshake(hs, with_mux_field=True), offered)
    if hs.server_cert is None or len(hs.server_cert) >= 38:
        assert again == hs, (again, hs)
    else:
        assert again.address == hs.address and again.multiplex == hs.multiplex


if __name__ == "__main__":
    main(test_one_input, SEEDS)
