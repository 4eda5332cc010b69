"""Plugin logs: parsing every format a plugin writes, redaction, ring, rotation, streams, search."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import stat
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from waiting import wait_until

from plughost.errors import ValidationError
from plughost.events import EVENT_PROCESS_LOG, EventBus
from plughost.logs import (
    MAX_LINE_BYTES,
    MAX_PATTERN_CHARS,
    REDACTED,
    LogEntry,
    LogSearchTimeoutError,
    PluginLogManager,
    parse_log_line,
    sanitize_log_message,
)

ENTRY_KEYS = {"timestamp", "level", "message", "pluginID", "source", "fields"}


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def roundtrips(entry: LogEntry) -> None:
    """The entry must survive the trip through the event bus and the log file."""
    data = entry.to_dict()
    assert set(data) == ENTRY_KEYS
    encoded = json.dumps(data, ensure_ascii=False).encode("utf-8")
    assert LogEntry.model_validate_json(encoded) == entry


# --- parsing -----------------------------------------------------------------------------


def test_hclog_json_line_with_fields_and_offset_timestamp() -> None:
    line = (
        '{"@level":"debug","@message":"listening","@timestamp":"2024-05-01T10:20:30.123456+02:00",'
        '"@module":"plugin.k8s","port":8080,"tags":["a"]}\n'
    )
    entry = parse_log_line(line, "k8s")
    assert entry.level == "debug"
    assert entry.message == "listening"
    assert entry.timestamp == utc(2024, 5, 1, 8, 20, 30, 123456)
    assert entry.timestamp.tzinfo is UTC
    assert entry.plugin_id == "k8s"
    assert entry.source == "stderr"
    assert entry.fields == {"@module": "plugin.k8s", "port": 8080, "tags": ["a"]}
    data = entry.to_dict()
    assert data["pluginID"] == "k8s"
    assert data["timestamp"].startswith("2024-05-01T08:20:30.123456")
    roundtrips(entry)


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-05-01T10:20:30.123456Z", utc(2024, 5, 1, 10, 20, 30, 123456)),
        ("2024-01-02T15:04:05.000000Z", utc(2024, 1, 2, 15, 4, 5)),
        ("2024-05-01T10:20:30.123456789Z", utc(2024, 5, 1, 10, 20, 30, 123456)),
        ("2024-05-01T10:20:30.123-0700", utc(2024, 5, 1, 17, 20, 30, 123000)),
        ("2024-05-01T10:20:30", utc(2024, 5, 1, 10, 20, 30)),
    ],
)
def test_hclog_timestamps_become_utc(stamp: str, expected: datetime) -> None:
    line = json.dumps({"@level": "info", "@message": "m", "@timestamp": stamp})
    assert parse_log_line(line, "p").timestamp == expected


def test_json_line_without_or_with_bad_timestamp_gets_now() -> None:
    before = datetime.now(UTC)
    for line in ('{"@level":"warn","@message":"x"}', '{"@message":"x","@timestamp":"yesterday"}'):
        entry = parse_log_line(line, "p")
        assert before <= entry.timestamp <= datetime.now(UTC)
        assert entry.fields == {}


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        *[("trace", "trace"), ("DEBUG", "debug"), ("info", "info"), ("warn", "warn")],
        *[("WARNING", "warn"), ("error", "error"), ("fatal", "error"), ("bogus", "info")],
    ],
)
def test_json_levels_are_normalised(level: str, expected: str) -> None:
    assert parse_log_line(json.dumps({"@level": level, "@message": "m"}), "p").level == expected


def test_slog_and_zap_style_json() -> None:
    slog = parse_log_line('{"time":"2024-05-01T10:20:30Z","level":"WARN","msg":"slow","n":1}', "p")
    assert (slog.level, slog.message, slog.fields) == ("warn", "slow", {"n": 1})
    assert slog.timestamp == utc(2024, 5, 1, 10, 20, 30)
    zap = parse_log_line('{"level":"error","ts":1714558830.5,"msg":"bad"}', "p")
    assert (zap.level, zap.message) == ("error", "bad")
    assert zap.timestamp == datetime.fromtimestamp(1714558830.5, UTC)


@pytest.mark.parametrize("line", ['{"a": 1}', "[1, 2]", '{"@level": "error"', "{}"])
def test_json_that_is_not_a_log_line_is_plain_text(line: str) -> None:
    entry = parse_log_line(line, "p")
    assert (entry.level, entry.message, entry.fields) == ("info", line, {})


@pytest.mark.parametrize(
    ("line", "level", "message"),
    [
        ("[DEBUG] cache warm", "debug", "cache warm"),
        ("[INFO] started", "info", "started"),
        ("[WARN] slow call", "warn", "slow call"),
        ("[ERROR] boom", "error", "boom"),
        ("[TRACE] tick", "trace", "tick"),
        ("ERROR:root:connection refused", "error", "root:connection refused"),
        ("WARNING:plugin.sync:retrying", "warn", "plugin.sync:retrying"),
        ("DEBUG:x:y", "debug", "x:y"),
        ("CRITICAL:x:dead", "error", "x:dead"),
        ("2024/05/01 10:20:30 [ERROR] go log", "error", "2024/05/01 10:20:30 [ERROR] go log"),
        ('time=2024-05-01T10:20:30Z level=error msg="db down"', "error", None),
        ("ts=1 lvl=warn msg=hot", "warn", None),
        ("panic: runtime error: index out of range [3] with length 2", "error", None),
        ("goroutine 1 [running]:", "error", None),
        ("fatal error: all goroutines are asleep - deadlock!", "error", None),
        ("Traceback (most recent call last):", "error", None),
        ("just some output", "info", None),
        ("", "info", None),
    ],
)
def test_plain_text_levels(line: str, level: str, message: str | None) -> None:
    entry = parse_log_line(line, "p")
    assert entry.level == level
    assert entry.message == (line if message is None else message)
    assert entry.fields == {}


def test_hclog_text_format_timestamp_and_level() -> None:
    entry = parse_log_line("2024-05-01T10:20:30.123+0200 [INFO]  plugin.x: started\r\n", "p")
    assert (entry.level, entry.message) == ("info", "plugin.x: started")
    assert entry.timestamp == utc(2024, 5, 1, 8, 20, 30, 123000)


def test_stdout_defaults_to_info_and_line_endings_and_colours_are_stripped() -> None:
    entry = parse_log_line("\x1b[31m[ERROR]\x1b[0m red\r\n\n", "p", "stdout")
    assert (entry.source, entry.level, entry.message) == ("stdout", "error", "red")
    assert parse_log_line("hello\n", "p", "stdout").level == "info"


@pytest.mark.parametrize(
    "junk",
    [
        b"\xff\xfe\x00\x01binary\x80",
        "lone \ud800 surrogate",
        '{"@message": "\\ud800", "k\\udfff": "\\udc00"}',
        '{"@message": NaN, "x": Infinity}',
        '{"@message": "x", "n": ' + "9" * 5000 + "}",
        "[" * 100_000,
        "{" + '"a":{' * 50_000,
        '{"@message": {"nested": [1, 2]}, "@level": 3}',
        "\x00\x07\x1b[999;999H\x1b]0;title\x07",
    ],
)
def test_junk_never_raises_and_stays_serialisable(junk: str | bytes) -> None:
    entry = parse_log_line(junk, "p")
    roundtrips(entry)


def test_huge_lines_are_cut_to_16_kib_with_a_note_of_what_was_cut() -> None:
    for line in ("x" * 200_000, "é" * 100_000, json.dumps({"@message": "y" * 300_000})):
        entry = parse_log_line(line, "p")
        assert len(entry.message.encode()) <= MAX_LINE_BYTES
        note = re.search(r"…\[cut ([\d,]+) bytes\]$", entry.message)
        assert note, entry.message[-60:]
        kept = len(entry.message[: note.start()].encode())
        assert kept + int(note.group(1).replace(",", "")) == len(line.encode())
        roundtrips(entry)
    entry = parse_log_line(b"z" * 20_000_000, "p")
    assert len(entry.message.encode()) <= MAX_LINE_BYTES
    assert entry.message.startswith("zzz") and "cut 19,98" in entry.message
    short = "s" * (MAX_LINE_BYTES - 10)
    assert parse_log_line(short, "p").message == short  # what fits is kept whole


def test_one_huge_line_costs_little_and_its_secrets_are_still_redacted(tmp_path: Path) -> None:
    mgr = PluginLogManager(tmp_path / "logs")
    line = "password=hunter2 " + "(a+)+ " * 170_000  # 1 MiB: the largest line a pipe hands over
    started = time.perf_counter()
    entry = mgr.write("p", line)
    assert time.perf_counter() - started < 0.5
    assert "hunter2" not in entry.message and entry.message.startswith("password=[REDACTED] (a+)+")
    mgr.close_all()


@given(st.one_of(st.text(), st.binary(), st.text(alphabet='{}[]":,@levmsag\\u0d8 ')))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_parse_never_raises(line: str | bytes) -> None:
    entry = parse_log_line(line, "p")
    assert entry.level in {"trace", "debug", "info", "warn", "error"}
    json.dumps(entry.to_dict(), ensure_ascii=False).encode("utf-8")


# --- redaction ---------------------------------------------------------------------------

B64 = base64.b64encode(bytes(range(40))).decode()
HEX = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=[REDACTED]"),
        ("login user=bob PASSWORD=hunter2 ok", "login user=bob PASSWORD=[REDACTED] ok"),
        ("user=bob password=hunter2 done", "user=bob password=[REDACTED] done"),
        ("password=hunter2, user=bob", "password=[REDACTED], user=bob"),
        ("token=abc;user=bob", "token=[REDACTED];user=bob"),
        ("(password=hunter2) next", "(password=[REDACTED]) next"),
        ("password=hun,ter2 ok", "password=[REDACTED] ok"),  # no "name=" after the comma
        ("api_key=abc123&x=1", "api_key=[REDACTED]&x=1"),
        ('{\\"token\\":\\"abc\\",\\"n\\":1}', '{\\"token\\":\\"[REDACTED]\\",\\"n\\":1}'),
        ("AUTH_TOKEN=xyz", "AUTH_TOKEN=[REDACTED]"),
        ("client_secret: s3cr3t", "client_secret: [REDACTED]"),
        ("credential = 'a b c' done", "credential = '[REDACTED]' done"),
        ('{"token":"abc","user":"bob"}', '{"token":"[REDACTED]","user":"bob"}'),
        ('{"Password": "p\\"w", "n": 1}', '{"Password": "[REDACTED]", "n": 1}'),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer [REDACTED]"),
        ("Authorization: Bearer abc, retrying", "Authorization: Bearer [REDACTED], retrying"),
        ("calling with bearer eyJhbGciOi", "calling with bearer [REDACTED]"),
        (f"blob {B64} end", f"blob {REDACTED} end"),
        (f"sha {HEX}!", f"sha {REDACTED}!"),
        ("plugin started on port 8080 after 12ms", "plugin started on port 8080 after 12ms"),
        ("short hex deadbeef and 12345", "short hex deadbeef and 12345"),
    ],
)
def test_sanitize_cases(text: str, expected: str) -> None:
    assert sanitize_log_message(text) == expected
    assert sanitize_log_message(expected) == expected


FRAGMENTS = st.sampled_from(
    [
        *("token", "Password", "api_key", "AUTH", "secret", "bearer ", "Bearer", "credential"),
        *("=", ":", ": ", " = ", '"', "'", "\\", '\\"', " ", "\n", "[REDACTED]", "{", "}", ","),
        *("A" * 20, "0f" * 10, "+/", "==", "basic ", "x", "-", "."),
    ]
)
TEXTISH = st.one_of(
    st.text(),
    st.lists(st.one_of(FRAGMENTS, st.text(max_size=3)), max_size=30).map("".join),
)


@given(TEXTISH)
@settings(max_examples=1000)
def test_sanitize_never_raises_and_is_idempotent(text: str) -> None:
    once = sanitize_log_message(text)
    assert sanitize_log_message(once) == once


SECRET = st.text(
    alphabet=st.characters(
        categories=("L", "N", "P", "S"), exclude_characters="[]", max_codepoint=0x2FF
    ),
    min_size=6,
    max_size=40,
).map(lambda s: "S3cr" + s)
KEYS = st.sampled_from(
    [
        *("token", "password", "secret", "key", "auth", "credential", "bearer", "api_key"),
        *("AUTH_TOKEN", "db.Password", "clientSecret", "X-Api-Key", "aws_access_key_id"),
    ]
)
FORMS = st.sampled_from(
    [
        *("{k}={s}", "{k}: {s}", "{k} = {s}", "{k}:{s}", "{k}='{s}'", '{k}="{s}"'),
        *("Bearer {s}", "Authorization: Bearer {s}", "Authorization: Basic {s}", "{json}"),
    ]
)


@given(KEYS, FORMS, SECRET, st.text(max_size=20), st.text(max_size=20))
@settings(max_examples=500)
def test_embedded_secrets_never_survive(
    key: str, form: str, secret: str, before: str, after: str
) -> None:
    assume(not any(q in secret for q in "'\"") or form in ("{k}={s}", "{k}: {s}", "{json}"))
    body = form.format(k=key, s=secret, json=json.dumps({key: secret}))
    out = sanitize_log_message(f"{before} {body}\n{after}")
    assert secret not in out
    assert REDACTED in out


# Text that can hold no secret: no keyword can be spelled without a, b, c, e, k, p, r, s or t,
# and words of at most 10 characters make no long base64 or hex run.
PLAIN = st.lists(
    st.text(alphabet="dfghijlmnoquvwxyzDFGHIJLMNOQUVWXYZ0123456789.!?-/()=:", max_size=10),
    max_size=6,
).map(" ".join)
UNQUOTED_SECRET = st.text(
    alphabet=st.characters(categories=("L", "N"), max_codepoint=0x2FF)
    | st.sampled_from("!#$%*+-./:<=?@^_|~"),
    min_size=1,
    max_size=30,
)
QUOTED_SECRET = st.text(
    alphabet=st.characters(categories=("L", "N", "Zs"), max_codepoint=0x2FF)
    | st.sampled_from("!#$%&*+,-./:;<=>?@^_|~()[]{}"),
    min_size=1,
    max_size=30,
)
AROUND = [  # (what the plugin wrote, what the log keeps): only the secret differs
    ("{k}={s} ", "{k}={r} "),
    ("{k}: {s}, ", "{k}: {r}, "),
    ("({k}={s}) ", "({k}={r}) "),
    ("{k}={s};next=1 ", "{k}={r};next=1 "),
    ("{k}={s}&x=1 ", "{k}={r}&x=1 "),
    ('{{"{k}": "{q}", "n": 1}} ', '{{"{k}": "{r}", "n": 1}} '),
    ("{k}='{q}' ", "{k}='{r}' "),
    ("Authorization: Bearer {s}, ", "Authorization: Bearer {r}, "),
]


@given(KEYS, st.sampled_from(AROUND), UNQUOTED_SECRET, QUOTED_SECRET, PLAIN, PLAIN)
@settings(max_examples=500)
def test_the_text_around_a_secret_is_kept(
    key: str, around: tuple[str, str], secret: str, quoted: str, before: str, after: str
) -> None:
    written, kept = around
    line = before + " " + written.format(k=key, s=secret, q=quoted) + after
    expected = before + " " + kept.format(k=key, r=REDACTED) + after
    assert sanitize_log_message(line) == expected


@given(
    st.binary(min_size=30, max_size=120).map(lambda b: base64.b64encode(b).decode())
    | st.binary(min_size=16, max_size=64).map(bytes.hex)
    | st.binary(min_size=16, max_size=64).map(lambda b: b.hex().upper()),
    st.text(max_size=20),
    st.text(max_size=20),
)
def test_encoded_secrets_never_survive(secret: str, before: str, after: str) -> None:
    out = sanitize_log_message(f"{before} {secret} {after}")
    assert secret not in out
    assert REDACTED in out


# --- the manager -------------------------------------------------------------------------


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def file_entries(path: Path) -> list[LogEntry]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as file:
        return [LogEntry.model_validate_json(line) for line in file]


def test_ring_buffer_keeps_the_last_ring_size_entries(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, ring_size=50)
    for i in range(120):
        mgr.write("p", f"line {i}")
    entries = mgr.get_logs("p", n=1000)
    assert [e.message for e in entries] == [f"line {i}" for i in range(70, 120)]
    assert [e.message for e in mgr.get_logs("p", 3)] == ["line 117", "line 118", "line 119"]
    assert mgr.get_logs("p", 0) == []
    assert mgr.get_logs("unknown") == []
    mgr.close_all()


def test_rotation_keeps_exactly_backups_gzip_files(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, max_bytes=2000, backups=5)
    for i in range(400):
        mgr.write("p", f"[INFO] message number {i:04d} " + "x" * 100)
    mgr.close_all()
    names = sorted(path.name for path in logs_dir.iterdir())
    assert names == ["p.log"] + [f"p.log.{i}.gz" for i in range(1, 6)]
    chunks = [file_entries(logs_dir / f"p.log.{i}.gz") for i in range(5, 0, -1)]
    chunks.append(file_entries(logs_dir / "p.log"))
    numbers = [int(e.message.split()[2]) for chunk in chunks for e in chunk]
    assert all(chunks) and numbers == list(range(numbers[0], 400))  # oldest to newest, no gap
    assert numbers[0] > 0  # older lines really were rotated away
    for path in logs_dir.iterdir():
        size = (
            len(gzip.decompress(path.read_bytes())) if path.suffix == ".gz" else path.stat().st_size
        )
        assert size <= 2000


def test_zero_backups_truncates_instead(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, max_bytes=2000, backups=0)
    for i in range(100):
        mgr.write("p", f"line {i} " + "y" * 100)
    mgr.close_all()
    assert [path.name for path in logs_dir.iterdir()] == ["p.log"]
    entries = file_entries(logs_dir / "p.log")
    assert entries and entries[-1].message.startswith("line 99 ")
    assert (logs_dir / "p.log").stat().st_size <= 2000


def test_search_with_regex_and_limit(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    for i in range(10):
        mgr.write("p", f"request {i} took {i * 10}ms")
    mgr.write("p", '{"@level":"error","@message":"failed","code":"E42"}')
    assert [e.message for e in mgr.search_logs("p", r"took [5-9]\d?ms")] == [
        f"request {i} took {i * 10}ms" for i in range(5, 10)
    ]
    assert [e.message for e in mgr.search_logs("p", r"request \d", n=2)] == [
        "request 8 took 80ms",
        "request 9 took 90ms",
    ]
    assert [e.message for e in mgr.search_logs("p", "code=E4")] == ["failed"]  # fields count
    assert mgr.search_logs("p", "nothing") == []
    assert mgr.search_logs("other", ".*") == []
    mgr.close_all()


def test_bad_regex_is_a_validation_error(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    mgr.write("p", "x")
    with pytest.raises(ValidationError) as info:
        mgr.search_logs("p", "(unclosed")
    assert "(unclosed" in str(info.value) and "missing )" in str(info.value)
    assert info.value.plugin_id == "p"
    mgr.close_all()


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(?=x)y", "invalid perl operator"),  # a lookaround: RE2 has none
        (r"(a)\1", "invalid escape sequence"),  # nor backreferences
        ("x" * (MAX_PATTERN_CHARS + 1), "more than"),
    ],
)
def test_patterns_re2_refuses_and_overlong_ones_are_validation_errors(
    logs_dir: Path, pattern: str, why: str
) -> None:
    mgr = PluginLogManager(logs_dir)
    mgr.write("p", "x")
    with pytest.raises(ValidationError) as info:
        mgr.search_logs("p", pattern)
    assert why in info.value.detail and info.value.status == 400
    mgr.close_all()


def test_a_catastrophic_pattern_runs_in_linear_time(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, ring_size=100)
    line = "." * 10_000 + "!"  # Python's re needs about a second for 22 of these dots
    for _ in range(100):
        assert mgr.write("p", line).message == line
    started = time.perf_counter()
    assert mgr.search_logs("p", r"(\.+)+$") == []
    assert time.perf_counter() - started < 1.0
    mgr.close_all()


def test_a_search_that_runs_out_of_budget_says_so(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, ring_size=10_000)
    for i in range(10_000):
        mgr.host_log("p", "info", f"line {i}")
    with pytest.raises(LogSearchTimeoutError) as info:
        mgr.search_logs("p", r"line \d+$", budget=0.0)
    error = info.value
    assert (error.type, error.status, error.plugin_id) == ("log_search_timeout", 422, "p")
    assert "took more than 0 s; stopped after 1 of 10000 lines" in error.detail
    assert len(mgr.search_logs("p", r"line \d+$")) == 10_000  # with the real budget: all of it
    mgr.close_all()


def test_secrets_are_redacted_before_the_file_the_ring_and_the_bus_see_them(
    logs_dir: Path, bus: EventBus
) -> None:
    got: list[dict[str, object]] = []
    bus.subscribe(EVENT_PROCESS_LOG, lambda event: got.append(event.payload))
    mgr = PluginLogManager(logs_dir, bus)
    mgr.write("p", "[INFO] connecting user=bob password=hunter2 done")
    mgr.write("p", '{"@message": "login", "api_key": "k-123456", "db": {"token": "t-987"}}')
    mgr.write("p", '{"@message": "ok", "count": 3, "note": "secret=s3cr3t here", "auth": true}')
    mgr.host_log("p", "error", "last stderr lines: Authorization: Bearer abc.def")
    mgr.close_all()
    wait_until(lambda: len(got) == 4, timeout=5.0, message="the four log events")
    on_disk = (logs_dir / "p.log").read_text()
    everywhere = [on_disk, json.dumps([e.to_dict() for e in mgr.get_logs("p")]), json.dumps(got)]
    for text in everywhere:
        for secret in ("hunter2", "k-123456", "t-987", "s3cr3t", "abc.def"):
            assert secret not in text
    first, second, third, note = file_entries(logs_dir / "p.log")
    assert first.message == "connecting user=bob password=[REDACTED] done"
    assert second.fields == {"api_key": REDACTED, "db": {"token": REDACTED}}
    assert third.fields == {"count": 3, "note": "secret=[REDACTED] here", "auth": True}
    assert note.message == "last stderr lines: Authorization: Bearer [REDACTED]"


def test_log_files_are_private_whatever_the_umask(logs_dir: Path) -> None:
    old = logs_dir / "p.log"
    logs_dir.mkdir()
    logs_dir.chmod(0o755)
    old.write_text("")
    old.chmod(0o644)  # an older host's file
    mask = os.umask(0)
    try:
        mgr = PluginLogManager(logs_dir, max_bytes=2000, backups=2)
        for i in range(100):
            mgr.write("p", f"line {i} " + "y" * 100)
        mgr.write("q", "a new file")
        mgr.close_all()
    finally:
        os.umask(mask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in logs_dir.iterdir()}
    assert set(modes) == {"p.log", "p.log.1.gz", "p.log.2.gz", "q.log"}
    assert set(modes.values()) == {0o600}
    assert stat.S_IMODE(logs_dir.stat().st_mode) == 0o711  # others may pass, not list or write


async def test_bus_event_has_the_exact_name_and_entry_payload(
    logs_dir: Path, bus: EventBus
) -> None:
    mgr = PluginLogManager(logs_dir, bus)
    async with bus.stream("plugin/process/log") as stream:
        entry = mgr.write("p", '{"@level":"warn","@message":"hot","temp":90}', "stderr")
        event = await stream.next(timeout=5)
    assert event.name == EVENT_PROCESS_LOG == "plugin/process/log"
    assert set(event.payload) == ENTRY_KEYS
    assert event.payload == entry.to_dict()
    assert event.payload["pluginID"] == "p"
    assert (event.payload["level"], event.payload["message"]) == ("warn", "hot")
    assert event.payload["fields"] == {"temp": 90}
    json.dumps(event.payload)
    mgr.close_all()


async def test_subscriber_receives_entries_written_from_other_threads(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    async with mgr.subscribe("p") as mine, mgr.subscribe() as everyone:

        def writer() -> None:
            for i in range(100):
                mgr.write("p", f"line {i}")
                mgr.write("q", f"other {i}")

        thread = threading.Thread(target=writer)
        thread.start()
        got = [(await mine.next(timeout=5)).message for _ in range(100)]
        everything = [await everyone.next(timeout=5) for _ in range(200)]
        await asyncio.to_thread(thread.join)
    assert got == [f"line {i}" for i in range(100)]
    assert [e.message for e in everything if e.plugin_id == "q"] == [
        f"other {i}" for i in range(100)
    ]
    assert mine.closed and everyone.closed and mine.dropped == 0
    mgr.write("p", "after close")  # no subscriber left to feed
    assert [e async for e in mine] == []
    mgr.close_all()


async def test_slow_subscriber_drops_and_counts_then_ends_cleanly(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    sub = mgr.subscribe("p", maxsize=5)
    for i in range(20):
        mgr.write("p", f"line {i}")
    assert sub.dropped == 15
    sub.close()
    assert [e.message async for e in sub] == [f"line {i}" for i in range(5)]
    mgr.close_all()


async def test_close_all_ends_subscriptions(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    sub = mgr.subscribe(None)
    reader = asyncio.create_task(anext(sub, None))
    await asyncio.to_thread(mgr.close_all)
    assert await asyncio.wait_for(reader, 5) is None


def test_eight_threads_writing_at_once(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, ring_size=10_000)
    start = threading.Barrier(8)

    def writer(t: int) -> None:
        start.wait()
        for i in range(1000):
            mgr.write("p", f"t{t} {i}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mgr.close_all()
    ring = [e.message for e in mgr.get_logs("p", 10_000)]
    on_disk = [e.message for e in file_entries(logs_dir / "p.log")]
    assert len(ring) == 8000 and on_disk == ring  # same lines, same order
    for t in range(8):
        assert [m for m in ring if m.startswith(f"t{t} ")] == [f"t{t} {i}" for i in range(1000)]


def test_threads_with_rotation_lose_nothing(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, ring_size=100, max_bytes=50_000, backups=50)
    threads = [
        threading.Thread(target=lambda t=t: [mgr.write("p", f"t{t} {i}") for i in range(500)])
        for t in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    mgr.close_all()
    lines = [e.message for path in logs_dir.iterdir() for e in file_entries(path)]
    assert len(lines) == 4000 and len(set(lines)) == 4000
    assert len(mgr.get_logs("p", 1000)) == 100


def test_host_log_and_tail_lines_for_crash_reports(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    mgr.write("p", "[INFO] connecting with password=hunter2")
    mgr.write("p", '{"@level":"error","@message":"auth failed","api_key":"k-123"}')
    note = mgr.host_log("p", "WARNING", "plugin process exited unexpectedly")
    assert (note.source, note.level) == ("host", "warn")
    lines = mgr.tail_lines("p", 2)
    assert len(lines) == 2
    assert "[ERROR] auth failed api_key=[REDACTED]" in lines[0]
    assert lines[1].endswith("[WARN] plugin process exited unexpectedly")
    assert "hunter2" not in "".join(mgr.tail_lines("p"))
    mgr.close_all()


def test_read_file_logs_after_a_restart(logs_dir: Path) -> None:
    first = PluginLogManager(logs_dir)
    written = [first.write("p", f"[WARN] line {i}") for i in range(30)]
    written.append(first.host_log("p", "error", "crashed"))
    first.close_all()
    with (logs_dir / "p.log").open("a") as file:
        file.write('torn {"@level"\n')
    second = PluginLogManager(logs_dir)
    assert second.get_logs("p") == []
    assert second.read_file_logs("p", 10) == written[-10:]
    assert second.read_file_logs("p", 0) == []
    assert second.read_file_logs("never", 10) == []


def test_close_then_write_appends_to_the_same_file(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    mgr.write("p", "one")
    mgr.close("p")
    mgr.close("never-written")
    mgr.write("p", "two")
    mgr.close_all()
    assert [e.message for e in file_entries(logs_dir / "p.log")] == ["one", "two"]
    assert [e.message for e in mgr.get_logs("p")] == ["one", "two"]


def test_remove_deletes_only_that_plugins_files(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir, max_bytes=1500, backups=3)
    for plugin_id in ("p", "p.log", "p2"):
        for i in range(60):
            mgr.write(plugin_id, f"line {i} " + "z" * 60)
    assert (logs_dir / "p.log.3.gz").exists()
    mgr.remove("p")
    assert mgr.get_logs("p") == []
    remaining = sorted(path.name for path in logs_dir.iterdir())
    assert not [name for name in remaining if name == "p.log" or name.startswith("p.log.1")]
    assert "p.log.log" in remaining and "p2.log" in remaining
    mgr.write("p", "reinstalled")
    mgr.close_all()
    assert [e.message for e in file_entries(logs_dir / "p.log")] == ["reinstalled"]


@pytest.mark.parametrize("bad", ["../evil", "Upper", "", "a/b", ".."])
def test_unsafe_plugin_ids_never_touch_the_disk(logs_dir: Path, bad: str) -> None:
    mgr = PluginLogManager(logs_dir)
    with pytest.raises(ValidationError):
        mgr.write(bad, "x")
    with pytest.raises(ValidationError):
        mgr.remove(bad)
    assert not logs_dir.exists()


def test_write_accepts_junk_bytes(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    entry = mgr.write("p", b"\xff\xfe\x00 \xc3\x28 ok\n", "stdout")
    assert entry.source == "stdout" and entry.message.endswith(" ok")
    mgr.close_all()
    assert file_entries(logs_dir / "p.log") == [entry]


# --- continuation lines: a traceback keeps the level of its first line ---------------------
PY_TRACEBACK = [
    "[ERROR] startup check failed",
    "Traceback (most recent call last):",
    '  File "/src/plugin.py", line 40, in main',
    "    1 / 0",
    "    ~~^~~",
    "ZeroDivisionError: division by zero",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "/src/plugin.py", line 42, in main',
    '    raise RuntimeError("[INFO] not a level: code")',
    "app.errors.StartError: could not start",
]


def test_traceback_lines_keep_the_level_of_the_line_that_starts_them(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    for line in [*PY_TRACEBACK, "serving on /tmp/sock"]:
        mgr.write("p", line)
    entries = mgr.get_logs("p", 100)
    assert [e.level for e in entries[:-1]] == ["error"] * len(PY_TRACEBACK)
    assert entries[-1].level == "info"  # ordinary output after the traceback is not an error
    mgr.close_all()
    assert [e.level for e in file_entries(logs_dir / "p.log")] == [e.level for e in entries]


def test_go_panic_frames_are_errors_and_each_stream_continues_on_its_own(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    panic = [
        "panic: runtime error: index out of range [3] with length 2",
        "",
        "goroutine 1 [running]:",
        "main.main()",
        "\t/src/main.go:12 +0x1d",
        "created by main.start in goroutine 1",
        "exit status 2",
    ]
    for line in panic:
        mgr.write("p", line, "stderr")
        mgr.write("p", "  indented stdout line", "stdout")  # another stream: not continued
    entries = mgr.get_logs("p", 100)
    assert [e.level for e in entries if e.source == "stderr"] == ["error"] * len(panic)
    assert {e.level for e in entries if e.source == "stdout"} == {"info"}
    mgr.close_all()


def test_a_warning_continues_as_a_warning_and_a_new_level_ends_it(logs_dir: Path) -> None:
    mgr = PluginLogManager(logs_dir)
    lines = ["[WARN] slow call:", "    took 3 s", "[INFO] done", "    detail", "plain", "  more"]
    for line in lines:
        mgr.write("p", line)
    levels = [e.level for e in mgr.get_logs("p", 10)]
    assert levels == ["warn", "warn", "info", "info", "info", "info"]
    mgr.close_all()


def test_continuation_is_capped_so_a_plugin_cannot_keep_everything_error(logs_dir: Path) -> None:
    from plughost.logs import CONTINUATION_LINES

    mgr = PluginLogManager(logs_dir, ring_size=10_000)
    mgr.write("p", "[ERROR] boom")
    for i in range(CONTINUATION_LINES + 50):
        mgr.write("p", f"    line {i}")
    levels = [e.level for e in mgr.get_logs("p", 10_000)]
    assert levels[: CONTINUATION_LINES + 1] == ["error"] * (CONTINUATION_LINES + 1)
    assert set(levels[CONTINUATION_LINES + 1 :]) == {"info"}
    mgr.close_all()
