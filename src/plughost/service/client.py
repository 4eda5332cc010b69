"""The CLI's client of the local service: HTTP over the root's unix socket.

``ServiceClient.connect(root)`` answers a client when a host holds the root
and its API answers ``/v1/health``, else None (the CLI then acts on the root
directly). Problem JSON answers come back as the same PlughostError
subclass the host raised, so the CLI prints them like its own errors.

It speaks the little HTTP/1.1 the service needs itself, one connection per
request (a unix socket connects in microseconds): importing httpx (or even
``http.client``, with ``email`` and ``ssl``) would cost ``plughost list`` more
than the rest of the request. Answers are read by Content-Length, chunked or
up to the end of the connection; server-sent events line by line as they come.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ..errors import InternalError, PlughostError

__all__ = ["ServiceClient", "ServiceUnavailableError", "error_from_problem", "parse_sse"]

SOCKET_NAME = "plughost.sock"  # service.SOCKET_NAME, without importing FastAPI
CONNECT_TIMEOUT = 5.0
_MAX_LINE = 65536  # of a status line, a header or a chunk size


class _ProtocolError(Exception):
    """The service's answer is not HTTP/1.1 as expected."""


# What means the service did not answer: OSError covers refused, reset, timeouts.
_TRANSPORT_ERRORS = (OSError, _ProtocolError)


def socket_path(root: Path) -> Path:
    return Path(root) / "run" / SOCKET_NAME


class ServiceUnavailableError(PlughostError):
    type = "service_unavailable"
    status = 503
    default_title = "Local service unavailable"


def _error_classes() -> dict[str, type[PlughostError]]:
    found: dict[str, type[PlughostError]] = {}
    todo: list[type[PlughostError]] = [PlughostError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.type, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from_problem(problem: dict[str, Any], status: int) -> PlughostError:
    """The PlughostError a problem JSON body describes (same type, title, suggestions)."""
    error_type = str(problem.get("errorType") or "internal")
    cls = _error_classes().get(error_type)
    if cls is None:  # a type only the service knows ("unauthorized", "http" ...)
        cls = type(
            "RemoteError",
            (PlughostError,),
            {"type": error_type, "status": status, "default_title": "Request failed"},
        )
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    suggestions = problem.get("suggestions") or []
    plugin_id = problem.get("pluginID")
    error = cls(
        detail,
        title=str(problem.get("title") or cls.default_title),
        suggestions=[str(s) for s in suggestions] if isinstance(suggestions, list) else [],
        plugin_id=str(plugin_id) if plugin_id else None,
    )
    # The fields some errors add to the problem (PluginUnavailableError, PluginCallError).
    for attribute, key in (("phase", "phase"), ("grpc_code", "grpcCode")):
        if hasattr(error, attribute) and isinstance(problem.get(key), str):
            setattr(error, attribute, problem[key])
    errors = problem.get("errors")  # PluginBuildError: where the build broke
    if hasattr(error, "errors") and isinstance(errors, list):
        error.errors = [dict(e) for e in errors if isinstance(e, dict)]
    return error


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """(event name, decoded data) pairs from server-sent event lines."""
    name, data = "message", list[str]()
    for line in lines:
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield name, value
            name, data = "message", []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


class _Response:
    """One request on its own connection, and the answer's status and headers; the body
    is read from ``chunks()`` (``Connection: close``: nothing else uses the socket)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        status_line = self._line()
        parts = status_line.split(None, 2)
        if not status_line:
            raise _ProtocolError("the connection closed before an answer")
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _ProtocolError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while line := self._line().rstrip(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def _line(self) -> bytes:
        line = self._file.readline(_MAX_LINE + 1)
        if len(line) > _MAX_LINE:
            raise _ProtocolError("a line of the answer is too long")
        return line

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            yield from self._chunked()
        elif "content-length" in self.headers:
            try:
                size = int(self.headers["content-length"])
            except ValueError:
                raise _ProtocolError("a bad Content-Length") from None
            yield self._exactly(size)
        else:
            while data := self._file.read1(65536):
                yield data

    def _chunked(self) -> Iterator[bytes]:
        while True:
            try:
                size = int(self._line().split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _ProtocolError("a bad chunk size in the answer") from None
            if size == 0:
                while self._line().rstrip(b"\r\n"):  # trailers, then the blank line
                    pass
                return
            yield self._exactly(size)
            self._line()  # the CRLF after the chunk

    def _exactly(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) < size:
            raise _ProtocolError(f"the answer ended after {len(data)} of {size} bytes")
        return data

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[str]:
        """The body's lines as they arrive, without their line ends."""
        pending = b""
        for data in self.chunks():
            pending += data
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")


def _send(
    socket_file: Path,
    method: str,
    target: str,
    *,
    body: bytes | None,
    accept: str,
    timeout: float | None,
    connect_timeout: float,
) -> _Response:
    """Connect, send one request, read the answer's head."""
    head = [
        f"{method} {target} HTTP/1.1",
        "Host: plughost",
        f"Accept: {accept}",
        "Connection: close",
    ]
    if body is not None:
        head.append("Content-Type: application/json")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        head.append(f"Content-Length: {len(body or b'')}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(connect_timeout)
        sock.connect(str(socket_file))
        sock.settimeout(timeout)
        sock.sendall(request)
        return _Response(sock)
    except BaseException:
        sock.close()
        raise


class ServiceClient:
    """Synchronous JSON client of one root's local service."""

    def __init__(self, root: Path, *, timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.socket = socket_path(self.root)
        self.timeout = timeout

    @classmethod
    def connect(cls, root: Path, *, timeout: float = 2.0) -> ServiceClient | None:
        """A client if the service of ``root`` answers its health check, else None."""
        if not socket_path(root).exists():
            return None
        client = cls(root)
        try:
            status, data = client._exchange("GET", "/v1/health", timeout=timeout)
            if status == 200 and json.loads(data).get("status") == "ok":
                return client
        except (*_TRANSPORT_ERRORS, ValueError, AttributeError):
            pass
        client.close()
        return None

    def close(self) -> None:
        """Nothing stays open between requests; kept for ``with`` and symmetry."""

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------
    def _open(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        accept: str = "application/json",
        timeout: float | None,
        connect_timeout: float,
    ) -> _Response:
        """Send a request; the answer, its head read."""
        clean = {k: _param(v) for k, v in (params or {}).items() if v is not None and v != ""}
        target = f"{path}?{urlencode(clean)}" if clean else path
        payload = None if body is None else json.dumps(body).encode()
        return _send(
            self.socket,
            method,
            target,
            body=payload,
            accept=accept,
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    def _exchange(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """One request: its status and body (transport errors raised as they are)."""
        wait = self.timeout if timeout is None else timeout
        connect_timeout = CONNECT_TIMEOUT if timeout is None else timeout
        response = self._open(
            method, path, params=params, body=body, timeout=wait, connect_timeout=connect_timeout
        )
        try:
            return response.status, response.read()
        finally:
            response.close()

    def _unavailable(self, exc: Exception) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"the host's API on {self.socket} stopped answering: {exc or type(exc).__name__}",
            suggestions=[f"check that 'plughost run --root {self.root}' is still running"],
        )

    def _decode(self, status: int, data: bytes) -> Any:
        """The JSON answer; a problem answer raised as its PlughostError."""
        try:
            value = json.loads(data) if data else None
        except ValueError:
            value = None
            if status < 400:
                raise InternalError(
                    f"the host's API on {self.socket} answered {status} with no JSON",
                    suggestions=["check that 'plughost run' is a plughost host of this version"],
                ) from None
        if status < 400:
            return value
        if not isinstance(value, dict):
            raise InternalError(
                f"the host's API on {self.socket} answered {status}",
                suggestions=[f"see the output of 'plughost run --root {self.root}'"],
            )
        raise error_from_problem(value, status)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        """Call the API; the decoded JSON answer, or the PlughostError it reported."""
        try:
            status, data = self._exchange(method, path, params=params, body=body, timeout=timeout)
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return self._decode(status, data)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def stream(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        on_open: Callable[[], None] | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Server-sent events of ``path`` until the server ends the stream.

        ``on_open`` is called once the server accepted the stream (from then on no
        event is missed), before the first event arrives.
        """
        try:
            response = self._open(
                method,
                path,
                params=params,
                body=body,
                accept="text/event-stream",
                timeout=None,  # events may be minutes apart
                connect_timeout=CONNECT_TIMEOUT,
            )
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        try:
            if response.status >= 400:
                self._decode(response.status, response.read())
            if on_open is not None:
                on_open()
            yield from parse_sse(response.lines())
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        finally:
            response.close()


def _param(value: Any) -> str:
    """A query value as httpx wrote it (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
