"""plughost's registry server: the wire format of the marketplace API (docs/publishing.md),
publishing, and interop with a Go client that behaves like the original Omniview client.

The HTTP tests talk to a live uvicorn on 127.0.0.1 with plain httpx, checking
the JSON exactly as a foreign client sees it (field names, envelope,
pagination, status codes, the 302's absolute Location).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from toolchains import require_go
from waiting import wait_until

from plughost.errors import PluginNotFoundError, UnsafeArchiveError, ValidationError
from plughost.packages.signing import TrustedKey, verify_checksum_signature, verify_manifest
from plughost.registry.index import RegistryIndex, add_review, publish
from plughost.registry.models import current_platform
from plughost.registry.server import create_app, running_server

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]
PLATFORM = current_platform()
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

PLUGIN_FIELDS = {
    "id", "name", "description", "icon_url", "category", "tags", "license", "repository",
    "url", "readme", "official", "featured", "download_count", "average_rating",
    "review_count", "publisher_id", "publisher_name", "latest_version", "author",
    "created_at", "updated_at",
}  # fmt: skip
VERSION_FIELDS = {
    "id", "plugin_id", "version", "description", "changelog", "min_ide_version",
    "max_ide_version", "capabilities", "visible", "artifacts", "created_at", "updated_at",
}  # fmt: skip
REVIEW_FIELDS = {
    "id", "plugin_id", "user_id", "rating", "title", "body", "created_at", "updated_at",
}  # fmt: skip


def make_package(
    directory: Path,
    plugin_id: str,
    version: str,
    *,
    category: str = "tools",
    extra_yaml: str = "",
    payload: bytes = b"",
) -> Path:
    """A small plugin package written with tarfile, independently of plughost."""
    meta = (
        textwrap.dedent(
            f"""\
            id: {plugin_id}
            version: "{version}"
            name: {plugin_id.title()}
            description: plugin {plugin_id}
            category: {category}
            tags: [demo]
            license: Apache-2.0
            repository: https://example.invalid/{plugin_id}
            website: https://example.invalid/{plugin_id}/site
            icon_url: https://example.invalid/{plugin_id}.png
            author: {{name: Ada Lovelace, email: ada@example.invalid, url: https://ada.invalid}}
            capabilities: [ui]
            """
        )
        + extra_yaml
    ).encode()
    path = directory / f"{plugin_id}-{version.replace('/', '_')}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("plugin.yaml", meta), ("assets/app.js", payload or b"x = 1\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Served:
    url: str
    root: Path
    src: Path
    public_key: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("registry")
    src = tmp_path_factory.mktemp("src")
    for n in range(25):
        publish(root, make_package(src, f"p{n:02d}", "1.0.0", category=("a", "b")[n % 2]))
    extra = 'min_host_version: "0.3.0"\nmax_host_version: "2.0.0"\n'
    # A UI-only package is "any" by default; demo is published for this machine's
    # GOOS_GOARCH, the only kind of platform the original Go client asks for.
    publish(
        root,
        make_package(src, "demo", "1.0.0", extra_yaml=extra),
        platform=PLATFORM,
        readme="# Demo",
        changelog="initial",
        featured=True,
    )
    publish(
        root,
        make_package(src, "demo", "1.1.0", extra_yaml=extra),
        platform=PLATFORM,
        changelog="fixes",
    )
    add_review(root, "demo", rating=4, title="nice", body="works", user_id=42, response="thanks")
    public_key = (root / "registry.pub").read_text().strip()
    with running_server(create_app(root)) as url:
        yield Served(url, root, src, public_key)


def get(served: Served, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(served.url + path, **kw)


# -- envelope, fields and pagination --------------------------------------------


def test_list_envelope_and_default_pagination(served: Served) -> None:
    body = get(served, "/v1/plugins").json()
    assert set(body) == {"success", "data", "message", "pagination"}
    assert body["success"] is True
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 26, "total_pages": 2}
    assert len(body["data"]) == 20
    second = get(served, "/v1/plugins", params={"page": 2}).json()
    assert len(second["data"]) == 6
    beyond = get(served, "/v1/plugins", params={"page": 9}).json()
    assert beyond["data"] == [] and beyond["pagination"]["total"] == 26
    clamped = get(served, "/v1/plugins", params={"per_page": 1000, "page": 0}).json()
    assert clamped["pagination"] == {"page": 1, "per_page": 100, "total": 26, "total_pages": 1}


def test_plugin_fields_are_the_originals(served: Served) -> None:
    listed = next(p for p in get(served, "/v1/plugins").json()["data"] if p["id"] == "demo")
    assert set(listed) == PLUGIN_FIELDS  # no 'version' in lists
    full = get(served, "/v1/plugins/demo").json()["data"]
    assert set(full) == PLUGIN_FIELDS | {"version"}
    assert full["readme"] == "# Demo"
    assert full["author"] == {
        "name": "Ada Lovelace",
        "email": "ada@example.invalid",
        "url": "https://ada.invalid",
    }
    assert (full["license"], full["category"], full["tags"]) == ("Apache-2.0", "tools", ["demo"])
    assert full["url"] == "https://example.invalid/demo/site"
    assert full["icon_url"] == "https://example.invalid/demo.png"
    assert full["featured"] is True and full["official"] is False
    assert full["latest_version"] == "1.1.0" and full["version"]["version"] == "1.1.0"
    assert (full["review_count"], full["average_rating"]) == (1, 4.0)
    assert isinstance(full["download_count"], int)
    assert RFC3339.fullmatch(full["created_at"]) and RFC3339.fullmatch(full["updated_at"])


def test_version_fields_artifacts_and_signed_manifest(served: Served) -> None:
    body = get(served, "/v1/plugins/demo/versions/1.0.0").json()
    version = body["data"]
    assert set(version) == VERSION_FIELDS
    assert version["changelog"] == "initial" and version["visible"] is True
    assert (version["min_ide_version"], version["max_ide_version"]) == ("0.3.0", "2.0.0")
    assert version["capabilities"] == ["ui"]
    artifact = version["artifacts"][PLATFORM]
    assert set(artifact) == {"checksum", "signature", "download_url", "size", "manifest"}
    package = (served.src / "demo-1.0.0.tar.gz").read_bytes()
    assert artifact["size"] == len(package)
    assert re.fullmatch(r"[0-9a-f]{64}", artifact["checksum"])
    verify_checksum_signature(artifact["checksum"], artifact["signature"], served.public_key)
    assert artifact["download_url"] == (f"{served.url}/v1/artifacts/demo/1.0.0/{PLATFORM}.tar.gz")
    signed = artifact["manifest"]
    assert set(signed) == {"manifest", "key_id", "signature"}
    assert signed["manifest"] == {
        "id": "demo",
        "version": "1.0.0",
        "platform": PLATFORM,
        "sha256": artifact["checksum"],
        "size": len(package),
    }
    trusted = [TrustedKey(key_id=signed["key_id"], public_key_hex=served.public_key)]
    assert verify_manifest(signed, trusted).sha256 == artifact["checksum"]


def test_versions_are_paged_newest_first(served: Served) -> None:
    body = get(served, "/v1/plugins/demo/versions", params={"per_page": 1}).json()
    assert [v["version"] for v in body["data"]] == ["1.1.0"]
    assert body["pagination"] == {"page": 1, "per_page": 1, "total": 2, "total_pages": 2}
    page2 = get(served, "/v1/plugins/demo/versions", params={"per_page": 1, "page": 2}).json()
    assert [v["version"] for v in page2["data"]] == ["1.0.0"]


def test_reviews_categories_and_health(served: Served) -> None:
    body = get(served, "/v1/plugins/demo/reviews").json()
    (review,) = body["data"]
    assert set(review) == REVIEW_FIELDS | {"response", "response_at"}
    assert review["user_id"] == 42 and isinstance(review["user_id"], int)
    assert (review["rating"], review["title"], review["response"]) == (4, "nice", "thanks")
    assert RFC3339.fullmatch(review["response_at"])
    assert body["pagination"]["total"] == 1
    cats = get(served, "/v1/categories").json()["data"]
    assert cats == [
        {"category": "a", "count": 13},
        {"category": "b", "count": 12},
        {"category": "tools", "count": 1},
    ]
    health = get(served, "/v1/health").json()
    assert health["success"] is True and health["data"]["status"] == "ok"


def test_filters_and_order(served: Served) -> None:
    def ids(**params: Any) -> list[str]:
        body = get(served, "/v1/plugins", params={"per_page": 100, **params}).json()
        return [p["id"] for p in body["data"]]

    assert ids(featured="true") == ["demo"]
    assert ids(category="B")[:2] == ["p01", "p03"]  # case-insensitive
    assert ids(q="PLUGIN DEMO") == ["demo"]  # description, case-insensitive
    assert len(ids(q="demo")) == 26  # every package is tagged 'demo'
    assert ids(q="%") == []  # LIKE wildcards are literal
    assert ids(order_field="name", order_direction="desc")[0] == "p24"
    assert ids(order_field="review_count", order_direction="desc")[0] == "demo"
    bad = get(served, "/v1/plugins", params={"order_field": "password"})
    assert bad.status_code == 400 and bad.json()["success"] is False
    assert "unknown order_field" in bad.json()["message"]
    assert get(served, "/v1/plugins", params={"order_direction": "up"}).status_code == 400
    assert get(served, "/v1/plugins", params={"page": "one"}).status_code == 400


# -- downloads ----------------------------------------------------------------------


def test_download_redirects_to_an_absolute_location(served: Served) -> None:
    response = get(served, f"/v1/plugins/demo/download/1.1.0/{PLATFORM}")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location == f"{served.url}/v1/artifacts/demo/1.1.0/{PLATFORM}.tar.gz"
    package = httpx.get(location)
    assert package.status_code == 200
    assert package.headers["content-type"] == "application/gzip"
    assert package.content == (served.src / "demo-1.1.0.tar.gz").read_bytes()
    assert int(package.headers["content-length"]) == len(package.content)


def test_base_url_setting_is_used_for_locations(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "solo", "1.0.0"), platform=PLATFORM)
    app = create_app(root, base_url="https://plugins.example.invalid/market/")
    with running_server(app) as url:
        response = httpx.get(f"{url}/v1/plugins/solo/download/1.0.0/{PLATFORM}")
        listed = httpx.get(f"{url}/v1/plugins/solo/versions/1.0.0").json()["data"]
    assert response.headers["location"] == (
        f"https://plugins.example.invalid/market/v1/artifacts/solo/1.0.0/{PLATFORM}.tar.gz"
    )
    assert listed["artifacts"][PLATFORM]["download_url"] == response.headers["location"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/plugins/nope",
        "/v1/plugins/nope/versions",
        "/v1/plugins/demo/versions/9.9.9",
        "/v1/plugins/nope/download/1.0.0/linux_amd64",
        "/v1/plugins/demo/download/9.9.9/linux_amd64",
        "/v1/plugins/demo/download/1.0.0/plan9_mips",
        "/v1/artifacts/demo/1.0.0/plan9_mips.tar.gz",
        "/v1/artifacts/demo/..%2F..%2Findex.sqlite3/x.tar.gz",
        "/v1/plugins/nope/downloads",
        "/v1/plugins/nope/downloads/daily",
        "/v1/plugins/nope/reviews",
        "/v1/nothing-here",
    ],
)
def test_not_found_is_a_404_envelope(served: Served, path: str) -> None:
    response = get(served, path)
    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False and body["message"]


def test_record_download_and_stats(served: Served) -> None:
    url = f"{served.url}/v1/plugins/p00/downloads"
    for version, arch in (("1.0.0", "linux_amd64"), ("1.0.0", "darwin_arm64")):
        response = httpx.post(url, json={"plugin_id": "p00", "version": version, "arch": arch})
        assert response.status_code == 200 and response.json()["success"] is True
    stats = httpx.get(url).json()["data"]
    assert stats == {
        "plugin_id": "p00",
        "total_count": 2,
        "by_version": [{"version": "1.0.0", "count": 2}],
    }
    mismatch = httpx.post(url, json={"plugin_id": "p01", "version": "1.0.0", "arch": "x"})
    assert mismatch.status_code == 400 and "does not match" in mismatch.json()["message"]
    unknown = httpx.post(url, json={"plugin_id": "p00", "version": "7.0.0", "arch": "x"})
    assert unknown.status_code == 404
    garbage = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert garbage.status_code == 400 and garbage.json()["success"] is False
    daily = httpx.get(url + "/daily", params={"days": 5}).json()["data"]
    assert [d["count"] for d in daily] == [0, 0, 0, 0, 2]
    assert daily[-1]["date"] == datetime.now(UTC).date().isoformat()
    assert len(httpx.get(url + "/daily").json()["data"]) == 30


def test_daily_downloads_are_zero_filled_oldest_first(tmp_path: Path) -> None:
    index = RegistryIndex(tmp_path, clock=lambda: datetime(2024, 3, 10, 12, tzinfo=UTC))
    index.publish(make_package(tmp_path, "d", "1.0.0"))
    for day, n in ((date(2024, 3, 1), 2), (date(2024, 3, 8), 1), (date(2024, 3, 10), 3)):
        for _ in range(n):
            index.record_download("d", "1.0.0", "linux_amd64", day=day)
    index.record_download("d", "1.0.0", "linux_amd64", day=date(2024, 1, 1))  # outside
    week = index.daily_downloads("d", 7)
    assert [(d.date, d.count) for d in week] == [
        ("2024-03-04", 0),
        ("2024-03-05", 0),
        ("2024-03-06", 0),
        ("2024-03-07", 0),
        ("2024-03-08", 1),
        ("2024-03-09", 0),
        ("2024-03-10", 3),
    ]
    month = index.daily_downloads("d", 30)
    assert len(month) == 30 and sum(d.count for d in month) == 6
    assert index.download_stats("d").total_count == 7
    assert len(index.daily_downloads("d", 0)) == 1 and len(index.daily_downloads("d", 10**6)) == 366


# -- publishing ---------------------------------------------------------------------


def test_publish_stores_signed_files_and_a_private_key(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    first = publish(root, make_package(tmp_path, "keyed", "1.0.0"))
    assert first.created_key and len(first.public_key_hex) == 64
    assert (root / "registry.pub").read_text().strip() == first.public_key_hex
    assert (root / "registry.key").stat().st_mode & 0o777 == 0o600
    assert first.platform == "any"  # a UI-only package runs everywhere
    assert first.path == root / "packages" / "keyed" / "1.0.0" / "any.tar.gz"
    sig = Path(str(first.path) + ".sig").read_text().strip()
    verify_checksum_signature(first.sha256, sig, first.public_key_hex)
    manifest = json.loads(Path(str(first.path) + ".manifest.json").read_text())
    trusted = [TrustedKey(key_id=first.key_id, public_key_hex=first.public_key_hex)]
    assert verify_manifest(manifest, trusted).size == first.size

    second = publish(root, make_package(tmp_path, "keyed", "1.0.0", payload=b"changed"))
    assert not second.created_key and second.public_key_hex == first.public_key_hex
    assert second.sha256 != first.sha256  # same version and platform: replaced
    index = RegistryIndex(root)
    artifact = index.get_version("keyed", "1.0.0", base_url="").artifacts["any"]
    assert artifact.checksum == second.sha256
    arm = publish(root, make_package(tmp_path, "keyed", "1.0.0"), platform="linux_arm64")
    assert arm.platform == "linux_arm64"
    assert set(index.get_version("keyed", "1.0.0", base_url="").artifacts) == {
        "any",
        "linux_arm64",
    }


def test_publish_keeps_flags_and_refuses_bad_input(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "flag", "1.0.0"), featured=True, official=True)
    publish(root, make_package(tmp_path, "flag", "1.1.0"))
    plugin = RegistryIndex(root).get_plugin("flag", base_url="")
    assert plugin.featured and plugin.official and plugin.latest_version == "1.1.0"
    publish(root, make_package(tmp_path, "flag", "1.2.0"), featured=False)
    assert not RegistryIndex(root).get_plugin("flag", base_url="").featured

    not_gzip = tmp_path / "junk.tar.gz"
    not_gzip.write_bytes(b"hello")
    with pytest.raises(UnsafeArchiveError, match="not a gzip tarball"):
        publish(root, not_gzip)
    with pytest.raises(ValidationError, match="invalid platform"):
        publish(root, make_package(tmp_path, "flag", "1.3.0"), platform="../../etc")
    with pytest.raises(ValidationError, match="invalid version"):
        publish(root, make_package(tmp_path, "flag", "1.0.0/../../x"))
    index = RegistryIndex(root)
    assert [v.version for v in index.list_versions("flag", base_url="").items] == [
        "1.2.0",
        "1.1.0",
        "1.0.0",
    ]
    with pytest.raises(PluginNotFoundError):
        index.add_review("ghost", rating=3)
    with pytest.raises(ValidationError):
        index.add_review("flag", rating=6)


def test_a_missing_package_file_is_a_404_not_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    result = publish(root, make_package(tmp_path, "gone", "1.0.0"))
    result.path.unlink()
    with running_server(create_app(root)) as url:
        response = httpx.get(f"{url}/v1/plugins/gone/download/1.0.0/any")
    assert response.status_code == 404
    assert "missing from the registry" in response.json()["message"]


async def test_an_internal_error_is_a_500_envelope(tmp_path: Path) -> None:
    app = create_app(tmp_path)

    def broken() -> None:
        raise RuntimeError("disk on fire")

    app.state.index.categories = broken
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        response = await client.get("/v1/categories")
    assert response.status_code == 500
    assert response.json() == {
        "success": False,
        "data": None,
        "message": "internal error: RuntimeError: disk on fire",
    }


def test_run_server_serves_until_stopped(tmp_path: Path) -> None:
    publish(tmp_path, make_package(tmp_path, "cli", "1.0.0"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code = "import sys; from plughost.registry.server import run_server; "
    code += "run_server(sys.argv[1], '127.0.0.1', int(sys.argv[2]), log_level='warning')"
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(port)])

    def answered() -> Any:
        assert proc.poll() is None, f"run_server exited {proc.returncode}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/v1/plugins").json()
        except httpx.TransportError:
            return None

    try:
        body = wait_until(answered, timeout=20, interval=0.05, message="the server to answer")
        assert [p["id"] for p in body["data"]] == ["cli"]
    finally:
        proc.terminate()
        proc.wait(10)


# -- Go interop ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = require_go((1, 23), purpose="the Go registry client interop test")  # tests/goregistry
    out = tmp_path_factory.mktemp("goregistry")
    script = REPO / "scripts" / "build_go_registry_client.sh"
    env = {**os.environ, "GO": go}
    result = subprocess.run(
        ["bash", str(script), str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, f"building the Go client failed:\n{result.stderr}"
    return out / "goregistry"


def run_go(binary: Path, url: str, key: str, plugin: str, version: str, out: Path) -> Any:
    args = ["-url", url, "-pubkey", key, "-plugin", plugin, "-version", version, "-out", str(out)]
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.interop
def test_go_client_reads_and_downloads_from_our_server(
    go_client: Path, served: Served, tmp_path: Path
) -> None:
    out = tmp_path / "downloaded.tar.gz"
    result = run_go(go_client, served.url, served.public_key, "demo", "1.1.0", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["plugins"]) == 26  # every page of two
    assert all(page["total_pages"] == 13 for page in data["plugin_pages"])
    assert data["plugin"]["id"] == "demo" and data["plugin"]["readme"] == "# Demo"
    assert data["plugin"]["author"]["name"] == "Ada Lovelace"
    assert [v["version"] for v in data["versions"]["items"]] == ["1.1.0", "1.0.0"]
    assert data["version"]["artifacts"][PLATFORM]["size"] == out.stat().st_size
    assert {c["category"] for c in data["categories"]} == {"a", "b", "tools"}
    assert data["reviews"]["items"][0]["user_id"] == 42
    assert data["download_stats"]["total_count"] >= 1  # RecordDownload counted
    assert len(data["daily_downloads"]) == 30
    assert data["download_url"].startswith(served.url + "/v1/artifacts/demo/1.1.0/")
    assert out.read_bytes() == (served.src / "demo-1.1.0.tar.gz").read_bytes()


@pytest.mark.interop
def test_go_client_refuses_a_package_signed_by_another_key(
    go_client: Path, served: Served, tmp_path: Path
) -> None:
    from plughost.packages.signing import generate_keypair

    _, other = generate_keypair()
    out = tmp_path / "refused.tar.gz"
    result = run_go(go_client, served.url, other, "demo", "1.1.0", out)
    assert result.returncode == 1
    assert "signature verification failed" in result.stderr
    assert not out.exists()
