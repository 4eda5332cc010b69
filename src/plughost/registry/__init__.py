"""The marketplace: its wire types, a client, and a registry server of our own.

- :mod:`.models`: the JSON types of the marketplace API (docs/publishing.md) and
  platform/version helpers.
- :mod:`.client`: :class:`RegistryClient` (httpx, async), :func:`verify_download`,
  :func:`checkable_artifact`, :func:`enrich`.
- :mod:`.catalog`: the registry itself, async: :class:`~.catalog.Catalog` over
  :mod:`.db` (SQLAlchemy tables and Alembic migrations; SQLite or PostgreSQL)
  and :mod:`.storage` (a directory or an S3-compatible store).
- :mod:`.index`: the same with blocking methods (:class:`RegistryIndex`),
  :func:`publish`, :func:`add_review`.
- :mod:`.server`: the FastAPI app over a registry (:func:`create_app`,
  :func:`run_server`).

Names are imported on first use, so a host that only talks to a marketplace
never imports FastAPI or uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import (
        DownloadResult,
        RegistryClient,
        checkable_artifact,
        enrich,
        sort_params,
        verify_download,
    )
    from .index import PublishResult, RegistryIndex, add_review, publish
    from .models import (
        ANY_PLATFORM,
        SUPPORTED_PLATFORMS,
        Artifact,
        ArtifactManifest,
        AvailablePlugin,
        Category,
        DailyDownloads,
        DownloadStats,
        Envelope,
        Pagination,
        Plugin,
        PluginAuthor,
        PluginVersion,
        Review,
        SignedManifest,
        VersionDownloads,
        VersionInfo,
        compare_versions,
        current_platform,
    )
    from .server import create_app, run_server, running_server

_LAZY: dict[str, str] = {
    "ANY_PLATFORM": "models",
    "SUPPORTED_PLATFORMS": "models",
    "Artifact": "models",
    "ArtifactManifest": "models",
    "AvailablePlugin": "models",
    "Category": "models",
    "DailyDownloads": "models",
    "DownloadResult": "client",
    "DownloadStats": "models",
    "Envelope": "models",
    "Pagination": "models",
    "Plugin": "models",
    "PluginAuthor": "models",
    "PluginVersion": "models",
    "PublishResult": "index",
    "RegistryClient": "client",
    "RegistryIndex": "index",
    "Review": "models",
    "SignedManifest": "models",
    "VersionDownloads": "models",
    "VersionInfo": "models",
    "add_review": "index",
    "checkable_artifact": "client",
    "compare_versions": "models",
    "create_app": "server",
    "current_platform": "models",
    "enrich": "client",
    "publish": "index",
    "run_server": "server",
    "running_server": "server",
    "sort_params": "client",
    "verify_download": "client",
}

__all__ = [
    "ANY_PLATFORM",
    "SUPPORTED_PLATFORMS",
    "Artifact",
    "ArtifactManifest",
    "AvailablePlugin",
    "Category",
    "DailyDownloads",
    "DownloadResult",
    "DownloadStats",
    "Envelope",
    "Pagination",
    "Plugin",
    "PluginAuthor",
    "PluginVersion",
    "PublishResult",
    "RegistryClient",
    "RegistryIndex",
    "Review",
    "SignedManifest",
    "VersionDownloads",
    "VersionInfo",
    "add_review",
    "checkable_artifact",
    "compare_versions",
    "create_app",
    "current_platform",
    "enrich",
    "publish",
    "run_server",
    "running_server",
    "sort_params",
    "verify_download",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'plughost.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
