"""Fuzz target: the ``.devinfo`` reader (``plughost.dev.external.read_devinfo``).

A ``.devinfo`` file is written by whatever the developer runs by hand, so the
host reads it like any stranger's input. Properties, on any file content:

* ``read_devinfo`` returns a DevInfo or raises DevInfoError (StaleDevInfoError
  when the pid is not running); nothing else (no RecursionError, ValueError,
  OverflowError, UnicodeError ...).
* A DevInfo it returns is usable: its reattach config builds, and it writes back
  (``write_devinfo``) to a file that reads to the same DevInfo.

The first byte picks whether the pid is checked (psutil on an arbitrary pid) and
whether the rest is the file itself or, since the JSON parser and pydantic give
the fuzzer no coverage to follow, a recipe for a JSON object with the file's keys
and values of every JSON type (huge and negative numbers, NaN, deep nesting ...).

    .venv/bin/python tests/fuzz/fuzz_devinfo.py -atheris_runs=50000
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from pathlib import Path

from _common import instrumented, main

with instrumented(__name__, "plughost.dev.external"):
    from plughost.dev.external import (
        DEVINFO_FILE,
        DevInfo,
        DevInfoError,
        read_devinfo,
        write_devinfo,
    )

_ORIGINAL = {  # as the original SDK writes it (Go's time format, nanoseconds)
    "pid": 1,
    "protocol": "grpc",
    "protocolVersion": 1,
    "addr": "127.0.0.1:42367",
    "vitePort": 15173,
    "pluginId": "kubernetes",
    "version": "0.1.0",
    "startedAt": "2025-03-01T10:00:00.123456789Z",
}

SEEDS: list[bytes] = [
    b"\x00" + json.dumps(_ORIGINAL).encode(),
    b"\x01" + json.dumps(_ORIGINAL).encode(),
    b"\x00" + json.dumps({"pid": 1, "addr": "/tmp/plugin123/sock"}).encode(),
    b"\x00" + json.dumps({"pid": 1, "addr": "unix:/tmp/s", "vitePort": 0}).encode(),
    b"\x01" + json.dumps({"pid": 2**63, "addr": "x"}).encode(),
    b"\x00" + b'{"pid": 1e300, "addr": "a", "startedAt": "2025-03-01T10:00:00+05:30"}',
    b"\x00" + b'{"pid": NaN, "addr": "a", "protocolVersion": Infinity}',
    b"\x00" + b'{"pid": "abc", "addr": ""}',
    b"\x00" + b'{"pid": 1, "addr": "\\ud800"}',
    b"\x00" + b"[" * 64,
    b"\x00" + b"[" * 100_000,  # found: RecursionError escaped read_devinfo
    b"\x00" + b'{"a":' * 64,
    b"\x00" + b'{"pid": ' + b"9" * 64 + b', "addr": "x"}',
    b"\x00" + b'{"pid": ' + b"9" * 5000 + b', "addr": "x"}',  # found: ValueError escaped
    b"\x00[]",
    b"\x00{not json",
    b"\x00\xff\xfe",
    b"",
    b"\x02" + bytes(range(256)),
    b"\x03\x08\x00\x01\x01\x03\x04\x03" + b"\x07\x02\x03",
]


_KEYS = [*_ORIGINAL, "pid", "addr", "other"]


class _Recipe:
    """Reads choices from the input bytes (zeros once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1] if self.pos <= len(self.data) else 0

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def value(self, depth: int = 0) -> object:
        kind = self.byte() % 11
        if kind == 0:
            return int.from_bytes(self.take(self.byte() % 12), "big", signed=True)
        if kind == 1:
            return [1, 0, -1, 65535, 65536, 2**31, 2**63, 2**64 + 1, 10**400][self.byte() % 9]
        if kind == 2:
            return struct.unpack("<d", self.take(8).ljust(8, b"\0"))[0]  # NaN, inf too
        if kind == 3:
            return self.take(self.byte() % 40).decode("utf-8", errors="replace")
        if kind == 4:
            return ["", "grpc", "/tmp/s", "unix:/s", "127.0.0.1:1", "2025-03-01T10:00:00Z"][
                self.byte() % 6
            ]
        if kind == 5:
            return [None, True, False][self.byte() % 3]
        if kind == 6:  # deep nesting (up to past the recursion limit), spliced in as text
            return f"<deep:{self.byte() * 16 + 1}>"
        if kind in (7, 8) and depth < 3:
            items = [self.value(depth + 1) for _ in range(self.byte() % 4)]
            if kind == 7:
                return items
            return {str(i): item for i, item in enumerate(items)}
        return str(self.byte())


def _from_recipe(data: bytes) -> bytes:
    recipe = _Recipe(data)
    obj = {_KEYS[recipe.byte() % len(_KEYS)]: recipe.value() for _ in range(recipe.byte() % 12)}
    text = re.sub(r'"<deep:(\d+)>"', lambda m: "[" * int(m[1]) + "]" * int(m[1]), json.dumps(obj))
    return text.encode()


def test_one_input(data: bytes) -> None:
    check_pid = bool(data[:1]) and data[0] & 1 == 1
    structured = bool(data[:1]) and data[0] & 2 == 2
    with tempfile.TemporaryDirectory(prefix="fuzz-devinfo-") as tmp:
        path = Path(tmp) / DEVINFO_FILE
        path.write_bytes(_from_recipe(data[1:]) if structured else data[1:])
        try:
            info = read_devinfo(path, check_pid=check_pid)
        except DevInfoError as exc:
            assert exc.detail and str(path) in exc.detail
            return
        assert info.pid > 0 and info.addr
        config = info.reattach_config()
        assert config.network in ("unix", "tcp") and config.pid == info.pid
        again_path = Path(tmp) / "again" / DEVINFO_FILE
        write_devinfo(again_path, info)
        again = read_devinfo(again_path, check_pid=False)
        assert again == info, (again, info)
        assert isinstance(again, DevInfo)
        assert not [n for n in os.listdir(again_path.parent) if n != DEVINFO_FILE]


if __name__ == "__main__":
    main(test_one_input, SEEDS)
