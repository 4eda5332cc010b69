"""Calling a plugin's methods with JSON, and what a running plugin says about itself.

The local service's ``POST /v1/plugins/{id}/call``, ``GET .../services`` and
``GET .../introspect`` (so ``plughost call`` and ``plughost info``) end here.
A call goes through the host's ``PluginClient`` (``manager.client(id)``): it
waits for a restarting plugin within the call's deadline, and fails with
PluginUnavailableError when the plugin is not running. The method is described
by ``process.describe`` (server reflection, else plughost's own descriptors);
only unary methods are called, and never twice (a call may not be idempotent).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import grpc.aio

from ..errors import PluginCallError, PluginUnavailableError, ValidationError
from ..process.describe import (
    MethodDescription,
    decode_answer,
    describe_method,
    encode_request,
    parse_method_name,
)

if TYPE_CHECKING:
    from ..host.client import PluginClient
    from ..host.manager import PluginManager

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_INTROSPECT_TIMEOUT",
    "MAX_CALL_TIMEOUT",
    "call_method",
    "introspect",
    "plugin_services",
]

DEFAULT_CALL_TIMEOUT = 10.0
DEFAULT_INTROSPECT_TIMEOUT = 5.0
MAX_CALL_TIMEOUT = 300.0

T = TypeVar("T")


class _RawStub:
    """A stub whose attributes are methods named by their full path, bytes in, bytes out
    (``getattr(stub, "/pkg.Service/Method")``): messages are encoded by the caller."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    def __getattr__(self, path: str) -> Any:
        if not path.startswith("/"):
            raise AttributeError(path)
        return self._channel.unary_unary(path)


class _Deadline:
    def __init__(self, timeout: float, what: str, plugin_id: str) -> None:
        self.timeout = timeout
        self.at = time.monotonic() + timeout
        self.what = what
        self.plugin_id = plugin_id

    def timed_out(self) -> PluginCallError:
        return PluginCallError(
            f"{self.what} did not answer within {self.timeout:g} s",
            title="Call timed out",
            plugin_id=self.plugin_id,
            grpc_code=grpc.StatusCode.DEADLINE_EXCEEDED.name,
            suggestions=["give it more time (plughost call --timeout SECONDS)"],
        )

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left


async def _checked(client: PluginClient, step: Awaitable[T]) -> T:
    """``step``; a channel closed under it (the plugin restarted) is PluginUnavailableError."""
    try:
        return await step
    except grpc.aio.UsageError:
        phase = client.info.phase.value
        raise PluginUnavailableError(
            f"plugin {client.plugin_id!r} restarted during the call ({phase}); call again",
            phase=phase,
            plugin_id=client.plugin_id,
        ) from None


def _refused(described: MethodDescription, plugin_id: str) -> ValidationError:
    kind = described.streaming
    return ValidationError(
        f"{described.path} is a {kind}-streaming method; plughost calls unary methods only",
        title="Streaming method",
        plugin_id=plugin_id,
        suggestions=["call it from code: manager.client(id).stub(Stub).Method(...)"],
    )


async def _call_failed(
    exc: grpc.aio.AioRpcError,
    described: MethodDescription,
    client: PluginClient,
    deadline: _Deadline,
) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return deadline.timed_out()
    details = (exc.details() or "").strip()[:2000]
    if code == grpc.StatusCode.UNIMPLEMENTED and described.source == "built-in":
        try:
            served = await client.services(max(deadline.at - time.monotonic(), 0.5))
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, PluginUnavailableError):
            served = []
        if described.service not in served:
            return ValidationError(
                f"plugin {client.plugin_id!r} does not serve {described.service}; "
                f"it serves: {', '.join(served) or 'nothing it would list'}",
                title="Unknown service",
                plugin_id=client.plugin_id,
                suggestions=[f"see what it serves: plughost info {client.plugin_id}"],
            )
    return PluginCallError(
        f"{described.path} failed: {code.name}" + (f": {details}" if details else ""),
        title="Plugin call failed",
        plugin_id=client.plugin_id,
        grpc_code=code.name,
    )


async def call_method(
    manager: PluginManager,
    plugin_id: str,
    method: str,
    request: Any,
    timeout: float = DEFAULT_CALL_TIMEOUT,
) -> dict[str, Any]:
    """Call ``package.Service/Method`` of a running plugin.

    ``request`` is the request message as protobuf JSON (decoded; None: empty). The
    result: ``{"response": <the answer as protobuf JSON>, "describedBy": "reflection"
    | "built-in"}`` (where the message types came from).
    """
    service, name = parse_method_name(method)
    if not 0 < timeout <= MAX_CALL_TIMEOUT:
        raise ValidationError(
            f"timeout must be more than 0 and at most {MAX_CALL_TIMEOUT:g} s, not {timeout:g}",
            title="Invalid timeout",
        )
    manager.get_plugin(plugin_id)  # PluginNotFoundError for a plugin that is not installed
    client = manager.client(plugin_id)
    deadline = _Deadline(timeout, f"{service}/{name} of plugin {plugin_id!r}", plugin_id)
    channel = await client.channel(deadline.left())
    described = await _checked(
        client,
        describe_method(
            channel,
            service,
            name,
            deadline.left(),
            plugin_id=plugin_id,
            list_services=lambda: client.services(max(deadline.at - time.monotonic(), 0.5)),
        ),
    )
    if described.streaming:
        raise _refused(described, plugin_id)
    payload = encode_request(described, request, plugin_id)
    try:
        answer = await client.call_unary(
            _RawStub, described.path, payload, timeout=deadline.left(), retry=False
        )
    except grpc.aio.AioRpcError as exc:
        raise await _call_failed(exc, described, client, deadline) from None
    return {
        "response": decode_answer(described, bytes(answer), plugin_id),
        "describedBy": described.source,
    }


async def plugin_services(
    manager: PluginManager, plugin_id: str, timeout: float = DEFAULT_INTROSPECT_TIMEOUT
) -> list[str]:
    """Sorted names of the services a running plugin serves."""
    manager.get_plugin(plugin_id)
    client = manager.client(plugin_id)
    try:
        return await _checked(client, client.services(timeout))
    except grpc.aio.AioRpcError as exc:
        raise _introspect_failed(exc, plugin_id, timeout) from None


def _introspect_failed(
    exc: grpc.aio.AioRpcError, plugin_id: str, timeout: float
) -> PluginCallError:
    if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
        detail = f"plugin {plugin_id!r} did not say what it serves within {timeout:g} s"
    else:
        detail = f"asking plugin {plugin_id!r} what it serves failed: {exc.code().name}"
        detail += f": {(exc.details() or '').strip()[:500]}"
    return PluginCallError(detail, plugin_id=plugin_id, grpc_code=exc.code().name)


def _problem_text(exc: Exception) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {(exc.details() or '').strip()[:500]}"
    return f"{type(exc).__name__}: {exc}"[:500]


async def introspect(
    manager: PluginManager, plugin_id: str, timeout: float = DEFAULT_INTROSPECT_TIMEOUT
) -> dict[str, Any]:
    """What a running plugin serves and says about itself, and where it listens.

    ``services`` (reflection, else the services every plugin serves), the lifecycle
    service's GetInfo and GetCapabilities answers, the negotiated protocol version and
    the address from the handshake. A part that fails is None, with the reason in
    ``errors``; a plugin that is not running is PluginUnavailableError.
    """
    manager.get_plugin(plugin_id)
    client = manager.client(plugin_id)
    await client.wait_running(timeout)
    backend = manager.backend(plugin_id)
    if backend is None or backend.exited:
        phase = client.info.phase.value
        raise PluginUnavailableError(
            f"plugin {plugin_id!r} went away while it was asked ({phase}); ask again",
            phase=phase,
            plugin_id=plugin_id,
        )
    errors: dict[str, str] = {}
    services: list[str] | None = None
    try:
        services = await client.services(timeout)
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, PluginUnavailableError) as exc:
        errors["services"] = _problem_text(exc)
    lifecycle: dict[str, Any] | None = None
    try:
        name = await backend.lifecycle_service(timeout)
        if name is not None:
            info = await backend.get_info(timeout)
            capabilities = await backend.detect_capabilities(timeout)
            lifecycle = {
                "service": name,
                "info": dict(info) if info is not None else None,
                "capabilities": capabilities,
            }
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, RuntimeError) as exc:
        errors["lifecycle"] = _problem_text(exc)
    address = backend.address
    return {
        "pluginID": plugin_id,
        "phase": client.info.phase.value,
        "pid": backend.pid,
        "protocolVersion": backend.negotiated_version,
        "address": {"network": address[0], "address": address[1]} if address else None,
        "services": services,
        "reflection": any(s.startswith("grpc.reflection.") for s in services or ()),
        "lifecycle": lifecycle,
        "errors": errors,
    }
