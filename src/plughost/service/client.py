"""The CLI's client of the local service: HTTP over the root's unix socket.

``ServiceClient.connect(root)`` answers a client when a host holds the root
and its API answers ``/v1/health``, else None (the CLI then acts on the root
directly). Problem JSON answers come back as the same PlughostError
subclass the host raised, so the CLI prints them like its own errors.

It speaks HTTP/1.1 with the standard library's ``http.client`` over the unix
socket, one connection per request (a unix socket connects in microseconds).
``http.client`` (with ``email`` and ``ssl``) is imported by the first request, not
with this module, so ``plughost --version`` does not pay for it; httpx is not
used at all (importing it would cost ``plughost list`` more than the request).
Whatever a local process answers, the client reads bounded amounts: lines and
headers (``http.client``'s own caps), bodies and server-sent events.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from ..errors import InternalError, PlughostError

if TYPE_CHECKING:
    from http.client import HTTPConnection, HTTPResponse

__all__ = ["ServiceClient", "ServiceUnavailableError", "error_from_problem", "parse_sse"]

SOCKET_NAME = "plughost.sock"  # service.SOCKET_NAME, without importing FastAPI
CONNECT_TIMEOUT = 5.0
_MAX_BODY = 64 << 20  # bytes of an answer's body
_MAX_EVENT = 16 << 20  # bytes of one server-sent event (its lines together)
_READ_SIZE = 1 << 16


class _ProtocolError(Exception):
    """The service's answer is not what the client accepts (too large, cut short)."""


def _transport_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What means the service did not answer: OSError covers refused, reset and timeouts,
    HTTPException a malformed or truncated answer. (A function, so that ``http.client``
    is imported by the first request; an ``except`` clause evaluates it only when an
    exception is raised.)"""
    from http.client import HTTPException

    return (OSError, HTTPException, _ProtocolError, *more)


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


@functools.cache
def _connection_class() -> Callable[[str, float | None, float], HTTPConnection]:
    """``http.client.HTTPConnection`` over a unix socket (defined on first use)."""
    import http.client
    import socket

    class Response(http.client.HTTPResponse):
        def peek(self, n: int = -1) -> bytes:
            # readline() of a chunked body looks ahead with peek(), which takes a body
            # cut short (the host died) for its end; read1(0) reads the next chunk's
            # size and raises IncompleteRead then, reading no data.
            if self.chunked:
                self.read1(0)
            return super().peek(n)

    class UnixHTTPConnection(http.client.HTTPConnection):
        response_class = Response

        def __init__(self, path: str, timeout: float | None, connect_timeout: float) -> None:
            super().__init__("plughost", timeout=timeout)  # timeout None: no timeout
            self.socket_path = path
            self.connect_timeout = connect_timeout

        def connect(self) -> None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(self.socket_path)
                sock.settimeout(self.timeout)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    return UnixHTTPConnection


def _send(
    socket_file: Path,
    method: str,
    target: str,
    *,
    body: bytes | None,
    accept: str,
    timeout: float | None,
    connect_timeout: float,
) -> HTTPResponse:
    """Connect, send one request, read the answer's status and headers. The answer owns
    the connection from then on (``Connection: close``): closing it closes the socket."""
    headers = {"Accept": accept, "Connection": "close"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    # http.client adds Host (plughost) and Content-Length (0 for a POST, PUT, PATCH without body).
    connection = _connection_class()(str(socket_file), timeout, connect_timeout)
    try:
        connection.request(method, target, body=body, headers=headers)
        return connection.getresponse()
    except BaseException:
        connection.close()
        raise


def _read_body(response: HTTPResponse) -> bytes:
    """The whole body (by Content-Length, chunked or up to the close), at most _MAX_BODY
    bytes; a body cut short raises ``http.client.IncompleteRead``."""
    if response.length is not None:  # Content-Length
        if response.length > _MAX_BODY:
            raise _ProtocolError(f"an answer of {response.length} bytes (at most {_MAX_BODY})")
        return response.read()
    parts, size = [], 0
    while data := response.read(_READ_SIZE):
        size += len(data)
        if size > _MAX_BODY:
            raise _ProtocolError(f"an answer of more than {_MAX_BODY} bytes")
        parts.append(data)
    return b"".join(parts)


def _read_lines(response: HTTPResponse) -> Iterator[str]:
    """The body's lines as they arrive, without their line ends; the lines of one event
    (up to a blank line) at most _MAX_EVENT bytes together."""
    budget = _MAX_EVENT
    while line := response.readline(budget + 1):
        if len(line) > budget:
            raise _ProtocolError(f"a server-sent event of more than {_MAX_EVENT} bytes")
        text = line.removesuffix(b"\n").rstrip(b"\r")
        budget = budget - len(line) if text else _MAX_EVENT
        yield text.decode("utf-8", "replace")
    if response.length:  # a Content-Length not reached (a chunked one raised IncompleteRead)
        raise _ProtocolError(f"the stream ended {response.length} bytes short")


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
        except _transport_errors(ValueError, AttributeError):
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
    ) -> HTTPResponse:
        """Send a request; the answer, its status and headers read."""
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
            return response.status, _read_body(response)
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
        except _transport_errors() as exc:
            raise self._unavailable(exc) from exc
        return self._decode(status, data)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def grant_permissions(self, plugin_id: str) -> dict[str, Any]:
        """Grant what the installed version asks for (a held plugin then starts); the plugin."""
        result: dict[str, Any] = self.post(f"/v1/plugins/{quote(plugin_id, safe='')}/grant")
        return result

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
        except _transport_errors() as exc:
            raise self._unavailable(exc) from exc
        try:
            if response.status >= 400:
                self._decode(response.status, _read_body(response))
            if on_open is not None:
                on_open()
            yield from parse_sse(_read_lines(response))
        except _transport_errors() as exc:
            raise self._unavailable(exc) from exc
        finally:
            response.close()


def _param(value: Any) -> str:
    """A query value as httpx wrote it (``true``/``false`` for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
