"""How the host application hears about plugins: controllers and lifecycle hooks.

A capability controller (resource, settings, exec ...) is told about the
plugins that declare its capability; a lifecycle hook (the seed's ``managers``
map) hears about every plugin. Methods may be plain or async and are all
optional. A failing hook is logged and skipped, so one broken integration
cannot keep plugins down, except the settings controller: a plugin whose
settings cannot be set up does not start.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import PluginLoadError
from ..records import PluginInfo

__all__ = ["HOOK_STAGES", "CapabilityController", "HookStage", "PluginLifecycleHook", "run_hooks"]

log = logging.getLogger(__name__)

HookStage = Literal["init", "start", "stop", "shutdown", "destroy"]
HOOK_STAGES: tuple[HookStage, ...] = ("init", "start", "stop", "shutdown", "destroy")
SETTINGS = "settings"


@runtime_checkable
class PluginLifecycleHook(Protocol):
    """Any subset of these methods; each gets the plugin's PluginInfo."""

    def on_plugin_init(self, info: PluginInfo) -> Any: ...


CapabilityController = PluginLifecycleHook


def _ordered(
    capabilities: list[str],
    controllers: Mapping[str, object],
    hooks: Mapping[str, object],
) -> list[tuple[str, object]]:
    """Settings controller first, then the other capabilities' controllers, then hooks."""
    chosen: list[tuple[str, object]] = []
    if SETTINGS in capabilities and SETTINGS in controllers:
        chosen.append((f"controller:{SETTINGS}", controllers[SETTINGS]))
    for cap in capabilities:
        if cap != SETTINGS and cap in controllers:
            chosen.append((f"controller:{cap}", controllers[cap]))
    chosen.extend((f"hook:{name}", hook) for name, hook in hooks.items())
    return chosen


async def run_hooks(
    stage: HookStage,
    info: PluginInfo,
    controllers: Mapping[str, object],
    hooks: Mapping[str, object],
    client: object = None,
) -> list[str]:
    """Call ``on_plugin_<stage>`` everywhere it exists; returns the names that failed.

    A method that takes two arguments gets ``(info, client)``: the plugin's
    ``PluginClient``, live at init and start, still reaching the process at stop.
    Raises PluginLoadError if the settings controller fails at init or start.
    """
    failed = []
    for name, target in _ordered(info.capabilities, controllers, hooks):
        method = getattr(target, f"on_plugin_{stage}", None)
        if method is None:
            continue
        try:
            result = method(info, client) if _wants_client(method) else method(info)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if name == f"controller:{SETTINGS}" and stage in ("init", "start"):
                raise PluginLoadError(
                    f"the settings controller failed at {stage}: {exc}",
                    plugin_id=info.id,
                    suggestions=["check the plugin's settings schema and stored values"],
                ) from exc
            log.exception("%s failed at %s for plugin %s", name, stage, info.id)
            failed.append(name)
    return failed


def _wants_client(method: Any) -> bool:
    """True for ``on_plugin_x(self, info, client)`` (bound: two positional parameters)."""
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind is p.VAR_POSITIONAL
    ]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in positional)
