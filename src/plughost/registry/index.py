"""The registry's store: a directory of signed packages plus a small SQLite index.

Layout of a registry directory::

    DIR/index.sqlite3                          plugins, versions, artifacts, reviews, downloads
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

All of the server's logic lives here so that the HTTP layer stays a thin
mapping of routes to methods, and so that publishing (a CLI command, run
while the server may be serving) and serving share one implementation.
SQLite with one short-lived connection per operation keeps concurrent
readers and a publisher safe without any locking of our own.

Files served to clients are always looked up in the index by (id, version,
platform); no request path is ever joined onto the directory.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import sqlite3
import tarfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..atomic import fsync_dir
from ..errors import (
    ChecksumMismatchError,
    PluginNotFoundError,
    SignatureInvalidError,
    ValidationError,
)
from ..metadata import PluginMeta, validate_plugin_id
from ..store import atomic_replace
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

if TYPE_CHECKING:
    from ..packages.signing import Manifest, PrivateKeyLike

__all__ = [
    "DEFAULT_PER_PAGE",
    "INDEX_FILE",
    "KEY_FILE",
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

INDEX_FILE = "index.sqlite3"
KEY_FILE = "registry.key"
PUBLIC_KEY_FILE = "registry.pub"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
_MAX_PAGE = 1_000_000_000
MAX_DAYS = 366

# order_field values the list endpoint accepts -> SQL expression (never user text).
ORDER_FIELDS: dict[str, str] = {
    "name": "lower(p.name)",
    "id": "p.id",
    "download_count": "download_count",
    "downloads": "download_count",
    "average_rating": "average_rating",
    "rating": "average_rating",
    "review_count": "review_count",
    "created_at": "p.created_at",
    "updated_at": "p.updated_at",
    "category": "lower(p.category)",
}

_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
_README_NAMES = ("README.md", "readme.md", "README", "README.txt")
_MAX_README = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plugins (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    icon_url TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    license TEXT NOT NULL DEFAULT '',
    repository TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL DEFAULT '',
    readme TEXT NOT NULL DEFAULT '',
    official INTEGER NOT NULL DEFAULT 0,
    featured INTEGER NOT NULL DEFAULT 0,
    publisher_id TEXT NOT NULL DEFAULT '',
    publisher_name TEXT NOT NULL DEFAULT '',
    latest_version TEXT NOT NULL DEFAULT '',
    author TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    plugin_id TEXT NOT NULL REFERENCES plugins(id),
    version TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    changelog TEXT NOT NULL DEFAULT '',
    min_ide_version TEXT NOT NULL DEFAULT '',
    max_ide_version TEXT NOT NULL DEFAULT '',
    capabilities TEXT NOT NULL DEFAULT '[]',
    visible INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (plugin_id, version)
);
CREATE TABLE IF NOT EXISTS artifacts (
    plugin_id TEXT NOT NULL,
    version TEXT NOT NULL,
    platform TEXT NOT NULL,
    path TEXT NOT NULL,
    checksum TEXT NOT NULL,
    signature TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    manifest TEXT,
    created_at TEXT NOT NULL,
    publisher_manifest TEXT,
    PRIMARY KEY (plugin_id, version, platform)
);
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    plugin_id TEXT NOT NULL REFERENCES plugins(id),
    user_id INTEGER NOT NULL DEFAULT 0,
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    response TEXT,
    response_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_by_plugin ON reviews(plugin_id, created_at);
CREATE TABLE IF NOT EXISTS downloads (
    plugin_id TEXT NOT NULL,
    version TEXT NOT NULL,
    arch TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (plugin_id, version, arch, day)
);
"""

_PLUGIN_SELECT = """
SELECT p.*,
       COALESCE(d.total, 0) AS download_count,
       COALESCE(r.average, 0.0) AS average_rating,
       COALESCE(r.total, 0) AS review_count
FROM plugins p
LEFT JOIN (SELECT plugin_id, SUM(count) AS total FROM downloads GROUP BY plugin_id) d
       ON d.plugin_id = p.id
LEFT JOIN (SELECT plugin_id, AVG(rating) AS average, COUNT(*) AS total
           FROM reviews GROUP BY plugin_id) r
       ON r.plugin_id = p.id
"""


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


def _add_column(db: sqlite3.Connection, table: str, column: str, kind: str) -> None:
    """Add a column an older registry directory's table lacks (idempotent)."""
    present = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    if column in present:
        return
    try:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    except sqlite3.OperationalError as exc:  # another process added it first
        if "duplicate column" not in str(exc):
            raise


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
    path: Path
    sha256: str
    size: int
    signature: str
    public_key_hex: str
    key_id: str
    created_key: bool
    publisher_public_key_hex: str = ""
    publisher_key_id: str = ""


class RegistryIndex:
    """A registry directory: its SQLite index, its packages and its signing key."""

    def __init__(self, root: str | Path, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self.root = Path(root)
        self.clock = clock
        self.root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)
            _add_column(db, "artifacts", "publisher_manifest", "TEXT")
        # WAL: the server keeps reading while ``publish`` (another process) writes.
        db = sqlite3.connect(self.db_path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()

    @property
    def db_path(self) -> Path:
        return self.root / INDEX_FILE

    @property
    def key_path(self) -> Path:
        return self.root / KEY_FILE

    @property
    def packages_dir(self) -> Path:
        return self.root / "packages"

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:  # one transaction: committed on success, rolled back on error
                yield db
        finally:
            db.close()

    # -- reading -----------------------------------------------------------------

    def _require_plugin(self, db: sqlite3.Connection, plugin_id: str) -> None:
        if db.execute("SELECT 1 FROM plugins WHERE id = ?", (plugin_id,)).fetchone() is None:
            raise PluginNotFoundError(f"plugin {plugin_id!r} not found", plugin_id=plugin_id)

    @staticmethod
    def _plugin(row: sqlite3.Row, *, with_readme: bool) -> Plugin:
        return Plugin(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            icon_url=row["icon_url"],
            category=row["category"],
            tags=json.loads(row["tags"]),
            license=row["license"],
            repository=row["repository"],
            url=row["url"],
            readme=row["readme"] if with_readme else "",
            official=bool(row["official"]),
            featured=bool(row["featured"]),
            download_count=int(row["download_count"]),
            average_rating=round(float(row["average_rating"]), 2),
            review_count=int(row["review_count"]),
            publisher_id=row["publisher_id"],
            publisher_name=row["publisher_name"],
            latest_version=row["latest_version"],
            author=PluginAuthor.model_validate(json.loads(row["author"])),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )

    def count_plugins(self) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM plugins").fetchone()[0])

    def list_plugins(
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
        where: list[str] = []
        args: list[Any] = []
        if q.strip():
            like = "%" + re.sub(r"([\\%_])", r"\\\1", q.strip().lower()) + "%"
            fields = ("p.id", "p.name", "p.description", "p.tags", "p.category")
            where.append("(" + " OR ".join(f"lower({f}) LIKE ? ESCAPE '\\'" for f in fields) + ")")
            args.extend([like] * len(fields))
        if category.strip():
            where.append("lower(p.category) = ?")
            args.append(category.strip().lower())
        if featured is not None:
            where.append("p.featured = ?")
            args.append(1 if featured else 0)
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
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = f" ORDER BY {ORDER_FIELDS[field]} {direction.upper()}, p.id ASC"
        with self._db() as db:
            total = int(db.execute(f"SELECT COUNT(*) FROM plugins p{clause}", args).fetchone()[0])
            rows = db.execute(
                f"{_PLUGIN_SELECT}{clause}{order} LIMIT ? OFFSET ?",
                [*args, per_page, (page - 1) * per_page],
            ).fetchall()
        items = [self._plugin(row, with_readme=False) for row in rows]
        return Page(items, page, per_page, total)

    def get_plugin(self, plugin_id: str, *, base_url: str) -> Plugin:
        """One plugin with its readme and its latest version (with artifacts)."""
        with self._db() as db:
            row = db.execute(f"{_PLUGIN_SELECT} WHERE p.id = ?", (plugin_id,)).fetchone()
            if row is None:
                raise PluginNotFoundError(f"plugin {plugin_id!r} not found", plugin_id=plugin_id)
            plugin = self._plugin(row, with_readme=True)
            if plugin.latest_version:
                plugin.version = self._version(db, plugin_id, plugin.latest_version, base_url)
        return plugin

    def categories(self) -> list[Category]:
        with self._db() as db:
            rows = db.execute(
                "SELECT category, COUNT(*) AS count FROM plugins WHERE category != '' "
                "GROUP BY category ORDER BY lower(category)"
            ).fetchall()
        return [Category(category=row["category"], count=row["count"]) for row in rows]

    @staticmethod
    def artifact_url(base_url: str, plugin_id: str, version: str, platform: str) -> str:
        return f"{base_url.rstrip('/')}/v1/artifacts/{plugin_id}/{version}/{platform}.tar.gz"

    def _artifacts(
        self, db: sqlite3.Connection, plugin_id: str, version: str, base_url: str
    ) -> dict[str, Artifact]:
        rows = db.execute(
            "SELECT * FROM artifacts WHERE plugin_id = ? AND version = ? ORDER BY platform",
            (plugin_id, version),
        ).fetchall()
        return {
            row["platform"]: Artifact(
                checksum=row["checksum"],
                signature=row["signature"],
                download_url=self.artifact_url(base_url, plugin_id, version, row["platform"]),
                size=row["size"],
                manifest=SignedManifest.model_validate_json(row["manifest"])
                if row["manifest"]
                else None,
                publisher_manifest=SignedManifest.model_validate_json(row["publisher_manifest"])
                if row["publisher_manifest"]
                else None,
            )
            for row in rows
        }

    def _version_model(
        self, db: sqlite3.Connection, row: sqlite3.Row, base_url: str
    ) -> PluginVersion:
        return PluginVersion(
            id=f"{row['plugin_id']}@{row['version']}",
            plugin_id=row["plugin_id"],
            version=row["version"],
            description=row["description"],
            changelog=row["changelog"],
            min_ide_version=row["min_ide_version"],
            max_ide_version=row["max_ide_version"],
            capabilities=json.loads(row["capabilities"]),
            visible=bool(row["visible"]),
            artifacts=self._artifacts(db, row["plugin_id"], row["version"], base_url),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )

    def _version(
        self, db: sqlite3.Connection, plugin_id: str, version: str, base_url: str
    ) -> PluginVersion:
        row = db.execute(
            "SELECT * FROM versions WHERE plugin_id = ? AND version = ?", (plugin_id, version)
        ).fetchone()
        if row is None:
            raise PluginNotFoundError(
                f"version {version!r} of plugin {plugin_id!r} not found", plugin_id=plugin_id
            )
        return self._version_model(db, row, base_url)

    def list_versions(
        self,
        plugin_id: str,
        *,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        base_url: str,
    ) -> Page:
        """A plugin's versions, newest first by semantic version."""
        page, per_page = _page_bounds(page, per_page)
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            rows = db.execute(
                "SELECT * FROM versions WHERE plugin_id = ? AND visible = 1", (plugin_id,)
            ).fetchall()
            by_version = {row["version"]: row for row in rows}
            ordered = sorted(by_version, key=_newest_first)
            start = (page - 1) * per_page
            items = [
                self._version_model(db, by_version[v], base_url)
                for v in ordered[start : start + per_page]
            ]
        return Page(items, page, per_page, len(ordered))

    def get_version(self, plugin_id: str, version: str, *, base_url: str) -> PluginVersion:
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            return self._version(db, plugin_id, version, base_url)

    def artifact_path(self, plugin_id: str, version: str, platform: str) -> Path:
        """The stored package file of one artifact; PluginNotFoundError if there is none."""
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            self._version(db, plugin_id, version, "")
            row = db.execute(
                "SELECT path FROM artifacts WHERE plugin_id = ? AND version = ? AND platform = ?",
                (plugin_id, version, platform),
            ).fetchone()
        if row is None:
            raise PluginNotFoundError(
                f"no artifact for platform {platform!r} of {plugin_id} {version}",
                plugin_id=plugin_id,
            )
        path: Path = self.root / str(row["path"])
        if not path.is_file():
            raise PluginNotFoundError(
                f"the package of {plugin_id} {version} ({platform}) is missing from the registry",
                plugin_id=plugin_id,
            )
        return path

    # -- downloads -----------------------------------------------------------------

    def record_download(
        self, plugin_id: str, version: str, arch: str, *, day: date | None = None
    ) -> None:
        """Count one download of ``version`` (which must exist) for ``arch`` on ``day``."""
        when = (day or self.clock().date()).isoformat()
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            if version:
                self._version(db, plugin_id, version, "")
            db.execute(
                "INSERT INTO downloads (plugin_id, version, arch, day, count) "
                "VALUES (?, ?, ?, ?, 1) ON CONFLICT (plugin_id, version, arch, day) "
                "DO UPDATE SET count = count + 1",
                (plugin_id, version, arch, when),
            )

    def download_stats(self, plugin_id: str) -> DownloadStats:
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            rows = db.execute(
                "SELECT version, SUM(count) AS count FROM downloads WHERE plugin_id = ? "
                "GROUP BY version",
                (plugin_id,),
            ).fetchall()
        by_version = sorted(
            (VersionDownloads(version=row["version"], count=row["count"]) for row in rows),
            key=lambda v: _newest_first(v.version),
        )
        return DownloadStats(
            plugin_id=plugin_id,
            total_count=sum(v.count for v in by_version),
            by_version=by_version,
        )

    def daily_downloads(self, plugin_id: str, days: int = 30) -> list[DailyDownloads]:
        """Downloads per UTC day for the last ``days`` days (today included), oldest first."""
        days = min(max(1, days), MAX_DAYS)
        today = self.clock().date()
        first = today - timedelta(days=days - 1)
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            rows = db.execute(
                "SELECT day, SUM(count) AS count FROM downloads "
                "WHERE plugin_id = ? AND day >= ? AND day <= ? GROUP BY day",
                (plugin_id, first.isoformat(), today.isoformat()),
            ).fetchall()
        counts = {row["day"]: int(row["count"]) for row in rows}
        result = []
        for offset in range(days):
            day = (first + timedelta(days=offset)).isoformat()
            result.append(DailyDownloads(date=day, count=counts.get(day, 0)))
        return result

    # -- reviews -------------------------------------------------------------------

    @staticmethod
    def _review(row: sqlite3.Row) -> Review:
        return Review(
            id=row["id"],
            plugin_id=row["plugin_id"],
            user_id=row["user_id"],
            rating=row["rating"],
            title=row["title"],
            body=row["body"],
            response=row["response"],
            response_at=_time(row["response_at"]),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )

    def list_reviews(
        self, plugin_id: str, *, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> Page:
        """A plugin's reviews, newest first."""
        page, per_page = _page_bounds(page, per_page)
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            total = int(
                db.execute(
                    "SELECT COUNT(*) FROM reviews WHERE plugin_id = ?", (plugin_id,)
                ).fetchone()[0]
            )
            rows = db.execute(
                "SELECT * FROM reviews WHERE plugin_id = ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (plugin_id, per_page, (page - 1) * per_page),
            ).fetchall()
        return Page([self._review(row) for row in rows], page, per_page, total)

    def add_review(
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
        now = created_at or self.clock()
        review_id = str(uuid.uuid4())
        with self._db() as db:
            self._require_plugin(db, plugin_id)
            db.execute(
                "INSERT INTO reviews (id, plugin_id, user_id, rating, title, body, response, "
                "response_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    review_id,
                    plugin_id,
                    user_id,
                    rating,
                    title,
                    body,
                    response,
                    _stamp(now) if response is not None else None,
                    _stamp(now),
                    _stamp(now),
                ),
            )
            row = db.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone()
        return self._review(row)

    # -- publishing ----------------------------------------------------------------

    def signing_key(self) -> tuple[Ed25519PrivateKey, str, bool]:
        """The registry's private key, its public hex, and whether it was just created."""
        from ..packages import signing

        created = False
        if not self.key_path.exists():
            data, _ = signing.generate_keypair()
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            created = True
        key = signing.load_private_key(self.key_path)
        public_hex = signing.public_key_hex(key)
        (self.root / PUBLIC_KEY_FILE).write_text(public_hex + "\n")
        return key, public_hex, created

    def publish(
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

        The package's plugin.yaml is read and validated, the package copied to
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
        # The bytes checked are the bytes stored: a private copy first, moved into
        # place only once the publisher's signature is known to match it.
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
            key_id = signing.key_id_for(public_hex)
            relative = PurePosixPath("packages", plugin_id, version, f"{platform}.tar.gz")
            target = self.root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        finally:
            staged.unlink(missing_ok=True)
        fsync_dir(target.parent)
        signature = signing.sign_checksum(sha256, key)
        manifest = signing.Manifest(
            id=plugin_id, version=version, platform=platform, sha256=sha256, size=size
        )
        signed = SignedManifest.model_validate(signing.sign_manifest(manifest, key, key_id))
        target.with_name(target.name + ".sig").write_text(signature + "\n")
        target.with_name(target.name + ".manifest.json").write_text(
            signed.model_dump_json(indent=2) + "\n"
        )
        publisher_file = target.with_name(target.name + ".publisher.json")
        if publisher is not None:
            publisher_file.write_text(publisher.signed.model_dump_json(indent=2) + "\n")
        else:
            publisher_file.unlink(missing_ok=True)

        now = _stamp(self.clock())
        author = meta.author.model_dump(include={"name", "email", "url"})
        publisher_name = meta.author.name
        with self._db() as db:
            previous = db.execute(
                "SELECT featured, official, readme FROM plugins WHERE id = ?", (plugin_id,)
            ).fetchone()
            if readme is None:  # neither given nor in the package: keep what we had
                readme = str(previous["readme"]) if previous else ""
            keep_featured = bool(previous["featured"]) if previous else False
            keep_official = bool(previous["official"]) if previous else False
            db.execute(
                "INSERT INTO plugins (id, name, description, icon_url, category, tags, license, "
                "repository, url, readme, official, featured, publisher_id, publisher_name, "
                "author, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
                "description = excluded.description, icon_url = excluded.icon_url, "
                "category = excluded.category, tags = excluded.tags, license = excluded.license, "
                "repository = excluded.repository, url = excluded.url, readme = excluded.readme, "
                "official = excluded.official, featured = excluded.featured, "
                "publisher_id = excluded.publisher_id, publisher_name = excluded.publisher_name, "
                "author = excluded.author, updated_at = excluded.updated_at",
                (
                    plugin_id,
                    meta.name or plugin_id,
                    meta.description,
                    meta.icon_url,
                    meta.category,
                    json.dumps(meta.tags),
                    meta.license,
                    meta.repository,
                    meta.website,
                    readme,
                    int(keep_official if official is None else official),
                    int(keep_featured if featured is None else featured),
                    _slug(publisher_name),
                    publisher_name,
                    json.dumps(author),
                    now,
                    now,
                ),
            )
            db.execute(
                "INSERT INTO versions (plugin_id, version, description, changelog, "
                "min_ide_version, max_ide_version, capabilities, visible, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?) "
                "ON CONFLICT (plugin_id, version) DO UPDATE SET "
                "description = excluded.description, "
                "changelog = CASE WHEN excluded.changelog != '' THEN excluded.changelog "
                "ELSE versions.changelog END, "
                "min_ide_version = excluded.min_ide_version, "
                "max_ide_version = excluded.max_ide_version, "
                "capabilities = excluded.capabilities, updated_at = excluded.updated_at",
                (
                    plugin_id,
                    version,
                    meta.description,
                    changelog,
                    meta.min_host_version or "",
                    meta.max_host_version or "",
                    json.dumps(meta.capabilities),
                    now,
                    now,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO artifacts (plugin_id, version, platform, path, checksum, "
                "signature, size, manifest, created_at, publisher_manifest) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    plugin_id,
                    version,
                    platform,
                    str(relative),
                    sha256,
                    signature,
                    size,
                    signed.model_dump_json(),
                    now,
                    publisher.signed.model_dump_json() if publisher else None,
                ),
            )
            versions = [
                row["version"]
                for row in db.execute(
                    "SELECT version FROM versions WHERE plugin_id = ? AND visible = 1",
                    (plugin_id,),
                )
            ]
            db.execute(
                "UPDATE plugins SET latest_version = ? WHERE id = ?",
                (latest_version(versions), plugin_id),
            )
        return PublishResult(
            plugin_id=plugin_id,
            version=version,
            platform=platform,
            path=target,
            sha256=sha256,
            size=size,
            signature=signature,
            public_key_hex=public_hex,
            key_id=key_id,
            created_key=created_key,
            publisher_public_key_hex=publisher.public_key_hex if publisher else "",
            publisher_key_id=publisher.signed.key_id if publisher else "",
        )


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
) -> PublishResult:
    """Publish a package into the registry at ``directory`` (see :meth:`RegistryIndex.publish`)."""
    return RegistryIndex(directory).publish(
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
