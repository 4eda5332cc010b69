"""Each plugin process's own socket directory: ``<root>/run/<id>/``.

A directory per plugin means one plugin's sockets are not within another's
reach: the broker accepts only addresses inside the announcing plugin's own
directory. It is fresh for each process and removed when the process stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ..hardening import RunAs, allow_traversal

__all__ = ["MAX_SOCKET_DIR_LEN", "SocketDir"]

MAX_SOCKET_DIR_LEN = 80  # sun_path holds 108 bytes; leave room for the file name


class SocketDir:
    """``<base>/<plugin id>`` (0700, or owned by ``owner``), or a private tmp dir when that
    path would not leave room for a socket's name.

    An open descriptor pins the directory: a late cleanup (a stop that ran on after its
    caller was cancelled) must not remove the directory of the process that replaced it.
    """

    def __init__(self, base: Path, plugin_id: str, owner: RunAs | None = None) -> None:
        preferred = base / plugin_id
        if len(str(preferred)) <= MAX_SOCKET_DIR_LEN:
            base.mkdir(mode=0o700, parents=True, exist_ok=True)
            if owner is not None:
                allow_traversal(base)  # owner reaches its own directory below, and no other
            _remove(preferred)  # left by a process whose host was killed
            preferred.mkdir(mode=0o700)
            self.path = preferred
        else:
            self.path = Path(tempfile.mkdtemp(prefix="plughost-"))
        if owner is not None:
            os.chown(self.path, owner.uid, owner.gid)
        self._fd: int | None = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def remove(self) -> None:
        """Remove the directory and whatever the plugin left in it; idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.lstat(self.path)):
                    _remove(self.path)
        finally:
            _close_off_loop(fd)


def _close_off_loop(fd: int) -> None:
    """Close ``fd`` in a worker thread when an event loop runs here: the last reference to a
    removed directory frees its inode (on ext4 a journal write, ~0.3 ms), which is no work
    for the loop, nor for a stop's caller to wait on."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        os.close(fd)
    else:
        loop.run_in_executor(None, _close_quietly, fd)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove ``path`` whatever it is; a plugin's symlinks inside are removed, never followed."""
    try:
        os.rmdir(path)  # the usual case: the plugin took its socket with it
        return
    except FileNotFoundError:
        return
    except OSError:  # not empty, or not a directory
        pass
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
