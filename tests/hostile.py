"""A corpus of crafted hostile plugin packages, for the extraction tests.

``build_corpus(directory)`` writes every package into ``directory`` and returns
one ``HostileCase`` per package: a short name, the file, the substring the
refusal message must contain, and the (small) limits to extract it with. Apart
from its one hostile element each package is a valid plugin, so a refusal can
only come from the element under test.
"""

from __future__ import annotations

import gzip
import io
import random
import tarfile
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Entry",
    "HostileCase",
    "build_corpus",
    "build_dot_slash_corpus",
    "build_tar",
    "case_names",
    "dot_slash_case_names",
    "gzip_bytes",
    "plugin_yaml",
]

BINARY = b"#!/bin/sh\necho hello\n"


def _noise(size: int, *, seed: int, avoid: bytes = b"") -> bytes:
    """Incompressible bytes, the same on every run (the corpus is reproducible)."""
    data = random.Random(seed).randbytes(size)
    for byte in avoid:
        data = data.replace(bytes([byte]), bytes([byte ^ 0x40]))
    return data


def plugin_yaml(plugin_id: str = "evil", capabilities: str = "[exec]") -> bytes:
    return textwrap.dedent(
        f"""\
        id: {plugin_id}
        version: 1.0.0
        name: Hostile
        capabilities: {capabilities}
        """
    ).encode()


@dataclass(frozen=True)
class Entry:
    """One tar member to write: ``kind`` is file, dir, symlink, hardlink, fifo, chr or blk."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""


@dataclass(frozen=True)
class HostileCase:
    name: str
    path: Path
    expect: str
    limits: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
}


def _info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.type = _TYPES[entry.kind]
    info.mode = 0o755 if entry.kind == "dir" and entry.mode == 0o644 else entry.mode
    info.linkname = entry.target
    info.size = len(entry.data) if entry.kind == "file" else 0
    if entry.kind in ("chr", "blk"):
        info.devmajor, info.devminor = 1, 3
    return info


def build_tar(entries: Iterable[Entry], *, tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """An uncompressed tar of ``entries``, in order, exactly as given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tar:
        for entry in entries:
            info = _info(entry)
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _valid(*, yaml: bytes | None = None, binary: bool = True) -> list[Entry]:
    entries = [Entry("plugin.yaml", data=plugin_yaml() if yaml is None else yaml)]
    if binary:
        entries += [Entry("bin", "dir"), Entry("bin/plugin", data=BINARY, mode=0o755)]
    return entries


def _lying_header() -> bytes:
    """A header claiming 10 bytes followed by 64 KiB of data: tar cannot be told the
    truth about where the next header starts, so the data reads as a damaged header."""
    head = build_tar(_valid())
    head = head[: _end_of_entries(head)]
    info = tarfile.TarInfo("liar.bin")
    info.size = 10
    member = info.tobuf(tarfile.PAX_FORMAT) + b"A" * 65536
    return head + member + b"\0" * 1024


def _negative_size() -> bytes:
    """A GNU base-256 size of -1024: tarfile would compute the next header *before*
    this one and, over a gzip stream, rewind and loop."""
    head = build_tar(_valid(), tar_format=tarfile.GNU_FORMAT)
    info = tarfile.TarInfo("negative.bin")
    info.size = -1024
    return head[: _end_of_entries(head)] + info.tobuf(tarfile.GNU_FORMAT) + b"\0" * 1024


def _huge_pax_header() -> bytes:
    """A 1 MiB pax record: parsing it costs memory and (on older Pythons) quadratic time."""
    head = build_tar(_valid())
    info = tarfile.TarInfo("commented.txt")
    info.pax_headers = {"comment": "x" * (1 << 20)}
    return head[: _end_of_entries(head)] + info.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024


def _end_of_entries(tar_bytes: bytes) -> int:
    """Offset of the end-of-archive marker of a tar written by tarfile."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        members = tar.getmembers()
    last = members[-1]
    return last.offset_data + (-(-last.size // 512) * 512)


def _with_trailing_garbage() -> bytes:
    tar = build_tar(_valid())
    return tar + _noise(4096, seed=1, avoid=b"\0")


def _corrupt_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def _hostile_entries() -> list[tuple[str, list[Entry], str, dict[str, int]]]:
    """(name, entries, expected message substring, limits) of every tar-level case."""
    valid = _valid()
    many = [Entry(f"data/f{i:03d}.bin", data=b"x" * 500) for i in range(50)]
    return [
        ("absolute-path", [*valid, Entry("/tmp/plughost-evil", data=b"x")], "absolute path", {}),
        ("dotdot", [*valid, Entry("../evil", data=b"x")], "'..'", {}),
        ("nested-dotdot", [*valid, Entry("a/../../x", data=b"x")], "'..'", {}),
        ("dot-slash-dotdot", [*valid, Entry("./../sentinel/pwned", data=b"x")], "'..'", {}),
        (
            "long-name-dotdot",
            [*valid, Entry("a" * 120 + "/../../../pwned", data=b"x")],
            "'..'",
            {},
        ),
        (
            "symlink-etc-passwd",
            [*valid, Entry("passwd", "symlink", target="/etc/passwd")],
            "leaves the plugin directory",
            {},
        ),
        (
            "symlink-outside",
            [*valid, Entry("link", "symlink", target="../../outside")],
            "leaves the plugin directory",
            {},
        ),
        (
            "symlink-chain-escape",  # inside on paper (d/up/.. == d), outside on disk
            [
                *valid,
                Entry("d", "dir"),
                Entry("d/up", "symlink", target=".."),
                Entry("esc", "symlink", target="d/up/.."),
                Entry("esc/pwned", data=b"x"),
            ],
            "leaves the plugin directory",
            {},
        ),
        (
            "write-through-symlink",
            [
                *valid,
                Entry("real", "dir"),
                Entry("sub", "symlink", target="real"),
                Entry("sub/pwned", data=b"x"),
            ],
            "which is a symlink",
            {},
        ),
        (
            "overwrite-symlink",  # same name twice: link first, then a file through it
            [
                *valid,
                Entry("target.txt", data=b"inside"),
                Entry("config", "symlink", target="target.txt"),
                Entry("config", data=b"overwritten"),
            ],
            "duplicate entry",
            {},
        ),
        (
            "file-then-dir-child",
            [*valid, Entry("blob", data=b"x"), Entry("blob/child", data=b"y")],
            "not a directory",
            {},
        ),
        (
            "hardlink",
            [*valid, Entry("copy", "hardlink", target="plugin.yaml")],
            "hard link",
            {},
        ),
        (
            "hardlink-etc-passwd",
            [*valid, Entry("passwd", "hardlink", target="/etc/passwd")],
            "hard link",
            {},
        ),
        ("fifo", [*valid, Entry("pipe", "fifo")], "FIFO", {}),
        ("char-device", [*valid, Entry("null", "chr")], "device", {}),
        ("block-device", [*valid, Entry("disk", "blk")], "device", {}),
        (
            "file-over-max-file",
            [*valid, Entry("big.bin", data=b"z" * 4096)],
            "larger than the limit",
            {"max_file": 1024},
        ),
        ("total-over-max-total", [*valid, *many], "expands to more than", {"max_total": 10_000}),
        ("too-many-entries", [*valid, *many], "more than 10 entries", {"max_entries": 10}),
        ("missing-plugin-yaml", valid[1:], "no plugin.yaml", {}),
        ("bad-yaml", _valid(yaml=b"id: [unclosed\nversion: 1\n"), "not valid YAML", {}),
        ("invalid-id-dotdot", _valid(yaml=plugin_yaml('"../evil"')), "field 'id'", {}),
        ("invalid-id-upper", _valid(yaml=plugin_yaml("UPPER")), "field 'id'", {}),
        ("backend-without-binary", _valid(binary=False), "has no bin/plugin", {}),
        (
            "binary-not-executable",
            [valid[0], valid[1], Entry("bin/plugin", data=BINARY, mode=0o644)],
            "not executable",
            {},
        ),
        (
            "binary-is-directory",
            [valid[0], Entry("bin", "dir"), Entry("bin/plugin", "dir")],
            "not a regular file",
            {},
        ),
        (
            "plugin-yaml-symlink",
            [
                Entry("real.yaml", data=plugin_yaml()),
                Entry("plugin.yaml", "symlink", target="real.yaml"),
                *valid[1:],
            ],
            "plugin.yaml is a symlink",
            {},
        ),
    ]


def _raw_cases() -> list[tuple[str, Callable[[], bytes], str, dict[str, int]]]:
    """(name, bytes factory, expected substring, limits) of cases below the tar level."""
    good_tgz = gzip_bytes(build_tar([*_valid(), Entry("pad.bin", data=_noise(8192, seed=2))]))
    return [
        ("lying-size-header", lambda: gzip_bytes(_lying_header()), "truncated or corrupt", {}),
        (
            "gzip-bomb",
            lambda: gzip_bytes(build_tar([*_valid(), Entry("bomb.bin", data=b"\0" * (8 << 20))])),
            "larger than the limit",
            {"max_file": 1 << 20, "max_total": 2 << 20},
        ),
        ("negative-size", lambda: gzip_bytes(_negative_size()), "negative size", {}),
        ("huge-pax-header", lambda: gzip_bytes(_huge_pax_header()), "entry header", {}),
        ("not-gzip-plain-tar", lambda: build_tar(_valid()), "not a gzip tarball", {}),
        ("random-bytes", lambda: _noise(4096, seed=3, avoid=b"\x1f"), "not a gzip tarball", {}),
        ("empty-file", lambda: b"", "empty", {}),
        ("truncated-gzip", lambda: good_tgz[: len(good_tgz) * 2 // 3], "truncated or corrupt", {}),
        ("corrupt-middle", lambda: _corrupt_middle(good_tgz), "truncated or corrupt", {}),
        (
            "gzip-not-tar",
            lambda: gzip_bytes(_noise(2048, seed=4)),
            "truncated or corrupt",
            {},
        ),
        (
            "trailing-garbage",
            lambda: gzip_bytes(_with_trailing_garbage()),
            "truncated or corrupt",
            {},
        ),
    ]


def case_names() -> list[str]:
    """The cases' names, without writing anything (for test parametrisation)."""
    return [case[0] for case in _hostile_entries()] + [case[0] for case in _raw_cases()]


def build_corpus(directory: Path) -> list[HostileCase]:
    """Write every hostile package into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    cases: list[HostileCase] = []
    for name, entries, expect, limits in _hostile_entries():
        path = directory / f"{name}.tar.gz"
        path.write_bytes(gzip_bytes(build_tar(entries)))
        cases.append(HostileCase(name, path, expect, limits))
    for name, factory, expect, limits in _raw_cases():
        path = directory / f"{name}.tar.gz"
        path.write_bytes(factory())
        cases.append(HostileCase(name, path, expect, limits))
    return cases


# -- the same, named the way `tar -czf NAME.tar.gz -C .package .` names entries -----------------
def _dotted(entry: Entry) -> Entry:
    """``entry`` as GNU and BSD tar name it when packing ``.``: ``./`` before every relative
    name (and before a hard link's target); absolute names and symlink targets as they are."""
    name = entry.name if entry.name.startswith("/") else f"./{entry.name}"
    target = entry.target
    if entry.kind == "hardlink" and target and not target.startswith("/"):
        target = f"./{target}"
    return Entry(name, entry.kind, entry.data, entry.mode, target)


def _dot_slash_cases() -> list[tuple[str, list[Entry], str, dict[str, int]]]:
    """Every tar-level case with ``./`` names and the ``./`` entry of the top directory
    first (Omniview's packages look like this), plus that top entry made hostile itself."""
    cases = [
        (f"dot-{name}", [Entry("./", "dir"), *map(_dotted, entries)], expect, limits)
        for name, entries, expect, limits in _hostile_entries()
    ]
    valid = [_dotted(e) for e in _valid()]
    top_is = "names the plugin directory itself"
    cases += [
        ("dot-top-symlink", [Entry(".", "symlink", target="/"), *valid], top_is, {}),
        ("dot-top-hardlink", [Entry(".", "hardlink", target="/etc"), *valid], top_is, {}),
        ("dot-top-file", [Entry(".", data=b"x"), *valid], top_is, {}),
        (
            "dot-duplicate-of-plain",  # ./x and x are the same entry
            [*valid, Entry("./blob", data=b"a"), Entry("blob", data=b"b")],
            "duplicate entry",
            {},
        ),
    ]
    return cases


def dot_slash_case_names() -> list[str]:
    return [case[0] for case in _dot_slash_cases()]


def build_dot_slash_corpus(directory: Path) -> list[HostileCase]:
    """Write the ``./``-named variants into ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    cases: list[HostileCase] = []
    for name, entries, expect, limits in _dot_slash_cases():
        path = directory / f"{name}.tar.gz"
        path.write_bytes(gzip_bytes(build_tar(entries)))
        cases.append(HostileCase(name, path, expect, limits))
    return cases
