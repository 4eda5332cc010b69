"""File helpers: modes kept, links kept as links, escapes refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plughost.errors import ValidationError
from plughost.fsutil import (
    copy_dir,
    copy_directory,
    copy_file,
    copy_symlink,
    create_if_not_exists,
    exists,
    is_within,
    private_dir,
    tighten,
    tighten_fd,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_copy_file_keeps_content_and_mode(tmp_path: Path) -> None:
    src = tmp_path / "plugin"
    src.write_bytes(b"#!/bin/sh\n")
    src.chmod(0o751)
    dst = tmp_path / "deep" / "er" / "plugin"
    copy_file(src, dst)
    assert dst.read_bytes() == b"#!/bin/sh\n"
    assert _mode(dst) == 0o751
    # Overwrites an existing file, taking the new mode.
    src.write_bytes(b"v2")
    src.chmod(0o600)
    copy_file(str(src), str(dst))
    assert dst.read_bytes() == b"v2"
    assert _mode(dst) == 0o600


def _tree(root: Path) -> Path:
    src = root / "src"
    (src / "bin").mkdir(parents=True)
    (src / "assets" / "img").mkdir(parents=True)
    (src / "bin" / "plugin").write_bytes(b"\x7fELF")
    (src / "bin" / "plugin").chmod(0o755)
    (src / "secret.key").write_text("k")
    (src / "secret.key").chmod(0o600)
    (src / "assets" / "index.js").write_text("js")
    (src / "assets" / "img" / "logo.svg").write_text("<svg/>")
    (src / "assets").chmod(0o750)
    (src / "plugin.yaml").write_text("id: p\n")
    return src


def test_copy_dir_copies_the_tree_with_modes(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    dst = tmp_path / "dst"
    copy_dir(dst, src)  # the original's argument order: destination first
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    assert copied == sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    assert (dst / "assets" / "img" / "logo.svg").read_text() == "<svg/>"
    assert _mode(dst / "bin" / "plugin") == 0o755
    assert _mode(dst / "secret.key") == 0o600
    assert _mode(dst / "assets") == 0o750


def test_copy_directory_takes_source_first(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    copy_directory(src, tmp_path / "dst")
    assert (tmp_path / "dst" / "bin" / "plugin").read_bytes() == b"\x7fELF"
    assert _mode(tmp_path / "dst" / "bin" / "plugin") == 0o755


def test_copy_dir_keeps_internal_links_as_links(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    os.symlink("bin/plugin", src / "main")  # relative, inside
    os.symlink("../plugin.yaml", src / "assets" / "meta.yaml")  # up, but still inside
    os.symlink("assets", src / "static")  # a link to a directory inside
    os.symlink(src / "secret.key", src / "abs-inside")  # absolute, inside
    dst = tmp_path / "dst"
    copy_dir(dst, src)
    assert os.readlink(dst / "main") == "bin/plugin"
    assert (dst / "main").read_bytes() == b"\x7fELF"
    assert os.readlink(dst / "assets" / "meta.yaml") == "../plugin.yaml"
    assert (dst / "static").is_symlink()
    assert os.readlink(dst / "static") == "assets"
    assert (dst / "static" / "index.js").read_text() == "js"
    assert os.readlink(dst / "abs-inside") == str(src / "secret.key")


@pytest.mark.parametrize(
    "target",
    [
        "../outside.txt",
        "../../outside.txt",
        "/etc/passwd",
        "bin/../../outside.txt",
        "../src-sibling/file",  # shares a prefix with src, but is not inside it
    ],
)
def test_copy_dir_refuses_links_that_leave_the_tree(tmp_path: Path, target: str) -> None:
    src = _tree(tmp_path)
    (tmp_path / "outside.txt").write_text("outside")
    (tmp_path / "src-sibling").mkdir()
    (tmp_path / "src-sibling" / "file").write_text("sibling")
    link = src / "assets" / "evil" if target.startswith("../../") else src / "evil"
    os.symlink(target, link)
    with pytest.raises(ValidationError) as info:
        copy_dir(tmp_path / "dst", src)
    assert str(link) in info.value.detail
    assert target in info.value.detail
    assert not (tmp_path / "dst" / "evil").exists()
    assert not (tmp_path / "dst" / "assets" / "evil").is_symlink()


def test_copy_dir_refuses_a_chain_of_links_that_leaves(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink("../outside.txt", src / "b")
    os.symlink("b", src / "a")  # inside by text, outside in effect
    with pytest.raises(ValidationError):
        copy_dir(tmp_path / "dst", src)


def test_copy_dir_needs_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ValidationError):
        copy_dir(tmp_path / "dst", tmp_path / "file")
    with pytest.raises(ValidationError):
        copy_dir(tmp_path / "dst", tmp_path / "missing")


def test_copy_symlink(tmp_path: Path) -> None:
    os.symlink("target-that-does-not-exist", tmp_path / "link")
    copy_symlink(tmp_path / "link", tmp_path / "copy")
    assert os.readlink(tmp_path / "copy") == "target-that-does-not-exist"
    # Replaces whatever is at the destination.
    (tmp_path / "file").write_text("x")
    copy_symlink(tmp_path / "link", tmp_path / "file")
    assert os.readlink(tmp_path / "file") == "target-that-does-not-exist"


def test_exists(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    os.symlink("nowhere", tmp_path / "dangling")
    assert exists(tmp_path)
    assert exists(tmp_path / "file")
    assert exists(str(tmp_path / "dangling"))
    assert not exists(tmp_path / "missing")


def test_create_if_not_exists(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    mask = os.umask(0o077)
    try:
        create_if_not_exists(target, mode=0o750)
    finally:
        os.umask(mask)
    assert target.is_dir()
    assert _mode(target) == 0o750  # exactly the mode asked for, whatever the umask
    (target / "keep").write_text("x")
    create_if_not_exists(target)  # already there: fine, and nothing is lost
    assert (target / "keep").read_text() == "x"
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        create_if_not_exists(tmp_path / "file")


def test_is_within(tmp_path: Path) -> None:
    (tmp_path / "root" / "sub").mkdir(parents=True)
    assert is_within(tmp_path / "root", tmp_path / "root")
    assert is_within(tmp_path / "root" / "sub" / "x", tmp_path / "root")
    assert not is_within(tmp_path / "root-2", tmp_path / "root")
    assert not is_within(tmp_path / "root" / ".." / "x", tmp_path / "root")


def test_private_dir_creates_0700_and_tightens_only_what_is_ours(tmp_path: Path) -> None:
    mask = os.umask(0)
    try:
        private_dir(tmp_path / "new")
    finally:
        os.umask(mask)
    assert _mode(tmp_path / "new") == 0o700
    old = tmp_path / "old"
    old.mkdir()
    old.chmod(0o777)
    private_dir(old)
    assert _mode(old) == 0o711  # others may still pass through (plugins run as another user)


def test_tighten_files_leaves_links_and_private_files_alone(tmp_path: Path) -> None:
    loose, private = tmp_path / "loose", tmp_path / "private"
    loose.write_text("")
    private.write_text("")
    loose.chmod(0o664)
    private.chmod(0o600)
    (tmp_path / "link").symlink_to(private)
    assert tighten(loose) and _mode(loose) == 0o600
    assert not tighten(private) and not tighten(tmp_path / "link")
    assert not tighten(tmp_path / "missing")
    fd = os.open(private, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o640)
        assert tighten_fd(fd, private) and _mode(private) == 0o600
    finally:
        os.close(fd)
