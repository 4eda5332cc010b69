"""The CLI's client of the local service: HTTP over the root's unix socket.

``ServiceClient.connect(root)`` answers a client when a host holds the root
and its API answers ``/v1/health``, else None (the CLI then acts on the root
directly). Problem JSON answers come back as the same PlughostError
subclass the host raised, so the CLI prints them like its own errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from ..errors import InternalError, PlughostError

__all__ = ["ServiceClient", "ServiceUnavailableError", "error_from_problem", "parse_sse"]

SOCKET_NAME = "plughost.sock"  # service.SOCKET_NAME, without importing FastAPI
_BASE = "http://plughost"


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


class ServiceClient:
    """Synchronous JSON client of one root's local service."""

    def __init__(self, root: Path, *, timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.socket = socket_path(self.root)
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)),
            base_url=_BASE,
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    @classmethod
    def connect(cls, root: Path, *, timeout: float = 2.0) -> ServiceClient | None:
        """A client if the service of ``root`` answers its health check, else None."""
        if not socket_path(root).exists():
            return None
        client = cls(root)
        try:
            response = client._http.get("/v1/health", timeout=timeout)
            if response.status_code == 200 and response.json().get("status") == "ok":
                return client
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        client.close()
        return None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unavailable(self, exc: Exception) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            f"the host's API on {self.socket} stopped answering: {exc or type(exc).__name__}",
            suggestions=["check that 'plughost run' is still running for this root"],
        )

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if not isinstance(problem, dict):
            raise InternalError(f"the local service answered {response.status_code}")
        raise error_from_problem(problem, response.status_code)

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
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, path, params=clean, json=body, **extra)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        self._raise_for(response)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body)

    def stream(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Iterator[tuple[str, Any]]:
        """Server-sent events of ``path`` until the server ends the stream."""
        clean = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        try:
            with self._http.stream(
                method,
                path,
                params=clean,
                json=body,
                headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(None, connect=5.0),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
