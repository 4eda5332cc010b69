"""The registry's catalog: plugins, versions, artifacts, reviews and downloads over the
database (:mod:`.db`) and the package storage (:mod:`.storage`), async.

All of the server's logic lives here so that the HTTP layer stays a thin
mapping of routes to methods, and so that publishing (a CLI command, run
while servers may be serving) and serving share one implementation. Every
method opens its own short transaction (on PostgreSQL reads, and a recorded
download, are single statements in autocommit), so several servers (and
publishers) on one database need no locking of their own.

Packages are stored under ``packages/<id>/<version>/<platform>.tar.gz`` with
their ``.sig``, ``.manifest.json`` and ``.publisher.json`` next to them
(see :mod:`.index` for a registry directory's layout). Files served to
clients are always looked up in the index by (id, version, platform); no
request path is ever joined onto a storage key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import re
import tarfile
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Integer, Table, Text, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..coalesce import NextRun
from ..errors import (
    ChecksumMismatchError,
    PluginNotFoundError,
    SignatureInvalidError,
    ValidationError,
)
from ..metadata import PluginMeta, validate_plugin_id
from ..store import atomic_replace
from .db import Base, default_url, make_engine, migrate
from .models import (
    Artifact,
    Category,
    DailyDownloads,
    DownloadStats,
    Plugin,
    PluginAuthor,
    PluginVersion,
    Review,
    SignedManifest,
    VersionDownloads,
    compare_versions,
    is_platform_name,
    latest_version,
)
from .storage import Storage, open_storage

if TYPE_CHECKING:
    from ..packages.signing import Manifest, PrivateKeyLike

__all__ = [
    "DEFAULT_PER_PAGE",
    "KEY_FILE",
    "MAX_PER_PAGE",
    "ORDER_FIELDS",
    "PUBLIC_KEY_FILE",
    "Catalog",
    "Page",
    "PublishResult",
    "validate_platform",
    "validate_version",
]

KEY_FILE = "registry.key"
PUBLIC_KEY_FILE = "registry.pub"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
_MAX_PAGE = 1_000_000_000
MAX_DAYS = 366

_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_README_NAMES = ("README.md", "readme.md", "README", "README.txt")
_MAX_README = 1024 * 1024

PLUGINS: Table = Base.metadata.tables["plugins"]
VERSIONS: Table = Base.metadata.tables["versions"]
ARTIFACTS: Table = Base.metadata.tables["artifacts"]
REVIEWS: Table = Base.metadata.tables["reviews"]
DOWNLOADS: Table = Base.metadata.tables["downloads"]
DOWNLOAD_MARKS: Table = Base.metadata.tables["download_marks"]
GENERATION: Table = Base.metadata.tables["catalog_generation"]

_GENERATION = select(func.coalesce(func.sum(GENERATION.c.generation), 0))

_DOWNLOAD_TOTALS = (
    select(DOWNLOADS.c.plugin_id, func.sum(DOWNLOADS.c["count"]).label("total"))
    .group_by(DOWNLOADS.c.plugin_id)
    .subquery("d")
)
_REVIEW_TOTALS = (
    select(
        REVIEWS.c.plugin_id,
        func.avg(REVIEWS.c.rating).label("average"),
        func.count().label("total"),
    )
    .group_by(REVIEWS.c.plugin_id)
    .subquery("r")
)
_DOWNLOAD_COUNT = func.coalesce(_DOWNLOAD_TOTALS.c.total, 0).label("download_count")
_AVERAGE_RATING = func.coalesce(_REVIEW_TOTALS.c.average, 0.0).label("average_rating")
_REVIEW_COUNT = func.coalesce(_REVIEW_TOTALS.c.total, 0).label("review_count")
_PLUGIN_TOTALS = PLUGINS.outerjoin(
    _DOWNLOAD_TOTALS, _DOWNLOAD_TOTALS.c.plugin_id == PLUGINS.c.id
).outerjoin(_REVIEW_TOTALS, _REVIEW_TOTALS.c.plugin_id == PLUGINS.c.id)
_PLUGIN_SELECT = select(PLUGINS, _DOWNLOAD_COUNT, _AVERAGE_RATING, _REVIEW_COUNT).select_from(
    _PLUGIN_TOTALS
)
# A listing shows no readme (up to 1 MiB each): it is not read.
_LISTED_SELECT = select(
    *(c for c in PLUGINS.c if c.key != "readme"), _DOWNLOAD_COUNT, _AVERAGE_RATING, _REVIEW_COUNT
).select_from(_PLUGIN_TOTALS)

# order_field values the list endpoint accepts -> column (never user text).
ORDER_FIELDS: dict[str, Any] = {
    "name": func.lower(PLUGINS.c.name),
    "id": PLUGINS.c.id,
    "download_count": _DOWNLOAD_COUNT,
    "downloads": _DOWNLOAD_COUNT,
    "average_rating": _AVERAGE_RATING,
    "rating": _AVERAGE_RATING,
    "review_count": _REVIEW_COUNT,
    "created_at": PLUGINS.c.created_at,
    "updated_at": PLUGINS.c.updated_at,
    "category": func.lower(PLUGINS.c.category),
}


_SEARCHED = (PLUGINS.c.id, PLUGINS.c.name, PLUGINS.c.description, PLUGINS.c.tags,
             PLUGINS.c.category)  # fmt: skip


def _filters(search: bool, category: bool, featured: bool | None) -> list[Any]:
    where: list[Any] = []
    if search:
        like = bindparam("like", type_=Text)
        where.append(or_(*(func.lower(f).like(like, escape="\\") for f in _SEARCHED)))
    if category:
        where.append(func.lower(PLUGINS.c.category) == bindparam("category", type_=Text))
    if featured is not None:
        where.append(PLUGINS.c.featured == featured)
    return where


@functools.lru_cache(maxsize=256)
def _listing(search: bool, category: bool, featured: bool | None, field: str, desc: bool) -> Any:
    """The listing's one statement (a page of plugins and how many match) for one shape
    of request, with the values as bind parameters. Built once: SQLAlchemy would
    otherwise rebuild it and compute its cache key on every request."""
    column = ORDER_FIELDS[field]
    return (
        _LISTED_SELECT.add_columns(func.count().over().label("matching"))
        .where(*_filters(search, category, featured))
        .order_by(column.desc() if desc else column.asc(), PLUGINS.c.id.asc())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


@functools.lru_cache(maxsize=16)
def _counting(search: bool, category: bool, featured: bool | None) -> Any:
    """How many plugins match, for a page past the last (which has no row to say so)."""
    return select(func.count()).select_from(PLUGINS).where(*_filters(search, category, featured))


# PostgreSQL's record_download in one statement. Data-modifying CTEs all run, on one
# snapshot: the mark is made only for a plugin and version that exist, and the count
# goes up only when the mark was new (or when downloads are not limited).
_RECORD_DOWNLOAD = text("""
WITH found AS (
    SELECT 1 FROM plugins
    WHERE id = :plugin_id AND (:version = '' OR EXISTS (
        SELECT 1 FROM versions WHERE plugin_id = :plugin_id AND version = :version))
), marked AS (
    INSERT INTO download_marks (address, plugin_id, version, arch, minute)
    SELECT :address, :plugin_id, :version, :mark_arch, :minute FROM found WHERE :limited
    ON CONFLICT DO NOTHING
    RETURNING 1
), counted AS (
    INSERT INTO downloads (plugin_id, version, arch, day, count)
    SELECT :plugin_id, :version, :arch, :day, 1 FROM found
    WHERE NOT :limited OR EXISTS (SELECT 1 FROM marked)
    ON CONFLICT (plugin_id, version, arch, day) DO UPDATE SET count = downloads.count + 1
    RETURNING 1
)
SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM counted)
""")

_ARTIFACT_KEY = select(ARTIFACTS.c.path).where(
    ARTIFACTS.c.plugin_id == bindparam("plugin_id"),
    ARTIFACTS.c.version == bindparam("version"),
    ARTIFACTS.c.platform == bindparam("platform"),
)


def _newer_first(a: str, b: str) -> int:
    return compare_versions(b, a)


# Sort key: newest semantic version first.
_newest_first = functools.cmp_to_key(_newer_first)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', as the original server writes times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _page_bounds(page: int, per_page: int) -> tuple[int, int]:
    # Past the last page is empty anyway; the cap keeps OFFSET within SQLite's 64 bits.
    page = min(max(1, page), _MAX_PAGE)
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    return page, per_page


def _total_pages(total: int, per_page: int) -> int:
    return math.ceil(total / per_page) if total else 0


def validate_version(version: str) -> str:
    """A version usable as a directory name: ``1.2.3``, ``v2.0.0-rc.1+build.5``."""
    if not _VERSION_RE.fullmatch(version) or ".." in version:
        raise ValidationError(
            f"invalid version {version!r}: expected letters, digits and . + _ - "
            "(up to 64), such as '1.2.0'",
            title="Invalid version",
        )
    return version


def validate_platform(platform: str) -> str:
    if not is_platform_name(platform):
        raise ValidationError(
            f"invalid platform {platform!r}: expected GOOS_GOARCH such as 'linux_amd64', or 'any'",
            title="Invalid platform",
        )
    return platform


@dataclass(frozen=True)
class Page:
    """One page of a list, and how many items the whole list has."""

    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def total_pages(self) -> int:
        return _total_pages(self.total, self.per_page)


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` stored, and the keys clients may trust it by.

    ``public_key_hex`` / ``key_id`` are the registry's key; ``publisher_*`` the
    publisher's, empty when the package was published without a publisher signature.
    """

    plugin_id: str
    version: str
    platform: str
    path: Path | str  # a file, or an s3:// URL
    sha256: str
    size: int
    signature: str
    public_key_hex: str
    key_id: str
    created_key: bool
    publisher_public_key_hex: str = ""
    publisher_key_id: str = ""


def _insert(conn: AsyncConnection, table: Table) -> Any:
    """INSERT with the dialect's ON CONFLICT (SQLite and PostgreSQL both have it)."""
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _json_list(text: str) -> list[Any]:
    value = json.loads(text)
    return value if isinstance(value, list) else []


class Catalog:
    """A registry: its database, its package storage and (for publishing) its signing key.

    ``root`` is the registry directory: it holds the signing key, and is the
    default home of the database (``index.db``) and of the packages.
    ``database``: a SQLAlchemy URL; ``storage``: ``s3://bucket/prefix`` or a
    directory. Each event loop that uses a catalog gets an engine of its own
    (connections belong to a loop). Call :meth:`open` once before use.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        database: str | None = None,
        storage: str | Storage | None = None,
        clock: Callable[[], datetime] = _utcnow,
        pooled: bool = True,
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        self.database_url = database or default_url(self.root)
        self.storage = storage if isinstance(storage, Storage) else open_storage(storage, self.root)
        self._pooled = pooled
        self._engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
            weakref.WeakKeyDictionary()
        )
        self._readers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncEngine] = (
            weakref.WeakKeyDictionary()
        )
        self._generations: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, NextRun[int]] = (
            weakref.WeakKeyDictionary()
        )
        self._swept = ""  # the minute before which download marks were last deleted

    @property
    def key_path(self) -> Path:
        return self.root / KEY_FILE

    def engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        engine = self._engines.get(loop)
        if engine is None:
            engine = self._engines[loop] = make_engine(self.database_url, pooled=self._pooled)
        return engine

    def reader(self) -> AsyncEngine:
        """This loop's engine for reads. On PostgreSQL each statement runs on its own
        (autocommit): under READ COMMITTED a statement takes its own snapshot inside a
        transaction too, so BEGIN and ROLLBACK would only add two round trips a request.
        SQLite keeps its transaction, which is what gives a read one snapshot there."""
        loop = asyncio.get_running_loop()
        reader = self._readers.get(loop)
        if reader is None:
            engine = self.engine()
            if engine.dialect.name == "postgresql":
                engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            reader = self._readers[loop] = engine
        return reader

    async def open(self) -> None:
        """Create the directory and bring the database's schema up to date."""
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await migrate(self.engine(), self.root)

    async def close(self) -> None:
        """Close this loop's connections."""
        self._readers.pop(asyncio.get_running_loop(), None)  # shares the engine's pool
        engine = self._engines.pop(asyncio.get_running_loop(), None)
        if engine is not None:
            await engine.dispose()

    # -- reading -----------------------------------------------------------------

    async def generation(self) -> int:
        """The catalog's generation (see :mod:`.cache`), read after this call began;
        concurrent callers share one read."""
        loop = asyncio.get_running_loop()
        shared = self._generations.get(loop)
        if shared is None:
            shared = self._generations[loop] = NextRun(self._read_generation)
        return await shared()

    async def _read_generation(self) -> int:
        async with self.reader().connect() as db:
            return int((await db.execute(_GENERATION)).scalar_one())

    async def _require_plugin(self, db: AsyncConnection, plugin_id: str) -> None:
        found = await db.execute(select(PLUGINS.c.id).where(PLUGINS.c.id == plugin_id))
        if found.first() is None:
            raise PluginNotFoundError(f"plugin {plugin_id!r} not found", plugin_id=plugin_id)

    @staticmethod
    def _plugin(row: Any, *, with_readme: bool) -> Plugin:
        # Built unvalidated: every field is typed by its column or converted here, and
        # validating 20 of them was a fifth of what a listing cost.
        return Plugin.model_construct(
            id=row.id,
            name=row.name,
            description=row.description,
            icon_url=row.icon_url,
            category=row.category,
            tags=_json_list(row.tags),
            license=row.license,
            repository=row.repository,
            url=row.url,
            readme=row.readme if with_readme else "",
            official=bool(row.official),
            featured=bool(row.featured),
            download_count=int(row.download_count),
            average_rating=round(float(row.average_rating), 2),
            review_count=int(row.review_count),
            publisher_id=row.publisher_id,
            publisher_name=row.publisher_name,
            latest_version=row.latest_version,
            author=PluginAuthor.model_validate_json(row.author),
            created_at=_time(row.created_at),
            updated_at=_time(row.updated_at),
        )

    async def count_plugins(self) -> int:
        async with self.reader().connect() as db:
            return int((await db.execute(select(func.count()).select_from(PLUGINS))).scalar_one())

    async def list_plugins(
        self,
        *,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        q: str = "",
        category: str = "",
        order_field: str = "",
        order_direction: str = "",
        featured: bool | None = None,
    ) -> Page:
        """Plugins matching a search, one page of them, in the requested order."""
        page, per_page = _page_bounds(page, per_page)
        field = order_field.strip().lower() or "name"
        if field not in ORDER_FIELDS:
            raise ValidationError(
                f"unknown order_field {order_field!r}; expected one of: "
                + ", ".join(sorted(ORDER_FIELDS))
            )
        direction = order_direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise ValidationError(
                f"unknown order_direction {order_direction!r}; expected asc or desc"
            )
        shape = (bool(q.strip()), bool(category.strip()), featured)
        values: dict[str, Any] = {"limit": per_page, "offset": (page - 1) * per_page}
        if q.strip():
            values["like"] = "%" + re.sub(r"([\\%_])", r"\\\1", q.strip().lower()) + "%"
        if category.strip():
            values["category"] = category.strip().lower()
        async with self.reader().connect() as db:
            rows = (await db.execute(_listing(*shape, field, direction == "desc"), values)).all()
            if rows:
                total = int(rows[0].matching)
            else:
                total = int((await db.execute(_counting(*shape), values)).scalar_one())
        items = [self._plugin(row, with_readme=False) for row in rows]
        return Page(items, page, per_page, total)

    async def get_plugin(self, plugin_id: str, *, base_url: str) -> Plugin:
        """One plugin with its readme and its latest version (with artifacts)."""
        async with self.reader().connect() as db:
            row = (await db.execute(_PLUGIN_SELECT.where(PLUGINS.c.id == plugin_id))).first()
            if row is None:
                raise PluginNotFoundError(f"plugin {plugin_id!r} not found", plugin_id=plugin_id)
            plugin = self._plugin(row, with_readme=True)
            if plugin.latest_version:
                plugin.version = await self._version(db, plugin_id, plugin.latest_version, base_url)
        return plugin

    async def categories(self) -> list[Category]:
        query = (
            select(PLUGINS.c.category, func.count().label("n"))
            .where(PLUGINS.c.category != "")
            .group_by(PLUGINS.c.category)
            .order_by(func.lower(PLUGINS.c.category))
        )
        async with self.reader().connect() as db:
            rows = (await db.execute(query)).all()
        return [Category(category=row.category, count=int(row.n)) for row in rows]

    @staticmethod
    def artifact_url(base_url: str, plugin_id: str, version: str, platform: str) -> str:
        return f"{base_url.rstrip('/')}/v1/artifacts/{plugin_id}/{version}/{platform}.tar.gz"

    async def _artifacts(
        self, db: AsyncConnection, plugin_id: str, version: str, base_url: str
    ) -> dict[str, Artifact]:
        rows = (
            await db.execute(
                select(ARTIFACTS)
                .where(ARTIFACTS.c.plugin_id == plugin_id, ARTIFACTS.c.version == version)
                .order_by(ARTIFACTS.c.platform)
            )
        ).all()
        return {
            row.platform: Artifact(
                checksum=row.checksum,
                signature=row.signature,
                download_url=self.artifact_url(base_url, plugin_id, version, row.platform),
                size=row.size,
                manifest=SignedManifest.model_validate_json(row.manifest) if row.manifest else None,
                publisher_manifest=SignedManifest.model_validate_json(row.publisher_manifest)
                if row.publisher_manifest
                else None,
            )
            for row in rows
        }

    async def _version_model(self, db: AsyncConnection, row: Any, base_url: str) -> PluginVersion:
        return PluginVersion(
            id=f"{row.plugin_id}@{row.version}",
            plugin_id=row.plugin_id,
            version=row.version,
            description=row.description,
            changelog=row.changelog,
            min_ide_version=row.min_ide_version,
            max_ide_version=row.max_ide_version,
            capabilities=_json_list(row.capabilities),
            visible=bool(row.visible),
            artifacts=await self._artifacts(db, row.plugin_id, row.version, base_url),
            created_at=_time(row.created_at),
            updated_at=_time(row.updated_at),
        )

    async def _version_row(self, db: AsyncConnection, plugin_id: str, version: str) -> Any:
        query = select(VERSIONS).where(
            VERSIONS.c.plugin_id == plugin_id, VERSIONS.c.version == version
        )
        row = (await db.execute(query)).first()
        if row is None:
            raise PluginNotFoundError(
                f"version {version!r} of plugin {plugin_id!r} not found", plugin_id=plugin_id
            )
        return row

    async def _version(
        self, db: AsyncConnection, plugin_id: str, version: str, base_url: str
    ) -> PluginVersion:
        row = await self._version_row(db, plugin_id, version)
        return await self._version_model(db, row, base_url)

    async def list_versions(
        self,
        plugin_id: str,
        *,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        base_url: str,
    ) -> Page:
        """A plugin's versions, newest first by semantic version."""
        page, per_page = _page_bounds(page, per_page)
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            query = select(VERSIONS).where(
                VERSIONS.c.plugin_id == plugin_id, VERSIONS.c.visible.is_(True)
            )
            by_version = {row.version: row for row in (await db.execute(query)).all()}
            ordered = sorted(by_version, key=_newest_first)
            start = (page - 1) * per_page
            items = [
                await self._version_model(db, by_version[v], base_url)
                for v in ordered[start : start + per_page]
            ]
        return Page(items, page, per_page, len(ordered))

    async def get_version(self, plugin_id: str, version: str, *, base_url: str) -> PluginVersion:
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            return await self._version(db, plugin_id, version, base_url)

    async def artifact_key(self, plugin_id: str, version: str, platform: str) -> str:
        """The storage key of one artifact's package; PluginNotFoundError if there is none
        (in the index or in the storage)."""
        values = {"plugin_id": plugin_id, "version": version, "platform": platform}
        async with self.reader().connect() as db:
            key = (await db.execute(_ARTIFACT_KEY, values)).scalar_one_or_none()
            if key is None:  # say what is missing: the plugin, the version or the platform
                await self._require_plugin(db, plugin_id)
                await self._version_row(db, plugin_id, version)
        if key is None:
            raise PluginNotFoundError(
                f"no artifact for platform {platform!r} of {plugin_id} {version}",
                plugin_id=plugin_id,
            )
        path = self.storage.local_path(key)
        # A local file's stat takes microseconds on the loop, less than a thread hop to it.
        if not (path.is_file() if path is not None else await self.storage.exists(key)):
            raise PluginNotFoundError(
                f"the package of {plugin_id} {version} ({platform}) is missing from the registry",
                plugin_id=plugin_id,
            )
        return str(key)

    # -- downloads -----------------------------------------------------------------

    async def record_download(
        self,
        plugin_id: str,
        version: str,
        arch: str,
        *,
        day: date | None = None,
        address: str | None = None,
    ) -> bool:
        """Count one download of ``version`` (which must exist) for ``arch`` on ``day``.

        With ``address`` (the client's), only the first download per address,
        plugin, version and architecture in a minute is counted, so one client cannot inflate
        the counts; returns whether this one was.
        """
        now = self.clock()
        when = (day or now.date()).isoformat()
        minute = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        await self._sweep_marks(now)
        values = {"plugin_id": plugin_id, "version": version, "arch": arch, "day": when,
                  "limited": address is not None, "address": (address or "")[:64],
                  "mark_arch": arch[:64], "minute": minute}  # fmt: skip
        if self.engine().dialect.name == "postgresql":
            # One statement, one round trip: the check, the mark and the count.
            async with self.reader().connect() as db:  # the statement is its own transaction
                found, counted = (await db.execute(_RECORD_DOWNLOAD, values)).one()
            if not found:
                await self._missing(plugin_id, version)
            return bool(counted)
        async with self.engine().begin() as db:
            await self._require_plugin(db, plugin_id)
            if version:
                await self._version_row(db, plugin_id, version)
            if address is not None:
                marked = await db.execute(
                    _insert(db, DOWNLOAD_MARKS)
                    .values(
                        address=values["address"],
                        plugin_id=plugin_id,
                        version=version,
                        arch=values["mark_arch"],
                        minute=minute,
                    )
                    .on_conflict_do_nothing()
                )
                if marked.rowcount == 0:
                    return False
            insert = _insert(db, DOWNLOADS).values(
                plugin_id=plugin_id, version=version, arch=arch, day=when, count=1
            )
            await db.execute(
                insert.on_conflict_do_update(
                    index_elements=["plugin_id", "version", "arch", "day"],
                    set_={"count": DOWNLOADS.c["count"] + 1},
                )
            )
        return True

    async def _missing(self, plugin_id: str, version: str) -> None:
        """Raise PluginNotFoundError naming what is missing: the plugin or its version."""
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            if version:
                await self._version_row(db, plugin_id, version)

    async def _sweep_marks(self, now: datetime) -> None:
        """Forget who was counted more than two minutes ago, once a minute (the marks'
        key starts with the address, so this is a scan: not one per download)."""
        stale = (now - timedelta(minutes=2)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
        if self._swept == stale:
            return
        self._swept = stale
        async with self.engine().begin() as db:
            await db.execute(delete(DOWNLOAD_MARKS).where(DOWNLOAD_MARKS.c.minute < stale))

    async def download_stats(self, plugin_id: str) -> DownloadStats:
        query = (
            select(DOWNLOADS.c.version, func.sum(DOWNLOADS.c["count"]).label("n"))
            .where(DOWNLOADS.c.plugin_id == plugin_id)
            .group_by(DOWNLOADS.c.version)
        )
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            rows = (await db.execute(query)).all()
        by_version = sorted(
            (VersionDownloads(version=row.version, count=int(row.n)) for row in rows),
            key=lambda v: _newest_first(v.version),
        )
        return DownloadStats(
            plugin_id=plugin_id,
            total_count=sum(v.count for v in by_version),
            by_version=by_version,
        )

    async def daily_downloads(self, plugin_id: str, days: int = 30) -> list[DailyDownloads]:
        """Downloads per UTC day for the last ``days`` days (today included), oldest first."""
        days = min(max(1, days), MAX_DAYS)
        today = self.clock().date()
        first = today - timedelta(days=days - 1)
        query = (
            select(DOWNLOADS.c.day, func.sum(DOWNLOADS.c["count"]).label("n"))
            .where(
                DOWNLOADS.c.plugin_id == plugin_id,
                DOWNLOADS.c.day >= first.isoformat(),
                DOWNLOADS.c.day <= today.isoformat(),
            )
            .group_by(DOWNLOADS.c.day)
        )
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            rows = (await db.execute(query)).all()
        counts = {row.day: int(row.n) for row in rows}
        result = []
        for offset in range(days):
            day = (first + timedelta(days=offset)).isoformat()
            result.append(DailyDownloads(date=day, count=counts.get(day, 0)))
        return result

    # -- reviews -------------------------------------------------------------------

    @staticmethod
    def _review(row: Any) -> Review:
        return Review(
            id=row.id,
            plugin_id=row.plugin_id,
            user_id=row.user_id,
            rating=row.rating,
            title=row.title,
            body=row.body,
            response=row.response,
            response_at=_time(row.response_at),
            created_at=_time(row.created_at),
            updated_at=_time(row.updated_at),
        )

    async def list_reviews(
        self, plugin_id: str, *, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> Page:
        """A plugin's reviews, newest first."""
        page, per_page = _page_bounds(page, per_page)
        counted = select(func.count()).select_from(REVIEWS).where(REVIEWS.c.plugin_id == plugin_id)
        listed = (
            select(REVIEWS)
            .where(REVIEWS.c.plugin_id == plugin_id)
            .order_by(REVIEWS.c.created_at.desc(), REVIEWS.c.seq.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.reader().connect() as db:
            await self._require_plugin(db, plugin_id)
            total = int((await db.execute(counted)).scalar_one())
            rows = (await db.execute(listed)).all()
        return Page([self._review(row) for row in rows], page, per_page, total)

    async def add_review(
        self,
        plugin_id: str,
        *,
        rating: int,
        title: str = "",
        body: str = "",
        user_id: int = 0,
        response: str | None = None,
        created_at: datetime | None = None,
    ) -> Review:
        """Store a review (there is no review endpoint to post to: this is for tests and demos)."""
        if not 1 <= rating <= 5:
            raise ValidationError(f"rating must be 1 to 5, not {rating}")
        if user_id < 0:
            raise ValidationError(f"user_id must not be negative, not {user_id}")
        now = _stamp(created_at or self.clock())
        review_id = str(uuid.uuid4())
        async with self.engine().begin() as db:
            await self._require_plugin(db, plugin_id)
            await db.execute(
                REVIEWS.insert().values(
                    id=review_id,
                    plugin_id=plugin_id,
                    user_id=user_id,
                    rating=rating,
                    title=title,
                    body=body,
                    response=response,
                    response_at=now if response is not None else None,
                    created_at=now,
                    updated_at=now,
                )
            )
            row = (await db.execute(select(REVIEWS).where(REVIEWS.c.id == review_id))).one()
        return self._review(row)

    # -- publishing ----------------------------------------------------------------

    def signing_key(self) -> tuple[Ed25519PrivateKey, str, bool]:
        """The registry's private key, its public hex, and whether it was just created."""
        from ..packages import signing

        self.root.mkdir(parents=True, exist_ok=True)
        created = False
        if not self.key_path.exists():
            data, _ = signing.generate_keypair()
            try:
                fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another publisher made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                created = True
        key = signing.load_private_key(self.key_path)
        public_hex = signing.public_key_hex(key)
        (self.root / PUBLIC_KEY_FILE).write_text(public_hex + "\n")
        return key, public_hex, created

    def _prepare(
        self,
        package_path: str | Path,
        platform: str | None,
        readme: str | None,
        publisher_key: PrivateKeyLike | None,
        publisher_manifest: Mapping[str, Any] | None,
        publisher_signature: str | None,
        publisher_public_key: str,
    ) -> _Prepared:
        """The blocking half of publishing: check the package and both signatures, sign."""
        from ..packages import archive, signing

        source = Path(package_path)
        meta: PluginMeta = archive.inspect_package(source)
        plugin_id = validate_plugin_id(meta.id)
        version = validate_version(meta.version)
        given = _given_publisher_manifest(
            publisher_key, publisher_manifest, publisher_signature, publisher_public_key
        )
        platform = validate_platform(
            _choose_platform(source, platform, given.platform if given else None)
        )
        # The bytes checked are the bytes stored: a private copy first, stored only
        # once the publisher's signature is known to match it.
        self.root.mkdir(parents=True, exist_ok=True)
        staged = self.root / f".publish-{uuid.uuid4().hex}.tar.gz"
        try:
            sha256, size = _copy_hashing(source, staged)
            publisher = _publisher_signature(
                source,
                meta,
                sha256,
                size,
                platform,
                private_key=publisher_key,
                given=given,
                signed=publisher_manifest,
                checksum_signature=publisher_signature,
                public_key=publisher_public_key,
            )
            if readme is None:
                readme = _readme_from_package(staged)
            key, public_hex, created_key = self.signing_key()
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        key_id = signing.key_id_for(public_hex)
        signature = signing.sign_checksum(sha256, key)
        manifest = signing.Manifest(
            id=plugin_id, version=version, platform=platform, sha256=sha256, size=size
        )
        signed = SignedManifest.model_validate(signing.sign_manifest(manifest, key, key_id))
        return _Prepared(
            meta=meta,
            plugin_id=plugin_id,
            version=version,
            platform=platform,
            staged=staged,
            sha256=sha256,
            size=size,
            readme=readme,
            signature=signature,
            signed=signed,
            publisher=publisher,
            public_hex=public_hex,
            key_id=key_id,
            created_key=created_key,
        )

    async def publish(
        self,
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
    ) -> PublishResult:
        """Add a package to the registry, signed with the registry's key (and the publisher's).

        The package's plugin.yaml is read and validated, the package stored as
        ``packages/<id>/<version>/<platform>.tar.gz``, hashed and signed with the
        registry's key; the plugin, version and artifact rows are created or
        updated. ``readme`` defaults to the package's README.md, else to the
        plugin's previous readme. ``featured`` and ``official`` keep their
        previous value when None (False for a new plugin). Publishing the same
        version and platform again replaces it.

        ``platform`` None: the publisher's signed manifest says, else it is read
        from the package (``any`` for a Python or UI-only plugin, the binary's
        ``GOOS_GOARCH`` for a native ``bin/plugin``); a platform that contradicts
        the package's binary is refused.

        The publisher's signature, listed next to the registry's: either
        ``publisher_key`` (a private key: sign now), or what ``plughost sign``
        wrote, ``publisher_manifest`` (the ``.manifest.json`` object) and
        optionally ``publisher_signature`` (the ``.sig`` text), which must verify
        with ``publisher_public_key`` and describe exactly this package, or
        nothing is published (SignatureInvalidError, ChecksumMismatchError,
        ValidationError).
        """
        p = await asyncio.to_thread(
            self._prepare,
            package_path,
            platform,
            readme,
            publisher_key,
            publisher_manifest,
            publisher_signature,
            publisher_public_key,
        )
        key = str(PurePosixPath("packages", p.plugin_id, p.version, f"{p.platform}.tar.gz"))
        try:
            await self.storage.put_file(key, p.staged)
        finally:
            await asyncio.to_thread(p.staged.unlink, missing_ok=True)
        await self.storage.put_bytes(key + ".sig", (p.signature + "\n").encode())
        await self.storage.put_bytes(
            key + ".manifest.json", (p.signed.model_dump_json(indent=2) + "\n").encode()
        )
        if p.publisher is not None:
            await self.storage.put_bytes(
                key + ".publisher.json",
                (p.publisher.signed.model_dump_json(indent=2) + "\n").encode(),
            )
        else:
            await self.storage.delete(key + ".publisher.json")
        await self._index(p, key, changelog=changelog, featured=featured, official=official)
        return PublishResult(
            plugin_id=p.plugin_id,
            version=p.version,
            platform=p.platform,
            path=self.storage.location(key),
            sha256=p.sha256,
            size=p.size,
            signature=p.signature,
            public_key_hex=p.public_hex,
            key_id=p.key_id,
            created_key=p.created_key,
            publisher_public_key_hex=p.publisher.public_key_hex if p.publisher else "",
            publisher_key_id=p.publisher.signed.key_id if p.publisher else "",
        )

    async def _index(
        self,
        p: _Prepared,
        key: str,
        *,
        changelog: str,
        featured: bool | None,
        official: bool | None,
    ) -> None:
        """The plugin, version and artifact rows of a stored package, in one transaction."""
        meta = p.meta
        now = _stamp(self.clock())
        author = meta.author.model_dump(include={"name", "email", "url"})
        publisher_name = meta.author.name
        async with self.engine().begin() as db:
            previous = (
                await db.execute(
                    select(PLUGINS.c.featured, PLUGINS.c.official, PLUGINS.c.readme).where(
                        PLUGINS.c.id == p.plugin_id
                    )
                )
            ).first()
            readme = p.readme
            if readme is None:  # neither given nor in the package: keep what we had
                readme = str(previous.readme) if previous else ""
            keep_featured = bool(previous.featured) if previous else False
            keep_official = bool(previous.official) if previous else False
            plugin = {
                "name": meta.name or p.plugin_id,
                "description": meta.description,
                "icon_url": meta.icon_url,
                "category": meta.category,
                "tags": json.dumps(meta.tags),
                "license": meta.license,
                "repository": meta.repository,
                "url": meta.website,
                "readme": readme,
                "official": keep_official if official is None else official,
                "featured": keep_featured if featured is None else featured,
                "publisher_id": _slug(publisher_name),
                "publisher_name": publisher_name,
                "author": json.dumps(author),
                "updated_at": now,
            }
            await db.execute(
                _insert(db, PLUGINS)
                .values(id=p.plugin_id, created_at=now, **plugin)
                .on_conflict_do_update(index_elements=["id"], set_=plugin)
            )
            version = {
                "description": meta.description,
                "min_ide_version": meta.min_host_version or "",
                "max_ide_version": meta.max_host_version or "",
                "capabilities": json.dumps(meta.capabilities),
                "updated_at": now,
            }
            insert = _insert(db, VERSIONS).values(
                plugin_id=p.plugin_id,
                version=p.version,
                changelog=changelog,
                visible=True,
                created_at=now,
                **version,
            )
            if changelog:  # an empty changelog keeps the one the version had
                version["changelog"] = changelog
            await db.execute(
                insert.on_conflict_do_update(index_elements=["plugin_id", "version"], set_=version)
            )
            artifact = {
                "path": key,
                "checksum": p.sha256,
                "signature": p.signature,
                "size": p.size,
                "manifest": p.signed.model_dump_json(),
                "created_at": now,
                "publisher_manifest": p.publisher.signed.model_dump_json() if p.publisher else None,
            }
            await db.execute(
                _insert(db, ARTIFACTS)
                .values(plugin_id=p.plugin_id, version=p.version, platform=p.platform, **artifact)
                .on_conflict_do_update(
                    index_elements=["plugin_id", "version", "platform"], set_=artifact
                )
            )
            versions = (
                await db.execute(
                    select(VERSIONS.c.version).where(
                        VERSIONS.c.plugin_id == p.plugin_id, VERSIONS.c.visible.is_(True)
                    )
                )
            ).scalars()
            await db.execute(
                update(PLUGINS)
                .where(PLUGINS.c.id == p.plugin_id)
                .values(latest_version=latest_version(list(versions)))
            )


@dataclass(frozen=True)
class _Prepared:
    meta: PluginMeta
    plugin_id: str
    version: str
    platform: str
    staged: Path
    sha256: str
    size: int
    readme: str | None
    signature: str
    signed: SignedManifest
    publisher: _Publisher | None
    public_hex: str
    key_id: str
    created_key: bool


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _copy_hashing(source: Path, target: Path) -> tuple[str, int]:
    """Copy ``source`` to ``target`` atomically; return its SHA-256 (hex) and size."""
    digest = hashlib.sha256()
    size = 0

    def write(tmp: Path) -> None:
        nonlocal size
        with open(tmp, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(1024 * 1024):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)

    atomic_replace(target, write, 0o644)
    return digest.hexdigest(), size


def _readme_from_package(path: Path) -> str | None:
    """The package's top-level README, if it has one (None otherwise)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = [p for p in PurePosixPath(member.name).parts if p not in (".", "")]
                if len(parts) == 1 and parts[0] in _README_NAMES and member.isfile():
                    fileobj = tar.extractfile(member)
                    if fileobj is not None:
                        return fileobj.read(_MAX_README).decode("utf-8", errors="replace")
    except (tarfile.TarError, OSError, EOFError):
        return None
    return None


# -- the publisher's signature -------------------------------------------------------

_SIGN_AGAIN = "sign the package again with the publisher's key: plughost sign PACKAGE --key KEY"


@dataclass(frozen=True)
class _Publisher:
    signed: SignedManifest
    public_key_hex: str


def _given_publisher_manifest(
    private_key: PrivateKeyLike | None,
    signed: Mapping[str, Any] | None,
    checksum_signature: str | None,
    public_key: str,
) -> Manifest | None:
    """Refuse contradictory publisher arguments; verify a given signed manifest with the
    given public key (before anything else is done) and return what it vouches for."""
    from ..packages import signing

    if private_key is not None:
        if signed is not None or checksum_signature:
            raise ValidationError(
                "give the publisher's private key (to sign now) or an existing signature "
                "(.manifest.json, .sig), not both",
                title="Two publisher signatures",
                suggestions=["leave out --key to publish the signature 'plughost sign' wrote"],
            )
        return None
    key = public_key.strip().lower()
    if signed is None:
        if checksum_signature:
            raise ValidationError(
                "a checksum signature (.sig) alone is not enough: installs check the signed "
                "manifest (.manifest.json) that 'plughost sign' writes next to it",
                title="Signed manifest missing",
                suggestions=[
                    "pass the package's .manifest.json too (--manifest FILE)",
                    _SIGN_AGAIN,
                ],
            )
        if key:
            raise ValidationError(
                "a publisher public key was given, but no publisher signature to check with it",
                title="Publisher signature missing",
                suggestions=[
                    "sign the package first: plughost sign PACKAGE --key KEY (it writes "
                    "PACKAGE.sig and PACKAGE.manifest.json next to the package)",
                    "or publish with --key KEY to sign it now",
                ],
            )
        return None
    claimed = signed.get("key_id") if isinstance(signed, Mapping) else None
    if not key:
        raise ValidationError(
            f"the package's manifest is signed by publisher key {claimed!r}; the publisher's "
            "public key is needed to check it",
            title="Publisher public key missing",
            suggestions=["pass --public-key HEX: the 64 hex characters 'plughost keygen' printed"],
        )
    expected_id = signing.key_id_for(key)
    key_id = claimed if isinstance(claimed, str) and claimed else expected_id
    try:
        return signing.verify_manifest(
            signed, [signing.TrustedKey(key_id=key_id, public_key_hex=key)]
        )
    except SignatureInvalidError as exc:
        if type(exc) is not SignatureInvalidError:  # malformed, unsigned: already clear
            raise
        other = key_id != expected_id
        raise SignatureInvalidError(
            f"the publisher's manifest does not verify with the given public key "
            f"(key {expected_id!r}): "
            + (
                f"it names key {key_id!r}, so another key signed it"
                if other
                else "it was altered after signing, or another key signed it"
            ),
            title="Publisher signature invalid",
            suggestions=["check --public-key is the publisher's key", _SIGN_AGAIN],
        ) from None


def _choose_platform(source: Path, explicit: str | None, signed: str | None) -> str:
    """``explicit``, else what the publisher signed, else what the package's code says;
    never a platform that contradicts the package's machine code."""
    from ..packages.platforms import ANY_PLATFORM, detect_platform

    detected: str | None = None
    problem: ValidationError | None = None
    try:
        detected = detect_platform(source)
    except ValidationError as exc:
        problem = exc
    chosen = explicit or signed or detected
    if chosen is None:
        assert problem is not None
        raise problem
    if detected not in (None, ANY_PLATFORM) and chosen != detected:
        raise ValidationError(
            f"{source.name} holds {detected} machine code, so it cannot be published as "
            f"{chosen}" + (" (the platform its signed manifest names)" if chosen == signed else ""),
            title="Wrong platform",
            suggestions=[
                f"publish it as {detected}: leave out --platform",
                f"for {chosen}, build bin/plugin for that GOOS/GOARCH, pack and sign again",
            ],
        )
    return chosen


def _publisher_signature(
    source: Path,
    meta: PluginMeta,
    sha256: str,
    size: int,
    platform: str,
    *,
    private_key: PrivateKeyLike | None,
    given: Manifest | None,
    signed: Mapping[str, Any] | None,
    checksum_signature: str | None,
    public_key: str,
) -> _Publisher | None:
    """The publisher's signed manifest to list, made now or checked against the package."""
    from ..packages import signing

    key = public_key.strip().lower()
    if private_key is not None:
        private = signing.load_private_key(private_key)
        public_hex = signing.public_key_hex(private)
        if key and key != public_hex:
            raise ValidationError(
                f"--public-key {key} is not the public half of the publisher key given",
                title="Publisher keys do not match",
                suggestions=["leave out --public-key: it is read from the private key"],
            )
        manifest = signing.Manifest(
            id=meta.id, version=meta.version, platform=platform, sha256=sha256, size=size
        )
        made = signing.sign_manifest(manifest, private)
        return _Publisher(SignedManifest.model_validate(made), public_hex)
    if given is None or signed is None:
        return None
    if (given.sha256, given.size) != (sha256, size):
        raise ChecksumMismatchError(
            f"the publisher's manifest vouches for another file (sha256 {given.sha256}, "
            f"{given.size} bytes); {source.name} is sha256 {sha256}, {size} bytes",
            title="Signature does not match the package",
            suggestions=[
                "the package changed after it was signed (packed again?): " + _SIGN_AGAIN,
                "or the signature files belong to another package",
            ],
            plugin_id=meta.id,
        )
    if (given.id, given.version) != (meta.id, meta.version):
        raise SignatureInvalidError(
            f"the publisher's manifest is signed for {given.id} {given.version}, but the "
            f"package is {meta.id} {meta.version}",
            title="Signature does not match the package",
            suggestions=[_SIGN_AGAIN],
            plugin_id=meta.id,
        )
    if given.platform != platform:
        raise SignatureInvalidError(
            f"the publisher's manifest is signed for platform {given.platform}, not {platform}",
            title="Signature does not match the platform",
            suggestions=[
                f"publish it as {given.platform} (leave out --platform)",
                f"or sign it for {platform}: plughost sign PACKAGE --key KEY --platform {platform}",
            ],
            plugin_id=meta.id,
        )
    if checksum_signature:
        try:
            signing.verify_checksum_signature(sha256, checksum_signature.strip(), key)
        except SignatureInvalidError as exc:
            raise SignatureInvalidError(
                f"the publisher's checksum signature (.sig) does not verify for "
                f"{source.name} with the given public key: {exc.detail}",
                title="Signature does not match the package",
                suggestions=[_SIGN_AGAIN, "or the .sig file belongs to another package"],
                plugin_id=meta.id,
            ) from None
    return _Publisher(SignedManifest.model_validate(dict(signed)), key)
