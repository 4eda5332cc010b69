"""Plugin packages: hostile packages are refused without harm, good ones extract, pack is
reproducible, and random input never escapes the destination."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hostile import (
    BINARY,
    Entry,
    HostileCase,
    build_corpus,
    build_dot_slash_corpus,
    build_tar,
    case_names,
    dot_slash_case_names,
    gzip_bytes,
    plugin_yaml,
)
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import plughost
from plughost.errors import (
    PlughostError,
    PluginInstallError,
    UnsafeArchiveError,
    ValidationError,
)
from plughost.packages.archive import (
    inspect_package,
    pack,
    safe_extract,
    sha256_file,
    validate_package_dir,
)

HELLO = Path(plughost.__file__).parent / "examples" / "hello"

Snapshot = dict[str, tuple[str, int, bytes]]


def snapshot(root: Path, *, skip: Path | None = None) -> Snapshot:
    """Every path under ``root`` (links not followed) with its type, mode and content."""
    state: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if skip is not None and here == skip:
            dirnames[:] = []
            continue
        for name in [*dirnames, *filenames]:
            path = here / name
            if skip is not None and path == skip:
                continue
            st_ = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st_.st_mode):
                state[rel] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISREG(st_.st_mode):
                state[rel] = ("file", st_.st_mode, path.read_bytes())
            else:
                state[rel] = ("other", st_.st_mode, b"")
    return state


def escapes(dest: Path) -> list[str]:
    """What in ``dest`` could reach outside it: links resolving outside, hard links,
    special files, setuid/setgid bits."""
    bad = []
    root = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            real = os.path.realpath(path)
            if os.path.commonpath([root, real]) != root:
                bad.append(f"{path} -> {real}")
            if stat.S_ISREG(mode) and path.lstat().st_nlink != 1:
                bad.append(f"{path} is hard-linked")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                bad.append(f"{path} is special")
            if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
                bad.append(f"{path} has mode {oct(mode)}")
    return bad


def write_tgz(path: Path, entries: list[Entry], **kwargs: int) -> Path:
    path.write_bytes(gzip_bytes(build_tar(entries, **kwargs)))
    return path


def valid_entries() -> list[Entry]:
    return [
        Entry("plugin.yaml", data=plugin_yaml("good")),
        Entry("bin", "dir"),
        Entry("bin/plugin", data=BINARY, mode=0o755),
    ]


# --------------------------------------------------------------------------- hostile corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileCase]:
    return {case.name: case for case in build_corpus(tmp_path_factory.mktemp("corpus"))}


def test_corpus_is_large_enough(corpus: dict[str, HostileCase]) -> None:
    assert len(corpus) >= 24
    assert sorted(corpus) == sorted(case_names())


@pytest.mark.parametrize("name", case_names())
def test_hostile_package_is_refused_without_harm(
    name: str, corpus: dict[str, HostileCase], tmp_path: Path
) -> None:
    assert_refused_without_harm(corpus[name], tmp_path)


@pytest.fixture(scope="module")
def dot_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, HostileCase]:
    return {c.name: c for c in build_dot_slash_corpus(tmp_path_factory.mktemp("dotcorpus"))}


@pytest.mark.parametrize("name", dot_slash_case_names())
def test_hostile_package_named_like_tar_c_dot_is_refused_too(
    name: str, dot_corpus: dict[str, HostileCase], tmp_path: Path
) -> None:
    """Accepting `tar -C .package .`'s ``./`` names (Omniview's packages) opens no way
    around a check: every hostile case, so named, is refused with the same message."""
    assert_refused_without_harm(dot_corpus[name], tmp_path)


def assert_refused_without_harm(case: HostileCase, tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    installed = plugins / "hello"
    shutil.copytree(HELLO, installed, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    dest = plugins / ".install-tmp"
    dest.mkdir()
    before = snapshot(tmp_path, skip=dest)
    installed_before = snapshot(installed)

    extracted = False
    with pytest.raises((PluginInstallError, ValidationError)) as info:
        safe_extract(
            case.path,
            dest,
            max_total=case.limits.get("max_total", plughost.MAX_PLUGIN_SIZE),
            max_file=case.limits.get("max_file", plughost.MAX_PLUGIN_SIZE),
            max_entries=case.limits.get("max_entries", 100_000),
        )
        extracted = True
        validate_package_dir(dest)

    assert case.expect in str(info.value), f"{case.name}: {info.value}"
    assert info.value.detail and info.value.title
    if not extracted:
        assert list(dest.iterdir()) == [], "a refused extraction must leave dest empty"
    assert escapes(dest) == []
    assert snapshot(tmp_path, skip=dest) == before
    assert snapshot(installed) == installed_before
    assert not Path("/tmp/plughost-evil").exists()


# --------------------------------------------------------------------------- good packages


def test_packed_example_extracts_and_validates(tmp_path: Path) -> None:
    package = pack(HELLO, tmp_path / "hello.tar.gz")
    dest = tmp_path / "dest"
    dest.mkdir()
    names = safe_extract(package, dest)
    assert "plugin.yaml" in names and "bin/plugin" in names
    assert not any("__pycache__" in name for name in names)
    meta = validate_package_dir(dest)
    assert meta.id == "hello"
    assert inspect_package(package).id == "hello"
    assert stat.S_IMODE((dest / "bin" / "plugin").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "plugin.yaml").stat().st_mode) == 0o644
    for name in ("plugin.yaml", "plugin.py", "bin/plugin"):
        assert (dest / name).read_bytes() == (HELLO / name).read_bytes()


def test_dot_slash_prefixed_entries(tmp_path: Path) -> None:
    entries = [
        Entry("./", "dir"),
        Entry("./plugin.yaml", data=plugin_yaml("dotted")),
        Entry("./bin/", "dir"),
        Entry("./bin/plugin", data=BINARY, mode=0o755),
        Entry(".//bin/./extra", data=b"x"),
    ]
    package = write_tgz(tmp_path / "p.tar.gz", entries)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert safe_extract(package, dest) == ["plugin.yaml", "bin", "bin/plugin", "bin/extra"]
    assert validate_package_dir(dest).id == "dotted"
    assert inspect_package(package).id == "dotted"


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs the tar command")
def test_package_made_the_omniview_way_with_tar(tmp_path: Path) -> None:
    """`tar -czf NAME.tar.gz -C .package .`, as Omniview packs a plugin: every name starts
    with ``./``, the first entry is ``./`` itself, and the order is the directory's."""
    import subprocess

    tree = tmp_path / ".package"
    (tree / "bin").mkdir(parents=True)
    (tree / "assets" / "icons").mkdir(parents=True)
    (tree / "plugin.yaml").write_bytes(plugin_yaml("omnitar", "[resource]"))
    (tree / "bin" / "plugin").write_bytes(BINARY)
    (tree / "bin" / "plugin").chmod(0o755)
    (tree / "assets" / "icons" / "logo.svg").write_text("<svg/>")
    (tree / "assets" / "empty").mkdir()
    (tree / "assets" / "current").symlink_to("icons")
    package = tmp_path / "omnitar.tar.gz"
    subprocess.run(["tar", "-czf", str(package), "-C", str(tree), "."], check=True)
    with tarfile.open(package) as tar:
        names = tar.getnames()
    assert names[0] in ("./", ".") and all(n.startswith("./") for n in names[1:]), names

    assert inspect_package(package).id == "omnitar"
    dest = tmp_path / "dest"
    dest.mkdir()
    extracted = safe_extract(package, dest)
    assert sorted(extracted) == sorted(n.removeprefix("./") for n in names[1:])
    assert validate_package_dir(dest).capabilities == ["resource"]
    assert (dest / "bin" / "plugin").read_bytes() == BINARY
    assert os.access(dest / "bin" / "plugin", os.X_OK)
    assert (dest / "assets" / "current" / "logo.svg").read_text() == "<svg/>"
    assert (dest / "assets" / "empty").is_dir()
    assert escapes(dest) == []


def test_modes_are_normalised_and_owners_ignored(tmp_path: Path) -> None:
    entries = [
        *valid_entries(),
        Entry("setuid", data=b"x", mode=0o4755),
        Entry("setgid", data=b"x", mode=0o2644),
        Entry("private", data=b"x", mode=0o600),
        Entry("owner-exec", data=b"x", mode=0o700),
        Entry("sticky", "dir", mode=0o1777),
        Entry("closed", "dir", mode=0o000),
        Entry("closed/inner", data=b"x"),
    ]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = tarfile.DIRTYPE if entry.kind == "dir" else tarfile.REGTYPE
            info.mode, info.size = entry.mode, len(entry.data)
            info.uid, info.gid, info.uname, info.gname = 4242, 4242, "mallory", "mallory"
            tar.addfile(info, io.BytesIO(entry.data) if entry.kind == "file" else None)
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(buf.getvalue()))
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(package, dest)
    modes = {name: stat.S_IMODE((dest / name).stat().st_mode) for name in ("setuid", "setgid")}
    assert modes == {"setuid": 0o755, "setgid": 0o644}
    assert stat.S_IMODE((dest / "private").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "owner-exec").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "sticky").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "closed").stat().st_mode) == 0o755
    assert (dest / "closed" / "inner").read_bytes() == b"x"
    assert (dest / "setuid").stat().st_uid == os.getuid()
    assert escapes(dest) == []


def test_links_inside_the_package_are_kept(tmp_path: Path) -> None:
    entries = [
        Entry("plugin.yaml", data=plugin_yaml("linked")),
        Entry("libexec", "dir"),
        Entry("libexec/real-plugin", data=BINARY, mode=0o755),
        Entry("bin", "dir"),
        Entry("bin/plugin", "symlink", target="../libexec/real-plugin"),
        Entry("top", "symlink", target="."),
        Entry("dangling", "symlink", target="later/file"),
        Entry("later", "dir"),
        Entry("later/file", data=b"x"),
    ]
    package = write_tgz(tmp_path / "p.tar.gz", entries)
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(package, dest)
    assert os.readlink(dest / "bin" / "plugin") == "../libexec/real-plugin"
    assert validate_package_dir(dest).id == "linked"
    assert (dest / "dangling").read_bytes() == b"x"
    assert escapes(dest) == []


def test_duplicate_directory_entries_and_tar_formats(tmp_path: Path) -> None:
    long_dir = "d" * 150
    entries = [
        *valid_entries(),
        Entry("bin", "dir"),
        Entry(f"{long_dir}/{'f' * 120}", data=b"long"),
        Entry("näme.txt", data=b"utf8"),
    ]
    for tar_format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        package = write_tgz(tmp_path / f"p{tar_format}.tar.gz", entries, tar_format=tar_format)
        dest = tmp_path / f"dest{tar_format}"
        dest.mkdir()
        safe_extract(package, dest)
        assert (dest / long_dir / ("f" * 120)).read_bytes() == b"long"
        assert (dest / "näme.txt").read_bytes() == b"utf8"


def test_zero_padding_after_the_archive_is_accepted(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(build_tar(valid_entries()) + b"\0" * 40_960))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert "bin/plugin" in safe_extract(package, dest)


def test_too_much_padding_is_refused(tmp_path: Path) -> None:
    package = tmp_path / "p.tar.gz"
    package.write_bytes(gzip_bytes(build_tar(valid_entries()) + b"\0" * (2 << 20)))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnsafeArchiveError, match="padding"):
        safe_extract(package, dest)
    assert list(dest.iterdir()) == []


def test_progress_is_reported_up_to_the_archive_size(tmp_path: Path) -> None:
    entries = [*valid_entries(), Entry("noise.bin", data=os.urandom(2 << 20))]
    package = write_tgz(tmp_path / "p.tar.gz", entries)
    dest = tmp_path / "dest"
    dest.mkdir()
    calls: list[tuple[int, int]] = []
    safe_extract(package, dest, progress=lambda done, total: calls.append((done, total)))
    size = package.stat().st_size
    assert len(calls) >= 2
    assert calls[-1] == (size, size)
    assert all(total == size and 0 <= done <= size for done, total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_destination_must_be_an_empty_directory(tmp_path: Path) -> None:
    package = write_tgz(tmp_path / "p.tar.gz", valid_entries())
    with pytest.raises(PluginInstallError, match="not an existing directory"):
        safe_extract(package, tmp_path / "missing")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep").write_text("mine")
    with pytest.raises(PluginInstallError, match="not empty"):
        safe_extract(package, busy)
    assert (busy / "keep").read_text() == "mine"


def test_missing_package(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PluginInstallError, match="package not found"):
        safe_extract(tmp_path / "nope.tar.gz", dest)


def test_inspect_package_refusals(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    plain.write_bytes(build_tar(valid_entries()))
    with pytest.raises(UnsafeArchiveError, match="not a gzip tarball"):
        inspect_package(plain)
    no_meta = write_tgz(tmp_path / "nometa.tar.gz", valid_entries()[1:])
    with pytest.raises(ValidationError, match=r"no plugin\.yaml"):
        inspect_package(no_meta)


def test_validate_package_dir_accepts_ui_only_plugin(tmp_path: Path) -> None:
    (tmp_path / "plugin.yaml").write_bytes(plugin_yaml("ui-only", "[ui]"))
    assert validate_package_dir(tmp_path).id == "ui-only"


def test_validate_package_dir_refuses_binary_link_leaving(tmp_path: Path) -> None:
    (tmp_path / "plugin.yaml").write_bytes(plugin_yaml("leaky"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "plugin").symlink_to("/bin/sh")
    with pytest.raises(UnsafeArchiveError, match="leaves the plugin directory"):
        validate_package_dir(tmp_path)


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- pack


@pytest.fixture
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    shutil.copytree(HELLO, root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "assets" / "deep").mkdir(parents=True)
    (root / "assets" / "deep" / "b.txt").write_text("b")
    (root / "assets" / "a.txt").write_text("a")
    (root / "assets" / "link").symlink_to("deep/b.txt")
    for junk in (".git/config", "__pycache__/x.pyc", "node_modules/m/index.js", "sub/y.pyc"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    (root / ".devinfo").write_text("{}")
    os.link(root / "assets" / "a.txt", root / "assets" / "a-hardlink.txt")
    return root


def members(package: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(package, "r:gz") as tar:
        return tar.getmembers()


def test_pack_is_reproducible(source: Path, tmp_path: Path) -> None:
    first = pack(source, tmp_path / "one.tar.gz").read_bytes()
    second = pack(source, tmp_path / "two.tar.gz").read_bytes()
    assert first == second
    for path in source.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    (source / "plugin.yaml").chmod(0o600)
    third = pack(source, tmp_path / "three.tar.gz").read_bytes()
    assert third == first


def test_pack_normalises_entries(source: Path, tmp_path: Path) -> None:
    package = pack(source, tmp_path / "p.tar.gz")
    raw = package.read_bytes()
    assert raw[3] & 0x08 == 0, "gzip header must not carry a file name"
    assert raw[4:8] == b"\0\0\0\0", "gzip header mtime must be 0"
    infos = members(package)
    names = [info.name for info in infos]
    assert names == [
        "assets",
        "assets/a-hardlink.txt",
        "assets/a.txt",
        "assets/deep",
        "assets/deep/b.txt",
        "assets/link",
        "bin",
        "bin/plugin",
        "gen_stubs.sh",
        "hello_pb2.py",
        "hello_pb2.pyi",
        "hello_pb2_grpc.py",
        "plugin.py",
        "plugin.yaml",
        "proto",
        "proto/hello",
        "proto/hello/v1",
        "proto/hello/v1/hello.proto",
        "sub",
    ]
    for info in infos:
        assert (info.mtime, info.uid, info.gid, info.uname, info.gname) == (0, 0, 0, "", "")
        assert info.isdir() or info.isfile() or info.issym()
    modes = {info.name: info.mode for info in infos}
    assert modes["bin/plugin"] == 0o755 and modes["bin"] == 0o755
    assert modes["plugin.yaml"] == 0o644
    assert next(i for i in infos if i.name == "assets/link").linkname == "deep/b.txt"


def test_pack_honours_source_date_epoch(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = pack(source, tmp_path / "default.tar.gz").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = pack(source, tmp_path / "dated.tar.gz")
    assert dated.read_bytes() != default
    assert {info.mtime for info in members(dated)} == {1_700_000_000}
    assert pack(source, tmp_path / "again.tar.gz").read_bytes() == dated.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValidationError, match="SOURCE_DATE_EPOCH"):
        pack(source, tmp_path / "bad.tar.gz")


def test_pack_output_inside_the_source_is_not_packed(source: Path) -> None:
    out = source / "dist.tar.gz"
    first = pack(source, out).read_bytes()
    second = pack(source, out).read_bytes()
    assert first == second
    assert "dist.tar.gz" not in [info.name for info in members(out)]
    assert sorted(p.name for p in source.iterdir() if p.name.startswith(".dist")) == []


def test_pack_refuses_links_leaving_the_tree(source: Path, tmp_path: Path) -> None:
    (source / "assets" / "escape").symlink_to("../../outside")
    out = tmp_path / "p.tar.gz"
    with pytest.raises(UnsafeArchiveError, match="leaves the plugin directory"):
        pack(source, out)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_pack_refuses_an_invalid_tree(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(PluginInstallError, match=r"no plugin\.yaml"):
        pack(tmp_path / "src", tmp_path / "p.tar.gz")


def test_pack_then_extract_round_trip(source: Path, tmp_path: Path) -> None:
    package = pack(source, tmp_path / "p.tar.gz")
    dest = tmp_path / "dest"
    dest.mkdir()
    safe_extract(package, dest)
    assert validate_package_dir(dest).id == "hello"
    assert os.readlink(dest / "assets" / "link") == "deep/b.txt"
    assert (dest / "assets" / "a-hardlink.txt").read_text() == "a"
    assert not (dest / ".git").exists() and not (dest / "sub" / "y.pyc").exists()


# --------------------------------------------------------------------------- fuzzing


def run_contained(archive_bytes: bytes) -> None:
    """Extract ``archive_bytes`` in a fresh arena; only install errors may come out and
    nothing outside the destination may change."""
    with tempfile.TemporaryDirectory(prefix="plughost-fuzz-") as tmp:
        root = Path(tmp)
        (root / "sentinel").mkdir()
        (root / "sentinel" / "keep.txt").write_text("keep")
        package = root / "p.tar.gz"
        package.write_bytes(archive_bytes)
        dest = root / "plugins" / "dest"
        dest.mkdir(parents=True)
        before = snapshot(root, skip=dest)
        try:
            safe_extract(package, dest, max_total=1 << 20, max_file=256 << 10, max_entries=64)
        except PluginInstallError as exc:
            assert isinstance(exc, PlughostError) and exc.detail
            assert list(dest.iterdir()) == []
        assert snapshot(root, skip=dest) == before
        assert escapes(dest) == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.sampled_from([b"", b"\x1f\x8b", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]),
    body=st.binary(max_size=2048),
    compress=st.booleans(),
)
def test_random_bytes_never_escape(prefix: bytes, body: bytes, compress: bool) -> None:
    run_contained(gzip.compress(body, mtime=0) if compress else prefix + body)


# repeated values weigh the draw towards plausible names, so that later entries
# (links, writes through them, duplicates) are reached, not only the first refusal
_PARTS = st.sampled_from(["a", "b", "bin", "plugin", "plugin.yaml", "x" * 60] * 3 + ["..", ".", ""])
_PATHS = st.builds(
    lambda lead, parts: lead + "/".join(parts),
    st.sampled_from([""] * 9 + ["./", "/", "../"]),
    st.lists(_PARTS, min_size=1, max_size=4),
)
_TARGETS = st.one_of(
    _PATHS, st.sampled_from(["/etc/passwd", "..", "../sentinel/keep.txt", ".", "a/../.."])
)
_ENTRIES = st.builds(
    Entry,
    name=_PATHS,
    kind=st.sampled_from(
        ["file"] * 4 + ["dir"] * 2 + ["symlink"] * 3 + ["hardlink", "fifo", "chr"]
    ),
    data=st.binary(max_size=64),
    mode=st.integers(min_value=0, max_value=0o7777),
    target=_TARGETS,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(_ENTRIES, min_size=1, max_size=8),
    tar_format=st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=4096)),
)
def test_random_tar_structures_never_escape(
    entries: list[Entry], tar_format: int, cut: int | None
) -> None:
    try:
        data = build_tar(entries, tar_format=tar_format)
    except (ValueError, tarfile.TarError):
        assume(False)  # names this tar format cannot hold
        return
    packed = gzip_bytes(data)
    run_contained(packed if cut is None else packed[:cut])
