"""``SdkProtos``: message and stub classes built from the SDK's protos.

The classes are built at run time from the ``FileDescriptorSet`` protoc compiles
(:mod:`.generate`), into a descriptor pool of the SDK's own, not protobuf's global
one. So two SDK versions can be loaded in one process, and the SDK's
``omniview.sdk.lifecycle.v1`` does not collide with the copy plughost's process
layer registers for its health checks. The price: a field of a well-known type
(``google.protobuf.Any``, ``Struct``, ``Timestamp`` ...) takes this pool's class;
build values with dicts (a message's constructor takes a dict for a Struct field),
the WKT helpers (``msg.value.Pack(x)``, ``msg.created_at.FromDatetime(d)``) or
``sdk.message("google.protobuf.Struct")``; :meth:`SdkProtos.convert` copies a
message of another pool (``struct_pb2.Struct()``, a checked-in stub's) into this one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FileDescriptor, ServiceDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import Message

from ..errors import ValidationError
from .locate import SdkLocation

__all__ = ["ALIASES", "ProtoNamespace", "SdkProtos", "method_kind"]

_PREFIX = "omniview.sdk."
ALIASES = {"log": "logs", "metrics": "metric", "commands": "command", "networking": "networker"}
"""plugin.yaml capability names (``log``) and plurals that name an SDK package."""


class ProtoNamespace:
    """What a generated ``*_pb2`` module offers, for one SDK package: its messages (nested
    ones as their attributes), its enums (``EnumTypeWrapper``) and its enum values."""

    def __init__(self, package: str, members: dict[str, Any]) -> None:
        self.__name__ = package
        self._members = members

    def __getattr__(self, name: str) -> Any:
        try:
            return self._members[name]
        except KeyError:
            raise AttributeError(f"{self.__name__} has no {name!r}") from None

    def __dir__(self) -> list[str]:
        return sorted(self._members)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._members))

    def __repr__(self) -> str:
        return f"<ProtoNamespace {self.__name__}: {len(self._members)} names>"


_KINDS = {
    (False, False): "unary_unary",
    (False, True): "unary_stream",
    (True, False): "stream_unary",
    (True, True): "stream_stream",
}


def method_kind(method: Any) -> str:
    """``unary_unary`` ... ``stream_stream`` of a MethodDescriptor (grpc's multicallable names)."""
    return _KINDS[(bool(method.client_streaming), bool(method.server_streaming))]


class SdkProtos:
    """One SDK's protos, compiled: its packages, services, message and stub classes."""

    def __init__(self, location: SdkLocation, file_set: bytes, digest: str) -> None:
        self.location = location
        self.path: Path = location.path
        self.version: str | None = location.version
        self.digest = digest
        """SHA-256 of the SDK's v1 .proto files."""
        self.pool = descriptor_pool.DescriptorPool()
        files = descriptor_pb2.FileDescriptorSet.FromString(file_set)
        for file in files.file:
            self.pool.Add(file)
        self._files: dict[str, list[FileDescriptor]] = {}
        for file in files.file:
            if file.package.startswith(_PREFIX):
                name = file.package[len(_PREFIX) :].split(".")[0]
                self._files.setdefault(name, []).append(self.pool.FindFileByName(file.name))
        self._namespaces: dict[str, ProtoNamespace] = {}
        self._stubs: dict[str, type] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        version = self.version or f"sha256 {self.digest[:12]}"
        return f"<{type(self).__name__} {version} at {self.path}>"

    # -- what there is ---------------------------------------------------------------
    @property
    def packages(self) -> list[str]:
        """The SDK's packages by short name: ``command``, ``common``, ``exec``, ``lifecycle``,
        ``logs``, ``metric``, ``networker``, ``resource``, ``settings``."""
        return sorted(self._files)

    def package(self, name: str) -> str:
        """The proto package of ``name`` (``settings``, ``log``, ``omniview.sdk.settings.v1``)."""
        short = name[len(_PREFIX) :].split(".")[0] if name.startswith(_PREFIX) else name
        short = ALIASES.get(short, short)
        if short not in self._files:
            raise ValidationError(
                f"the Omniview SDK at {self.path} has no package {name!r}",
                suggestions=[f"one of: {', '.join(self.packages)}"],
            )
        return self._files[short][0].package

    def _short(self, name: str) -> str:
        return self.package(name)[len(_PREFIX) :].split(".")[0]

    def services(self, name: str) -> list[str]:
        """The services of one package (``command`` has ``Command`` and ``Stream``)."""
        return [s for f in self._files[self._short(name)] for s in f.services_by_name]

    def service(self, name: str, service: str | None = None) -> ServiceDescriptor:
        """A package's service descriptor (its only or first one, unless ``service`` is given)."""
        short = self._short(name)
        found = [s for f in self._files[short] for s in f.services_by_name.values()]
        if service is not None:
            found = [s for s in found if service in (s.name, s.full_name)]
        if not found:
            have = ", ".join(self.services(short)) or "none"
            raise ValidationError(
                f"the SDK's package {self.package(short)} has no service {service or ''}".rstrip()
                + f" (services: {have})",
                suggestions=["pick one of its services with service=..."],
            )
        return found[0]

    # -- classes ---------------------------------------------------------------------
    def message(self, full_name: str) -> type[Message]:
        """The class of any message the SDK uses, by full name (well-known types too)."""
        try:
            descriptor = self.pool.FindMessageTypeByName(full_name)
        except KeyError:
            raise ValidationError(
                f"the Omniview SDK at {self.path} has no message {full_name!r}",
                suggestions=["use the full name, e.g. omniview.sdk.settings.v1.Setting"],
            ) from None
        return self.message_class(descriptor)

    @staticmethod
    def message_class(descriptor: Descriptor) -> type[Message]:
        return message_factory.GetMessageClass(descriptor)

    def messages(self, name: str) -> ProtoNamespace:
        """A package's messages and enums, like its generated ``*_pb2`` module:
        ``sdk.messages("settings").Setting``, ``.SettingType.SETTING_TYPE_TEXT``."""
        short = self._short(name)
        with self._lock:
            if short not in self._namespaces:
                members: dict[str, Any] = {}
                for file in self._files[short]:
                    for enum in file.enum_types_by_name.values():
                        members[enum.name] = EnumTypeWrapper(enum)
                        members.update((v.name, v.number) for v in enum.values)
                    for desc in file.message_types_by_name.values():
                        members[desc.name] = self.message_class(desc)
                self._namespaces[short] = ProtoNamespace(self.package(short), members)
            return self._namespaces[short]

    def stub(self, name: str, service: str | None = None) -> type:
        """The stub class of a service, shaped like protoc's: ``Stub(channel)`` with one
        multicallable per method. Works with ``PluginClient.stub`` (follows restarts)."""
        return self.stub_for(self.service(name, service))

    def stub_for(self, desc: ServiceDescriptor) -> type:
        """The stub class of a service descriptor of this SDK (one class per service)."""
        with self._lock:
            if desc.full_name not in self._stubs:
                self._stubs[desc.full_name] = self._build_stub(desc)
            return self._stubs[desc.full_name]

    def _build_stub(self, desc: ServiceDescriptor) -> type:
        methods = [
            (
                m.name,
                method_kind(m),
                f"/{desc.full_name}/{m.name}",
                self.message_class(m.input_type).SerializeToString,
                self.message_class(m.output_type).FromString,
            )
            for m in desc.methods
        ]

        def __init__(self: Any, channel: Any) -> None:
            for name, kind, path, serialize, deserialize in methods:
                factory = getattr(channel, kind)
                multicallable = factory(
                    path, request_serializer=serialize, response_deserializer=deserialize
                )
                setattr(self, name, multicallable)

        doc = f"Client stub of {desc.full_name} (built at run time from the Omniview SDK)."
        return type(f"{desc.name}Stub", (), {"__init__": __init__, "__doc__": doc})

    def add_to_server(
        self, name: str, servicer: Any, server: Any, service: str | None = None
    ) -> None:
        """Serve ``servicer`` (an object with a method per RPC, sync or async as the server
        wants; a missing one answers UNIMPLEMENTED) as a service of the SDK on ``server``,
        like protoc's ``add_<Service>Servicer_to_server``."""
        desc = self.service(name, service)
        handlers = {}
        for m in desc.methods:
            implementation = getattr(servicer, m.name, None)
            if implementation is None:
                continue
            make = getattr(grpc, f"{method_kind(m)}_rpc_method_handler")
            handlers[m.name] = make(
                implementation,
                request_deserializer=self.message_class(m.input_type).FromString,
                response_serializer=self.message_class(m.output_type).SerializeToString,
            )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(desc.full_name, handlers),)
        )

    # -- conversions -----------------------------------------------------------------
    def convert(self, message: Message, full_name: str | None = None) -> Message:
        """``message`` (of another pool, e.g. google.protobuf's ``struct_pb2.Struct`` or a
        checked-in stub) as this SDK's class of the same full name."""
        cls = self.message(full_name or message.DESCRIPTOR.full_name)
        if isinstance(message, cls):
            return message
        return cls.FromString(message.SerializeToString())

    def to_dict(self, message: Message) -> dict[str, Any]:
        """A message as JSON-style data (proto field names; Any resolved in this SDK)."""
        return json_format.MessageToDict(
            message, preserving_proto_field_name=True, descriptor_pool=self.pool
        )

    def from_dict(self, full_name: str, data: dict[str, Any]) -> Message:
        """Parse JSON-style data (either field-name style) into the SDK's message ``full_name``."""
        cls = self.message(full_name)
        try:
            return json_format.ParseDict(data, cls(), descriptor_pool=self.pool)
        except json_format.ParseError as exc:
            raise ValidationError(f"not a valid {full_name}: {exc}") from exc
