"""``OmniviewSdk`` and ``load_sdk``: the SDK's classes plus a typed client per capability."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from ..host.client import PluginClient
from ..settings import Settings
from .classes import SdkProtos
from .clients import ServiceClient
from .generate import descriptor_set
from .locate import locate_sdk
from .resource import ResourceClient
from .settings import SettingsClient

__all__ = ["OmniviewSdk", "load_sdk"]


class OmniviewSdk(SdkProtos):
    """One SDK's protos, compiled (see :class:`SdkProtos`), and clients bound to plugins.
    Get it with :func:`load_sdk`."""

    # -- typed clients ---------------------------------------------------------------
    def client(self, name: str, plugin: PluginClient, service: str | None = None) -> ServiceClient:
        """A client of any service of the SDK, bound to a plugin: one async method per RPC
        (``snake_case`` or the RPC's own name), requests as messages, dicts or keywords."""
        return ServiceClient(self, plugin, self.service(name, service))

    def settings(self, plugin: PluginClient) -> SettingsClient:
        """``omniview.sdk.settings.v1.SettingsPlugin``, with Python values."""
        return SettingsClient(self, plugin, self.service("settings"))

    def resource(self, plugin: PluginClient) -> ResourceClient:
        """``omniview.sdk.resource.v1.ResourcePlugin``, with JSON-decoded resources."""
        return ResourceClient(self, plugin, self.service("resource"))

    def lifecycle(self, plugin: PluginClient) -> ServiceClient:
        return self.client("lifecycle", plugin)

    def exec(self, plugin: PluginClient) -> ServiceClient:
        return self.client("exec", plugin)

    def networker(self, plugin: PluginClient) -> ServiceClient:
        return self.client("networker", plugin)

    def logs(self, plugin: PluginClient) -> ServiceClient:
        return self.client("logs", plugin)

    def metric(self, plugin: PluginClient) -> ServiceClient:
        return self.client("metric", plugin)

    def command(self, plugin: PluginClient, service: str = "Command") -> ServiceClient:
        """``Command`` (``Call``) by default; ``service="Stream"`` for the stream service."""
        return self.client("command", plugin, service)


_LOADED: dict[tuple[Path, str], OmniviewSdk] = {}
_LOADED_LOCK = threading.Lock()


def load_sdk(
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    root: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    use_cache: bool = True,
) -> OmniviewSdk:
    """Find Omniview's plugin SDK and build its classes (once per SDK per process).

    ``path`` beats ``$PLUGHOST_OMNIVIEW_SDK``, which beats the setting ``omniview_sdk``
    (of ``settings``, else of the ``plughost.toml`` of ``root``/``profile``), which beats
    the newest ``github.com/omniviewdev/plugin-sdk@v*`` in Go's module cache. Not found:
    OmniviewSdkNotFoundError, naming each place looked at.

    Blocking (reads files, may run protoc once): call it at start-up, or in a thread.
    """
    location = locate_sdk(path, settings=settings, root=root, profile=profile)
    file_set, digest = descriptor_set(location.path, use_cache=use_cache)
    with _LOADED_LOCK:
        key = (location.path, digest)
        if key not in _LOADED:
            _LOADED[key] = OmniviewSdk(location, file_set, digest)
        return _LOADED[key]
