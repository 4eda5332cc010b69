"""plugin_state.json: atomic writes, corrupt files kept aside, the backup, merge rules, crash
safety."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import selectors
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from waiting import wait_until

from plughost.errors import InternalError, PlughostError
from plughost.events import EVENT_STATE_WRITE_ERROR, Event, EventBus
from plughost.metadata import PluginMeta
from plughost.phases import Phase
from plughost.records import PluginStateRecord
from plughost.store import STATE_FILE, StateFileCorrupt, StateStore, _parse, merge_records

STATE_KEYS = {
    "id",
    "phase",
    "metadata",
    "enabled",
    "devMode",
    "devPath",
    "lastError",
    "errorCount",
    "installedAt",
}


def _record(plugin_id: str, phase: Phase = Phase.INSTALLED, **kw: Any) -> PluginStateRecord:
    return PluginStateRecord(
        id=plugin_id, phase=phase, metadata=PluginMeta(id=plugin_id, version="1.0.0"), **kw
    )


BACKUP = STATE_FILE + ".bak"


def _files(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert StateStore(tmp_path).read() == []
    assert StateStore(tmp_path / "not" / "yet").read() == []


def test_write_then_read(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    records = [_record("zeta", Phase.RUNNING), _record("alpha", enabled=False, error_count=2)]
    assert store.write(records) is True
    assert store.path == tmp_path / STATE_FILE
    assert store.read() == sorted(records, key=lambda r: r.id)
    raw = json.loads(store.path.read_text())
    assert isinstance(raw, list)
    assert [item["id"] for item in raw] == ["alpha", "zeta"]
    for item in raw:
        assert set(item) == STATE_KEYS
    # No temp file is left next to it, and only the host's user may read it.
    assert _files(tmp_path) == {STATE_FILE}
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_write_order_is_temp_fsync_rename_dir_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path)
    store.write([_record("old")])
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        steps.append("fsync-dir" if is_dir else "fsync-file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        assert Path(src).parent == Path(dst).parent == tmp_path  # same directory: atomic
        assert Path(src).read_bytes().startswith(b"[")  # complete before it is renamed
        steps.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert store.write([_record("new")])
    monkeypatch.undo()
    # The first rename keeps the old file as the backup (a link: already durable).
    assert steps == ["rename", "fsync-file", "rename", "fsync-dir"]
    assert [r.id for r in store.read()] == ["new"]


def test_write_replaces_the_previous_content(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write([_record(f"p{i}") for i in range(20)])
    store.write([_record("only")])
    assert [r.id for r in store.read()] == ["only"]
    store.write([])
    assert store.read() == []
    assert _files(tmp_path) == {STATE_FILE, BACKUP}
    assert [r.id for r in _parse(store.backup.read_bytes())] == ["only"]


def test_write_creates_the_root(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "deep" / "root")
    assert store.write([_record("a")])
    assert [r.id for r in store.read()] == ["a"]


CORRUPT = [
    pytest.param(b'[{"id": "a", "phase": "Insta', id="truncated"),
    pytest.param(b"", id="empty"),
    pytest.param(b"\x00\x00\x00\x00", id="zeros"),
    pytest.param(b"\xff\xfe not utf-8", id="binary"),
    pytest.param(b'{"id": "a"}', id="not-a-list"),
    pytest.param(b'[{"id": "a", "phase": "Flying"}]', id="invalid-record"),
]


@pytest.mark.parametrize("content", CORRUPT)
def test_corrupt_file_is_detected_and_kept_aside(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.path.write_bytes(content)
    with (
        caplog.at_level(logging.WARNING, logger="plughost.store"),
        pytest.raises(StateFileCorrupt) as info,
    ):
        store.read()
    err = info.value
    assert isinstance(err, InternalError)
    assert isinstance(err, PlughostError)
    assert err.type == "state_file_corrupt"
    assert not store.path.exists()
    aside = [p for p in tmp_path.iterdir() if p.name != STATE_FILE]
    assert len(aside) == 1
    assert re.fullmatch(r"plugin_state\.json\.corrupt-\d{8}T\d{6}\.\d{6}Z", aside[0].name)
    assert aside[0].read_bytes() == content  # nothing is lost
    assert aside[0].name in err.detail
    assert str(store.path) in err.detail
    assert "corrupt" in caplog.text
    # The next read starts afresh.
    assert store.read() == []


def test_two_corrupt_files_are_both_kept(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    for content in (b"one", b"two"):
        store.path.write_bytes(content)
        with pytest.raises(StateFileCorrupt):
            store.read()
    aside = sorted(p for p in tmp_path.iterdir() if ".corrupt-" in p.name)
    assert [p.read_bytes() for p in aside] == [b"one", b"two"]


# --------------------------------------------------------------------------
# The backup: the state before the last write, used when the file is corrupt.


def test_a_corrupt_file_is_replaced_by_the_last_good_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.write([_record("a", enabled=False)])
    store.write([_record("a", enabled=False), _record("b")])
    store.path.write_bytes(b'[{"id": "a", "ena')  # spoiled after the fact
    with caplog.at_level(logging.WARNING, logger="plughost.store"):
        records = StateStore(tmp_path).read()
    assert [(r.id, r.enabled) for r in records] == [("a", False)]  # the write before the last
    assert f"replaced by the last good state, {BACKUP}" in caplog.text
    assert [(r.id, r.enabled) for r in StateStore(tmp_path).read()] == [("a", False)]  # repaired
    aside = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert [p.read_bytes() for p in aside] == [b'[{"id": "a", "ena']
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_file_that_does_not_parse_never_becomes_the_backup(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write([_record("first")])
    store.write([_record("second")])  # the backup now holds "first"
    store.path.write_bytes(b"garbage")
    assert store.write([_record("third")])
    assert [r.id for r in _parse(store.backup.read_bytes())] == ["first"]
    assert [r.id for r in store.read()] == ["third"]


def test_without_a_good_backup_a_corrupt_file_is_still_an_error(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path.write_bytes(b"garbage")
    store.backup.write_bytes(b"garbage too")
    with pytest.raises(StateFileCorrupt) as info:
        store.read()
    assert f"no good {BACKUP}" in info.value.detail


def test_a_look_without_repair_changes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write([_record("a")])
    store.write([_record("a"), _record("b")])
    store.path.write_bytes(b"garbage")
    with pytest.raises(StateFileCorrupt) as info:
        store.read(repair=False)
    assert info.value.backup_ok and f"the next start restores {BACKUP}" in info.value.detail
    assert _files(tmp_path) == {STATE_FILE, BACKUP}
    assert store.path.read_bytes() == b"garbage"


def test_an_older_hosts_looser_state_file_is_tightened_when_read(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write([_record("a")])
    store.path.chmod(0o644)
    assert [r.id for r in store.read()] == ["a"]
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------
# Merge: loaded records win; persisted ones survive while their directory exists.


def test_merge_records(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    for name in ("kept", "both", "loaded-only-with-dir"):
        (plugins / name).mkdir(parents=True)
    (plugins / "file-not-dir").parent.mkdir(exist_ok=True)
    (plugins / "file-not-dir").write_text("")
    persisted = [
        _record("kept", Phase.STOPPED, enabled=False),
        _record("ghost", Phase.RUNNING),
        _record("both", Phase.FAILED, last_error="old"),
        _record("file-not-dir"),
    ]
    loaded = [_record("both", Phase.RUNNING), _record("fresh", Phase.RUNNING)]
    merged = merge_records(loaded, persisted, plugins)
    assert [r.id for r in merged] == ["both", "fresh", "kept"]
    by_id = {r.id: r for r in merged}
    assert by_id["both"].phase is Phase.RUNNING  # loaded wins
    assert by_id["both"].last_error == ""
    assert by_id["kept"].enabled is False  # persisted kept as it was
    assert by_id["fresh"] is loaded[1]


def test_merge_with_nothing(tmp_path: Path) -> None:
    assert merge_records([], [], tmp_path) == []
    assert merge_records([], [_record("ghost")], tmp_path / "missing") == []


# --------------------------------------------------------------------------
# Write failures: an event, a log line, and the old file untouched.


def _collect(bus: EventBus) -> list[Event]:
    got: list[Event] = []
    bus.subscribe(EVENT_STATE_WRITE_ERROR, got.append)
    return got


def test_write_failure_when_the_root_is_a_file(
    tmp_path: Path, bus: EventBus, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "root"
    not_a_dir.write_text("I am a file")
    got = _collect(bus)
    store = StateStore(not_a_dir, bus)
    with caplog.at_level(logging.ERROR, logger="plughost.store"):
        assert store.write([_record("a")]) is False
    wait_until(lambda: len(got) == 1, timeout=5.0, interval=0.002, message="the write error event")
    assert got[0].name == "plugin/state_write_error"
    assert got[0].payload["path"] == str(not_a_dir / STATE_FILE)
    assert got[0].payload["error"]
    assert "cannot write" in caplog.text
    assert not_a_dir.read_text() == "I am a file"


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_write_failure_leaves_the_old_file_intact(
    tmp_path: Path, bus: EventBus, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    store = StateStore(tmp_path, bus)
    assert store.write([_record("old-1"), _record("old-2")])
    before = store.path.read_bytes()
    got = _collect(bus)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    assert store.write([_record(f"new-{i}") for i in range(30)]) is False
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert [r.id for r in store.read()] == ["old-1", "old-2"]
    assert _files(tmp_path) <= {STATE_FILE, BACKUP}  # the temp files were cleaned up
    wait_until(lambda: len(got) == 1, timeout=5.0, interval=0.002, message="the write error event")
    assert "No space left" in got[0].payload["error"]


def test_write_failure_without_a_bus_only_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "root"
    not_a_dir.write_text("")
    with caplog.at_level(logging.ERROR, logger="plughost.store"):
        assert StateStore(not_a_dir).write([]) is False
    assert str(not_a_dir / STATE_FILE) in caplog.text


# --------------------------------------------------------------------------
# Crash safety: SIGKILL a writer at random moments; the file is always whole.

# Shared by the test and the writer process, so both know the two versions.
VERSIONS_SRC = textwrap.dedent(
    """\
    from datetime import UTC, datetime
    from plughost.metadata import PluginMeta
    from plughost.phases import Phase
    from plughost.records import PluginStateRecord

    WHEN = datetime(2024, 1, 1, tzinfo=UTC)

    def version(count, tag):
        return [
            PluginStateRecord(
                id=f"p{i:03d}",
                phase=Phase.INSTALLED,
                installed_at=WHEN,
                metadata=PluginMeta(id=f"p{i:03d}", version=tag, description="d" * 300),
            )
            for i in range(count)
        ]

    SMALL = version(5, "1.0.0")
    BIG = version(50, "2.0.0")
    """
)

# Imports plughost once, then forks a fresh writer for every line on stdin and
# reports how it died. Forking keeps 50 restarts fast; each writer is a new process.
WRITER_SRC = VERSIONS_SRC + textwrap.dedent(
    """\
    import os, sys, time
    from pathlib import Path
    from plughost.store import StateStore

    store = StateStore(Path(sys.argv[1]))
    started = time.perf_counter()
    for _ in range(5):
        store.write(BIG)
        store.write(SMALL)
    per_write = (time.perf_counter() - started) / 10
    print(f"ready {per_write:.6f}", flush=True)
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            print(f"writing {os.getpid()}", flush=True)
            while True:
                store.write(BIG)
                store.write(SMALL)
        _, status = os.waitpid(pid, 0)
        print(f"reaped {os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1}", flush=True)
    """
)


class _Lines:
    """Reads lines from a pipe with a deadline, so a stuck child fails the test."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._fd, selectors.EVENT_READ)
        self._buf = b""

    def readline(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "child did not answer in time"
            if self._sel.select(remaining):
                chunk = os.read(self._fd, 4096)
                assert chunk, "child closed its output"
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        self._sel.close()


def test_sigkilled_writer_leaves_a_complete_old_or_new_file(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {}
    exec(VERSIONS_SRC, namespace)
    small = [r.to_json_dict() for r in namespace["SMALL"]]
    big = [r.to_json_dict() for r in namespace["BIG"]]
    assert small != big

    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SRC, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
    )
    lines = _Lines(proc)
    assert proc.stdin is not None
    rng = random.Random()
    seen = {"small": 0, "big": 0}
    try:
        word, per_write = lines.readline(30).split()
        assert word == "ready"
        # Kill anywhere within a few writes, whatever this machine's fsync costs.
        window = max(float(per_write) * 8, 0.002)
        for _ in range(50):
            proc.stdin.write(b"go\n")
            word, pid = lines.readline().split()
            assert word == "writing"
            time.sleep(rng.uniform(0, window))
            os.kill(int(pid), signal.SIGKILL)
            assert lines.readline() == f"reaped {int(signal.SIGKILL)}"
            data = json.loads((tmp_path / STATE_FILE).read_bytes())
            assert (data == small) != (data == big), "state file is neither version"
            seen["small" if data == small else "big"] += 1
            # And the store reads it as such, without calling it corrupt.
            assert len(StateStore(tmp_path).read()) in (5, 50)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        lines.close()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0
    print(f"kills caught {seen} (window {window * 1000:.1f} ms)")
    # The kills landed at different moments: both versions were caught on disk.
    assert seen["small"] > 0
    assert seen["big"] > 0
