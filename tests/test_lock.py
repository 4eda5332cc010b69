"""RootLock: one host per root, refused at once, naming the holder."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from plughost.errors import PlughostError, RootLockedError
from plughost.lock import LOCK_FILE, RootLock

HOLDER = textwrap.dedent(
    """\
    import sys
    from pathlib import Path
    from plughost.lock import RootLock

    lock = RootLock(Path(sys.argv[1]))
    lock.acquire()
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin
    lock.release()
    print("released", flush=True)
    """
)

CONTENDER = textwrap.dedent(
    """\
    import sys, time
    from pathlib import Path
    from plughost.errors import RootLockedError
    from plughost.lock import RootLock

    started = time.monotonic()
    try:
        RootLock(Path(sys.argv[1])).acquire()
    except RootLockedError as exc:
        print(f"{time.monotonic() - started:.3f} {exc.detail}", flush=True)
        sys.exit(3)
    print("acquired", flush=True)
    """
)


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on ``tmp_path``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_second_lock_in_the_same_process_fails_at_once(tmp_path: Path) -> None:
    first = RootLock(tmp_path)
    first.acquire()
    assert first.held
    assert first.holder_pid() == os.getpid()
    second = RootLock(tmp_path)
    started = time.monotonic()
    with pytest.raises(RootLockedError) as info:
        second.acquire()
    assert time.monotonic() - started < 1.0
    err = info.value
    assert isinstance(err, PlughostError)
    assert (err.type, err.status) == ("root_locked", 423)
    assert f"pid {os.getpid()}" in err.detail
    assert str(tmp_path) in err.detail
    assert err.suggestions
    assert not second.held
    first.release()


def test_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    first = RootLock(tmp_path)
    first.acquire()
    first.release()
    assert not first.held
    assert first.holder_pid() is None
    first.release()  # twice is harmless
    with RootLock(tmp_path) as second:
        assert second.held
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
    assert not second.held
    first.acquire()
    first.release()


def test_lock_creates_the_root(tmp_path: Path) -> None:
    with RootLock(tmp_path / "new" / "root") as lock:
        assert lock.path == tmp_path / "new" / "root" / LOCK_FILE
        assert lock.path.exists()


def test_the_lock_and_the_root_it_creates_are_private_whatever_the_umask(tmp_path: Path) -> None:
    mask = os.umask(0)
    try:
        with RootLock(tmp_path / "root") as lock:
            assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
            assert stat.S_IMODE(lock.path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(mask)


def test_an_older_hosts_looser_lock_file_is_tightened(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).write_text("")
    (tmp_path / LOCK_FILE).chmod(0o666)
    with RootLock(tmp_path) as lock:
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600


def test_a_second_process_is_refused_naming_the_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(RootLockedError) as info:
        RootLock(tmp_path).acquire()
    assert f"pid {holder.pid}" in info.value.detail
    assert RootLock(tmp_path).holder_pid() == holder.pid


def test_a_contending_process_fails_at_once(tmp_path: Path) -> None:
    with RootLock(tmp_path):
        result = subprocess.run(
            [sys.executable, "-c", CONTENDER, str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 3, result.stderr
    elapsed, detail = result.stdout.strip().split(" ", 1)
    assert float(elapsed) < 1.0
    assert f"pid {os.getpid()}" in detail


def test_lock_is_free_after_the_holder_releases(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.close()
    assert holder.stdout.readline().strip() == "released"
    with RootLock(tmp_path) as lock:
        assert lock.holder_pid() == os.getpid()


def test_lock_is_free_when_the_holder_is_sigkilled(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(RootLockedError):
        RootLock(tmp_path).acquire()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=10)
    assert holder.returncode == -signal.SIGKILL
    # The kernel dropped the lock with the process; the stale pid in the file
    # does not matter.
    with RootLock(tmp_path) as lock:
        assert lock.holder_pid() == os.getpid()


def test_plugin_processes_of_a_killed_holder_do_not_keep_the_lock(tmp_path: Path) -> None:
    """Plugins may outlive a SIGKILLed host; the lock must not live on in them."""
    script = HOLDER.replace(
        'print("locked", flush=True)',
        "import subprocess\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " close_fds=False)\n"
        'print(f"locked {child.pid}", flush=True)',
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    word, child_pid = proc.stdout.readline().split()
    assert word == "locked"
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        os.kill(int(child_pid), 0)  # the plugin is still alive ...
        with RootLock(tmp_path) as lock:  # ... and the root is free
            assert lock.held
    finally:
        os.kill(int(child_pid), signal.SIGKILL)
        proc.stdin.close()
        proc.stdout.close()
