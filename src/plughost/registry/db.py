"""The registry's database: SQLAlchemy 2 (async) tables and Alembic migrations.

One schema serves both drivers: SQLite (``sqlite+aiosqlite:///DIR/index.db``,
the default: a registry is a directory and needs no server) and PostgreSQL
(``postgresql+asyncpg://...``: several registry servers share one truth).
Times are stored as RFC 3339 UTC text (``2024-05-01T12:00:00.000000Z``), as
the API writes them, so they sort as text on both and read back unchanged.

The schema is owned by the migrations in ``migrations/versions`` (run by
:func:`migrate` whenever a registry opens its database); :data:`Base` holds
the tables so that other modules can add theirs to the same metadata, each
with a migration of its own on top of the last.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Index,
    Integer,
    String,
    Text,
    event,
    inspect,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from ..errors import ValidationError

__all__ = [
    "DB_FILE",
    "LEGACY_INDEX_FILE",
    "ArtifactRow",
    "Base",
    "CatalogGenerationRow",
    "DownloadMarkRow",
    "DownloadRow",
    "PluginRow",
    "ReviewRow",
    "VersionRow",
    "default_url",
    "make_engine",
    "migrate",
]

DB_FILE = "index.db"
LEGACY_INDEX_FILE = "index.sqlite3"  # the index of registry directories before this schema
_MIGRATION_LOCK = 0x706C7567  # pg_advisory_xact_lock key: one server migrates at a time
_PROCESS_LOCK = threading.Lock()


class Base(DeclarativeBase):
    """The registry's tables (and those other modules add)."""


class PluginRow(Base):
    __tablename__ = "plugins"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    icon_url: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    license: Mapped[str] = mapped_column(Text, default="")
    repository: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str] = mapped_column(Text, default="")
    readme: Mapped[str] = mapped_column(Text, default="")
    official: Mapped[bool] = mapped_column(Boolean, default=False)
    featured: Mapped[bool] = mapped_column(Boolean, default=False)
    publisher_id: Mapped[str] = mapped_column(Text, default="")
    publisher_name: Mapped[str] = mapped_column(Text, default="")
    latest_version: Mapped[str] = mapped_column(String(64), default="")
    author: Mapped[str] = mapped_column(Text, default="{}")  # JSON object
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class VersionRow(Base):
    __tablename__ = "versions"

    plugin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    changelog: Mapped[str] = mapped_column(Text, default="")
    min_ide_version: Mapped[str] = mapped_column(Text, default="")
    max_ide_version: Mapped[str] = mapped_column(Text, default="")
    capabilities: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    visible: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class ArtifactRow(Base):
    __tablename__ = "artifacts"

    plugin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    platform: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The storage key (``packages/<id>/<version>/<platform>.tar.gz``), never a request path.
    path: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text, default="")
    size: Mapped[int] = mapped_column(Integer)
    manifest: Mapped[str | None] = mapped_column(Text, nullable=True)
    publisher_manifest: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))


class ReviewRow(Base):
    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 1 AND 5", name="reviews_rating_range"),
        Index("reviews_by_plugin", "plugin_id", "created_at"),
    )

    # ``seq`` orders reviews written in the same instant as they were written.
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    plugin_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[int] = mapped_column(Integer, default=0)
    rating: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    response_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class DownloadRow(Base):
    """Counted downloads per plugin, version, architecture and UTC day."""

    __tablename__ = "downloads"

    plugin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    arch: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD
    count: Mapped[int] = mapped_column(Integer, default=0)


class DownloadMarkRow(Base):
    """Who was counted in which minute: one counted download per address, plugin,
    version and architecture a minute, shared by every server on the database."""

    __tablename__ = "download_marks"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    plugin_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(64), primary_key=True)
    arch: Mapped[str] = mapped_column(String(64), primary_key=True)
    minute: Mapped[str] = mapped_column(String(16), primary_key=True)  # YYYY-MM-DDTHH:MM


class CatalogGenerationRow(Base):
    """The catalog's generation is the sum of these: triggers (migration 0004) raise one
    slot in every transaction that changes plugins, versions, artifacts, reviews or
    downloads, so a reader that sees the same sum sees the same catalog."""

    __tablename__ = "catalog_generation"

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger, default=0)


def default_url(directory: str | Path) -> str:
    """The embedded default: an SQLite file inside the registry directory."""
    return f"sqlite+aiosqlite:///{Path(directory).resolve() / DB_FILE}"


def _check_url(url: str) -> str:
    if not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValidationError(
            f"unsupported registry database URL {url.split('://')[0]!r}://...",
            title="Unsupported database",
            suggestions=[
                "use sqlite+aiosqlite:///PATH/index.db (the default) or "
                "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB",
            ],
        )
    return url


def make_engine(url: str, *, pooled: bool = True) -> AsyncEngine:
    """An async engine for ``url``; ``pooled=False`` keeps no connection open between uses
    (for short-lived callers). SQLite is never pooled: opening the file is cheap, and
    an idle aiosqlite connection is a thread that outlives its event loop."""
    _check_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            # WAL: a server keeps reading while a publisher (another process) writes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    if pooled:
        # Recycled rather than pinged before each use: a ping is a round trip per request.
        # No overflow: a request holds a connection only for its statements, so 20 keep
        # one server's event loop busy, and connections opened past the pool's size were
        # closed again on return, a new connection (and its TLS probe) per request.
        return create_async_engine(url, pool_size=20, max_overflow=0, pool_recycle=300)
    return create_async_engine(url, poolclass=NullPool)


# -- migrations ------------------------------------------------------------------------


def _alembic_config(directory: Path | None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["directory"] = directory
    return config


@functools.cache
def _head() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(None)).get_current_head()
    assert head is not None
    return head


def _current(connection: Any) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
    return str(row[0]) if row else None


def _upgrade(connection: Any, directory: Path | None) -> None:
    from alembic import command

    if _current(connection) == _head():
        return
    config = _alembic_config(directory)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def _migrate_once(engine: AsyncEngine, directory: Path | None) -> None:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # Servers starting together: the second waits, then finds the schema at head.
            await conn.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
        await conn.run_sync(_upgrade, directory)
        await conn.commit()


def _sqlite_lock(engine: AsyncEngine) -> int | None:
    """Hold an exclusive lock on ``<file>.migrate-lock`` (processes sharing a SQLite file);
    returns its descriptor (None for PostgreSQL, which locks in the database)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database:
        return None
    fd = os.open(f"{database}.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


async def migrate(engine: AsyncEngine, directory: str | Path | None = None) -> None:
    """Bring the database to the newest schema (nothing to do when it is there).

    ``directory``: a registry directory whose older index (``index.sqlite3``)
    the first migration imports. Migrations never run two at a time: Alembic's
    context is one per process, and a half-made schema would be made twice.
    """
    where = Path(directory) if directory is not None else None
    await asyncio.to_thread(_PROCESS_LOCK.acquire)
    try:
        fd = await asyncio.to_thread(_sqlite_lock, engine)
        try:
            await _migrate_once(engine, where)
        finally:
            if fd is not None:
                os.close(fd)
    finally:
        _PROCESS_LOCK.release()


def legacy_rows(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of a directory's older SQLite index, table by table (empty when none)."""
    path = directory / LEGACY_INDEX_FILE
    if not path.is_file():
        return {}
    found: dict[str, list[dict[str, Any]]] = {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    db.row_factory = sqlite3.Row
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table in ("plugins", "versions", "artifacts", "reviews", "downloads"):
            if table in tables:
                order = " ORDER BY rowid" if table == "reviews" else ""
                found[table] = [dict(row) for row in db.execute(f"SELECT * FROM {table}{order}")]
    finally:
        db.close()
    return found
