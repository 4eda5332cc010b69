"""The registry's read cache never answers with a stale catalog.

Two servers (each its own app, cache and event loop, on a real socket) share one
database, SQLite or PostgreSQL. A publish (by a publisher process's code path), a
review and a recorded download made through server A are in the very next answer of
server B, and of A itself, with no waiting. Answers are really kept (a change made
behind the triggers' back is not seen until the generation moves), carry an ETag that
a client can revalidate with, and the generation moves with every change to each
catalog table (migration 0004's triggers). httpx asks for gzip as Go's client does,
so the tests above read compressed listings; below, each encoding is asked for
explicitly and compared byte for byte.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from registry_accounts_helpers import PASSWORD, populate
from services import Postgres
from sqlalchemy import text
from test_registry_server import make_package

from plughost.coalesce import NextRun
from plughost.registry.cache import ReadCache
from plughost.registry.catalog import Catalog
from plughost.registry.index import RegistryIndex
from plughost.registry.server import CACHED_ROUTES, create_app, running_server

pytestmark = pytest.mark.timeout(120)

# Every cached route, as a client asks for it (plugin "alpha").
VIEWS = [
    "/v1/plugins",
    "/v1/plugins?per_page=5&order_field=download_count&order_direction=desc",
    "/v1/categories",
    "/v1/plugins/alpha",
    "/v1/plugins/alpha/versions",
    "/v1/plugins/alpha/versions/1.0.0",
    "/v1/plugins/alpha/downloads",
    "/v1/plugins/alpha/reviews",
]


@dataclass
class Pair:
    a: str
    b: str
    root: Path
    src: Path
    database: str | None
    token: str  # a signed-in user's session, good on either server

    def get(self, url: str, path: str, **headers: str) -> httpx.Response:
        answer = httpx.get(url + path, headers=headers, timeout=30)
        assert answer.status_code in (200, 304, 404), answer.text
        return answer

    def data(self, url: str, path: str) -> Any:
        answer = self.get(url, path)
        assert answer.status_code == 200, answer.text
        return answer.json()["data"]

    def warm(self) -> None:
        """Every view asked for twice on both servers: the second answer is a kept one."""
        for url in (self.a, self.b):
            for path in VIEWS:
                first, second = self.get(url, path), self.get(url, path)
                assert first.content == second.content
                assert first.headers["etag"] == second.headers["etag"]


@pytest.fixture
def pair(tmp_path: Path, database: str | None) -> Iterator[Pair]:
    root, src = tmp_path / "registry", tmp_path / "src"
    src.mkdir()
    populate(root, database)
    index = RegistryIndex(root, database=database)
    index.publish(make_package(src, "alpha", "1.0.0"))
    index.publish(make_package(src, "beta", "1.0.0", category="other"))
    with ExitStack() as stack:
        a, b = (
            stack.enter_context(running_server(create_app(root, database=database)))
            for _ in range(2)
        )
        login = httpx.post(
            f"{a}/v1/auth/login", json={"email": "dev@example.invalid", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        yield Pair(a, b, root, src, database, login.json()["data"]["token"])


def test_a_change_through_one_server_is_in_the_next_answer_of_both(pair: Pair) -> None:
    pair.warm()
    assert pair.get(pair.b, "/v1/plugins/alpha/versions/1.1.0").status_code == 404

    # A publish (what `plughost registry publish` runs), on neither server.
    RegistryIndex(pair.root, database=pair.database).publish(
        make_package(pair.src, "alpha", "1.1.0")
    )
    for url in (pair.b, pair.a):
        listed = {p["id"]: p for p in pair.data(url, "/v1/plugins")}
        assert listed["alpha"]["latest_version"] == "1.1.0"
        assert pair.data(url, "/v1/plugins/alpha")["version"]["version"] == "1.1.0"
        versions = [v["version"] for v in pair.data(url, "/v1/plugins/alpha/versions")]
        assert versions == ["1.1.0", "1.0.0"]
        assert pair.data(url, "/v1/plugins/alpha/versions/1.1.0")["version"] == "1.1.0"
    pair.warm()

    # A review through A.
    posted = httpx.post(
        f"{pair.a}/v1/plugins/alpha/reviews",
        json={"rating": 4, "title": "solid"},
        headers={"Authorization": f"Bearer {pair.token}"},
    )
    assert posted.status_code == 200, posted.text
    for url in (pair.b, pair.a):
        listed = {p["id"]: p for p in pair.data(url, "/v1/plugins")}
        assert (listed["alpha"]["review_count"], listed["alpha"]["average_rating"]) == (1, 4.0)
        assert [r["title"] for r in pair.data(url, "/v1/plugins/alpha/reviews")] == ["solid"]
    pair.warm()

    # A recorded download through A.
    recorded = httpx.post(
        f"{pair.a}/v1/plugins/alpha/downloads", json={"version": "1.1.0", "arch": "any"}
    )
    assert recorded.status_code == 200, recorded.text
    for url in (pair.b, pair.a):
        ordered = pair.data(url, VIEWS[1])
        assert (ordered[0]["id"], ordered[0]["download_count"]) == ("alpha", 1)
        assert pair.data(url, "/v1/plugins/alpha/downloads")["total_count"] == 1
    pair.warm()

    # A new plugin in a new category.
    RegistryIndex(pair.root, database=pair.database).publish(
        make_package(pair.src, "gamma", "0.1.0", category="fresh")
    )
    for url in (pair.b, pair.a):
        assert [p["id"] for p in pair.data(url, "/v1/plugins")] == ["alpha", "beta", "gamma"]
        assert "fresh" in {c["category"] for c in pair.data(url, "/v1/categories")}


def _behind_the_triggers(catalog: Catalog, statement: str) -> None:
    """Change the catalog without raising its generation (as no writer ever may)."""

    async def run() -> None:
        async with catalog.engine().begin() as db:
            if db.dialect.name == "postgresql":
                await db.execute(text("SET LOCAL session_replication_role = replica"))
                await db.execute(text(statement))
            else:
                await db.execute(text("DROP TRIGGER plugins_generation_update"))
                await db.execute(text(statement))
                await db.execute(
                    text(
                        "CREATE TRIGGER plugins_generation_update AFTER UPDATE ON plugins "
                        "BEGIN UPDATE catalog_generation SET generation = generation + 1 "
                        "WHERE slot = 0; END"
                    )
                )
        await catalog.close()

    asyncio.run(run())


def _bump(catalog: Catalog) -> None:
    async def run() -> None:
        async with catalog.engine().begin() as db:
            await db.execute(text("UPDATE catalog_generation SET generation = generation + 1"))
        await catalog.close()

    asyncio.run(run())


def test_answers_are_kept_and_revalidated_until_the_generation_moves(pair: Pair) -> None:
    catalog = Catalog(pair.root, database=pair.database)
    kept = pair.get(pair.b, "/v1/plugins/alpha")
    etag = kept.headers["etag"]
    assert kept.headers["cache-control"] == "no-cache"
    not_modified = pair.get(pair.b, "/v1/plugins/alpha", **{"If-None-Match": f'W/{etag}, "x"'})
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert not_modified.headers["etag"] == etag

    _behind_the_triggers(catalog, "UPDATE plugins SET name = 'Renamed' WHERE id = 'alpha'")
    # The kept answer stands (so the test above could fail were it not refreshed) ...
    assert pair.get(pair.b, "/v1/plugins/alpha").content == kept.content
    # ... while an answer never kept is read from the database.
    assert [p["id"] for p in pair.data(pair.b, "/v1/plugins?q=renamed")] == ["alpha"]
    assert pair.data(pair.a, "/v1/plugins/alpha")["name"] == "Renamed"

    _bump(catalog)
    fresh = pair.get(pair.b, "/v1/plugins/alpha", **{"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.json()["data"]["name"] == "Renamed"
    assert fresh.headers["etag"] != etag


def test_errors_are_not_kept(pair: Pair) -> None:
    assert pair.get(pair.b, "/v1/plugins/delta").status_code == 404
    assert pair.get(pair.b, "/v1/plugins/delta").status_code == 404
    bad = httpx.get(f"{pair.b}/v1/plugins?order_field=nope")
    assert bad.status_code == 400 and "etag" not in bad.headers
    RegistryIndex(pair.root, database=pair.database).publish(
        make_package(pair.src, "delta", "1.0.0")
    )
    assert pair.data(pair.b, "/v1/plugins/delta")["id"] == "delta"


# Every change to each catalog table, as SQL: the generation must move for each.
CHANGES = [
    "UPDATE plugins SET featured = true WHERE id = 'alpha'",
    "UPDATE versions SET visible = false WHERE plugin_id = 'alpha'",  # a yank
    "UPDATE artifacts SET size = size + 1 WHERE plugin_id = 'alpha'",
    "INSERT INTO reviews (id, plugin_id, user_id, rating, created_at, updated_at) "
    "VALUES ('r1', 'alpha', 0, 5, '2024-01-01T00:00:00.000000Z', '2024-01-01T00:00:00.000000Z')",
    "UPDATE reviews SET rating = 3 WHERE id = 'r1'",
    "DELETE FROM reviews WHERE id = 'r1'",
    "INSERT INTO downloads (plugin_id, version, arch, day, count) "
    "VALUES ('alpha', '1.0.0', 'any', '2024-01-01', 1)",
    "DELETE FROM downloads",
    "DELETE FROM artifacts WHERE plugin_id = 'beta'",
    "DELETE FROM versions WHERE plugin_id = 'beta'",
    "DELETE FROM plugins WHERE id = 'beta'",
]


def _publish(root: Path, database: str | None, *plugin_ids: str) -> None:
    src = root / "src"
    src.mkdir(exist_ok=True)
    index = RegistryIndex(root, database=database)
    for plugin_id in plugin_ids:
        index.publish(make_package(src, plugin_id, "1.0.0"))


async def test_every_catalog_change_moves_the_generation(
    tmp_path: Path, database: str | None
) -> None:
    await asyncio.to_thread(_publish, tmp_path, database, "alpha", "beta")
    catalog = Catalog(tmp_path, database=database)
    try:
        seen = [await catalog.generation()]
        for change in CHANGES:
            async with catalog.engine().begin() as db:
                await db.execute(text(change))
            seen.append(await catalog.generation())
        assert all(after > before for before, after in itertools.pairwise(seen)), seen
        # Not by a write that changes no answer: who was counted in which minute.
        async with catalog.engine().begin() as db:
            await db.execute(
                text(
                    "INSERT INTO download_marks (address, plugin_id, version, arch, minute) "
                    "VALUES ('127.0.0.1', 'alpha', '1.0.0', 'any', '2024-01-01T00:00')"
                )
            )
        assert await catalog.generation() == seen[-1]
        if catalog.engine().dialect.name == "postgresql":
            async with catalog.engine().begin() as db:
                await db.execute(text("TRUNCATE reviews"))
            assert await catalog.generation() > seen[-1]
    finally:
        await catalog.close()


def test_cached_routes_are_read_routes_of_the_app(tmp_path: Path) -> None:
    app = create_app(tmp_path)
    gets = {r.path for r in app.routes if isinstance(r, APIRoute) and "GET" in (r.methods or ())}
    assert set(CACHED_ROUTES) <= gets


async def test_a_shared_read_begins_after_each_caller_arrived() -> None:
    value = 0
    started = asyncio.Event()
    release = asyncio.Event()

    async def read() -> int:
        nonlocal value
        value += 1
        mine = value
        started.set()
        await release.wait()
        return mine

    shared = NextRun(read)
    first = asyncio.ensure_future(shared())
    await started.wait()  # read 1 is under way: later callers must not get it
    started.clear()
    later = [asyncio.ensure_future(shared()) for _ in range(5)]
    release.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 5  # one more read, shared by all five
    assert value == 2
    assert await shared() == 3

    async def failing() -> int:
        raise OSError("database unreachable")

    broken = NextRun(failing)
    with pytest.raises(OSError, match="unreachable"):
        await broken()
    with pytest.raises(OSError, match="unreachable"):
        await broken()


def _fetch(url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """An answer and its body as sent, not decoded; only ``headers`` are asked for."""
    with httpx.Client(timeout=30) as client:
        del client.headers["accept-encoding"]
        with client.stream("GET", url, headers=headers) as answer:
            return answer, b"".join(answer.iter_raw())


TAKE_GZIP = ["gzip", "deflate, gzip;q=0.5", "x-gzip", "*", "br;q=1.0, *;q=0.1", "*;q=0, GZIP"]
REFUSE_GZIP = ["gzip;q=0", "gzip; Q=0.000, deflate", "*;q=0", "deflate, br", "identity", "gzip;q=x"]


def test_kept_answers_go_gzip_to_clients_that_take_it(tmp_path: Path) -> None:
    _publish(tmp_path, None, "alpha", "beta")
    with running_server(create_app(tmp_path)) as url:
        listing = f"{url}/v1/plugins"
        plain, body = _fetch(listing, {})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert len(body) > 1024 and plain.headers["vary"] == "Accept-Encoding"
        etag = plain.headers["etag"]
        gzip_etag = etag[:-1] + '-gzip"'
        for accept in TAKE_GZIP:
            zipped, sent = _fetch(listing, {"Accept-Encoding": accept})
            assert zipped.headers.get("content-encoding") == "gzip", accept
            assert int(zipped.headers["content-length"]) == len(sent) < len(body)
            assert gzip.decompress(sent) == body
            assert (zipped.headers["etag"], zipped.headers["vary"]) == (
                gzip_etag,
                "Accept-Encoding",
            )
        for accept in REFUSE_GZIP:
            refused, sent = _fetch(listing, {"Accept-Encoding": accept})
            assert "content-encoding" not in refused.headers, accept
            assert (sent, refused.headers["etag"]) == (body, etag)

        # Each encoding revalidates with its own ETag, and only with it.
        for accept, tag, status in [
            ("identity", etag, 304),
            ("identity", gzip_etag, 200),
            ("gzip", gzip_etag, 304),
            ("gzip", etag, 200),
        ]:
            answer, sent = _fetch(listing, {"Accept-Encoding": accept, "If-None-Match": tag})
            assert answer.status_code == status, (accept, tag)
            assert answer.headers["vary"] == "Accept-Encoding"
            assert (answer.headers["etag"] == tag) == (status == 304)
            assert (sent == b"") == (status == 304)

        # Tiny answers go plain; routes that are not kept are left alone.
        small, sent = _fetch(f"{url}/v1/categories", {"Accept-Encoding": "gzip"})
        assert len(sent) < 1024 and "content-encoding" not in small.headers
        daily, sent = _fetch(
            f"{url}/v1/plugins/alpha/downloads/daily?days=90", {"Accept-Encoding": "gzip"}
        )
        assert daily.status_code == 200 and len(sent) > 1024
        assert "content-encoding" not in daily.headers and "vary" not in daily.headers

        # A change: the next compressed answer is of the new catalog.
        _publish(tmp_path, None, "gamma")
        zipped, sent = _fetch(listing, {"Accept-Encoding": "gzip"})
        assert zipped.headers["etag"] not in (etag, gzip_etag)
        assert gzip.decompress(sent) == _fetch(listing, {})[1] != body
        assert "gamma" in [p["id"] for p in httpx.get(listing).json()["data"]]


def test_compressed_answers_count_toward_the_byte_budget() -> None:
    # Hex digits compress about 2x: a compressed copy is far from free.
    bodies = {path: os.urandom(10_000).hex().encode() for path in ("/a", "/b")}
    renders: collections.Counter[str] = collections.Counter()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        renders[scope["path"]] += 1
        body = bodies[scope["path"]]
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def generation() -> int:
        return 1

    # Room for both plain answers and a quarter of one more: not for a compressed copy.
    budget = 2 * (20_000 + 1_000) + 5_000
    with running_server(ReadCache(app, generation, ["/a", "/b"], max_bytes=budget)) as url:
        for path in ("/a", "/b", "/a", "/b"):
            assert _fetch(url + path, {})[1] == bodies[path]
        assert renders == {"/a": 1, "/b": 1}  # both kept
        answer, sent = _fetch(url + "/b", {"Accept-Encoding": "gzip"})
        assert answer.headers["content-encoding"] == "gzip" and len(sent) > 5_000
        assert gzip.decompress(sent) == bodies["/b"]
        # Compressing /b overflowed the budget: the least recently used answer went.
        assert _fetch(url + "/a", {})[1] == bodies["/a"]
        assert renders == {"/a": 2, "/b": 1}


def test_an_unreachable_database_is_reported_not_hidden(tmp_path: Path, postgres: Postgres) -> None:
    database = postgres.database()
    _publish(tmp_path, database, "alpha")
    with running_server(create_app(tmp_path, database=database)) as url:
        assert httpx.get(f"{url}/v1/plugins").status_code == 200
        subprocess.run(
            [str(postgres.bin / "dropdb"), "-h", "127.0.0.1", "-p", str(postgres.port),
             "-U", postgres.user, "--force", database.rsplit("/", 1)[1]],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        gone = httpx.get(f"{url}/v1/plugins", timeout=30)
        assert gone.status_code == 500, gone.text
        assert gone.json()["success"] is False
