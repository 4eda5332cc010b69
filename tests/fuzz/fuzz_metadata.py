"""Fuzz target: the plugin.yaml loader (``plughost.metadata``).

Properties, on any bytes:

* ``load_meta_from_bytes`` returns a PluginMeta or raises plughost's
  ValidationError; nothing else (no YAMLError, RecursionError, UnicodeError ...).
* What it accepts the host can serve and write back: the metadata dumps to JSON
  (strict UTF-8, as the local service sends it) and to YAML, and the YAML loads
  again to the same known fields.
* ``load_meta_from_tarball`` on a package holding those bytes as plugin.yaml
  agrees with ``load_meta_from_bytes``, and on raw bytes (not a package) only
  raises ValidationError too.

The first byte picks the mode (bytes / packaged / raw package bytes).

    .venv/bin/python tests/fuzz/fuzz_metadata.py -atheris_runs=50000
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from _common import instrumented, main

with instrumented(__name__, "plughost.metadata", "yaml", "tarfile", "gzip"):
    from plughost.errors import ValidationError
    from plughost.metadata import PluginMeta, load_meta_from_bytes, load_meta_from_tarball

_DOCS = [
    b"id: hello\nversion: 1.0.0\nname: Hello\ncapabilities: [exec]\n",
    b"id: off\nversion: 1.10\nname: 123\ndescription: 2001-01-01\ntags: [yes, no, 1.0]\n",
    b"id: my-plugin\nversion: '2'\nauthor: {name: A, email: a@b.c}\n"
    b"maintainers: [{name: M}]\ntheme: {colors: {primary: '#fff'}}\n"
    b"components: {resource: [{group: core, kinds: [Pod]}]}\n"
    b"dev: {build: make, output: bin/plugin, watch: ['**/*.go']}\n"
    b"schema_version: 1\nsdk_protocol_version: 1\nunknown_key: {kept: true}\n",
    b"base: &b {name: x}\nid: a\nversion: '1'\nauthor: *b\nextra: [*b, *b]\n",
    b"id: x\nversion: '1'\nl: &l [a, a]\nm: [*l, *l, *l]\n",
    b"id: x\nversion: '1'\nbin: !!binary aGVsbG8=\nset: !!set {a, b}\nts: 2001-12-14t21:59:43.10-05:00\n",
    b"id: x\nversion: '1'\nname: \"\\u00e9\\x41\"\nnan: .nan\n",
    b"%YAML 1.1\n---\nid: x\nversion: '1'\n...\n",
    b"id: x\nversion: '1'\ncapabilities: [exec, bogus]\n",
    b"id: ../evil\nversion: 1\n",
    b"- a\n- b\n",
    b"[[[[[[[[[[[[[[[[[[[[",
    b"id: x\nversion: '1'\nz: {a: {b: {c: {d: [1, [2, [3]]]}}}}\n",
    b"\xef\xbb\xbfid: x\nversion: '1'\n",
    b"",
]


def _package(plugin_yaml: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("plugin.yaml")
        info.size = len(plugin_yaml)
        tar.addfile(info, io.BytesIO(plugin_yaml))
    return gzip.compress(buf.getvalue(), mtime=0)


SEEDS: list[bytes] = [b"\x00" + doc for doc in _DOCS] + [
    b"\x01" + _DOCS[0],
    b"\x01" + _DOCS[2],
    b"\x02" + _package(_DOCS[0]),
    b"\x02" + b"\x1f\x8b" + b"\x00" * 20,
]


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _dumped(meta: PluginMeta) -> Any:
    """The metadata as JSON types, unknown keys included, without null members
    (``to_yaml`` leaves them out; NaN dumps as null)."""
    return _without_none(meta.model_dump(mode="json"))


def check_accepted(meta: PluginMeta) -> None:
    """What the loader accepted, the host can dump (JSON and YAML) and load again."""
    served = meta.model_dump(mode="json", exclude_none=True)  # as the service sends it
    json.dumps(served, allow_nan=False, ensure_ascii=False).encode("utf-8")
    dumped = _dumped(meta)
    again = load_meta_from_bytes(meta.to_yaml().encode("utf-8"), "to_yaml()")
    assert _dumped(again) == dumped, (_dumped(again), dumped)


def _load_packaged(data: bytes, *, raw: bool) -> PluginMeta:
    fd, name = tempfile.mkstemp(prefix="fuzz-meta-", suffix=".tar.gz")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data if raw else _package(data))
        return load_meta_from_tarball(Path(name))
    finally:
        os.unlink(name)


def test_one_input(data: bytes) -> None:
    mode, body = (data[0] % 3, data[1:]) if data else (0, b"")
    if mode == 2:  # the bytes are the package itself
        try:
            from_package = _load_packaged(body, raw=True)
        except ValidationError as exc:
            assert exc.detail
            return
        check_accepted(from_package)
        return
    try:
        meta: PluginMeta | None = load_meta_from_bytes(body)
    except ValidationError as exc:
        assert exc.detail and exc.title
        meta = None
    if meta is not None:
        check_accepted(meta)
    if mode == 1:  # the same bytes, as plugin.yaml in a package
        try:
            packaged: PluginMeta | None = _load_packaged(body, raw=False)
        except ValidationError:
            packaged = None
        assert (packaged is None) == (meta is None)
        assert packaged is None or meta is None or _dumped(packaged) == _dumped(meta)


if __name__ == "__main__":
    main(test_one_input, SEEDS)
