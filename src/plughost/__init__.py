"""plughost: install, run and supervise plugins as separate processes.

This module is the public face; the names below are re-exported from the
concept modules (``plughost.events``, ``plughost.pids`` ...), which stay
importable for the seed's module-level names.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        CancelledError,
        ChecksumMismatchError,
        HandshakeError,
        InternalError,
        InvalidTransitionError,
        PlughostError,
        PluginBuildError,
        PluginConflictError,
        PluginInstallError,
        PluginLoadError,
        PluginNotFoundError,
        PluginNotLoadedError,
        PluginUnavailableError,
        RegistryUnavailableError,
        RootLockedError,
        SettingsMissingError,
        SignatureInvalidError,
        UnsafeArchiveError,
        ValidationError,
    )
    from .events import Event, EventBus, StateChangePayload
    from .host.client import PluginClient
    from .host.manager import LoadPluginOptions, PluginManager
    from .lifecycle import PluginStateMachine, Transition
    from .lock import RootLock
    from .metadata import (
        PluginMeta,
        load_meta,
        load_meta_from_bytes,
        load_meta_from_tarball,
        validate_plugin_id,
    )
    from .paths import RootLayout, resolve_root
    from .phases import ACTIVE_PHASES, ALLOWED_TRANSITIONS, TERMINAL_PHASES, Phase
    from .pids import PluginPIDTracker
    from .reconcile import Reconciler, ReconcileResult
    from .records import PluginInfo, PluginRecord, PluginStateRecord
    from .settings import Settings, SettingsProvider
    from .store import StateStore
    from .validate import validate_for_phase

_LAZY: dict[str, str] = {
    "ACTIVE_PHASES": "phases",
    "ALLOWED_TRANSITIONS": "phases",
    "CancelledError": "errors",
    "ChecksumMismatchError": "errors",
    "Event": "events",
    "EventBus": "events",
    "HandshakeError": "errors",
    "InternalError": "errors",
    "InvalidTransitionError": "errors",
    "LoadPluginOptions": "host.manager",
    "Phase": "phases",
    "PlughostError": "errors",
    "PluginBuildError": "errors",
    "PluginConflictError": "errors",
    "PluginInfo": "records",
    "PluginInstallError": "errors",
    "PluginLoadError": "errors",
    "PluginManager": "host.manager",
    "PluginMeta": "metadata",
    "PluginNotFoundError": "errors",
    "PluginNotLoadedError": "errors",
    "PluginClient": "host.client",
    "PluginUnavailableError": "errors",
    "PluginPIDTracker": "pids",
    "PluginRecord": "records",
    "PluginStateMachine": "lifecycle",
    "PluginStateRecord": "records",
    "ReconcileResult": "reconcile",
    "Reconciler": "reconcile",
    "RegistryUnavailableError": "errors",
    "RootLayout": "paths",
    "RootLock": "lock",
    "RootLockedError": "errors",
    "Settings": "settings",
    "SettingsMissingError": "errors",
    "SettingsProvider": "settings",
    "SignatureInvalidError": "errors",
    "StateChangePayload": "events",
    "StateStore": "store",
    "TERMINAL_PHASES": "phases",
    "Transition": "lifecycle",
    "UnsafeArchiveError": "errors",
    "ValidationError": "errors",
    "load_meta": "metadata",
    "load_meta_from_bytes": "metadata",
    "load_meta_from_tarball": "metadata",
    "resolve_root": "paths",
    "validate_for_phase": "validate",
    "validate_plugin_id": "metadata",
}

__version__ = "0.1.0"

MAX_PLUGIN_SIZE = 1024 * 1024 * 1024
"""Largest plugin package, and largest single file in one (1 GiB)."""

__all__ = [
    "ACTIVE_PHASES",
    "ALLOWED_TRANSITIONS",
    "MAX_PLUGIN_SIZE",
    "TERMINAL_PHASES",
    "CancelledError",
    "ChecksumMismatchError",
    "Event",
    "EventBus",
    "HandshakeError",
    "InternalError",
    "InvalidTransitionError",
    "LoadPluginOptions",
    "Phase",
    "PlughostError",
    "PluginBuildError",
    "PluginClient",
    "PluginConflictError",
    "PluginInfo",
    "PluginInstallError",
    "PluginLoadError",
    "PluginManager",
    "PluginMeta",
    "PluginNotFoundError",
    "PluginNotLoadedError",
    "PluginPIDTracker",
    "PluginRecord",
    "PluginStateMachine",
    "PluginStateRecord",
    "PluginUnavailableError",
    "ReconcileResult",
    "Reconciler",
    "RegistryUnavailableError",
    "RootLayout",
    "RootLock",
    "RootLockedError",
    "Settings",
    "SettingsMissingError",
    "SettingsProvider",
    "SignatureInvalidError",
    "StateChangePayload",
    "StateStore",
    "Transition",
    "UnsafeArchiveError",
    "ValidationError",
    "load_meta",
    "load_meta_from_bytes",
    "load_meta_from_tarball",
    "resolve_root",
    "validate_for_phase",
    "validate_plugin_id",
]


def __getattr__(name: str) -> Any:
    """Import public names on first use: a plugin importing ``plughost.sdk`` should not
    pay for the whole host (manager, pydantic models, psutil ...)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'plughost' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
