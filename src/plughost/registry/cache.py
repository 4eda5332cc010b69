"""Rendered answers of the registry's read routes, kept while the catalog is unchanged.

A listing costs a server ~2 ms of CPU to query, build and encode, and the same
listing is asked for over and over. :class:`ReadCache` keeps the bytes of each
answer, keyed by the request's path, query and the address it arrived on, and
tagged with the catalog's *generation*: a number that every transaction changing
what these routes answer raises, in that same transaction (database triggers,
migration 0004). Each request reads the generation after it arrived, and is
answered from the cache only when the number is the one its bytes were rendered
under. So a change committed through any server, or by a publisher, is in the
very next answer from every server: nothing is kept for a time, there is nothing
to expire.

The read is one tiny statement, and concurrent requests share it
(``plughost.coalesce.NextRun``): every request waits for a read that *began* after it
arrived, so sharing never hands it a number from before its arrival.

Answers carry an ``ETag`` (a hash of the bytes) with ``Cache-Control: no-cache``:
a client that sends it back in ``If-None-Match`` gets a 304 while nothing changed.

A kept answer goes gzip-compressed to a request whose ``Accept-Encoding`` allows it,
as Go's HTTP client (every marketplace client) asks on every request: a listing of
20 plugins shrinks ~5-10x, and copying it over the network is much of what a kept
answer costs both ends. It is compressed once, on the first request that takes it,
and kept beside the plain bytes; each encoding has its own ETag. Answers under
``MIN_GZIP`` bytes go plain: there is nothing worth saving.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import re
import zlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the catalog imports this module; a publisher needs no web framework
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ReadCache"]

MAX_BYTES = 32 * 1024 * 1024  # every kept answer together
MAX_ANSWER = 1024 * 1024  # larger answers are sent, not kept
MAX_ANSWERS = 4096  # kept answers (distinct queries), however small each is
MIN_GZIP = 1024  # smaller answers are sent plain
# zlib's default: a listing compresses in ~50 us, once per kept answer, and comes out
# ~8 % smaller than at level 1, on every one of the many times it is sent.
GZIP_LEVEL = 6
_OVERHEAD = 256  # what a kept answer costs beside its bytes, for the byte budget


@dataclass(frozen=True)
class _Variant:
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class _Answer:
    plain: _Variant
    etag: bytes  # the plain bytes'; the gzip variant's is derived from it
    compressible: bool
    gzip: _Variant | None = None  # made on the first request that takes it
    key_size: int = 0  # the bytes of the path and query it is kept under: counted too

    @property
    def gzip_etag(self) -> bytes:
        return self.etag[:-1] + b'-gzip"'

    @property
    def size(self) -> int:
        variants = (self.plain, self.gzip)
        return self.key_size + sum(len(v.body) + _OVERHEAD for v in variants if v is not None)

    def compress(self) -> _Variant:
        body = zlib.compress(self.plain.body, GZIP_LEVEL, wbits=31)  # gzip, mtime 0
        headers = [(k, v) for k, v in self.plain.headers if k not in (b"content-length", b"etag")]
        headers += [
            (b"content-length", str(len(body)).encode()),
            (b"content-encoding", b"gzip"),
            (b"etag", self.gzip_etag),
        ]
        self.gzip = _Variant(headers, body)
        return self.gzip


def _answer(start: Message, body: bytes) -> _Answer:
    etag = b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'
    headers = [
        (k, v) for k, v in start.get("headers", ()) if k not in (b"etag", b"cache-control", b"vary")
    ]
    vary = [v for k, v in start.get("headers", ()) if k == b"vary"]
    encoded = any(k == b"content-encoding" for k, _ in headers)
    headers += [
        (b"etag", etag),
        (b"cache-control", b"no-cache"),
        (b"vary", b", ".join([*vary, b"Accept-Encoding"])),
    ]
    # An answer too big to keep would be compressed again for every request: sent plain.
    compressible = MIN_GZIP <= len(body) <= MAX_ANSWER and not encoded
    return _Answer(_Variant(headers, body), etag, compressible)


def _not_modified(scope: Scope, etag: bytes) -> bool:
    """Whether the request's ``If-None-Match`` names ``etag`` (weak comparison, as for GET)."""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            tags = {t.strip().removeprefix(b"W/") for t in value.split(b",")}
            if etag in tags or b"*" in tags:
                return True
    return False


def _takes_gzip(scope: Scope) -> bool:
    """Whether the request's ``Accept-Encoding`` allows gzip (RFC 9110 12.5.3)."""
    values = [v for k, v in scope["headers"] if k == b"accept-encoding"]
    return bool(values) and _allows_gzip(b",".join(values))


@functools.lru_cache(maxsize=64)  # clients send a handful of distinct headers
def _allows_gzip(accept_encoding: bytes) -> bool:
    gzip: float | None = None
    anything: float | None = None
    for item in accept_encoding.lower().split(b","):
        coding, *params = (part.strip() for part in item.split(b";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition(b"=")
            if name.strip() == b"q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0  # a weight that is no number accepts nothing
        if coding in (b"gzip", b"x-gzip"):
            gzip = weight
        elif coding == b"*":
            anything = weight
    chosen = gzip if gzip is not None else anything
    return chosen is not None and chosen > 0


def route_pattern(paths: Iterable[str]) -> re.Pattern[str]:
    """A pattern matching the request paths of route paths such as ``/v1/plugins/{id}``."""
    alternatives = (re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) for p in paths)
    return re.compile("|".join(alternatives))


class ReadCache:
    """An ASGI app in front of ``app``: GET requests to ``paths`` (route paths whose answers
    depend only on the catalog, the request's path and query, and the address it
    arrived on) are answered from kept bytes while ``generation()`` is unchanged.

    Only complete 200 answers are kept. When the generation cannot be read, ``app``
    answers (and says what is wrong with the database). One event loop serves it, as
    uvicorn does: its bookkeeping is not shared between threads.
    """

    def __init__(
        self,
        app: ASGIApp,
        generation: Callable[[], Awaitable[int]],
        paths: Iterable[str],
        *,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.app = app
        self._generation = generation
        self._paths = route_pattern(paths)
        self._max_bytes = max_bytes
        self._seen: int | None = None  # the generation the kept answers were rendered under
        self._answers: collections.OrderedDict[tuple[Any, ...], _Answer] = collections.OrderedDict()
        self._bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not self._paths.fullmatch(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        try:
            generation = await self._generation()
        except Exception:
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"], scope.get("server"))
        self._observe(generation)
        answer = self._answers.get(key)
        if answer is None:
            answer = await self._render(scope, receive, send)
            if answer is None:  # sent as it came: not a complete 200
                return
            self._keep(key, generation, answer)
        else:
            self._answers.move_to_end(key)
        gzip = answer.compressible and _takes_gzip(scope)
        etag = answer.gzip_etag if gzip else answer.etag
        if _not_modified(scope, etag):
            headers = [h for h in answer.plain.headers if h[0] in (b"cache-control", b"vary")]
            headers.append((b"etag", etag))
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        variant = (answer.gzip or self._compress(key, answer)) if gzip else answer.plain
        await send({"type": "http.response.start", "status": 200, "headers": variant.headers})
        await send({"type": "http.response.body", "body": variant.body})

    def _observe(self, generation: int) -> None:
        """Forget the kept answers unless they are of ``generation``. Any other number is
        another catalog (a lower one too: a database replaced under the server)."""
        if generation != self._seen:
            self._answers.clear()
            self._bytes = 0
            self._seen = generation

    def _keep(self, key: tuple[Any, ...], generation: int, answer: _Answer) -> None:
        # Rendered after ``generation`` was read: kept only if no later number was seen since.
        if generation != self._seen or len(answer.plain.body) > MAX_ANSWER:
            return
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        answer.key_size = len(key[0]) + len(key[1])  # a query may be KiBs of anything
        self._answers[key] = answer
        self._bytes += answer.size
        self._trim()

    def _compress(self, key: tuple[Any, ...], answer: _Answer) -> _Variant:
        """The gzip variant, counted toward the byte budget while ``answer`` is kept."""
        variant = answer.compress()
        if self._answers.get(key) is answer:
            self._bytes += len(variant.body) + _OVERHEAD
            self._trim()
        return variant

    def _trim(self) -> None:
        while self._bytes > self._max_bytes or len(self._answers) > MAX_ANSWERS:
            _, dropped = self._answers.popitem(last=False)
            self._bytes -= dropped.size

    async def _render(self, scope: Scope, receive: Receive, send: Send) -> _Answer | None:
        """Run ``app``; a complete 200 answer is returned (not sent), any other is sent."""
        start: Message | None = None
        answer: _Answer | None = None

        async def capture(message: Message) -> None:
            nonlocal start, answer
            if start is None and answer is None:
                if message["type"] == "http.response.start" and message["status"] == 200:
                    start = message
                    return
            elif start is not None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    answer = _answer(start, message.get("body", b""))
                    start = None
                    return
                await send(start)  # a streamed answer: passed on as it comes
                start = None
            await send(message)

        await self.app(scope, receive, capture)
        if start is not None:
            await send(start)
        return answer
