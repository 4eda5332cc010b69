"""PluginPIDTracker: kill what a dead host left behind, and never anything else."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from waiting import wait_until

from plughost.pids import PID_FILE, PluginPIDTracker, process_identity

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start real processes; whatever is still alive at the end is killed."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _start(
    procs: list[subprocess.Popen[bytes]], argv: list[str] = SLEEP
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, start_new_session=True)
    procs.append(proc)
    return proc


def _dead(pid: int) -> bool:
    """``pid`` no longer names a live (non-zombie) process."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` is dead; fails the test after ``timeout``."""
    return wait_until(
        lambda: _dead(pid), timeout=timeout, interval=0.005, message=f"pid {pid} to be gone"
    )


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_saved_entry_holds_pid_start_time_and_executable(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", proc.pid)
    tracker.save()
    data = json.loads((tmp_path / PID_FILE).read_text())
    assert list(data) == ["alpha"]
    entry = data["alpha"]
    assert entry["pid"] == proc.pid
    assert entry["create_time"] == pytest.approx(psutil.Process(proc.pid).create_time())
    assert entry["exe"] == psutil.Process(proc.pid).exe()
    assert os.path.realpath(entry["exe"]) == os.path.realpath(sys.executable)


def test_new_tracker_kills_a_stale_process(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(spawn)
    old_host = PluginPIDTracker(tmp_path)
    old_host.record("alpha", proc.pid)
    old_host.save()
    # The old host "dies" here; a new one starts on the same root.
    killed = PluginPIDTracker(tmp_path).cleanup_stale()
    assert killed == ["alpha"]
    assert _gone(proc.pid)
    proc.wait(timeout=5)
    assert not (tmp_path / PID_FILE).exists()


def test_cleanup_kills_the_whole_process_group(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """A plugin that started helpers of its own leaves none of them behind."""
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(60)\n",
        ],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    spawn.append(leader)
    assert leader.stdout is not None
    helper_pid = int(leader.stdout.readline())
    leader.stdout.close()
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", leader.pid)
    tracker.save()
    assert PluginPIDTracker(tmp_path).cleanup_stale() == ["alpha"]
    assert _gone(leader.pid)
    assert _gone(helper_pid)


def test_exited_process_is_left_alone(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    proc = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", proc.pid)
    tracker.save()
    proc.kill()
    proc.wait(timeout=5)
    with caplog.at_level(logging.INFO, logger="plughost.pids"):
        assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert "gone or reused" in caplog.text
    assert not (tmp_path / PID_FILE).exists()


def _rewrite_entry(tmp_path: Path, plugin_id: str, **fields: object) -> None:
    path = tmp_path / PID_FILE
    data = json.loads(path.read_text())
    data[plugin_id].update(fields)
    path.write_text(json.dumps(data))


def test_pid_reused_by_a_process_that_started_later_survives(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """The recorded process exited and its pid now names an unrelated process."""
    plugin = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", plugin.pid)
    tracker.save()
    recorded = tracker.entries()["alpha"]
    plugin.kill()
    plugin.wait(timeout=5)
    unrelated = _start(spawn)
    unrelated_start = psutil.Process(unrelated.pid).create_time()
    # Simulate reuse: the entry's pid now points at the unrelated process, whose
    # start time differs from the recorded one (same executable: both python).
    start = min(recorded.create_time, unrelated_start - 5.0)
    _rewrite_entry(tmp_path, "alpha", pid=unrelated.pid, create_time=start)
    assert psutil.Process(unrelated.pid).exe() == recorded.exe
    assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert _alive(unrelated)


def test_pid_reused_by_another_executable_survives(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Same pid and same start time, but a different program: not ours."""
    unrelated = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", unrelated.pid)
    tracker.save()
    _rewrite_entry(tmp_path, "alpha", exe="/opt/plugins/alpha/bin/plugin")
    assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert _alive(unrelated)


def test_matching_edited_entry_is_killed(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    """Control for the two tests above: an edited entry that matches all three is killed."""
    plugin = _start(spawn)
    target = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("alpha", plugin.pid)
    tracker.save()
    identity = process_identity(target.pid)
    assert identity is not None
    _rewrite_entry(
        tmp_path, "alpha", pid=target.pid, create_time=identity.create_time, exe=identity.exe
    )
    assert PluginPIDTracker(tmp_path).cleanup_stale() == ["alpha"]
    assert _gone(target.pid)
    assert _alive(plugin)


def test_only_matching_entries_are_killed(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    stale = _start(spawn)
    innocent = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("stale", stale.pid)
    tracker.record("reused", innocent.pid)
    tracker.save()
    _rewrite_entry(tmp_path, "reused", exe="/usr/bin/not-python")
    assert PluginPIDTracker(tmp_path).cleanup_stale() == ["stale"]
    assert _gone(stale.pid)
    assert _alive(innocent)


def test_missing_pid_file_is_a_no_op_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="plughost.pids"):
        assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert "no PID file" in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "unreadable"),
        (b"\xff\xfe", "unreadable"),
        (b"[1, 2]", "no map"),
    ],
)
def test_unreadable_pid_file_is_a_no_op_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, message: str
) -> None:
    (tmp_path / PID_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="plughost.pids"):
        assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert message in caplog.text
    assert str(tmp_path / PID_FILE) in caplog.text


def test_pid_file_that_is_a_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / PID_FILE).mkdir()
    with caplog.at_level(logging.WARNING, logger="plughost.pids"):
        assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert "unreadable" in caplog.text


def test_malformed_entry_is_skipped_others_still_cleaned(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    stale = _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("stale", stale.pid)
    tracker.save()
    data = json.loads((tmp_path / PID_FILE).read_text())
    data["broken"] = {"pid": "many"}
    (tmp_path / PID_FILE).write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING, logger="plughost.pids"):
        assert PluginPIDTracker(tmp_path).cleanup_stale() == ["stale"]
    assert "broken" in caplog.text
    assert _gone(stale.pid)


def test_record_remove_and_save(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = _start(spawn), _start(spawn)
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("a", a.pid)
    tracker.record("b", b.pid)
    assert set(tracker.entries()) == {"a", "b"}
    tracker.remove("a")
    tracker.remove("never-recorded")
    tracker.save()
    assert list(json.loads((tmp_path / PID_FILE).read_text())) == ["b"]
    tracker.remove("b")
    tracker.save()
    # After a clean shutdown the file is an empty map and cleanup kills nothing.
    assert json.loads((tmp_path / PID_FILE).read_text()) == {}
    assert PluginPIDTracker(tmp_path).cleanup_stale() == []
    assert _alive(a) and _alive(b)


def test_the_pid_file_is_private_whatever_the_umask(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    tracker = PluginPIDTracker(tmp_path)
    tracker.record("a", _start(spawn).pid)
    mask = os.umask(0)
    try:
        tracker.save()
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / PID_FILE).stat().st_mode) == 0o600


def test_recording_a_vanished_process_is_logged_not_recorded(
    tmp_path: Path, spawn: list[subprocess.Popen[bytes]], caplog: pytest.LogCaptureFixture
) -> None:
    proc = _start(spawn)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=5)
    tracker = PluginPIDTracker(tmp_path)
    with caplog.at_level(logging.WARNING, logger="plughost.pids"):
        tracker.record("alpha", proc.pid)
    assert tracker.entries() == {}
    assert "vanished" in caplog.text
