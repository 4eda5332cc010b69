"""A registry directory, for callers without an event loop: the CLI's publish, tests, demos.

Layout of a registry directory (the defaults: the database and the packages
may live elsewhere, see :mod:`.db` and :mod:`.storage`)::

    DIR/index.db                               plugins, versions, artifacts, reviews, downloads
    DIR/registry.key                           the registry's Ed25519 private key (PEM, 0600)
    DIR/registry.pub                           its public key, 64 hex chars (what clients configure)
    DIR/packages/<id>/<version>/<platform>.tar.gz
    DIR/packages/<id>/<version>/<platform>.tar.gz.sig            base64 signature of the hex SHA-256
    DIR/packages/<id>/<version>/<platform>.tar.gz.manifest.json  manifest signed by the registry
    DIR/packages/<id>/<version>/<platform>.tar.gz.publisher.json manifest signed by the publisher

``<platform>`` is ``GOOS_GOARCH`` or ``any`` (see ``plughost.packages.platforms``).
Two keys sign: the registry's own (``registry.key``, created on first publish)
signs every artifact, as the original marketplace does; the publisher's key
(``plughost keygen``, held by whoever builds the plugin) signs it too when the
package is published with it, and that signature is checked against the
publisher's public key before anything is stored (docs/publishing.md).

An older directory's ``index.sqlite3`` is imported into the database by its
first migration. :class:`RegistryIndex` runs :class:`~.catalog.Catalog`'s
async methods on a private event loop thread, so it can be called from
anywhere, an async test included.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .catalog import (
    DEFAULT_PER_PAGE,
    KEY_FILE,
    MAX_PER_PAGE,
    ORDER_FIELDS,
    PUBLIC_KEY_FILE,
    Catalog,
    Page,
    PublishResult,
    _utcnow,
    validate_platform,
    validate_version,
)
from .db import DB_FILE, LEGACY_INDEX_FILE
from .models import Category, DailyDownloads, DownloadStats, Plugin, PluginVersion, Review
from .storage import LocalStorage, Storage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ..packages.signing import PrivateKeyLike

__all__ = [
    "DB_FILE",
    "DEFAULT_PER_PAGE",
    "INDEX_FILE",
    "KEY_FILE",
    "LEGACY_INDEX_FILE",
    "MAX_PER_PAGE",
    "ORDER_FIELDS",
    "PUBLIC_KEY_FILE",
    "Page",
    "PublishResult",
    "RegistryIndex",
    "add_review",
    "publish",
    "validate_platform",
    "validate_version",
]

INDEX_FILE = DB_FILE
T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on the module's loop thread (a daemon: exits need no stop)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="registry-index", daemon=True).start()
    return asyncio.run_coroutine_threadsafe(coro, _loop).result()


class RegistryIndex:
    """A registry (directory, database, storage) with blocking methods; see Catalog."""

    def __init__(
        self,
        root: str | Path,
        *,
        clock: Callable[[], datetime] = _utcnow,
        database: str | None = None,
        storage: str | Storage | None = None,
    ) -> None:
        self.catalog = Catalog(root, database=database, storage=storage, clock=clock, pooled=False)
        _run(self.catalog.open())

    @property
    def root(self) -> Path:
        return self.catalog.root

    @property
    def db_path(self) -> Path:
        """The SQLite file of the default database."""
        return self.root / DB_FILE

    @property
    def key_path(self) -> Path:
        return self.catalog.key_path

    @property
    def packages_dir(self) -> Path:
        return self.root / "packages"

    def count_plugins(self) -> int:
        return _run(self.catalog.count_plugins())

    def list_plugins(self, **query: Any) -> Page:
        return _run(self.catalog.list_plugins(**query))

    def get_plugin(self, plugin_id: str, *, base_url: str) -> Plugin:
        return _run(self.catalog.get_plugin(plugin_id, base_url=base_url))

    def categories(self) -> list[Category]:
        return _run(self.catalog.categories())

    artifact_url = staticmethod(Catalog.artifact_url)

    def list_versions(
        self, plugin_id: str, *, page: int = 1, per_page: int = DEFAULT_PER_PAGE, base_url: str
    ) -> Page:
        return _run(
            self.catalog.list_versions(plugin_id, page=page, per_page=per_page, base_url=base_url)
        )

    def get_version(self, plugin_id: str, version: str, *, base_url: str) -> PluginVersion:
        return _run(self.catalog.get_version(plugin_id, version, base_url=base_url))

    def artifact_path(self, plugin_id: str, version: str, platform: str) -> Path:
        """The stored package file of one artifact (local storage only)."""
        key = _run(self.catalog.artifact_key(plugin_id, version, platform))
        storage = self.catalog.storage
        assert isinstance(storage, LocalStorage), "artifact_path needs local storage"
        return storage.path(key)

    def record_download(
        self,
        plugin_id: str,
        version: str,
        arch: str,
        *,
        day: date | None = None,
        address: str | None = None,
    ) -> bool:
        return _run(
            self.catalog.record_download(plugin_id, version, arch, day=day, address=address)
        )

    def download_stats(self, plugin_id: str) -> DownloadStats:
        return _run(self.catalog.download_stats(plugin_id))

    def daily_downloads(self, plugin_id: str, days: int = 30) -> list[DailyDownloads]:
        return _run(self.catalog.daily_downloads(plugin_id, days))

    def list_reviews(
        self, plugin_id: str, *, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> Page:
        return _run(self.catalog.list_reviews(plugin_id, page=page, per_page=per_page))

    def add_review(self, plugin_id: str, **review: Any) -> Review:
        return _run(self.catalog.add_review(plugin_id, **review))

    def signing_key(self) -> tuple[Ed25519PrivateKey, str, bool]:
        return self.catalog.signing_key()

    def publish(self, package_path: str | Path, **options: Any) -> PublishResult:
        return _run(self.catalog.publish(package_path, **options))


def publish(
    directory: str | Path,
    package_path: str | Path,
    *,
    platform: str | None = None,
    readme: str | None = None,
    changelog: str = "",
    featured: bool | None = None,
    official: bool | None = None,
    publisher_key: PrivateKeyLike | None = None,
    publisher_manifest: Mapping[str, Any] | None = None,
    publisher_signature: str | None = None,
    publisher_public_key: str = "",
    database: str | None = None,
    storage: str | None = None,
) -> PublishResult:
    """Publish a package into the registry at ``directory`` (see :meth:`Catalog.publish`)."""
    return RegistryIndex(directory, database=database, storage=storage).publish(
        package_path,
        platform=platform,
        readme=readme,
        changelog=changelog,
        featured=featured,
        official=official,
        publisher_key=publisher_key,
        publisher_manifest=publisher_manifest,
        publisher_signature=publisher_signature,
        publisher_public_key=publisher_public_key,
    )


def add_review(
    directory: str | Path,
    plugin_id: str,
    *,
    rating: int,
    title: str = "",
    body: str = "",
    user_id: int = 0,
    response: str | None = None,
    created_at: datetime | None = None,
) -> Review:
    """Add a review to the registry at ``directory`` (for tests and demos)."""
    return RegistryIndex(directory).add_review(
        plugin_id,
        rating=rating,
        title=title,
        body=body,
        user_id=user_id,
        response=response,
        created_at=created_at,
    )
