"""File helpers with the original's names: copies that keep modes and refuse escapes.

Also the modes of what the host creates in its root: exact, whatever the umask
(``private_dir``), and tightened where an older host or an editor left them
looser (``tighten``).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from .errors import ValidationError

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "changeable_by_others",
    "copy_dir",
    "copy_directory",
    "copy_file",
    "copy_symlink",
    "create_if_not_exists",
    "exists",
    "is_within",
    "loose_bits",
    "private_dir",
    "tighten",
    "tighten_fd",
]

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def exists(path: StrPath) -> bool:
    """True if anything (even a dangling link) is at ``path``."""
    return os.path.lexists(path)


def create_if_not_exists(directory: StrPath, mode: int = 0o755) -> None:
    """Create ``directory`` (exactly ``mode``, whatever the umask) and its parents; fine if it
    already exists as a directory, whose mode is then left alone."""
    path = Path(directory)
    if not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            if not path.is_dir():
                raise
            return  # made by someone else meanwhile: theirs
        os.chmod(path, mode)


def loose_bits(st: os.stat_result) -> int:
    """The permission bits that give other users more than a private entry should.

    A directory may be passable (``--x``) without harm, so only its group and other
    read and write bits count; a file's every group and other bit does.
    """
    mode = stat.S_IMODE(st.st_mode)
    return mode & (0o066 if stat.S_ISDIR(st.st_mode) else 0o077)


def changeable_by_others(*paths: Path, what: str) -> str:
    """Why a file the host runs or shows to plugins cannot be trusted: a path that is a
    link, or that another user owns or may write. Empty when all is well."""
    for path in paths:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return f"{what} {path} is a symbolic link; remove it (plughost makes it again)"
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return (
                f"{what} {path} is not this user's alone (mode "
                f"{stat.S_IMODE(info.st_mode):o}, owner uid {info.st_uid}); run: chmod go-w {path}"
            )
    return ""


def private_dir(directory: StrPath) -> None:
    """``directory`` as a private directory: created 0700 (parents as the umask says), or,
    when it exists and is ours, with its group and other read and write bits removed."""
    create_if_not_exists(directory, PRIVATE_DIR)
    tighten(directory)


def _tightened(st: os.stat_result, path: StrPath) -> int | None:
    """The mode an entry of this user should have (logged), or None: fine, or not ours."""
    if st.st_uid != os.geteuid() or not loose_bits(st):
        return None
    mode = stat.S_IMODE(st.st_mode)
    log.warning("%s was mode %o, open to other users: now %o", path, mode, mode & ~loose_bits(st))
    return mode & ~loose_bits(st)


def tighten(path: StrPath) -> bool:
    """Remove the loose bits (``loose_bits``) of an entry this user owns; True if it changed.

    A symlink is never followed (its target may be anyone's file) and an entry of
    another user is left alone: not ours to change, and the root check reports it.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or (mode := _tightened(st, path)) is None:
        return False
    os.chmod(path, mode)
    return True


def tighten_fd(fd: int, path: StrPath) -> bool:
    """``tighten`` for a file already open as ``fd`` (``path`` names it in the log)."""
    if (mode := _tightened(os.fstat(fd), path)) is None:
        return False
    os.fchmod(fd, mode)
    return True


def copy_file(src: StrPath, dst: StrPath) -> None:
    """Copy one file with its permission bits (the original's ``Copy``)."""
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst, follow_symlinks=True)


def copy_symlink(src: StrPath, dst: StrPath) -> None:
    """Recreate the link at ``src`` as ``dst``, with the same target text."""
    target = os.readlink(src)
    if os.path.lexists(dst):
        os.unlink(dst)
    os.symlink(target, dst)


def is_within(path: StrPath, root: StrPath) -> bool:
    """True when ``path`` resolves to ``root`` or somewhere below it."""
    resolved = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    return resolved == base or base in resolved.parents


def copy_dir(dst: StrPath, src: StrPath) -> None:
    """Copy the tree ``src`` into ``dst`` (argument order as the original's ``CopyDir``).

    Symlinks are copied as links, but one whose target leaves ``src`` is refused:
    copying it would let a plugin tree point at files outside itself.
    """
    src_path, dst_path = Path(src), Path(dst)
    if not src_path.is_dir():
        raise ValidationError(f"cannot copy {src_path}: not a directory")
    for dirpath, dirnames, filenames in os.walk(src_path):
        here = Path(dirpath)
        rel = here.relative_to(src_path)
        target_dir = dst_path / rel
        target_dir.mkdir(parents=True, exist_ok=True)
        shutil.copymode(here, target_dir)
        for name in [*filenames, *dirnames]:
            item = here / name
            if item.is_symlink():
                link_target = here / os.readlink(item)
                if not is_within(link_target, src_path):
                    raise ValidationError(
                        f"refusing to copy symlink {item}: its target {os.readlink(item)!r} "
                        f"leaves {src_path}",
                        title="Unsafe symlink",
                        suggestions=["replace the link with a copy of the file"],
                    )
                copy_symlink(item, target_dir / name)
                if name in dirnames:
                    dirnames.remove(name)  # do not descend through a link
            elif name in filenames:
                copy_file(item, target_dir / name)


def copy_directory(src: StrPath, dst: StrPath) -> None:
    """Copy the tree ``src`` to ``dst`` (the original's ``CopyDirectory`` order)."""
    copy_dir(dst, src)
