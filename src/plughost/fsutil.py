"""File helpers with the original's names: copies that keep modes and refuse escapes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ValidationError

__all__ = [
    "copy_dir",
    "copy_directory",
    "copy_file",
    "copy_symlink",
    "create_if_not_exists",
    "exists",
    "is_within",
]

StrPath = str | os.PathLike[str]


def exists(path: StrPath) -> bool:
    """True if anything (even a dangling link) is at ``path``."""
    return os.path.lexists(path)


def create_if_not_exists(directory: StrPath, mode: int = 0o755) -> None:
    """Create ``directory`` and its parents; fine if it already exists as a directory."""
    Path(directory).mkdir(mode=mode, parents=True, exist_ok=True)


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
