"""Fuzz target: the package extractor (``plughost.packages.archive.safe_extract``).

Each input is extracted into a fresh ``<arena>/plugins/dest`` next to a sentinel
directory. Properties: only PluginInstallError comes out (and then ``dest`` is
empty); nothing outside ``dest`` changes; nothing inside it reaches outside
(links resolving out, hard links, special files, set-id bits).

The first byte picks how the rest becomes a package: as is (raw gzip bytes), or
gzip-compressed here (so mutations reach tar parsing past the gzip layer). The
seeds are the hostile corpus of ``tests/hostile.py`` plus valid packages.

The hypothesis tests of the same properties are in tests/test_archive.py
(``test_random_bytes_never_escape``, ``test_random_tar_structures_never_escape``).

    .venv/bin/python tests/fuzz/fuzz_archive.py -atheris_runs=20000
"""

from __future__ import annotations

import gzip
import os
import stat
import tempfile
from pathlib import Path

from _common import instrumented, main

with instrumented(__name__, "plughost.packages.archive", "tarfile", "gzip"):
    from hostile import BINARY, Entry, build_corpus, build_tar, plugin_yaml

    from plughost.errors import PluginInstallError
    from plughost.packages.archive import safe_extract

Snapshot = dict[str, tuple[str, int, bytes]]
_MAX_SEED = 256 * 1024


def _snapshot(root: Path, skip: Path) -> Snapshot:
    state: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip:
            dirnames[:] = []
            continue
        for name in [*dirnames, *filenames]:
            path = here / name
            if path == skip:
                continue
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", 0, os.readlink(path).encode())
            elif stat.S_ISREG(st.st_mode):
                state[rel] = ("file", st.st_mode, path.read_bytes())
            else:
                state[rel] = ("other", st.st_mode, b"")
    return state


def _escapes(dest: Path) -> list[str]:
    bad = []
    root = os.path.realpath(dest)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = path.lstat().st_mode
            if os.path.commonpath([root, os.path.realpath(path)]) != root:
                bad.append(f"{path} leads outside")
            if stat.S_ISREG(mode) and path.lstat().st_nlink != 1:
                bad.append(f"{path} is hard-linked")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                bad.append(f"{path} is special")
            if mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX):
                bad.append(f"{path} has mode {oct(mode)}")
    return bad


def _seeds() -> list[bytes]:
    valid = [
        Entry("plugin.yaml", data=plugin_yaml()),
        Entry("bin", "dir"),
        Entry("bin/plugin", data=BINARY, mode=0o755),
        Entry("assets/link", "symlink", target="../plugin.yaml"),
    ]
    seeds = [b"\x01" + build_tar(valid), b"\x01" + build_tar(valid[:1])]
    with tempfile.TemporaryDirectory(prefix="fuzz-archive-seeds-") as tmp:
        for case in build_corpus(Path(tmp)):
            packaged = case.path.read_bytes()
            seeds.append(b"\x00" + packaged)
            try:
                seeds.append(b"\x01" + gzip.decompress(packaged))
            except (OSError, EOFError):
                pass
    # The few multi-megabyte cases (size limits) would only slow every run down.
    return [seed for seed in seeds if len(seed) <= _MAX_SEED]


SEEDS: list[bytes] = _seeds()


def test_one_input(data: bytes) -> None:
    mode, body = (data[0] & 1, data[1:]) if data else (0, b"")
    package_bytes = gzip.compress(body, mtime=0) if mode else body
    with tempfile.TemporaryDirectory(prefix="fuzz-archive-") as tmp:
        root = Path(tmp)
        (root / "sentinel").mkdir()
        (root / "sentinel" / "keep.txt").write_text("keep")
        package = root / "p.tar.gz"
        package.write_bytes(package_bytes)
        dest = root / "plugins" / "dest"
        dest.mkdir(parents=True)
        before = _snapshot(root, dest)
        try:
            safe_extract(package, dest, max_total=1 << 20, max_file=256 << 10, max_entries=64)
        except PluginInstallError as exc:
            assert exc.detail
            assert list(dest.iterdir()) == [], "dest not emptied after a refusal"
        assert _snapshot(root, dest) == before, "something outside dest changed"
        assert _escapes(dest) == []


if __name__ == "__main__":
    main(test_one_input, SEEDS)
