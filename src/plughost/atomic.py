"""Atomic file replacement: readers see the old file or the new one, whole, even after a crash.

No plughost imports and only the standard library, so the plugin-side SDK can use
it without paying for the host's modules.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_replace", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_beside(path: Path, perms: int) -> Path:
    """Create a new, empty ``.<name>.<random>.tmp`` beside ``path`` (``perms`` less the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, flags, perms))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


def atomic_replace(path: Path, write: Callable[[Path], object], mode: int | None = 0o600) -> None:
    """Replace ``path`` with what ``write(tmp)`` puts in a temp file beside it.

    Readers see the old file or the new one, whole, even after a crash: the
    temp file is fsynced before the rename, the directory after it. The new
    file gets exactly ``mode``, whatever the umask: private unless the caller
    says otherwise; ``None`` gives it the mode ``open()`` would give a new file
    (0o666 less the umask). A failed write leaves ``path`` untouched and no
    temp file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(path, 0o666 if mode is None else 0o600)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = 0o600) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, whole."""
    atomic_replace(path, lambda tmp: tmp.write_bytes(data), mode)


def atomic_write_text(
    path: Path, text: str, mode: int | None = 0o600, *, encoding: str = "utf-8"
) -> None:
    """Replace ``path`` with ``text`` (encoded) so readers see the old or the new file, whole."""
    atomic_write_bytes(path, text.encode(encoding), mode)
