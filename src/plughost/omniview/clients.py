"""``ServiceClient``: any service of the SDK, bound to a plugin, one async method per RPC.

Calls go through ``PluginClient.stub`` so they follow the plugin across reloads and
crash recoveries (and raise ``PluginUnavailableError`` when it is not coming back).
An error the plugin answers becomes a ``PluginCallError`` naming the RPC, the gRPC
code and the plugin's own message.

Requests are the SDK's messages, or what builds one: a dict, keywords, or a message
of the same name from another pool (``empty_pb2.Empty()``, a checked-in stub).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from ..errors import PluginCallError, ValidationError
from ..host.client import PluginClient
from .classes import SdkProtos

__all__ = ["ServiceClient", "snake_case"]


def snake_case(name: str) -> str:
    """``GetSupportedPortForwardTargets`` -> ``get_supported_port_forward_targets``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


_HINTS = {
    grpc.StatusCode.UNIMPLEMENTED: "the plugin does not serve this RPC: check that plugin.yaml "
    "declares the capability and that the plugin is built with a matching plugin-sdk",
    grpc.StatusCode.INVALID_ARGUMENT: "check the request's fields against the SDK's .proto",
    grpc.StatusCode.DEADLINE_EXCEEDED: "pass a longer timeout=, or see why the plugin is slow "
    "in its log",
}


class ServiceClient:
    """One service of the Omniview SDK, called on one plugin (see the module docstring).

    ``await svc.get_session(id="s1", timeout=5)`` (or ``svc.GetSession(...)``, or
    ``svc.call("GetSession", request)``) returns the response message; a
    server-streaming RPC returns an async iterator (``svc.stream(...)``), and a
    bidirectional one takes an iterator (sync or async) of requests.
    """

    def __init__(self, sdk: SdkProtos, plugin: PluginClient, service: ServiceDescriptor) -> None:
        self.sdk = sdk
        self.plugin = plugin
        self.service = service
        self._stub: Any = plugin.stub(sdk.stub_for(service))
        self._by_name: dict[str, MethodDescriptor] = {}
        for method in service.methods:
            self._by_name[method.name] = method
            self._by_name[snake_case(method.name)] = method

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.service.full_name} of {self.plugin_id!r}>"

    @property
    def plugin_id(self) -> str:
        return self.plugin.plugin_id

    @property
    def methods(self) -> list[str]:
        """The service's RPCs, by their snake_case names."""
        return [snake_case(m.name) for m in self.service.methods]

    def method(self, name: str) -> MethodDescriptor:
        try:
            return self._by_name[name]
        except KeyError:
            raise ValidationError(
                f"{self.service.full_name} has no RPC {name!r}",
                suggestions=[f"one of: {', '.join(self.methods)}"],
            ) from None

    # -- requests --------------------------------------------------------------------
    def request(self, method: str, request: Any = None, /, **fields: Any) -> Message:
        """The request message of ``method`` built from a message, a dict or keywords."""
        return self._build(self.method(method).input_type, request, fields)

    def _build(self, descriptor: Descriptor, request: Any, fields: Mapping[str, Any]) -> Message:
        cls = self.sdk.message_class(descriptor)
        if isinstance(request, cls) and not fields:
            return request
        if isinstance(request, Message):
            if request.DESCRIPTOR.full_name != descriptor.full_name:
                raise ValidationError(
                    f"{descriptor.full_name} expected, got a {request.DESCRIPTOR.full_name}"
                )
            converted = cls.FromString(request.SerializeToString())
            if fields:
                converted.MergeFrom(cls(**fields))
            return converted
        if request is not None and not isinstance(request, Mapping):
            raise ValidationError(f"{descriptor.full_name} expected, got {type(request).__name__}")
        data = {**(request or {}), **fields}
        try:
            return cls(**data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ValidationError(
                f"cannot build a {descriptor.full_name}: {exc}",
                suggestions=[f"its fields: {', '.join(f.name for f in descriptor.fields)}"],
            ) from None

    def _requests(self, descriptor: Descriptor, requests: Any) -> Any:
        """A stream of requests (sync or async iterable), each built like one request."""
        if isinstance(requests, AsyncIterable):

            async def converted() -> AsyncIterator[Message]:
                async for item in requests:
                    yield self._build(descriptor, item, {})

            return converted()
        if isinstance(requests, Iterable) and not isinstance(requests, Mapping | Message):
            return (self._build(descriptor, item, {}) for item in requests)
        raise ValidationError(
            f"a stream of {descriptor.full_name} expected (an iterable or async iterable)"
        )

    # -- calls -----------------------------------------------------------------------
    def error(self, method: MethodDescriptor, exc: grpc.aio.AioRpcError) -> PluginCallError:
        """What a gRPC error the plugin answered becomes."""
        code = exc.code()
        hint = _HINTS.get(code, f"see the plugin's log: plughost logs {self.plugin_id}")
        return PluginCallError(
            f"{self.service.name}/{method.name} answered {code.name}: {exc.details() or ''}".rstrip(
                ": "
            ),
            grpc_code=code.name,
            plugin_id=self.plugin_id,
            suggestions=[hint],
        )

    async def call(
        self,
        method: str,
        request: Any = None,
        /,
        *,
        timeout: float | None = None,
        retry: bool = True,
        metadata: Any = None,
        **fields: Any,
    ) -> Any:
        """One unary (or client-streaming) call; the response message."""
        desc = self.method(method)
        if desc.server_streaming:
            raise ValidationError(
                f"{self.service.name}/{desc.name} streams its answers: use stream() "
                f"(or iterate {snake_case(desc.name)}(...))"
            )
        kwargs: dict[str, Any] = {"timeout": timeout, "retry": retry}
        if metadata is not None:
            kwargs["metadata"] = metadata
        if desc.client_streaming:
            message = self._requests(desc.input_type, request)
        else:
            message = self._build(desc.input_type, request, fields)
        try:
            return await getattr(self._stub, desc.name)(message, **kwargs)
        except grpc.aio.AioRpcError as exc:
            raise self.error(desc, exc) from None

    async def stream(
        self,
        method: str,
        request: Any = None,
        /,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        **fields: Any,
    ) -> AsyncIterator[Any]:
        """A server-streaming (or bidirectional: ``request`` is an iterator) call."""
        desc = self.method(method)
        if not desc.server_streaming:
            raise ValidationError(f"{self.service.name}/{desc.name} is not streaming: use call()")
        kwargs: dict[str, Any] = {"timeout": timeout}
        if metadata is not None:
            kwargs["metadata"] = metadata
        if desc.client_streaming:
            message = self._requests(desc.input_type, request)
        else:
            message = self._build(desc.input_type, request, fields)
        try:
            async for answer in getattr(self._stub, desc.name)(message, **kwargs):
                yield answer
        except grpc.aio.AioRpcError as exc:
            raise self.error(desc, exc) from None

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in self.__dict__.get("_by_name", {}):
            raise AttributeError(name)
        desc = self._by_name[name]
        if desc.server_streaming:

            def streaming(request: Any = None, /, **kwargs: Any) -> AsyncIterator[Any]:
                return self.stream(desc.name, request, **kwargs)

            return streaming

        async def unary(request: Any = None, /, **kwargs: Any) -> Any:
            return await self.call(desc.name, request, **kwargs)

        return unary
