"""What a plugin serves: gRPC server reflection where it offers it, else what we know.

go-plugin plugins register server reflection; plughost's Python SDK plugins may
not. Without reflection the answer is the services every plugin of the
protocol serves (health, go-plugin's controller and stdio) plus the lifecycle
service when the plugin answered it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .backend import PluginBackend

__all__ = ["KNOWN_SERVICES", "list_services", "reflection_request"]

KNOWN_SERVICES = ("grpc.health.v1.Health", "plugin.GRPCController", "plugin.GRPCStdio")
"""Served by every go-plugin plugin (and by plughost's SDK)."""

_MAX_SERVICES = 1000


async def reflection_request(
    channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest, timeout: float
) -> reflection_pb2.ServerReflectionResponse | None:
    """One request on the reflection stream; None when the plugin serves no reflection."""
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield request

    for attempt in range(_ATTEMPTS):
        try:
            async for response in stub.ServerReflectionInfo(one(), timeout=timeout):
                return response  # type: ignore[no-any-return]
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND):
                return None
            if not _lost_race(exc):
                raise
            # A server without reflection answers UNIMPLEMENTED before reading the
            # request; when that answer crosses our request, grpcio reports INTERNAL
            # ("Internal error from Core") instead. Ask again; twice means no reflection.
            if attempt == _ATTEMPTS - 1:
                return None
    return None


_ATTEMPTS = 2


def _lost_race(exc: grpc.aio.AioRpcError) -> bool:
    return exc.code() == grpc.StatusCode.INTERNAL and exc.details() == "Internal error from Core"


async def list_services(backend: PluginBackend, timeout: float = 5.0) -> list[str]:
    """Sorted service names the plugin serves."""
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    response = await reflection_request(backend.channel, request, timeout)
    if response is not None and response.HasField("list_services_response"):
        names = [s.name for s in response.list_services_response.service[:_MAX_SERVICES]]
        return sorted(set(names))
    found = set(KNOWN_SERVICES)
    lifecycle = await backend.lifecycle_service(timeout)
    if lifecycle:
        found.add(lifecycle)
    return sorted(found)
