"""Fuzzed inputs: no input crashes the host or escapes the plugin directory.

Hypothesis properties for the parsers of things a stranger writes:

* the plugin.yaml loader raises nothing but plughost's ValidationError on
  arbitrary bytes, YAML-ish text, arbitrary YAML structures, deep nesting, alias
  bombs and huge files; what it accepts the host can serve (strict JSON) and
  write back (YAML); valid generated metadata round-trips;
* the ``.devinfo`` reader raises nothing but DevInfoError on arbitrary bytes and
  arbitrary JSON, and what it accepts round-trips through ``write_devinfo``.

The handshake parser's properties are in tests/test_handshake.py; the archive
extractor's (random bytes and random tar structures never write outside the
destination) in tests/test_archive.py: ``test_random_bytes_never_escape`` and
``test_random_tar_structures_never_escape``. The atheris targets for all four
are in tests/fuzz/.
"""

from __future__ import annotations

import io
import json
import os
import re
import string
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plughost.dev.external import (
    DEVINFO_FILE,
    DevInfo,
    DevInfoError,
    StaleDevInfoError,
    read_devinfo,
    write_devinfo,
)
from plughost.errors import PlughostError, ValidationError
from plughost.metadata import (
    KNOWN_CAPABILITIES,
    PluginMeta,
    load_meta_from_bytes,
    load_meta_from_tarball,
)

# No deadlines: these parse files and run on loaded CI machines.
RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- plugin.yaml


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _dumped(meta: PluginMeta) -> Any:
    return _without_none(meta.model_dump(mode="json"))


def load_or_refuse(data: bytes) -> PluginMeta | None:
    """Load; only ValidationError may come out, and what loads must be usable."""
    try:
        meta = load_meta_from_bytes(data)
    except ValidationError as exc:
        assert isinstance(exc, PlughostError) and exc.detail.startswith("plugin.yaml")
        assert exc.type == "validation" and exc.status == 400
        return None
    # The local service sends this as strict JSON ...
    served = meta.model_dump(mode="json", exclude_none=True)
    json.dumps(served, allow_nan=False, ensure_ascii=False).encode("utf-8")
    # ... and pack/scaffold write it back as YAML that loads to the same metadata.
    again = load_meta_from_bytes(meta.to_yaml().encode("utf-8"), "to_yaml()")
    assert _dumped(again) == _dumped(meta)
    return meta


@RELAXED
@given(st.binary(max_size=2048))
@example(b"id: x\nversion: '1'\nl: &l [*l]\n")
@example(b"id: x\nversion: '1'\nbin: !!binary //79\n")
@example(b'id: x\nversion: "1"\nname: "\\ud800"\n')
@example(b"id: x\nversion: 1\nschema_version: " + b"9" * 5000 + b"\n")
@example(b"\xff\xfei\x00d\x00:\x00 \x00x\x00")
@example(b"\xef\xbb\xbfid: x\nversion: '1'\n")
@example(b"id: x\x00")
def test_loader_on_arbitrary_bytes(data: bytes) -> None:
    load_or_refuse(data)


_YAML_TOKENS = [
    "id", "version", "name", "tags", "capabilities", "author", "components", "resource",
    "theme", "colors", "dev", "watch", "schema_version", "x", "1", "1.10", "off", "yes",
    "~", "null", "2001-01-01", ".nan", "-.inf", "0x1F", "0o17", "1_000", ":", ": ", "-",
    "- ", "?", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ",
    "!!binary ", "!!set ", "!!omap ", "!!python/object:os.system ", "|", ">", "'", '"',
    "\\", "\\ud800", "\\x00", "#", "%YAML 1.1", "---", "...", "\n", "\n  ", "\n    ", " ",
    "\t", "\ufeff", "é", "\u2028", "\x85",
]  # fmt: skip
_yaml_ish = st.lists(st.sampled_from(_YAML_TOKENS), max_size=60).map("".join)


@RELAXED
@given(_yaml_ish)
@example("id: x\nversion: '1'\nl: &a [*a, *a]\n")
@example("a: &a {<<: *a}\n")
@example("id: x\nversion: 1\n!!python/object:os.system x: 1\n")
@example("id: [*a]\n")
def test_loader_on_yaml_ish_text(text: str) -> None:
    load_or_refuse(text.encode("utf-8", errors="surrogatepass"))


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities included
    st.text(max_size=20),
    st.binary(max_size=20),
    st.datetimes(),
    st.dates(),
)
_structures = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers(), st.booleans()), inner,
                        max_size=4),
    ),
    max_leaves=20,
)  # fmt: skip
_known_fields = sorted(PluginMeta.model_fields)


@RELAXED
@given(
    st.fixed_dictionaries(
        {},
        optional={
            **{name: _structures for name in _known_fields},
            "extra": _structures,
            "id": st.one_of(st.sampled_from(["hello", "my-plugin", "a.b_c"]), _structures),
            "version": st.one_of(st.sampled_from(["1.0.0", "2"]), _structures),
        },
    )
)
def test_loader_on_arbitrary_structures(doc: dict[str, Any]) -> None:
    load_or_refuse(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@RELAXED
@given(_structures)
def test_loader_on_arbitrary_top_level_values(value: Any) -> None:
    assert load_or_refuse(yaml.safe_dump(value).encode()) is None or isinstance(value, dict)


def _nested(kind: str, depth: int) -> bytes:
    if kind == "flow-seq":
        return b"[" * depth + b"]" * depth
    if kind == "flow-map":
        return b"{a: " * depth + b"1" + b"}" * depth
    if kind == "unclosed":
        return b"id: x\nversion: '1'\nz: " + b"[{a: " * depth
    if kind == "block-map":
        return b"".join(b" " * i + b"k:\n" for i in range(depth)) + b" " * depth + b"v\n"
    if kind == "block-seq":
        return b"id: x\nversion: '1'\nz:\n" + b"".join(b" " * i + b"-\n" for i in range(depth))
    raise AssertionError(kind)


_FLOW_DEPTHS = [50, 2_000, 50_000]
_BLOCK_DEPTHS = [50, 500, 1_400]  # indentation grows with depth: 1 MiB near 1 450 levels


@pytest.mark.parametrize(
    ("kind", "depth"),
    [(kind, d) for kind in ("flow-seq", "flow-map", "unclosed") for d in _FLOW_DEPTHS]
    + [(kind, d) for kind in ("block-map", "block-seq") for d in _BLOCK_DEPTHS],
)
def test_deep_nesting_is_refused_or_loaded(kind: str, depth: int) -> None:
    data = _nested(kind, depth)
    started = time.monotonic()
    load_or_refuse(data)
    assert time.monotonic() - started < 30


def _alias_bomb(levels: int, width: int = 10) -> bytes:
    lines = [b"id: x", b"version: '1'", b"l0: &l0 [" + b",".join([b"lol"] * width) + b"]"]
    for i in range(1, levels):
        refs = b",".join([b"*l%d" % (i - 1)] * width)
        lines.append(b"l%d: &l%d [%s]" % (i, i, refs))
    return b"\n".join(lines) + b"\n"


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(ValidationError, match="aliases expand to more than"):
        load_meta_from_bytes(_alias_bomb(9))  # 10**9 values once expanded
    assert time.monotonic() - started < 20
    # Sharing is fine while it stays small: 10**4 values.
    assert load_or_refuse(_alias_bomb(4)) is not None


@pytest.mark.parametrize(
    "doc",
    [
        b"id: x\nversion: '1'\nl: &l [*l]\n",
        b"id: x\nversion: '1'\ncomponents: {resource: &r [a, *r]}\n",
        b"id: x\nversion: '1'\ntheme: &t {colors: {primary: '#fff', more: *t}}\n",
        b"id: x\nversion: '1'\nm: &m {self: *m}\n",
    ],
)
def test_recursive_aliases_are_refused(doc: bytes) -> None:
    with pytest.raises(ValidationError, match="an alias refers to a node that contains it"):
        load_meta_from_bytes(doc)


def test_text_the_host_cannot_serve_is_refused() -> None:
    with pytest.raises(ValidationError, match="lone surrogate"):
        load_meta_from_bytes(b'id: x\nversion: "1"\ndescription: "\\ud83d"\n')
    # PyYAML does not pair JSON-style surrogate escapes: they are refused too.
    with pytest.raises(ValidationError, match="lone surrogate"):
        load_meta_from_bytes(b'id: x\nversion: "1"\nname: "\\ud83d\\ude00"\n')
    with pytest.raises(ValidationError, match="!!binary"):
        load_meta_from_bytes(b"id: x\nversion: '1'\nicon: !!binary //79\n")
    # Characters outside the BMP, written or escaped whole, and UTF-8 binary are fine.
    meta = load_meta_from_bytes(
        'id: x\nversion: "1"\nname: "\\U0001F600 \U0001f600"\nicon: !!binary aGk=\n'.encode()
    )
    assert (meta.name, meta.icon) == ("\U0001f600 \U0001f600", "hi")


def test_huge_files() -> None:
    started = time.monotonic()
    with pytest.raises(ValidationError, match="larger than 1 MiB"):
        load_meta_from_bytes(b"id: x\nversion: '1'\ndescription: " + b"a" * (1 << 20))
    with pytest.raises(ValidationError, match="larger than 1 MiB"):
        load_meta_from_bytes(b"\x00" * (2 << 20))
    assert time.monotonic() - started < 2
    long_text = "word " * 10_000  # 50 KB of description
    big = f"id: big\nversion: '1'\ndescription: {long_text}\ntags: [{', '.join(['t'] * 2000)}]\n"
    meta = load_or_refuse(big.encode())
    assert meta is not None and len(meta.tags) == 2000 and meta.description == long_text.strip()


@RELAXED
@given(st.binary(max_size=512))
@example(b"id: hello\nversion: 1.0.0\n")
@example(b"id: x\nversion: '1'\nl: &l [*l]\n")
def test_packaged_plugin_yaml_behaves_like_the_file(data: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("./plugin.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "p.tar.gz"
        package.write_bytes(buf.getvalue())
        try:
            packaged: PluginMeta | None = load_meta_from_tarball(package)
        except ValidationError:
            packaged = None
        package.write_bytes(data)  # the same bytes as a package: not a gzip tarball
        with pytest.raises(ValidationError):
            load_meta_from_tarball(package)
    direct = load_or_refuse(data)
    assert (packaged is None) == (direct is None)
    assert packaged is None or direct is None or packaged == direct


# -- valid metadata round-trips

_ids = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True).filter(lambda s: ".." not in s)
_printable = st.text(
    alphabet=st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\ufeff"),
    max_size=30,
)
# Words YAML 1.1 would read as something else when written plain.
_tricky = st.sampled_from(["off", "yes", "No", "~", "null", "1.10", "010", "0x1F", "1e3",
                           "2001-01-01", "12:30:00", ".inf", "-", "=", "<<", "#x", "a: b",
                           "- a", "[a]", "'q'", ' lead', "trail "])  # fmt: skip
_texts = st.one_of(_printable, _tricky)
_versions = st.one_of(
    _tricky.filter(lambda s: s.strip() == s and s),
    st.from_regex(r"[0-9]{1,3}(\.[0-9]{1,3}){0,3}(-[a-z0-9.]{1,8})?", fullmatch=True),
)


@st.composite
def plugin_metas(draw: st.DrawFn) -> PluginMeta:
    fields: dict[str, Any] = {"id": draw(_ids), "version": draw(_versions)}
    for name in ("name", "icon", "icon_url", "description", "repository", "website",
                 "category", "license"):  # fmt: skip
        if draw(st.booleans()):
            fields[name] = draw(_texts)
    fields["author"] = {"name": draw(_texts), "email": draw(_texts), "url": draw(_texts)}
    fields["maintainers"] = draw(
        st.lists(st.fixed_dictionaries({"name": _texts, "email": _texts}), max_size=3)
    )
    fields["tags"] = draw(st.lists(_texts, max_size=5))
    fields["dependencies"] = draw(st.lists(_texts, max_size=3))
    fields["capabilities"] = draw(
        st.lists(st.sampled_from(sorted(KNOWN_CAPABILITIES)), unique=True)
    )
    fields["theme"] = {"colors": {"primary": draw(_texts)}}
    fields["components"] = {"resource": draw(st.lists(st.dictionaries(_printable, _texts, max_size=3), max_size=3))}  # fmt: skip
    fields["schema_version"] = draw(st.one_of(st.none(), st.integers(-(2**63), 2**63)))
    fields["sdk_protocol_version"] = draw(st.one_of(st.none(), st.integers(0, 100)))
    if draw(st.booleans()):
        fields["dev"] = {"build": draw(_texts), "output": draw(_texts), "watch": draw(st.lists(_texts, max_size=3))}  # fmt: skip
    fields["min_host_version"] = draw(st.one_of(st.none(), _versions))
    return PluginMeta.model_validate(fields)


@RELAXED
@given(plugin_metas())
def test_valid_metadata_round_trips(meta: PluginMeta) -> None:
    text = meta.to_yaml()
    assert load_meta_from_bytes(text.encode()) == meta
    # Written plain (as people write plugin.yaml), text fields still keep their text.
    plain = f"id: {meta.id}\nversion: {meta.version}\n"
    nulls = ("null", "Null", "NULL")
    if (
        re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z.:_-]*", meta.version)
        and nulls.count(meta.version) == 0
        and meta.id != "null"
    ):
        loaded = load_meta_from_bytes(plain.encode())
        assert (loaded.id, loaded.version) == (meta.id, meta.version)


# --------------------------------------------------------------------------- .devinfo


def read_or_refuse(content: bytes, *, check_pid: bool = False) -> DevInfo | None:
    with tempfile.TemporaryDirectory(prefix="devinfo-") as tmp:
        path = Path(tmp) / DEVINFO_FILE
        path.write_bytes(content)
        try:
            info = read_devinfo(path, check_pid=check_pid)
        except DevInfoError as exc:
            assert exc.detail.startswith(str(path)) and exc.status == 400
            return None
        assert info.pid > 0 and info.addr
        assert info.reattach_config().network in ("unix", "tcp")
        again = Path(tmp) / "again" / DEVINFO_FILE
        write_devinfo(again, info)
        assert read_devinfo(again, check_pid=False) == info
        return info


@RELAXED
@given(st.binary(max_size=1024))
@example(b"[" * 100_000)
@example(b'{"a":' * 100_000)
@example(b'{"pid": ' + b"9" * 5000 + b', "addr": "x"}')
@example(b'{"pid": 1, "addr": "\\ud800"}')
@example(b'{"pid": 1, "addr": "x", "startedAt": "9999-12-31T23:59:59-23:59"}')
@example(b"\xff\xfe{\x00}\x00")
def test_devinfo_reader_on_arbitrary_bytes(content: bytes) -> None:
    read_or_refuse(content)


_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),  # NaN and infinities: Python's json writes and reads them
        st.text(max_size=30),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
_DEVINFO_KEYS = ["pid", "protocol", "protocolVersion", "addr", "vitePort", "pluginId", "version",
                 "startedAt", "plugin_id", "vite_port"]  # fmt: skip


@RELAXED
@given(_json)
def test_devinfo_reader_on_arbitrary_json(value: Any) -> None:
    read_or_refuse(json.dumps(value).encode())


@RELAXED
@given(
    st.fixed_dictionaries(
        {},
        optional={
            key: st.one_of(
                _json,
                st.integers(min_value=-1, max_value=2**64),
                st.sampled_from(["grpc", "/tmp/s", "127.0.0.1:1", "unix:/s", "2025-03-01T10:00:00Z"]),
            )
            for key in _DEVINFO_KEYS
        },
    ),
    st.booleans(),
)  # fmt: skip
def test_devinfo_reader_on_arbitrary_objects(obj: dict[str, Any], check_pid: bool) -> None:
    info = read_or_refuse(json.dumps(obj).encode(), check_pid=check_pid)
    if info is not None:
        assert "pid" in obj and "addr" in obj


def test_devinfo_stale_pid_of_any_size_is_stale() -> None:
    for pid in (2**22 + 1, 2**31, 2**63, 2**64 + 1, 10**30):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / DEVINFO_FILE
            path.write_text(json.dumps({"pid": pid, "addr": "/tmp/s"}))
            with pytest.raises(StaleDevInfoError):
                read_devinfo(path)


@RELAXED
@given(
    pid=st.integers(1, 2**31),
    addr=st.one_of(
        st.text(alphabet=string.printable, min_size=1, max_size=40).filter(str.strip),
        st.sampled_from(["/tmp/plugin/sock", "unix:/tmp/s", "127.0.0.1:41234", "[::1]:1"]),
    ),
    protocol=st.sampled_from(["grpc", "netrpc"]),
    protocol_version=st.integers(0, 100),
    vite_port=st.one_of(st.none(), st.integers(1, 65535)),
    plugin_id=st.text(max_size=20),
    version=st.text(max_size=20),
    started_at=st.one_of(
        st.none(),
        st.datetimes(timezones=st.just(UTC)),
        st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30)),
    ),
)
def test_valid_devinfo_round_trips(**fields: Any) -> None:
    info = DevInfo(**fields)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_devinfo(Path(tmp) / "plugins" / "p" / DEVINFO_FILE, info)
        assert read_devinfo(path, check_pid=False) == info
        assert os.listdir(path.parent) == [DEVINFO_FILE]  # no temp file left behind
