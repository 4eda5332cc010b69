"""What a plugin's method takes and answers, so it can be called with JSON.

A method is described by gRPC server reflection where the plugin offers it
(``file_containing_symbol``: the FileDescriptorProtos of the service's file
and its dependencies, built into a private ``DescriptorPool``), else by the
descriptors plughost itself has of the services every plugin serves: health,
go-plugin's controller, stdio and broker, and both names of the lifecycle
service. Requests and answers go through protobuf's JSON mapping
(``json_format``), with caps on what a plugin may send back.

Pure protocol work on a channel: which process the channel belongs to is the
caller's business (the host's ``PluginClient``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import grpc
import grpc.aio
from google.protobuf import (  # the well-known types' modules register them in the default pool
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    field_mask_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from .._proto import (
    grpc_broker_pb2,
    grpc_controller_pb2,
    grpc_stdio_pb2,
    lifecycle_legacy_pb2,
    lifecycle_pb2,
)
from ..errors import PluginCallError, ValidationError
from .introspect import reflection_request

__all__ = [
    "BUILT_IN_SERVICES",
    "MAX_ANSWER_BYTES",
    "MAX_REFLECTION_BYTES",
    "MAX_REFLECTION_FILES",
    "MAX_REQUEST_JSON",
    "MethodDescription",
    "decode_answer",
    "describe_method",
    "encode_request",
    "parse_method_name",
]

MAX_REQUEST_JSON = 1024 * 1024
"""Bytes of request JSON a call accepts."""
MAX_REFLECTION_FILES = 256
"""Descriptor files one method's description may need (its file and every dependency)."""
MAX_REFLECTION_BYTES = 8 * 1024 * 1024
"""Bytes of descriptors reflection may send for one method."""
MAX_ANSWER_BYTES = 8 * 1024 * 1024
"""Bytes of a method's answer (protobuf wire format) a call turns into JSON."""
_MAX_JSON_DEPTH = 100

_BUILT_IN_FILES: tuple[Any, ...] = (  # FileDescriptors (grpc_health types its own)
    health_pb2.DESCRIPTOR,
    grpc_controller_pb2.DESCRIPTOR,
    grpc_stdio_pb2.DESCRIPTOR,
    grpc_broker_pb2.DESCRIPTOR,
    lifecycle_pb2.DESCRIPTOR,
    lifecycle_legacy_pb2.DESCRIPTOR,
)
BUILT_IN_SERVICES: dict[str, ServiceDescriptor] = {
    service.full_name: service
    for file in _BUILT_IN_FILES
    for service in file.services_by_name.values()
}
"""Services plughost can call on any plugin without reflection, by full name."""

Source = Literal["reflection", "built-in"]
ServiceLister = Callable[[], Awaitable[list[str]]]


@dataclasses.dataclass(frozen=True)
class MethodDescription:
    """One method: its full path and the message classes of its request and answer."""

    service: str
    method: str
    descriptor: MethodDescriptor
    request_class: type[Message]
    answer_class: type[Message]
    pool: descriptor_pool.DescriptorPool
    source: Source

    @property
    def path(self) -> str:
        """The method's gRPC path, ``/package.Service/Method``."""
        return f"/{self.service}/{self.method}"

    @property
    def streaming(self) -> str | None:
        """``client``, ``server`` or ``bidirectional`` streaming; None for a unary method."""
        d = self.descriptor
        if d.client_streaming and d.server_streaming:
            return "bidirectional"
        if d.client_streaming:
            return "client"
        return "server" if d.server_streaming else None


# -- names and JSON ---------------------------------------------------------------------------
def parse_method_name(name: str) -> tuple[str, str]:
    """``package.Service/Method`` (a leading ``/`` is allowed) as (service, method)."""
    text = name.strip().removeprefix("/")
    service, slash, method = text.rpartition("/")
    parts = service.split(".") if service else []
    if (
        not slash
        or not method.isidentifier()
        or not parts
        or not all(p.isidentifier() for p in parts)
    ):
        raise ValidationError(
            f"{name[:200]!r} is not a method name: expected package.Service/Method, "
            "e.g. grpc.health.v1.Health/Check",
            title="Invalid method name",
        )
    return service, method


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError, RecursionError):
        return MAX_REQUEST_JSON + 1


def encode_request(described: MethodDescription, value: Any, plugin_id: str | None = None) -> bytes:
    """``value`` (decoded JSON; None: an empty message) as the method's request, serialized."""
    if _json_size(value) > MAX_REQUEST_JSON:
        raise ValidationError(
            f"the request JSON is larger than {MAX_REQUEST_JSON // 1024} KiB",
            title="Request too large",
            plugin_id=plugin_id,
        )
    type_name = described.request_class.DESCRIPTOR.full_name
    if value is None:
        value = {}
    # Only the well-known types have JSON forms other than an object (wrappers: a scalar).
    if not isinstance(value, dict) and not type_name.startswith("google.protobuf."):
        raise ValidationError(
            f"the request of {described.path} is a {type_name} message: expected a JSON "
            f"object, got {type(value).__name__ if value is not None else 'null'}",
            title="Invalid request message",
            plugin_id=plugin_id,
        )
    message = described.request_class()
    try:
        json_format.ParseDict(
            value,
            message,
            descriptor_pool=described.pool,
            max_recursion_depth=_MAX_JSON_DEPTH,
        )
    except (json_format.ParseError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ValidationError(
            f"the request does not fit {type_name}: {exc}",
            title="Invalid request message",
            plugin_id=plugin_id,
            suggestions=[
                "field names as in the .proto (snake_case) or their JSON names (lowerCamelCase)"
            ],
        ) from None
    return bytes(message.SerializeToString())


def decode_answer(described: MethodDescription, data: bytes, plugin_id: str | None = None) -> Any:
    """The method's answer (wire format) as JSON data, every field shown."""
    if len(data) > MAX_ANSWER_BYTES:
        raise PluginCallError(
            f"the answer of {described.path} is {len(data)} bytes, more than the "
            f"{MAX_ANSWER_BYTES // (1024 * 1024)} MiB a call shows",
            title="Answer too large",
            plugin_id=plugin_id,
        )
    type_name = described.answer_class.DESCRIPTOR.full_name
    try:
        message = described.answer_class.FromString(data)
        return json_format.MessageToDict(
            message,
            descriptor_pool=described.pool,
            always_print_fields_with_no_presence=True,
        )
    except (DecodeError, TypeError, ValueError, RecursionError) as exc:
        raise PluginCallError(
            f"the answer of {described.path} is not a valid {type_name}: {exc}",
            title="Invalid answer",
            plugin_id=plugin_id,
        ) from None


# -- describing -------------------------------------------------------------------------------
def _reflection_failed(detail: str, plugin_id: str | None) -> PluginCallError:
    return PluginCallError(
        f"server reflection of the plugin failed: {detail}",
        title="Cannot describe the method",
        plugin_id=plugin_id,
    )


async def _reflect(
    channel: grpc.aio.Channel,
    request: reflection_pb2.ServerReflectionRequest,
    timeout: float,
    plugin_id: str | None,
) -> reflection_pb2.ServerReflectionResponse | None:
    try:
        return await reflection_request(channel, request, timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise PluginCallError(
                f"server reflection did not answer within {timeout:g} s",
                title="Call timed out",
                plugin_id=plugin_id,
            ) from None
        raise _reflection_failed(f"{exc.code().name}: {exc.details()}", plugin_id) from None


class _Files:
    """Descriptor files from reflection, within the caps."""

    def __init__(self, plugin_id: str | None) -> None:
        self.plugin_id = plugin_id
        self.protos: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self.size = 0

    def add(self, serialized: list[bytes]) -> None:
        for data in serialized:
            self.size += len(data)
            if self.size > MAX_REFLECTION_BYTES:
                raise _reflection_failed(
                    f"its descriptors are larger than {MAX_REFLECTION_BYTES // (1024 * 1024)} MiB",
                    self.plugin_id,
                )
            proto = descriptor_pb2.FileDescriptorProto()
            try:
                proto.ParseFromString(data)
            except DecodeError as exc:
                raise _reflection_failed(
                    f"a descriptor does not decode: {exc}", self.plugin_id
                ) from None
            self.protos.setdefault(proto.name, proto)
            if len(self.protos) > MAX_REFLECTION_FILES:
                raise _reflection_failed(
                    f"the method needs more than {MAX_REFLECTION_FILES} descriptor files",
                    self.plugin_id,
                )

    def missing(self) -> list[str]:
        wanted = {dep for p in self.protos.values() for dep in p.dependency}
        return sorted(wanted - self.protos.keys())


def _from_default_pool(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """A file the host itself knows (protobuf's well-known types ...), for a server that
    leaves a dependency out of its answers."""
    try:
        known = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    known.CopyToProto(proto)
    return proto


_WELL_KNOWN_FILES = tuple(
    module.DESCRIPTOR.name
    for module in (
        any_pb2,
        duration_pb2,
        empty_pb2,
        field_mask_pb2,
        struct_pb2,
        timestamp_pb2,
        wrappers_pb2,
    )
)
"""protobuf's well-known types, added to every reflected pool: a ``google.protobuf.Any``
may hold one whose file the method's own files do not import (Omniview's SDK packs
settings values as ``Any(BytesValue)``), and its JSON needs the type."""


def _build_pool(files: _Files) -> descriptor_pool.DescriptorPool:
    """The files in a fresh pool, each after its dependencies, then the well-known types
    they did not bring."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in path:
            raise _reflection_failed(
                f"its descriptor files import each other: {name}", files.plugin_id
            )
        proto = files.protos.get(name)
        if proto is None:
            raise _reflection_failed(f"it did not send the descriptor file {name}", files.plugin_id)
        for dep in proto.dependency:
            visit(dep, (*path, name))
        added.add(name)
        order.append(name)

    for name in sorted(files.protos):
        visit(name, ())
    for name in order:
        try:
            pool.Add(files.protos[name])
        except (TypeError, ValueError, KeyError) as exc:
            raise _reflection_failed(
                f"descriptor file {name} is invalid: {exc}", files.plugin_id
            ) from None
    for name in _WELL_KNOWN_FILES:
        known = None if name in added else _from_default_pool(name)
        if known is not None:
            pool.Add(known)
    return pool


async def _reflected_service(
    channel: grpc.aio.Channel, service: str, timeout: float, plugin_id: str | None
) -> tuple[bool, ServiceDescriptor | None]:
    """(reflection served, the service as reflection describes it or None)."""
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    response = await _reflect(channel, request, timeout, plugin_id)
    if response is None:
        return False, None
    if response.HasField("error_response"):
        code = response.error_response.error_code
        if code in (grpc.StatusCode.NOT_FOUND.value[0], grpc.StatusCode.UNIMPLEMENTED.value[0]):
            return True, None
        raise _reflection_failed(
            f"code {code}: {response.error_response.error_message[:300]}", plugin_id
        )
    if not response.HasField("file_descriptor_response"):
        return True, None
    files = _Files(plugin_id)
    files.add(list(response.file_descriptor_response.file_descriptor_proto))
    while missing := files.missing():
        for name in missing:
            request = reflection_pb2.ServerReflectionRequest(file_by_filename=name)
            answer = await _reflect(channel, request, timeout, plugin_id)
            if answer is not None and answer.HasField("file_descriptor_response"):
                files.add(list(answer.file_descriptor_response.file_descriptor_proto))
            if name not in files.protos:
                known = _from_default_pool(name)
                if known is None:
                    raise _reflection_failed(
                        f"it cannot send the descriptor file {name}", plugin_id
                    )
                files.protos[name] = known
    pool = _build_pool(files)
    try:
        return True, pool.FindServiceByName(service)
    except KeyError:
        return True, None  # the file holds a message or enum of that name, not a service


async def _listed(lister: ServiceLister | None) -> list[str]:
    if lister is None:
        return []
    try:
        return await lister()
    except (grpc.aio.AioRpcError, grpc.aio.UsageError):
        return []


def _undescribed(
    service: str, plugin_id: str | None, reflection: bool, served: list[str]
) -> ValidationError:
    """Why ``service`` cannot be called, naming what can."""
    who = f"plugin {plugin_id!r}" if plugin_id else "the plugin"
    look = f"see what it serves: plughost info {plugin_id}" if plugin_id else "plughost info ID"
    if not reflection:
        built_in = ", ".join(sorted(BUILT_IN_SERVICES))
        return ValidationError(
            f"{who} serves no gRPC server reflection, so plughost cannot describe "
            f"{service}'s messages; without reflection it can call: {built_in}",
            title="Cannot describe the method",
            plugin_id=plugin_id,
            suggestions=["register gRPC server reflection in the plugin", look],
        )
    listing = ", ".join(served) if served else "nothing it would list"
    if service in served:
        return ValidationError(
            f"{who} lists {service} in its server reflection, but reflection cannot describe "
            "it: the service was registered without its .proto descriptor (declared by hand?), "
            "so plughost cannot encode its messages",
            title="Cannot describe the method",
            plugin_id=plugin_id,
            suggestions=["register the service from protoc-generated code (its descriptor)"],
        )
    return ValidationError(
        f"{who} does not serve {service}; it serves: {listing}",
        title="Unknown service",
        plugin_id=plugin_id,
        suggestions=[look],
    )


async def describe_method(
    channel: grpc.aio.Channel,
    service: str,
    method: str,
    timeout: float,
    *,
    plugin_id: str | None = None,
    list_services: ServiceLister | None = None,
) -> MethodDescription:
    """Describe ``service/method``: reflection first, else plughost's own descriptors.

    ``list_services`` is called only to explain a service reflection does not
    describe. Raises ValidationError for a name the plugin does not serve (or
    that cannot be described) and PluginCallError when reflection itself fails.
    """
    reflection, found = await _reflected_service(channel, service, timeout, plugin_id)
    source: Source = "reflection"
    if found is None and service in BUILT_IN_SERVICES:
        found, source = BUILT_IN_SERVICES[service], "built-in"
    if found is None:
        served = await _listed(list_services) if reflection else []
        raise _undescribed(service, plugin_id, reflection, served)
    found_method = found.methods_by_name.get(method)
    if found_method is None:
        methods = ", ".join(sorted(found.methods_by_name)) or "none"
        raise ValidationError(
            f"{service} has no method {method!r}; its methods: {methods}",
            title="Unknown method",
            plugin_id=plugin_id,
        )
    return MethodDescription(
        service=service,
        method=method,
        descriptor=found_method,
        request_class=message_factory.GetMessageClass(found_method.input_type),
        answer_class=message_factory.GetMessageClass(found_method.output_type),
        pool=found.file.pool,
        source=source,
    )
