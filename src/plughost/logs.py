"""Per-plugin logs: parse, keep, rotate, search, stream and redact.

A plugin's stderr (and its stdout after the handshake) is the user's only view
into it, so every line is kept twice (docs/protocol.md, "Stdio and logs"): in a ring
buffer for the UI and crash reports, and in a size-rotated file under
``<root>/logs`` (gzip backups) that outlives the host. Whatever the plugin
wrote (go-plugin/hclog JSON, Python logging, logfmt, a Go panic, plain text)
becomes one ``LogEntry``. Parsing never raises: a plugin must not be able to
break its own supervision by printing junk. A line with no level of its own that
continues the line before it (a traceback's frames, indented lines) takes that
line's level, for a bounded number of lines. Writers are gRPC reader threads and
asyncio tasks alike, so the manager is thread-safe and hands entries to asyncio
subscribers with ``call_soon_threadsafe``.

Secrets are redacted from every entry (``sanitize_log_message``, docs/concepts.md,
"Logs") before it is kept anywhere: the file, the ring, the API and crash reports
only ever see the redacted text. A line is cut to ``MAX_LINE_BYTES`` first, so
neither parsing nor redacting one huge line stalls the event loop that reads it.
Searches (``search_entries``: the API's and the CLI's) use RE2, whose time is linear
in the text whatever the pattern, within a time budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import json
import logging
import logging.handlers
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .errors import PlughostError, ValidationError
from .events import EVENT_PROCESS_LOG, AsyncStream, EventBus, Fanout
from .fsutil import PRIVATE_FILE, private_dir, tighten_fd
from .metadata import validate_plugin_id
from .textcap import cap

__all__ = [
    "MAX_LINE_BYTES",
    "MAX_PATTERN_CHARS",
    "REDACTED",
    "SEARCH_BUDGET",
    "LogEntry",
    "LogLevel",
    "LogSearchTimeoutError",
    "LogSource",
    "LogSubscription",
    "PluginLogManager",
    "parse_log_line",
    "sanitize_log_message",
    "search_entries",
]

log = logging.getLogger(__name__)

LogLevel = Literal["trace", "debug", "info", "warn", "error"]
LogSource = Literal["stdout", "stderr", "host"]
MAX_LINE_BYTES = 16 * 1024
"""A longer line keeps this many UTF-8 bytes and a note of how many were cut."""
MAX_PATTERN_CHARS = 1000
"""The longest search pattern accepted."""
SEARCH_BUDGET = 2.0
"""Seconds one search may take before it stops with LogSearchTimeoutError."""
REDACTED = "[REDACTED]"
_SOURCES = frozenset({"stdout", "stderr", "host"})
_LEVELS: dict[str, LogLevel] = {
    "trace": "trace", "debug": "debug", "info": "info", "notice": "info",
    "warn": "warn", "warning": "warn", "error": "error", "err": "error",
    "fatal": "error", "panic": "error", "crit": "error", "critical": "error",
}  # fmt: skip
_JSON_KEYS = {  # hclog first, then slog/logrus/zap spellings
    "level": ("@level", "level", "lvl", "severity"),
    "message": ("@message", "msg", "message"),
    "time": ("@timestamp", "time", "timestamp", "ts"),
}
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)\s+")
_BRACKET = re.compile(r"\[(trace|debug|info|notice|warn|warning|error|err|fatal|crit|critical)\]\s*", re.I)  # fmt: skip
_COLON = re.compile(r"(trace|debug|info|warn|warning|error|fatal|critical):\s*", re.I)
_LOGFMT = re.compile(r"(?:^|\s)(?:level|lvl|severity)=\"?(\w+)", re.I)
_CRASH = re.compile(r"panic: |fatal error: |goroutine \d+ \[|Traceback \(most recent call last\)")
# What follows a crash header with no level of its own: Python's exception line
# ("ValueError: boom", "pkg.Error"), the line chaining the next traceback, Go's frames.
_PY_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*(?::.*)?")
_PY_CHAIN = re.compile(
    r"During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:"
)
_GO_FRAME = re.compile(
    r"[\w./*()\[\]{}-]+\(.*\)|created by \S+(?: in goroutine \d+)?"
    r"|\[signal .*\]|exit status \d+"
)
CONTINUATION_LINES = 200
"""At most this many lines after a line with a level take its level (a traceback's
frames), so a plugin cannot keep everything "error" by printing indented lines."""
CONTINUATION_GAP = 1.0
"""Seconds: a line written later than this after the previous one continues nothing."""
_SECRET_NAME = r"(?:token|passw(?:or)?d|secret|key|auth|credential|bearer)"
# An unquoted value ends at whitespace, or at one of , ; & ) ] } > " ' that comes before
# whitespace, the end, another of them or the next "name=": "user=bob, password=x; y=1"
# keeps ", " and "; y=1". Elsewhere those characters are taken as part of the secret.
_STOP = r"""[\s,;&)\]}>"']"""
_UNQUOTED = rf"""(?:[^\s,;&)\]}}>"']|[,;&)\]}}>"'](?!{_STOP}|$|[\w.-]{{1,64}}[=:]))++"""
_VALUE = (
    rf"""(?P<value>{re.escape(REDACTED)}(?={_STOP}|$)"""  # already redacted: idempotent
    r"""|\\"(?:[^"\\\n]|\\[^"\n])*+(?:\\")?"""  # \"...\" inside a JSON string
    r"""|"(?:[^"\\\n]|\\.)*+"?|'[^'\n]*+'?"""
    rf"""|{_UNQUOTED})"""
)
_KEY_VALUE = re.compile(  # the key starts at the keyword, so "api_key" and "AUTH_TOKEN" are covered
    rf"""{_SECRET_NAME}[\w.-]{{0,64}}+(?:\\?["'])?\s*[:=]\s*(?:(?:bearer|basic|token)\s+)?"""
    + _VALUE,
    re.I,
)
_BEARER = re.compile(r"bearer\s+" + _VALUE, re.I)
_SECRET_FIELD = re.compile(_SECRET_NAME, re.I)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class LogEntry(BaseModel):
    """One parsed log line; ``to_dict()`` is the event payload and the file line."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    timestamp: Annotated[datetime, AfterValidator(_utc)]
    level: LogLevel
    message: str
    plugin_id: str = Field(alias="pluginID")
    source: LogSource = "stderr"
    fields: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")

    def text(self) -> str:
        """The message with its extra fields as ``key=value``, as hclog prints them."""
        extra = " ".join(f"{k}={v}" for k, v in self.fields.items() if not k.startswith("@"))
        return f"{self.message} {extra}" if extra else self.message

    def format(self) -> str:
        stamp = self.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"{stamp} [{self.level.upper()}] {self.text()}"


def _level(value: object, default: LogLevel = "info") -> LogLevel:
    return _LEVELS.get(str(value).strip().lower(), default)


def _clean(line: str | bytes) -> str:
    """Valid UTF-8 text, without the line ending or ANSI colours, cut to ``MAX_LINE_BYTES``."""
    if isinstance(line, bytes | bytearray):
        line = bytes(line).decode("utf-8", "replace")
    text = cap(str(line).rstrip("\r\n"), MAX_LINE_BYTES)
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates: "?"
    return _ANSI.sub("", text) if "\x1b" in text else text


def _parse_time(value: object) -> datetime | None:
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        return _utc(datetime.fromisoformat(str(value)))
    except (ValueError, OverflowError, OSError):
        return None


_Parsed = tuple[datetime | None, LogLevel | None, str, dict[str, Any]]
"""(timestamp, level or None when the line names none, message, fields)."""


def _parse_json(text: str) -> _Parsed | None:
    """hclog's ``@level``/``@message``/``@timestamp``; the other keys become ``fields``."""
    try:
        data = json.loads(text, parse_constant=str)  # NaN/Infinity stay strings: valid JSON out
        if "\\u" in text:  # "\ud800"-style escapes give lone surrogates, which nothing can encode
            data = json.loads(json.dumps(data, ensure_ascii=False).encode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or not any(k in data for k in _JSON_KEYS["message"]):
        return None
    found = [next((data.pop(k) for k in keys if k in data), None) for keys in _JSON_KEYS.values()]
    level, message, stamp = found
    message = message if isinstance(message, str) else json.dumps(message)
    return _parse_time(stamp), _level(level), message, data


def _parse_text(text: str) -> _Parsed:
    stamp = None
    if (match := _ISO_TIME.match(text)) and (stamp := _parse_time(match.group(1))):
        text = text[match.end() :]
    if match := _BRACKET.search(text, 0, 64):  # hclog's text format and most loggers
        message = text[match.end() :] if match.start() == 0 else text
        return stamp, _level(match.group(1)), message, {}
    if match := _COLON.match(text):  # Python logging's LEVEL:name:msg, "error: ..."
        return stamp, _level(match.group(1)), text[match.end() :], {}
    if _CRASH.match(text):
        return stamp, "error", text, {}
    match = _LOGFMT.search(text)
    return stamp, _level(match.group(1)) if match else None, text, {}


def parse_log_line(line: str | bytes, plugin_id: str, source: LogSource = "stderr") -> LogEntry:
    """Parse one line a plugin wrote; never raises, whatever the line holds."""
    return _parse_line(line, plugin_id, source)[0]


def _parse_line(line: str | bytes, plugin_id: str, source: LogSource) -> tuple[LogEntry, str, bool]:
    """(the entry, the cleaned text, whether the line has a level or timestamp of its own)."""
    src: LogSource = source if source in _SOURCES else "stderr"
    text = _clean(line)
    parsed: _Parsed = (None, None, text, {})
    with contextlib.suppress(Exception):  # a parser bug must not cost the line
        parsed = (_parse_json(text) if text.startswith("{") else None) or _parse_text(text)
    stamp, level, message, fields = parsed
    entry = LogEntry(
        timestamp=stamp or datetime.now(UTC),
        level=level or "info",
        message=message,
        plugin_id=plugin_id,
        source=src,
        fields=fields,
    )
    return entry, text, level is not None or stamp is not None


@dataclasses.dataclass
class _Continuation:
    """What the lines of one stream (a plugin's stderr, its stdout) are continuing."""

    level: LogLevel = "info"
    left: int = 0
    """Lines that may still take ``level``."""
    mode: Literal["plain", "trace", "tail"] = "plain"
    """plain: indented lines continue; trace (after a crash header): also blank lines,
    the exception line and frames; tail (after the exception line): blank lines,
    indented lines and the chaining line that starts the next traceback."""
    at: float = 0.0

    def next(self, entry: LogEntry, text: str, own: bool) -> LogEntry:
        now = time.monotonic()
        recent, self.at = now - self.at <= CONTINUATION_GAP, now
        if self.left > 0 and recent and self._continues(text, own):
            self.left -= 1
            if entry.level == self.level:
                return entry
            return entry.model_copy(update={"level": self.level})
        if own:  # a new record: the lines after it may continue it
            self.level, self.left = entry.level, CONTINUATION_LINES
            self.mode = "trace" if _CRASH.search(text, 0, 256) else "plain"
        else:
            self.level, self.left, self.mode = "info", 0, "plain"
        return entry

    def _continues(self, text: str, own: bool) -> bool:
        if text[:1] in (" ", "\t") and text.strip():
            return True  # indented: a frame, a code line, a wrapped message (whatever it says)
        if own:
            return False
        if self.mode == "plain":
            return False
        if not text.strip():
            return True  # between chained tracebacks, before a goroutine's header
        if _PY_CHAIN.fullmatch(text.strip()):
            self.mode = "trace"
            return True
        if self.mode == "trace" and _GO_FRAME.fullmatch(text):
            return True
        if self.mode == "trace" and _PY_EXCEPTION.fullmatch(text):
            self.mode = "tail"  # the traceback ends here, unless another is chained to it
            return True
        return False


def _redact_value(match: re.Match[str]) -> str:
    """The match with its value replaced, and the value's quotes kept."""
    value = match.group("value")
    head = match.group(0)[: match.start("value") - match.start()]
    for quote in ('\\"', '"', "'"):
        if value.startswith(quote):
            closed = len(value) >= 2 * len(quote) and value.endswith(quote)
            return head + quote + REDACTED + (quote if closed else "")
    return head + REDACTED


def sanitize_log_message(text: str) -> str:
    """Redact secrets (docs/concepts.md, "Logs"), keeping key names and the text around
    each secret; idempotent."""
    text = _KEY_VALUE.sub(_redact_value, text)
    text = _BEARER.sub(_redact_value, text)
    text = _BASE64.sub(REDACTED, text)
    return _HEX.sub(REDACTED, text)


def _redact_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON line's extra fields, redacted: the value of a field named like a secret
    (``token``, ``password``, ``api_key`` ...) whole, secrets inside other strings."""

    def redact(name: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: redact(str(k), v) for k, v in value.items()}
        if isinstance(value, list):
            return [redact(name, v) for v in value]
        if isinstance(value, bool) or value in ("", None):
            return value
        if _SECRET_FIELD.search(name):
            return REDACTED
        return sanitize_log_message(value) if isinstance(value, str) else value

    return {name: redact(name, value) for name, value in fields.items()}


def _redacted(entry: LogEntry) -> LogEntry:
    message = sanitize_log_message(entry.message)
    fields = _redact_fields(entry.fields) if entry.fields else entry.fields
    if message == entry.message and fields == entry.fields:
        return entry
    return entry.model_copy(update={"message": message, "fields": fields})


def _compile_search(pattern: str, plugin_id: str | None) -> Any:
    """``pattern`` compiled by RE2 (linear time whatever the pattern), or a ValidationError."""

    def invalid(why: str) -> ValidationError:
        return ValidationError(
            f"invalid log search pattern {cap(pattern, 200)!r}: {why}",
            title="Invalid search pattern",
            suggestions=[
                "check the regular expression; escape special characters with '\\'",
                "backreferences and lookarounds are not supported (RE2 syntax)",
            ],
            plugin_id=plugin_id,
        )

    if len(pattern) > MAX_PATTERN_CHARS:
        raise invalid(f"{len(pattern)} characters, more than {MAX_PATTERN_CHARS}")
    options = re2.Options()
    options.log_errors = False  # the error is ours to report, not RE2's to print on stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        why = exc.args[0] if exc.args else exc
        raise invalid(
            why.decode(errors="replace") if isinstance(why, bytes) else str(why)
        ) from None


class LogSearchTimeoutError(PlughostError):
    """A log search ran out of its time budget (``SEARCH_BUDGET``)."""

    type = "log_search_timeout"
    status = 422
    default_title = "Log search took too long"


E = TypeVar("E")


def search_entries(
    entries: Sequence[E],
    pattern: str,
    text: Callable[[E], str],
    *,
    plugin_id: str | None = None,
    budget: float = SEARCH_BUDGET,
) -> list[E]:
    """The ``entries`` whose ``text`` matches the RE2 ``pattern``, in order.

    The one log search, for the host's ring buffers and the CLI's reading of the
    files alike, so a pattern means the same, and costs the same, everywhere.
    Blocking for up to ``budget`` seconds. Raises ValidationError for a pattern
    RE2 refuses (or longer than ``MAX_PATTERN_CHARS``), LogSearchTimeoutError
    when the budget runs out.
    """
    regex = _compile_search(pattern, plugin_id)
    deadline = time.monotonic() + budget
    found = []
    for done, entry in enumerate(entries):
        if regex.search(text(entry)):
            found.append(entry)
        if time.monotonic() > deadline:
            where = f"the log of {plugin_id}" if plugin_id else "the log"
            raise LogSearchTimeoutError(
                f"searching {where} for {cap(pattern, 200)!r} took more than "
                f"{budget:g} s; stopped after {done + 1} of {len(entries)} lines",
                suggestions=["use a simpler pattern, or fewer lines (n=, level=)"],
                plugin_id=plugin_id,
            )
    return found


def _open_private(path: str, flags: int) -> int:
    """``os.open`` for a log file: 0600 whatever the umask, and an older looser file tightened."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        tighten_fd(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _gzip_rotate(source: str, dest: str) -> None:
    partial = dest + ".tmp"
    flags = os.O_WRONLY | os.O_TRUNC
    with (
        open(source, "rb") as src,
        open(_open_private(partial, flags), "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=raw) as dst,
    ):
        shutil.copyfileobj(src, dst)
    os.replace(partial, dest)
    os.remove(source)


class _GzipRotatingHandler(logging.handlers.RotatingFileHandler):
    """The stdlib's size rotation with ``<name>.N.gz`` backups; 0 backups truncates."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        super().__init__(
            path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self.namer = lambda name: name + ".gz"
        self.rotator = _gzip_rotate

    def _open(self) -> Any:
        fd = _open_private(self.baseFilename, os.O_WRONLY | os.O_APPEND)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
        elif self.stream:  # the stdlib would reopen and roll over on every line
            self.stream.seek(0)
            self.stream.truncate()


@dataclasses.dataclass(eq=False)
class _PluginLog:
    ring: deque[LogEntry]
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    handler: _GzipRotatingHandler | None = None
    removed: bool = False  # set by remove(): a late writer must not recreate the file
    continuations: dict[str, _Continuation] = dataclasses.field(default_factory=dict)
    """Per source (stdout, stderr): the level its next lines may continue."""

    def close_file(self, *, removed: bool = False) -> None:
        with self.lock:
            self.removed = self.removed or removed
            if self.handler is not None:
                self.handler.close()
                self.handler = None


LogSubscription = AsyncStream[LogEntry]
"""Live entries of one plugin (or all): the events module's bounded stream, so a slow
reader drops and counts (``dropped``); ``close()`` ends it."""


def _exact(plugin_id: str) -> str:
    """An fnmatch pattern matching only ``plugin_id``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in plugin_id)


class PluginLogManager:
    """Ring buffers, rotated files, search and live streams of every plugin's log.

    Sizes come from the settings (``log_ring_size``, ``log_max_bytes``, ``log_backups``).
    """

    def __init__(
        self,
        logs_dir: Path,
        bus: EventBus | None = None,
        *,
        ring_size: int = 5000,
        max_bytes: int = 5 * 1024 * 1024,
        backups: int = 5,
    ) -> None:
        self.logs_dir, self.bus = Path(logs_dir), bus
        self.ring_size, self.max_bytes, self.backups = ring_size, max_bytes, backups
        self._lock = threading.Lock()  # guards _plugins; never held while taking a plugin's
        self._plugins: dict[str, _PluginLog] = {}
        self._feed: Fanout[LogEntry] = Fanout()  # live subscribers, by plugin id

    def write(self, plugin_id: str, line: str | bytes, source: LogSource = "stderr") -> LogEntry:
        """Parse and keep one line the plugin wrote; safe from any thread.

        A line with no level of its own that continues the one before it (a
        traceback's frames, an indented line) takes that line's level.
        """
        entry, text, own = _parse_line(line, plugin_id, source)
        state = self._state(plugin_id)
        with state.lock:
            follow = state.continuations.setdefault(entry.source, _Continuation())
            entry = follow.next(entry, text, own)
        return self._record(entry)

    def host_log(self, plugin_id: str, level: str, message: str) -> LogEntry:
        """Keep a note the host makes about the plugin (start, crash, restart ...)."""
        message = _clean(message)  # ours, so not parsed: "error: x" stays as written
        now = datetime.now(UTC)
        entry = LogEntry(timestamp=now, level=_level(level), message=message, plugin_id=plugin_id)
        return self._record(entry.model_copy(update={"source": "host"}))

    def get_logs(self, plugin_id: str, n: int = 100) -> list[LogEntry]:
        """The last ``n`` entries, oldest first."""
        return self._snapshot(plugin_id)[-n:] if n > 0 else []

    def search_logs(
        self, plugin_id: str, pattern: str, n: int | None = None, *, budget: float = SEARCH_BUDGET
    ) -> list[LogEntry]:
        """Entries whose message or fields match the RE2 ``pattern`` (the last ``n``).

        Blocking, and up to ``budget`` seconds of it: call it in a thread from asyncio.
        Raises ValidationError for a pattern RE2 refuses (or longer than
        ``MAX_PATTERN_CHARS``), LogSearchTimeoutError when the budget runs out.
        """
        found = search_entries(
            self._snapshot(plugin_id), pattern, LogEntry.text, plugin_id=plugin_id, budget=budget
        )
        return found if n is None else found[-n:] if n > 0 else []

    def tail_lines(self, plugin_id: str, n: int = 20) -> list[str]:
        """The last ``n`` entries as text, for a crash report (redacted, as every entry is)."""
        return [entry.format() for entry in self.get_logs(plugin_id, n)]

    def read_file_logs(self, plugin_id: str, n: int = 100) -> list[LogEntry]:
        """The last ``n`` entries of the current file, for a host that restarted."""
        try:
            lines = self._path(plugin_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        entries: list[LogEntry] = []
        for line in reversed(lines.splitlines()):
            if len(entries) >= n:
                break
            with contextlib.suppress(ValueError, OverflowError):  # a torn or foreign line
                entries.append(LogEntry.model_validate_json(line))
        return entries[::-1]

    def subscribe(self, plugin_id: str | None = None, *, maxsize: int = 1000) -> LogSubscription:
        """Stream new entries of ``plugin_id`` (all plugins if None); call inside a running loop."""
        pattern = "*" if plugin_id is None else _exact(plugin_id)
        return self._feed.stream(pattern, maxsize=maxsize)

    def close(self, plugin_id: str) -> None:
        """Close the plugin's file; the ring stays and a later write reopens the file."""
        if state := self._existing(plugin_id):
            state.close_file()

    def close_all(self) -> None:
        """Close every file and end every live subscription (host shutdown)."""
        with self._lock:
            states = list(self._plugins.values())
        for state in states:
            state.close_file()
        self._feed.close()

    def remove(self, plugin_id: str) -> None:
        """Forget the plugin's entries and delete its files and backups (uninstall)."""
        ours = re.compile(re.escape(self._path(plugin_id).name) + r"(?:\.\d+(?:\.gz(?:\.tmp)?)?)?")
        with self._lock:
            state = self._plugins.pop(plugin_id, None)
        if state is not None:
            state.close_file(removed=True)
        if self.logs_dir.is_dir():
            for path in self.logs_dir.iterdir():
                if ours.fullmatch(path.name):
                    path.unlink(missing_ok=True)

    def _path(self, plugin_id: str) -> Path:
        return self.logs_dir / f"{validate_plugin_id(plugin_id)}.log"

    def _existing(self, plugin_id: str) -> _PluginLog | None:
        with self._lock:
            return self._plugins.get(plugin_id)

    def _state(self, plugin_id: str) -> _PluginLog:
        with self._lock:
            if (state := self._plugins.get(plugin_id)) is None:
                validate_plugin_id(plugin_id)
                state = self._plugins[plugin_id] = _PluginLog(deque(maxlen=self.ring_size))
            return state

    def _snapshot(self, plugin_id: str) -> list[LogEntry]:
        if (state := self._existing(plugin_id)) is None:
            return []
        with state.lock:
            return list(state.ring)

    def _record(self, entry: LogEntry) -> LogEntry:
        entry = _redacted(entry)  # before the file, the ring, subscribers and the bus see it
        state = self._state(entry.plugin_id)
        payload = entry.to_dict()
        line = json.dumps(payload)  # ASCII, so a character is a byte for the size check
        with state.lock:  # one order for ring, file, subscribers and bus
            state.ring.append(entry)
            self._write_file(state, entry.plugin_id, line)
            self._feed.deliver(entry.plugin_id, entry)
            if self.bus is not None:
                self.bus.publish(EVENT_PROCESS_LOG, payload)
        return entry

    def _write_file(self, state: _PluginLog, plugin_id: str, line: str) -> None:
        if state.removed:
            return
        try:
            if state.handler is None:
                private_dir(self.logs_dir)
                path = self._path(plugin_id)
                state.handler = _GzipRotatingHandler(path, self.max_bytes, self.backups)
            state.handler.handle(logging.makeLogRecord({"msg": line}))
        except OSError as exc:  # the ring, the bus and subscribers still get the entry
            log.warning("cannot write the log file of %s: %s", plugin_id, exc)
