"""Recorded downloads on both databases: PostgreSQL records one in a single statement,
SQLite in a transaction of several, and both must count, refuse and forget alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from test_registry_server import make_package

from plughost.errors import PluginNotFoundError
from plughost.registry.catalog import DOWNLOAD_MARKS, Catalog
from plughost.registry.index import publish

pytestmark = pytest.mark.timeout(120)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_counted_once_a_minute_refused_when_unknown_and_forgotten(
    tmp_path: Path, database: str | None
) -> None:
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "dl", "1.0.0"), database=database)
    clock = Clock()
    catalog = Catalog(root, database=database, clock=clock)
    await catalog.open()
    try:
        record = catalog.record_download
        assert await record("dl", "1.0.0", "linux_amd64", address="10.0.0.1") is True
        assert await record("dl", "1.0.0", "linux_amd64", address="10.0.0.1") is False
        assert await record("dl", "1.0.0", "linux_amd64", address="10.0.0.2") is True
        assert await record("dl", "1.0.0", "darwin_arm64", address="10.0.0.1") is True
        assert await record("dl", "", "linux_amd64", address="10.0.0.1") is True  # no version
        for _ in range(2):  # no address: every one counts
            assert await record("dl", "1.0.0", "linux_amd64") is True
        with pytest.raises(PluginNotFoundError, match="plugin 'nope' not found"):
            await record("nope", "1.0.0", "linux_amd64", address="10.0.0.1")
        with pytest.raises(PluginNotFoundError, match=r"version '9\.9\.9'"):
            await record("dl", "9.9.9", "linux_amd64", address="10.0.0.1")

        clock.now += timedelta(minutes=1)  # a new minute: the same client counts again
        assert await record("dl", "1.0.0", "linux_amd64", address="10.0.0.1") is True
        stats = await catalog.download_stats("dl")
        assert stats.total_count == 7
        assert {v.version: v.count for v in stats.by_version} == {"1.0.0": 6, "": 1}

        clock.now += timedelta(minutes=3)  # older marks are swept on the next record
        assert await record("dl", "1.0.0", "linux_amd64", address="10.0.0.3") is True
        async with catalog.engine().connect() as db:
            marks = (await db.execute(select(func.count()).select_from(DOWNLOAD_MARKS))).scalar()
        assert marks == 1
    finally:
        await catalog.close()
