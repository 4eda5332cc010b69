"""The registry on its database: migrations (an older directory's index imported), the
same answers on SQLite and on a real PostgreSQL, URLs that never come from the
request's Host header, and downloads counted once per client a minute.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import Postgres
from test_registry_server import make_package

from plughost.errors import ValidationError
from plughost.registry.db import DB_FILE, make_engine, migrate
from plughost.registry.index import RegistryIndex, add_review, publish
from plughost.registry.models import current_platform
from plughost.registry.server import create_app, running_server
from plughost.registry.storage import LocalStorage, S3Storage, open_storage

pytestmark = pytest.mark.timeout(120)
PLATFORM = current_platform()


def _answers(url: str) -> dict[str, Any]:
    paths = [
        "/v1/plugins?order_field=download_count&order_direction=desc",
        "/v1/plugins?q=OTHER",
        "/v1/categories",
        "/v1/plugins/demo",
        "/v1/plugins/demo/versions",
        "/v1/plugins/demo/reviews",
        "/v1/plugins/demo/downloads",
    ]
    return {path: httpx.get(url + path).json() for path in paths}


def test_sqlite_and_postgresql_answer_alike(tmp_path: Path, postgres: Postgres) -> None:
    src = tmp_path / "src"
    src.mkdir()
    packages = [
        make_package(src, "demo", "1.0.0"),
        make_package(src, "demo", "1.10.0"),
        make_package(src, "other", "0.1.0", category="b"),
    ]
    answers = []
    root = tmp_path / "reg"  # one directory (one key), two databases
    for database in (None, postgres.database()):
        for package in packages:
            publish(root, package, platform=PLATFORM, database=database)
        index = RegistryIndex(root, database=database)
        index.add_review("demo", rating=5, title="good")
        index.record_download("demo", "1.10.0", PLATFORM)
        with running_server(create_app(root, database=database)) as url:
            answers.append((url, _answers(url)))
    (lite_url, lite), (pg_url, pg) = answers
    normalised = {
        path: _strip(body, pg_url, lite_url) for path, body in pg.items()
    }  # times and the port differ; everything else must not
    assert {path: _strip(body, lite_url, lite_url) for path, body in lite.items()} == normalised
    assert lite["/v1/plugins/demo"]["data"]["latest_version"] == "1.10.0"
    assert [p["id"] for p in lite["/v1/plugins?q=OTHER"]["data"]] == ["other"]


def _strip(value: Any, url: str, replacement: str) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip(v, url, replacement)
            for k, v in value.items()
            if k not in ("created_at", "updated_at", "id", "signature", "manifest", "checksum")
            or not isinstance(v, str)
        }
    if isinstance(value, list):
        return [_strip(v, url, replacement) for v in value]
    if isinstance(value, str):
        return value.replace(url, replacement)
    return value


def test_an_older_directory_index_is_imported(tmp_path: Path) -> None:
    """A directory made before the database schema: its index.sqlite3 is read into index.db
    on first open, and its packages are served where they are."""
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "old", "1.0.0"), readme="# Old")
    add_review(root, "old", rating=3, title="fine")
    # Make it look like an older directory: the same rows in index.sqlite3, no index.db.
    source, legacy = sqlite3.connect(root / DB_FILE), sqlite3.connect(root / "index.sqlite3")
    with legacy:
        source.backup(legacy)
        legacy.execute("DROP TABLE alembic_version")
        legacy.execute("DROP TABLE download_marks")
        legacy.execute(
            "INSERT INTO downloads VALUES ('old', '1.0.0', 'linux_amd64', '2024-01-02', 7)"
        )
    source.close()
    legacy.close()
    for suffix in ("", "-wal", "-shm"):
        (root / f"{DB_FILE}{suffix}").unlink(missing_ok=True)
    with running_server(create_app(root)) as url:
        plugin = httpx.get(f"{url}/v1/plugins/old").json()["data"]
        reviews = httpx.get(f"{url}/v1/plugins/old/reviews").json()["data"]
        package = httpx.get(f"{url}/v1/artifacts/old/1.0.0/any.tar.gz")
    assert (root / DB_FILE).is_file()
    assert plugin["readme"] == "# Old" and plugin["download_count"] == 7
    assert [r["title"] for r in reviews] == ["fine"]
    assert package.status_code == 200
    assert package.content == (tmp_path / "old-1.0.0.tar.gz").read_bytes()


async def test_migrations_are_idempotent_and_concurrent(
    tmp_path: Path, database: str | None
) -> None:
    url = database or f"sqlite+aiosqlite:///{tmp_path / 'index.db'}"
    engines = [make_engine(url, pooled=False) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
        await migrate(engines[0])
        async with engines[0].connect() as conn:
            from sqlalchemy import text

            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).all()
    finally:
        for engine in engines:
            await engine.dispose()
    assert len(version) == 1


def test_locations_never_come_from_the_host_header(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "solo", "1.0.0"), platform=PLATFORM)
    evil = {"Host": "evil.example"}
    with running_server(create_app(root)) as url:
        download = httpx.get(f"{url}/v1/plugins/solo/download/1.0.0/{PLATFORM}", headers=evil)
        version = httpx.get(f"{url}/v1/plugins/solo/versions/1.0.0", headers=evil).json()
        plugin = httpx.get(f"{url}/v1/plugins/solo", headers=evil).json()
    expected = f"{url}/v1/artifacts/solo/1.0.0/{PLATFORM}.tar.gz"
    assert download.status_code == 302
    assert download.headers["location"] == expected
    assert version["data"]["artifacts"][PLATFORM]["download_url"] == expected
    assert plugin["data"]["version"]["artifacts"][PLATFORM]["download_url"] == expected


def test_downloads_count_once_per_client_a_minute(tmp_path: Path, database: str | None) -> None:
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "flood", "1.0.0"), database=database)
    publish(root, make_package(tmp_path, "flood", "1.1.0"), database=database)
    with running_server(create_app(root, database=database)) as url:
        record = f"{url}/v1/plugins/flood/downloads"
        for _ in range(5):  # one client, one version and platform: counted once
            answer = httpx.post(record, json={"version": "1.0.0", "arch": "linux_amd64"})
            assert answer.status_code == 200 and answer.json()["success"] is True
        httpx.post(record, json={"version": "1.1.0", "arch": "linux_amd64"})
        httpx.post(record, json={"version": "1.1.0", "arch": "darwin_arm64"})
        stats = httpx.get(record).json()["data"]
    assert stats["total_count"] == 3
    assert {v["version"]: v["count"] for v in stats["by_version"]} == {"1.1.0": 2, "1.0.0": 1}


def test_storage_urls_are_checked(tmp_path: Path) -> None:
    assert isinstance(open_storage(None, tmp_path), LocalStorage)
    s3 = open_storage("s3://bucket/some/prefix/", tmp_path)
    assert isinstance(s3, S3Storage)
    assert s3.location("packages/a/1.0.0/any.tar.gz") == (
        "s3://bucket/some/prefix/packages/a/1.0.0/any.tar.gz"
    )
    for bad in ("s3:///nobucket", "ftp://host/x"):
        with pytest.raises(ValidationError):
            open_storage(bad, tmp_path)
    with pytest.raises(ValidationError):
        LocalStorage(tmp_path).path("packages/../../etc/passwd")
    with pytest.raises(ValidationError, match="unsupported registry database"):
        RegistryIndex(tmp_path, database="mysql://root@localhost/db")
