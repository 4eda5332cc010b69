"""The root lock: one host per root, and a clear word about who holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from .errors import RootLockedError
from .fsutil import PRIVATE_DIR, PRIVATE_FILE, create_if_not_exists, tighten_fd
from .rootcheck import writing

__all__ = ["LOCK_FILE", "RootLock"]

LOCK_FILE = "host.lock"


class RootLock:
    """An exclusive, non-blocking ``flock`` on ``<root>/host.lock``.

    The kernel drops the lock when the holder dies, so a crashed host never
    leaves the root locked; the file's content (the holder's pid) is only for
    the error message.
    """

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise RootLockedError naming the holder.

        The file is 0600 (an older host's looser file is tightened): it is the
        host's own, like everything else in the root. A root that cannot be
        written raises RootReadOnlyError.
        """
        with writing(self.path.parent):
            create_if_not_exists(self.path.parent, PRIVATE_DIR)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        try:
            tighten_fd(fd, self.path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RootLockedError(
                f"root {self.path.parent} is locked by another plughost process (pid {holder})",
                suggestions=[
                    "stop the other host, or talk to it through 'plughost' commands",
                    "or use a different root with --root / PLUGHOST_HOME",
                ],
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def is_held_elsewhere(self) -> bool:
        """True while another process holds the lock (a probe: takes and drops it)."""
        if self._fd is not None:
            return False
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return False

    def holder_pid(self) -> int | None:
        """The pid written by the current holder, if any (for ``doctor``)."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def __enter__(self) -> RootLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
