"""A lean client for unary gRPC calls to a plugin over a plaintext HTTP/2 connection.

grpcio's asyncio client spends ~70 µs of CPU per unary call in its own machinery
(a poller thread, per-call Cython objects, the channel's filter stack), which puts
Python hosts at twice go-plugin's latency and half its throughput. A unary call is
one HEADERS and one DATA frame each way, so this speaks just that much HTTP/2 on an
asyncio connection of its own beside the grpc channel. It declines (``call``
returns None) whatever it does not do, so the caller uses the grpc channel:
requests over one frame or the server's send window, metadata that is not plain.
Streaming calls and TLS always go through grpc. Failures are ``grpc.aio.AioRpcError``
with the codes grpc itself would give.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import urllib.parse
from collections.abc import Sequence
from typing import Any

import grpc
import grpc.aio

__all__ = ["UnaryTransport"]

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW, _CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
_END_STREAM, _ACK, _END_HEADERS, _PADDED, _PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
_MAX_FRAME = 16384  # the server's frame size limit until it says otherwise, and our own
_OUR_WINDOW = 2**31 - 1  # per stream: the server never waits for a WINDOW_UPDATE from us
_CONN_TOP_UP = 2**30  # connection window added at start and each time this much arrived
_CANCEL = 0x8
_LAST_STREAM = 2**31 - 1
_RST_CODES = {0x7: grpc.StatusCode.UNAVAILABLE, _CANCEL: grpc.StatusCode.CANCELLED}
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
# From RFC 7541 Appendix B: the code and bit length of each byte value.
# fmt: off
_HUFFMAN_CODES = (
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
    0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
    0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
    0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
    0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa, 0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa,
    0x16, 0x17, 0x18, 0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x5c, 0xfb,
    0x7ffc, 0x20, 0xffb, 0x3fc, 0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62, 0x63,
    0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71,
    0x72, 0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22, 0x7ffd, 0x3, 0x23, 0x4,
    0x24, 0x5, 0x25, 0x26, 0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7, 0x2b, 0x76, 0x2c,
    0x8, 0x9, 0x2d, 0x77, 0x78, 0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc,
    0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9, 0x3fffd6,
    0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf, 0xffffec,
    0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3, 0x7fffe4,
    0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef, 0x3fffda,
    0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde, 0x7fffea, 0x3fffdd,
    0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec, 0x1fffe0, 0x1fffe1,
    0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef, 0xfffea, 0x3fffe2, 0x3fffe3,
    0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1, 0x3ffffe0, 0x3ffffe1, 0xfffeb,
    0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec, 0x3ffffe2, 0x3ffffe3, 0x3ffffe4,
    0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed, 0x7fff2, 0x1fffe3, 0x3ffffe6,
    0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2, 0x1fffe4, 0x1fffe5, 0x3ffffe8,
    0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5, 0xfffec, 0xfffff3, 0xfffed,
    0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3, 0x3fffea, 0x3fffeb, 0x1ffffee,
    0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4, 0x3ffffeb, 0x7ffffe6, 0x3ffffec,
    0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea, 0x7ffffeb, 0xffffffe, 0x7ffffec,
    0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
)
_HUFFMAN_LENGTHS = (
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28,
    30, 28, 28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8,
    6, 6, 6, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6,
    5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23,
    23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24,
    21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, 26, 26,
    20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19, 21, 26, 27, 27, 26, 27, 24,
    21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24,
    26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
)
# fmt: on


# -- HPACK (RFC 7541): decoding the server's header blocks ---------------------------------
_STATIC: tuple[tuple[str, str], ...] = (
    ("", ""),
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
)
_HUFFMAN = {
    (n, code): sym
    for sym, (code, n) in enumerate(zip(_HUFFMAN_CODES, _HUFFMAN_LENGTHS, strict=True))
}


class _ProtocolError(Exception):
    """The server sent something this client cannot read: the connection is dropped."""


def _huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    code = n = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            n += 1
            sym = _HUFFMAN.get((n, code))
            if sym is not None:
                out.append(sym)
                code = n = 0
            elif n > 30:
                raise _ProtocolError("bad huffman code")
    if n > 7 or code != (1 << n) - 1:  # padding: the most significant bits of EOS, all ones
        raise _ProtocolError("bad huffman padding")
    return bytes(out)


class _HpackDecoder:
    def __init__(self) -> None:
        self._table: list[tuple[str, str]] = []  # newest first
        self._size = 0
        self._max = 4096
        # A block of indexed fields decodes the same until the table changes: the server
        # sends the same few bytes for every reply, so most blocks are looked up here.
        self._seen: dict[bytes, list[tuple[str, str]]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        got = self._seen.get(block)
        if got is not None:
            return got
        try:
            got, changed = self._decode(block)
        except (IndexError, UnicodeDecodeError) as exc:
            raise _ProtocolError(f"bad header block: {exc}") from None
        if changed:
            self._seen.clear()
        elif len(self._seen) < 256:
            self._seen[block] = got
        return got

    def _decode(self, b: bytes) -> tuple[list[tuple[str, str]], bool]:
        out: list[tuple[str, str]] = []
        changed = False
        i = 0
        while i < len(b):
            c = b[i]
            if c & 0x80:  # indexed field
                index, i = _int(b, i, 7)
                out.append(self._get(index))
                continue
            if c & 0x20 and not c & 0x40:  # dynamic table size update
                self._max, i = _int(b, i, 5)
                self._evict()
                changed = True
                continue
            indexing = bool(c & 0x40)
            index, i = _int(b, i, 6 if indexing else 4)
            if index:
                name = self._get(index)[0]
            else:
                name, i = _str(b, i)
            value, i = _str(b, i)
            if indexing:
                self._table.insert(0, (name, value))
                self._size += len(name) + len(value) + 32
                self._evict()
                changed = True
            out.append((name, value))
        return out, changed

    def _get(self, index: int) -> tuple[str, str]:
        if 0 < index < len(_STATIC):
            return _STATIC[index]
        if index <= 0 or index - len(_STATIC) >= len(self._table):
            raise _ProtocolError(f"header index {index} out of range")
        return self._table[index - len(_STATIC)]

    def _evict(self) -> None:
        while self._size > self._max and self._table:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32


def _int(b: bytes, i: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    value = b[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    while True:
        c = b[i]
        i += 1
        value += (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, i


def _str(b: bytes, i: int) -> tuple[str, int]:
    huffman = b[i] & 0x80
    n, i = _int(b, i, 7)
    raw = b[i : i + n]
    if len(raw) != n:
        raise _ProtocolError("header string runs past the block")
    return (_huffman_decode(raw) if huffman else raw).decode("latin-1"), i + n


def _encode_int(value: int, prefix: int, first: int = 0) -> bytes:
    mask = (1 << prefix) - 1
    if value < mask:
        return bytes([first | value])
    out = bytearray([first | mask])
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(name: bytes, value: bytes) -> bytes:
    """A field as a literal never added to the server's table (so nothing to track)."""
    return b"\x00" + _encode_int(len(name), 7) + name + _encode_int(len(value), 7) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes((kind, flags))
        + struct.pack(">I", stream)
        + payload
    )


def _timeout_value(seconds: float) -> bytes:
    """grpc-timeout: at most 8 digits, in the finest unit that fits."""
    micros = max(int(seconds * 1_000_000), 1)
    for unit, per in ((b"u", 1), (b"m", 1000), (b"S", 1_000_000), (b"M", 60_000_000)):
        n = -(-micros // per)
        if n < 100_000_000:
            return b"%d" % n + unit
    return b"99999999H"


def _metadata_block(metadata: Sequence[tuple[str, str | bytes]]) -> bytes | None:
    """Metadata as header fields; None for anything grpc would treat specially."""
    out = []
    for key, value in metadata:
        if not key.isascii() or not key.islower() or key.startswith((":", "grpc-")):
            return None
        if (
            key in ("te", "content-type", "user-agent")
            or not key.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            return None
        if key.endswith("-bin"):
            if not isinstance(value, bytes):
                return None
            raw = base64.b64encode(value).rstrip(b"=")
        elif isinstance(value, str) and value.isascii() and value.isprintable():
            raw = value.encode()
        else:
            return None
        out.append(_literal(key.encode(), raw))
    return b"".join(out)


def _error(
    code: grpc.StatusCode,
    details: str,
    initial: Sequence[tuple[str, str]] = (),
    trailing: Sequence[tuple[str, str]] = (),
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code,
        grpc.aio.Metadata(*initial),
        grpc.aio.Metadata(*trailing),
        details,
        f"plughost unary transport: {code.name}: {details}",
    )


def _metadata(fields: list[tuple[str, str]]) -> list[tuple[str, Any]]:
    """The application's fields of a block, as grpc hands them over (-bin ones decoded)."""
    out: list[tuple[str, Any]] = []
    for key, value in fields:
        if key.startswith(":") or key.startswith("grpc-") or key == "content-type":
            continue
        if key.endswith("-bin"):
            out.append((key, base64.b64decode(value + "=" * (-len(value) % 4))))
        else:
            out.append((key, value))
    return out


class _Call:
    __slots__ = ("block", "data", "end_stream", "future", "initial", "timer")

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future
        self.data = bytearray()
        self.initial: list[tuple[str, str]] | None = None
        self.block = bytearray()  # a header block continued in CONTINUATION frames
        self.timer: asyncio.TimerHandle | None = None
        self.end_stream = False  # the HEADERS frame of a split block ended the stream


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection; its calls fail with UNAVAILABLE when it goes."""

    def __init__(self, authority: bytes) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._calls: dict[int, _Call] = {}
        self._next_stream = 1
        self._hpack = _HpackDecoder()
        self._received = 0  # DATA bytes since our last connection WINDOW_UPDATE
        self._send_window = 65535  # the server's connection window for our DATA
        self._stream_window = 65535  # the server's initial window of each stream
        self._max_frame = _MAX_FRAME
        self._head = (
            b"\x83\x86"  # :method POST, :scheme http (static table)
            + b"\x01"  # :authority (static name)
            + _encode_int(len(authority), 7)
            + authority
        )
        # After the pseudo-header fields (:path comes per call), which must lead.
        self._tail = (  # content-type (static name 31), te
            b"\x0f\x10\x10application/grpc" + _literal(b"te", b"trailers")
        )
        self.usable = True  # False after GOAWAY, a protocol error or the connection's end
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        settings = struct.pack(">HIHI", 0x2, 0, 0x4, _OUR_WINDOW)  # no push; stream window
        transport.write(
            _PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW, 0, 0, struct.pack(">I", _CONN_TOP_UP))
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        why = f"connection to the plugin closed ({exc})" if exc else "connection closed"
        self._fail_all(grpc.StatusCode.UNAVAILABLE, why)
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        i, n = 0, len(buf)
        replies: list[bytes] = []
        try:
            while n - i >= 9:
                length = (buf[i] << 16) | (buf[i + 1] << 8) | buf[i + 2]
                if n - i < 9 + length:
                    break
                kind, flags = buf[i + 3], buf[i + 4]
                stream = int.from_bytes(buf[i + 5 : i + 9], "big") & 0x7FFFFFFF
                payload = bytes(buf[i + 9 : i + 9 + length])
                i += 9 + length
                self._frame(kind, flags, stream, payload, replies)
        except _ProtocolError as exc:
            self._abort(str(exc))
            return
        del buf[:i]
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))

    # -- frames -----------------------------------------------------------------------
    def _frame(
        self, kind: int, flags: int, stream: int, payload: bytes, replies: list[bytes]
    ) -> None:
        if kind == _DATA:
            self._received += len(payload)
            if self._received >= _CONN_TOP_UP // 2:
                replies.append(_frame(_WINDOW, 0, 0, struct.pack(">I", self._received)))
                self._received = 0
            call = self._calls.get(stream)
            if call is not None:
                if flags & _PADDED and payload:
                    payload = payload[1 : len(payload) - payload[0]]
                call.data += payload
                if flags & _END_STREAM:
                    self._finish(stream, [])
        elif kind in (_HEADERS, _CONTINUATION):
            self._headers(kind, flags, stream, payload)
        elif kind == _SETTINGS:
            if not flags & _ACK:
                self._settings(payload)
                replies.append(_frame(_SETTINGS, _ACK, 0))
        elif kind == _WINDOW:
            if len(payload) == 4:
                step = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if stream == 0:
                    self._send_window += step
        elif kind == _PING:
            if not flags & _ACK:
                replies.append(_frame(_PING, _ACK, 0, payload))
        elif kind == _RST:
            call = self._calls.pop(stream, None)
            if call is not None:
                code = int.from_bytes(payload[:4], "big") if len(payload) >= 4 else 0
                status = _RST_CODES.get(code, grpc.StatusCode.INTERNAL)
                timer = call.timer
                if timer is not None and asyncio.get_running_loop().time() >= timer.when():
                    # grpc-go resets a stream whose deadline passed: grpc reports the deadline.
                    self._expire_call(call)
                    return
                self._settle(call, _error(status, f"stream reset by the plugin (code {code})"))
        elif kind == _GOAWAY:
            self.usable = False
            last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF if len(payload) >= 4 else 0
            for sid in [s for s in self._calls if s > last]:
                self._settle(
                    self._calls.pop(sid),
                    _error(grpc.StatusCode.UNAVAILABLE, "the plugin is going away"),
                )
            if not self._calls and self._transport is not None:
                self._transport.close()

    def _settings(self, payload: bytes) -> None:
        for at in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, at)
            if key == 0x4:
                self._stream_window = value
            elif key == 0x5:
                self._max_frame = value

    def _headers(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        call = self._calls.get(stream)
        if kind == _HEADERS:
            if flags & _PADDED and payload:
                payload = payload[1 : len(payload) - payload[0]]
            if flags & _PRIORITY:
                payload = payload[5:]
            if call is not None:
                call.block = bytearray()
        if call is None:
            if flags & _END_HEADERS and kind == _HEADERS:
                self._hpack.decode(payload)  # keeps the table in step
            elif payload:
                raise _ProtocolError("a header block of an unknown stream was split")
            return
        if not flags & _END_HEADERS:
            call.block += payload
            if kind == _HEADERS:
                call.end_stream = bool(flags & _END_STREAM)
            return
        if call.block:
            payload = bytes(call.block) + payload
            call.block = bytearray()
        fields = self._hpack.decode(payload)
        ends = flags & _END_STREAM if kind == _HEADERS else call.end_stream
        if call.initial is None and not ends:
            call.initial = fields
            return
        self._finish(stream, fields)

    def _finish(self, stream: int, trailers: list[tuple[str, str]]) -> None:
        call = self._calls.pop(stream, None)
        if call is None:
            return
        initial = call.initial if call.initial is not None else trailers
        head = dict(initial)
        status_text = dict(trailers).get("grpc-status")
        if head.get(":status", "200") != "200" and status_text is None:
            http = head.get(":status")
            name = {
                "400": "INTERNAL",
                "401": "UNAUTHENTICATED",
                "403": "PERMISSION_DENIED",
                "404": "UNIMPLEMENTED",
                "429": "UNAVAILABLE",
                "502": "UNAVAILABLE",
                "503": "UNAVAILABLE",
                "504": "UNAVAILABLE",
            }.get(http or "", "UNKNOWN")
            self._settle(call, _error(grpc.StatusCode[name], f"HTTP status {http}"))
            return
        meta_in = _metadata(initial) if call.initial is not None else []
        meta_out = _metadata(trailers)
        message = dict(trailers).get("grpc-message", "")
        if status_text is None:
            self._settle(call, _error(grpc.StatusCode.INTERNAL, "the reply had no grpc-status"))
            return
        code = _STATUS_CODES.get(int(status_text) if status_text.isdigit() else -1)
        if code is None:
            code = grpc.StatusCode.UNKNOWN
        if code is not grpc.StatusCode.OK:
            details = urllib.parse.unquote(message)
            self._settle(call, _error(code, details, meta_in, meta_out))
            return
        data = call.data
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            self._settle(
                call, _error(grpc.StatusCode.INTERNAL, "the reply was not one uncompressed message")
            )
            return
        if call.timer is not None:
            call.timer.cancel()
        if not call.future.done():
            call.future.set_result(bytes(data[5:]))

    # -- calls ------------------------------------------------------------------------
    def start(
        self, path: bytes, request: bytes, timeout: float | None, extra: bytes
    ) -> asyncio.Future[bytes] | None:
        """Send one call; None when it does not fit what the server lets us send now."""
        size = len(request) + 5
        if size > min(self._max_frame, self._stream_window, self._send_window):
            return None
        stream = self._next_stream
        if stream > _LAST_STREAM or self._transport is None:
            self.usable = False
            return None
        self._next_stream += 2
        self._send_window -= size
        block = self._head + b"\x04" + _encode_int(len(path), 7) + path + self._tail + extra
        if timeout is not None:
            block += _literal(b"grpc-timeout", _timeout_value(timeout))
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future())
        if timeout is not None:
            call.timer = loop.call_later(timeout, self._expire, stream)
        self._calls[stream] = call
        self._transport.write(
            _frame(_HEADERS, _END_HEADERS, stream, block)
            + _frame(
                _DATA, _END_STREAM, stream, b"\x00" + struct.pack(">I", len(request)) + request
            )
        )
        return call.future

    def cancel(self, future: asyncio.Future[bytes]) -> None:
        """The caller gave up on the call (task cancelled): tell the server."""
        for stream, call in self._calls.items():
            if call.future is future:
                self._reset(stream)
                if call.timer is not None:
                    call.timer.cancel()
                return

    def _expire(self, stream: int) -> None:
        call = self._calls.get(stream)
        if call is not None:
            self._reset(stream)
            self._expire_call(call)

    def _expire_call(self, call: _Call) -> None:
        self._settle(call, _error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    def _reset(self, stream: int) -> None:
        self._calls.pop(stream, None)
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(_frame(_RST, 0, stream, struct.pack(">I", _CANCEL)))

    def _settle(self, call: _Call, exc: BaseException) -> None:
        if call.timer is not None:
            call.timer.cancel()
        if not call.future.done():
            call.future.set_exception(exc)

    def _fail_all(self, code: grpc.StatusCode, why: str) -> None:
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self._settle(call, _error(code, why))

    def _abort(self, why: str) -> None:
        self.usable = False
        if self._transport is not None:
            with contextlib.suppress(Exception):
                self._transport.write(_frame(_GOAWAY, 0, 0, struct.pack(">II", 0, 0x1)))
            self._transport.close()
        self._fail_all(grpc.StatusCode.UNAVAILABLE, f"dropped the connection: {why}")

    def close(self) -> None:
        self.usable = False
        if self._transport is not None:
            self._transport.close()


class UnaryTransport:
    """Unary calls to one plugin's gRPC server (``unix:/path`` or ``host:port``)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._closed = False

    async def call(
        self,
        path: str,
        request: bytes,
        timeout: float | None,
        metadata: Sequence[tuple[str, str | bytes]] | None = None,
    ) -> bytes | None:
        """The reply's bytes; None when this call is one to send through grpc instead."""
        extra = b""
        if metadata:
            block = _metadata_block(metadata)
            if block is None:
                return None
            extra = block
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connect()
        future = conn.start(path.encode(), request, timeout, extra)
        if future is None:
            return None
        try:
            return await future
        except asyncio.CancelledError:
            conn.cancel(future)
            raise

    async def _connect(self) -> _Connection:
        if self._closed:
            raise _error(grpc.StatusCode.UNAVAILABLE, "the plugin's channel is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        authority = b"localhost"
        try:
            if self.target.startswith("unix:"):
                _, conn = await loop.create_unix_connection(
                    lambda: _Connection(authority), self.target.removeprefix("unix:")
                )
            else:
                host, _, port = self.target.rpartition(":")
                authority = self.target.encode()
                _, conn = await loop.create_connection(
                    lambda: _Connection(authority), host.strip("[]"), int(port)
                )
        except OSError as exc:
            raise _error(
                grpc.StatusCode.UNAVAILABLE, f"cannot connect to the plugin: {exc}"
            ) from None
        if self._closed:
            conn.close()
            raise _error(grpc.StatusCode.UNAVAILABLE, "the plugin's channel is closed")
        self._conn = conn
        return conn

    async def close(self) -> None:
        """Close the connection; calls in flight fail with UNAVAILABLE."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.closed), 2.0)
