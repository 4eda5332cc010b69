"""Several servers, one truth: two ``plughost registry serve`` processes on one PostgreSQL
database and one S3 bucket. Versions published concurrently (by separate publisher
processes), and downloads and reviews made concurrently through both, are seen alike
from either: ratings, counts and daily stats.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from services import Postgres, S3Store, free_port
from test_registry_server import make_package
from waiting import wait_until

from plughost.registry.accounts import Accounts, administer
from plughost.registry.models import current_platform

pytestmark = pytest.mark.timeout(180)
PLATFORM = current_platform()
VERSIONS = ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
PASSWORD = "correct horse battery"
REVIEWERS = 8


def _plughost(*args: str) -> list[str]:
    return [sys.executable, "-m", "plughost", *args]


@pytest.fixture
def cluster(
    tmp_path: Path, postgres: Postgres, s3: S3Store
) -> Iterator[tuple[list[str], dict[str, str], Path]]:
    """Two servers (each with its own directory, sharing the registry key) on one
    database and one bucket; yields their URLs, the environment, and the key's directory."""
    env = {
        **os.environ,
        **s3.env,
        "PLUGHOST_REGISTRY_DATABASE": postgres.database(),
        "PLUGHOST_REGISTRY_STORAGE": f"s3://{s3.bucket()}/market",
    }
    servers: list[subprocess.Popen[bytes]] = []
    urls = []
    try:
        for n in range(2):
            directory = tmp_path / f"server{n}"
            port = free_port()
            with open(tmp_path / f"server{n}.log", "wb") as log:  # the process keeps its own
                servers.append(
                    subprocess.Popen(
                        _plughost("registry", "serve", str(directory), "--port", str(port)),
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")

        def healthy() -> bool:
            for server, log_name in zip(servers, ("server0.log", "server1.log"), strict=True):
                if server.poll() is not None:
                    raise RuntimeError((tmp_path / log_name).read_text())
            try:
                return all(httpx.get(f"{u}/v1/health").status_code == 200 for u in urls)
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=60, message="both registry servers to answer")
        yield urls, env, tmp_path / "publisher"
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=20)


def _view(url: str) -> dict[str, Any]:
    """What a client sees, with the server's own address taken out."""
    paths = [
        "/v1/plugins",
        "/v1/plugins/shared",
        "/v1/plugins/shared/versions",
        "/v1/plugins/shared/downloads",
        "/v1/plugins/shared/downloads/daily?days=7",
        "/v1/plugins/shared/reviews?per_page=100",
        "/v1/categories",
    ]
    text = {p: httpx.get(url + p).text.replace(url, "SERVER") for p in paths}
    return text


def test_two_servers_one_truth(
    tmp_path: Path, cluster: tuple[list[str], dict[str, str], Path]
) -> None:
    urls, env, publisher_dir = cluster
    src = tmp_path / "src"
    src.mkdir()
    packages = [make_package(src, "shared", v, payload=v.encode() * 100) for v in VERSIONS]
    # The registry key is made once; concurrent publishers then share it.
    first = subprocess.run(
        _plughost("registry", "publish", str(packages[0]), "--dir", str(publisher_dir)),
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr.decode()
    publishers = [
        subprocess.Popen(
            _plughost("registry", "publish", str(p), "--dir", str(publisher_dir)),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for p in packages[1:]
    ]
    for process in publishers:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err.decode()

    tokens = _reviewers(urls, env, publisher_dir)

    # Concurrent downloads through both servers, each fetched from the bucket and checked.
    def download(n: int) -> bytes:
        url = urls[n % 2]
        version = VERSIONS[n % len(VERSIONS)]
        with httpx.Client(follow_redirects=True, timeout=30) as client:
            answer = client.get(f"{url}/v1/plugins/shared/download/{version}/any")
            assert answer.status_code == 200
            assert answer.url.host == "127.0.0.1" and "X-Amz-Signature" in str(answer.url)
            recorded = client.post(
                f"{url}/v1/plugins/shared/downloads",
                json={"version": version, "arch": f"arch{n}"},
            )
            assert recorded.status_code == 200
            return answer.content

    # ... and reviews, one per user, each through the server the user did not sign in on.
    def review(n: int) -> dict[str, Any]:
        answer = httpx.post(
            f"{urls[(n + 1) % 2]}/v1/plugins/shared/reviews",
            json={"rating": n % 5 + 1, "title": f"review {n}"},
            headers={"Authorization": f"Bearer {tokens[n]}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        made: dict[str, Any] = answer.json()["data"]
        return made

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        reviewing = [pool.submit(review, n) for n in range(REVIEWERS)]
        contents = list(pool.map(download, range(32)))
        reviews = [future.result() for future in reviewing]
    for n, content in enumerate(contents):
        assert content == packages[n % len(VERSIONS)].read_bytes()
    # One review per user and plugin, whichever server the second one goes to.
    again = httpx.post(
        f"{urls[0]}/v1/plugins/shared/reviews",
        json={"rating": 5},
        headers={"Authorization": f"Bearer {tokens[1]}"},
    )
    assert again.status_code == 409, again.text

    views = [_view(url) for url in urls]
    assert views[0] == views[1]
    stats = httpx.get(f"{urls[1]}/v1/plugins/shared/downloads").json()["data"]
    assert stats["total_count"] == 32
    assert {v["version"]: v["count"] for v in stats["by_version"]} == dict.fromkeys(VERSIONS, 8)
    daily = httpx.get(f"{urls[0]}/v1/plugins/shared/downloads/daily?days=7").json()["data"]
    assert len(daily) == 7 and sum(d["count"] for d in daily) == 32  # today (or across midnight)
    plugin = httpx.get(f"{urls[0]}/v1/plugins/shared").json()["data"]
    assert plugin["latest_version"] == "2.0.0"
    ratings = [n % 5 + 1 for n in range(REVIEWERS)]
    assert plugin["review_count"] == REVIEWERS
    assert plugin["average_rating"] == round(sum(ratings) / REVIEWERS, 2)
    assert plugin["download_count"] == 32
    listed_reviews = httpx.get(f"{urls[1]}/v1/plugins/shared/reviews?per_page=100").json()
    assert listed_reviews["pagination"]["total"] == REVIEWERS
    assert {r["id"] for r in listed_reviews["data"]} == {r["id"] for r in reviews}
    assert len({r["user_id"] for r in reviews}) == REVIEWERS
    listed = httpx.get(f"{urls[0]}/v1/plugins/shared/versions").json()["data"]
    assert [v["version"] for v in listed] == ["2.0.0", "1.2.0", "1.1.0", "1.0.0"]


def _reviewers(urls: list[str], env: dict[str, str], directory: Path) -> list[str]:
    """REVIEWERS users (made as an operator would, on the shared database), each signed
    in on one of the servers; their session tokens."""

    async def make(accounts: Accounts) -> None:
        for n in range(REVIEWERS):
            await accounts.create_user(f"reviewer{n}@example.invalid", PASSWORD)

    administer(directory, make, database=env["PLUGHOST_REGISTRY_DATABASE"])
    tokens = []
    for n in range(REVIEWERS):
        answer = httpx.post(
            f"{urls[n % 2]}/v1/auth/login",
            json={"email": f"reviewer{n}@example.invalid", "password": PASSWORD},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        tokens.append(answer.json()["data"]["token"])
    return tokens
