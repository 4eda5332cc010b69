"""One exception family for everything plughost raises.

Every error carries what a person and a program both need: a machine-readable
``type``, an HTTP-like ``status``, a short ``title``, a ``detail`` naming the
plugin and the cause, ``suggestions`` saying what to do next, and the
``plugin_id``. The CLI prints them; the local service returns them as problem
JSON (``to_problem()``). Each of these texts is capped when the error is made
(:mod:`plughost.textcap`): a detail quoting a huge path or a server's huge
message must not make every printer and every answer pay for it.

Tree::

    PlughostError
    ├── ValidationError            type=validation                 400
    │   └── InvalidTransitionError type=invalid_transition         409
    ├── PluginNotFoundError        type=plugin_not_found           404
    ├── PluginNotLoadedError       type=plugin_not_loaded          409
    │   └── PluginUnavailableError type=plugin_unavailable         503
    ├── PluginConflictError        type=conflict                   409
    ├── PluginLoadError            type=plugin_load_failed         500
    │   └── HandshakeError         type=handshake_failed           502
    ├── BrokerError                type=broker_failed              502
    ├── PluginCallError            type=plugin_call_failed         502
    ├── PluginInstallError         type=plugin_install_failed      400
    │   └── UnsafeArchiveError     type=unsafe_archive             400
    ├── PluginBuildError           type=plugin_build_failed        422
    ├── CancelledError             type=cancelled                  499
    ├── SettingsMissingError       type=settings_missing_config    412
    │   └── OmniviewSdkNotFoundError type=omniview_sdk_not_found   412
    ├── RootLockedError            type=root_locked                423
    ├── RegistryUnavailableError   type=registry_unavailable       503
    ├── ChecksumMismatchError      type=checksum_mismatch          422
    ├── SignatureInvalidError      type=signature_invalid          422
    └── InternalError              type=internal                   500
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .textcap import ITEMS, cap, cap_json

__all__ = [
    "BrokerError",
    "CancelledError",
    "ChecksumMismatchError",
    "HandshakeError",
    "InternalError",
    "InvalidTransitionError",
    "OmniviewSdkNotFoundError",
    "PlughostError",
    "PluginBuildError",
    "PluginCallError",
    "PluginConflictError",
    "PluginInstallError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginNotLoadedError",
    "PluginUnavailableError",
    "RegistryUnavailableError",
    "RootLockedError",
    "SettingsMissingError",
    "SignatureInvalidError",
    "UnsafeArchiveError",
    "ValidationError",
    "plugin_context",
]


class PlughostError(Exception):
    """Root of every error plughost raises on purpose."""

    type: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    default_title: ClassVar[str] = "Plugin host error"

    def __init__(
        self,
        detail: str,
        *,
        title: str | None = None,
        suggestions: Sequence[str] = (),
        plugin_id: str | None = None,
    ) -> None:
        detail = cap(detail)  # a path or a server's message may be any size: see textcap
        super().__init__(detail)
        self.detail = detail
        self.title = cap(title or self.default_title)
        self.suggestions: list[str] = cap_json(list(suggestions))
        self.plugin_id = cap(plugin_id) if plugin_id is not None else None

    def __str__(self) -> str:
        prefix = f"[{self.plugin_id}] " if self.plugin_id else ""
        return f"{prefix}{self.detail}"

    def to_dict(self) -> dict[str, Any]:
        """The error as plain data, for ``--json`` output and events."""
        return {
            "type": self.type,
            "status": self.status,
            "title": self.title,
            "detail": self.detail,
            "suggestions": list(self.suggestions),
            "pluginID": self.plugin_id,
        }

    def to_problem(self) -> dict[str, Any]:
        """RFC 9457 problem details, with plughost's fields as extensions."""
        problem = self.to_dict()
        problem["type"] = f"urn:plughost:error:{self.type}"
        problem["errorType"] = self.type
        return problem


class ValidationError(PlughostError):
    type = "validation"
    status = 400
    default_title = "Invalid input"


class InvalidTransitionError(ValidationError):
    type = "invalid_transition"
    status = 409
    default_title = "Invalid lifecycle transition"


class PluginNotFoundError(PlughostError):
    type = "plugin_not_found"
    status = 404
    default_title = "Plugin not found"


class PluginNotLoadedError(PlughostError):
    type = "plugin_not_loaded"
    status = 409
    default_title = "Plugin not loaded"


class PluginUnavailableError(PluginNotLoadedError):
    """A call cannot reach the plugin: it is not running, or did not come back in time."""

    type = "plugin_unavailable"
    status = 503
    default_title = "Plugin unavailable"

    def __init__(self, detail: str, *, phase: str = "", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.phase = phase
        """The plugin's phase when the call gave up."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "phase": self.phase}


class PluginConflictError(PlughostError):
    type = "conflict"
    status = 409
    default_title = "Plugin is busy"


class PluginLoadError(PlughostError):
    type = "plugin_load_failed"
    status = 500
    default_title = "Plugin failed to load"


class HandshakeError(PluginLoadError):
    type = "handshake_failed"
    status = 502
    default_title = "Plugin handshake failed"


class BrokerError(PlughostError):
    """go-plugin's GRPCBroker failed: an id never announced, a refused address, a closed stream."""

    type = "broker_failed"
    status = 502
    default_title = "Plugin broker failed"


class PluginCallError(PlughostError):
    """A call of a plugin's method failed: the plugin answered a gRPC error, or its answer
    (or its reflection) could not be used."""

    type = "plugin_call_failed"
    status = 502
    default_title = "Plugin call failed"

    def __init__(self, detail: str, *, grpc_code: str = "", **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.grpc_code = grpc_code
        """The gRPC status code's name the plugin answered (empty: none)."""

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.grpc_code:
            data["grpcCode"] = self.grpc_code
        return data


class PluginInstallError(PlughostError):
    type = "plugin_install_failed"
    status = 400
    default_title = "Plugin install failed"


class UnsafeArchiveError(PluginInstallError):
    type = "unsafe_archive"
    status = 400
    default_title = "Unsafe plugin package"


class PluginBuildError(PlughostError):
    """A build failed; ``errors`` says where: ``[{file, line, column, message}]``."""

    type = "plugin_build_failed"
    status = 422
    default_title = "Plugin build failed"

    def __init__(
        self, detail: str, *, errors: Sequence[dict[str, Any]] = (), **kwargs: Any
    ) -> None:
        super().__init__(detail, **kwargs)
        self.errors = [cap_json(dict(e)) for e in list(errors)[:ITEMS]]
        """Each place the compiler named, as ``{file, line, column, message}``."""

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "errors": self.errors}


class CancelledError(PlughostError):
    type = "cancelled"
    status = 499
    default_title = "Operation cancelled"


class SettingsMissingError(PlughostError):
    type = "settings_missing_config"
    status = 412
    default_title = "A setting is missing"


class OmniviewSdkNotFoundError(SettingsMissingError):
    """Omniview's plugin SDK (its .proto files) is not where plughost looked for it."""

    type = "omniview_sdk_not_found"
    status = 412
    default_title = "Omniview plugin SDK not found"


class RootLockedError(PlughostError):
    type = "root_locked"
    status = 423
    default_title = "Root is in use by another host"


class RegistryUnavailableError(PlughostError):
    type = "registry_unavailable"
    status = 503
    default_title = "Marketplace unavailable"


class ChecksumMismatchError(PlughostError):
    type = "checksum_mismatch"
    status = 422
    default_title = "Checksum mismatch"


class SignatureInvalidError(PlughostError):
    type = "signature_invalid"
    status = 422
    default_title = "Signature invalid"


class InternalError(PlughostError):
    type = "internal"
    status = 500
    default_title = "Internal error"


@contextlib.contextmanager
def plugin_context(plugin_id: str) -> Iterator[None]:
    """Attach ``plugin_id`` to any PlughostError raised inside the block."""
    try:
        yield
    except PlughostError as exc:
        if exc.plugin_id is None:
            exc.plugin_id = cap(plugin_id)
        raise
