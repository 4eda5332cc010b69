"""The marketplace client against live servers on 127.0.0.1.

Two servers: plughost's own registry (``plughost.registry.server``) over a
directory of published packages, and ``tests/registry_stub.py``, written only
from the API's description (docs/publishing.md), so the client is not only tested against our server.
Both run under uvicorn in a thread; every call below is real HTTP.
"""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import tarfile
import textwrap
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from registry_stub import BOOM_MESSAGE, StubMarketplace, make_stub

from plughost.errors import (
    ChecksumMismatchError,
    PluginNotFoundError,
    RegistryUnavailableError,
    SettingsMissingError,
    SignatureInvalidError,
    ValidationError,
)
from plughost.packages.signing import (
    SizeMismatchError,
    TruncatedDownloadError,
    UnsignedArtifactError,
    generate_keypair,
    sign_checksum,
)
from plughost.registry.client import RegistryClient, enrich, sort_params, verify_download
from plughost.registry.index import RegistryIndex
from plughost.registry.models import Plugin, compare_versions, current_platform
from plughost.registry.server import create_app, running_server
from plughost.settings import SettingsProvider

pytestmark = pytest.mark.timeout(60)

PLATFORM = current_platform()
CATEGORIES = ("tools", "themes", "network")


def make_package(
    directory: Path,
    plugin_id: str,
    version: str,
    *,
    category: str = "tools",
    description: str = "",
    payload: bytes = b"",
    readme: str = "",
) -> Path:
    """A small plugin package (tar.gz with plugin.yaml) written independently of plughost."""
    meta = textwrap.dedent(
        f"""\
        id: {plugin_id}
        version: "{version}"
        name: {plugin_id.replace("-", " ").title()}
        description: "{description or "plugin " + plugin_id}"
        category: {category}
        tags: [demo, {category}]
        license: MIT
        repository: https://example.invalid/{plugin_id}
        author: {{name: Test Author, email: t@example.invalid}}
        capabilities: [ui]
        min_host_version: "0.1.0"
        """
    ).encode()
    files = [("plugin.yaml", meta), ("assets/app.js", payload or b"console.log(1)\n")]
    if readme:
        files.append(("README.md", readme.encode()))
    path = directory / f"{plugin_id}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Market:
    url: str
    public_key: str
    root: Path
    packages: dict[tuple[str, str], Path]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Market]:
    """Our registry with 50 plugins: plug-00..44 and a few with a purpose each."""
    root = tmp_path_factory.mktemp("registry")
    src = tmp_path_factory.mktemp("packages")
    index = RegistryIndex(root)
    packages: dict[tuple[str, str], Path] = {}

    def pub(plugin_id: str, version: str, **kw: object) -> None:
        changelog = str(kw.pop("changelog", ""))
        platform = kw.pop("platform", PLATFORM)  # not "any": these tests pick platforms
        path = make_package(src, plugin_id, version, **kw)  # type: ignore[arg-type]
        index.publish(path, changelog=changelog, platform=platform)  # type: ignore[arg-type]
        packages[(plugin_id, version)] = path

    for n in range(45):
        description = "talks to kubernetes" if n in (11, 22) else ""
        pub(f"plug-{n:02d}", "1.0.0", category=CATEGORIES[n % 3], description=description)
    for version, note in (("1.2.0", "first"), ("1.9.0", "second"), ("1.10.0", "third")):
        pub("multi", version, changelog=f"{note} release", readme="# Multi\n\nReadme text.")
    pub("multi", "1.10.0", platform="darwin_arm64")
    pub("big", "1.0.0", payload=os.urandom(1024 * 1024 + 123))
    pub("stats", "1.0.0")
    pub("stats", "1.1.0")
    pub("reviewed", "1.0.0")
    pub("tampered", "1.0.0")
    # Popularity and ratings for sorting.
    for _ in range(5):
        index.record_download("plug-07", "1.0.0", PLATFORM)
    for _ in range(3):
        index.record_download("plug-03", "1.0.0", PLATFORM)
    index.add_review("plug-05", rating=5, title="great")
    index.add_review("plug-06", rating=2, title="meh")
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for n in range(25):
        index.add_review(
            "reviewed", rating=1 + n % 5, title=f"review {n}", created_at=start + timedelta(n)
        )
    stored = index.artifact_path("tampered", "1.0.0", PLATFORM)
    stored.write_bytes(b"X" * stored.stat().st_size)  # same size, other bytes
    public_key = (root / "registry.pub").read_text().strip()
    with running_server(create_app(root)) as url:
        yield Market(url, public_key, root, packages)


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[StubMarketplace, str]]:
    marketplace = make_stub()
    with running_server(marketplace.app) as url:
        yield marketplace, url


def write_settings(path: Path, url: str, key: str) -> None:
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(f'marketplace_url = "{url}"\nregistry_public_key = "{key}"\n')
    # The provider notices changes by mtime and size; make sure the mtime moves.
    os.utime(path, ns=(before + 10**9, before + 10**9))


@pytest.fixture
def settings_file(tmp_path: Path, market: Market) -> Path:
    path = tmp_path / "plughost.toml"
    write_settings(path, market.url, market.public_key)
    return path


@pytest.fixture
async def client(settings_file: Path) -> AsyncIterator[RegistryClient]:
    async with RegistryClient(SettingsProvider(settings_file), page_size=7) as c:
        yield c


@pytest.fixture
async def stub_client(
    tmp_path: Path, stub: tuple[StubMarketplace, str]
) -> AsyncIterator[RegistryClient]:
    marketplace, url = stub
    path = tmp_path / "stub.toml"
    write_settings(path, url, marketplace.public_key_hex)
    async with RegistryClient(SettingsProvider(path), page_size=2) as c:
        yield c


# -- listing and searching ----------------------------------------------------------


async def test_list_plugins_walks_every_page(client: RegistryClient) -> None:
    plugins = await client.list_plugins()
    ids = [p.id for p in plugins]
    assert len(ids) == 50 == len(set(ids))  # 8 pages of 7, nothing lost or repeated
    assert {f"plug-{n:02d}" for n in range(45)} <= set(ids)
    assert ids == sorted(ids, key=lambda i: i.replace("-", " "))  # default order: name A-Z
    multi = next(p for p in plugins if p.id == "multi")
    assert multi.latest_version == "1.10.0"  # semver, not string order
    assert multi.readme == ""  # lists leave the readme out; get_plugin has it
    assert multi.created_at is not None and multi.created_at.tzinfo is not None


async def test_search_by_query_category_and_sort(client: RegistryClient) -> None:
    found = await client.search_plugins("kubernetes")
    assert sorted(p.id for p in found) == ["plug-11", "plug-22"]
    themes = await client.search_plugins(category="themes")
    assert len(themes) == 15 and all(p.category == "themes" for p in themes)
    both = await client.search_plugins("kubernetes", category="network")
    assert [p.id for p in both] == ["plug-11"]

    by_downloads = await client.search_plugins(sort="downloads")
    assert [p.id for p in by_downloads[:2]] == ["plug-07", "plug-03"]
    assert by_downloads[0].download_count == 5
    by_rating = await client.search_plugins(sort="rating")
    assert by_rating[0].id == "plug-05" and by_rating[0].average_rating == 5.0
    assert by_rating[0].review_count == 1
    names = [p.name for p in await client.search_plugins(sort="name")]
    assert names == sorted(names, key=str.lower)
    assert [p.name for p in await client.search_plugins(sort="-name")] == names[::-1]
    updated = await client.search_plugins(sort="updated")
    stamps = [p.updated_at for p in updated]
    assert stamps == sorted(stamps, reverse=True)  # type: ignore[type-var]


def test_sort_names_map_to_order_parameters() -> None:
    assert sort_params("") == {}
    assert sort_params("downloads") == {"order_field": "download_count", "order_direction": "desc"}
    assert sort_params("name") == {"order_field": "name", "order_direction": "asc"}
    assert sort_params("-name") == {"order_field": "name", "order_direction": "desc"}
    assert sort_params("+rating") == {"order_field": "average_rating", "order_direction": "asc"}
    with pytest.raises(ValidationError, match="unknown sort 'stars'"):
        sort_params("stars")


async def test_plugin_readme_and_categories(client: RegistryClient) -> None:
    plugin = await client.get_plugin("multi")
    assert plugin.readme == "# Multi\n\nReadme text."
    assert plugin.author.name == "Test Author"
    assert plugin.tags == ["demo", "tools"]
    assert plugin.version is not None and plugin.version.version == "1.10.0"
    assert await client.get_plugin_readme("multi") == "# Multi\n\nReadme text."
    categories = {c.category: c.count for c in await client.list_categories()}
    assert categories == {"network": 15, "themes": 15, "tools": 20}


async def test_versions_version_and_release_history(settings_file: Path) -> None:
    async with RegistryClient(SettingsProvider(settings_file), page_size=1) as client:
        versions = await client.list_versions("multi")  # three pages of one
    assert [v.version for v in versions] == ["1.10.0", "1.9.0", "1.2.0"]
    async with RegistryClient(SettingsProvider(settings_file)) as client:
        version = await client.get_version("multi", "1.10.0")
        history = await client.get_release_history("multi")
    assert version.plugin_id == "multi" and version.min_ide_version == "0.1.0"
    assert version.capabilities == ["ui"]
    assert set(version.artifacts) == {PLATFORM, "darwin_arm64"} | {PLATFORM}
    artifact = version.artifacts[PLATFORM]
    assert len(artifact.checksum) == 64 and artifact.size > 0 and artifact.signature
    assert artifact.download_url.startswith("http://127.0.0.1:")
    assert artifact.manifest is not None and artifact.manifest.manifest.sha256 == artifact.checksum
    assert [(h.version, h.changelog) for h in history] == [
        ("1.10.0", "third release"),
        ("1.9.0", "second release"),
        ("1.2.0", "first release"),
    ]
    assert history[0].platforms == sorted({PLATFORM, "darwin_arm64"})


async def test_reviews_are_paged_newest_first(client: RegistryClient) -> None:
    first = await client.get_plugin_reviews("reviewed", page=1)
    second = await client.get_plugin_reviews("reviewed", page=2)
    third = await client.get_plugin_reviews("reviewed", page=3)
    assert [r.title for r in first] == [f"review {n}" for n in range(24, 4, -1)]
    assert [r.title for r in second] == [f"review {n}" for n in range(4, -1, -1)]
    assert third == []
    items, pagination = await client.get_plugin_reviews_page("reviewed", page=2, per_page=10)
    assert len(items) == 10 and pagination is not None
    assert (pagination.page, pagination.per_page, pagination.total, pagination.total_pages) == (
        2,
        10,
        25,
        3,
    )
    assert all(1 <= r.rating <= 5 and r.plugin_id == "reviewed" for r in first)


async def test_record_download_stats_and_daily(client: RegistryClient) -> None:
    await client.record_download("stats", "1.0.0")
    await client.record_download("stats", "1.1.0", "darwin_arm64")
    await client.record_download("stats", "1.1.0")
    stats = await client.get_download_stats("stats")
    assert stats.plugin_id == "stats" and stats.total_count == 3
    assert {(v.version, v.count) for v in stats.by_version or []} == {("1.1.0", 2), ("1.0.0", 1)}
    daily = await client.get_daily_downloads("stats")
    assert len(daily) == 30
    today = datetime.now(UTC).date()
    assert daily[-1].date == today.isoformat() and daily[-1].count == 3
    assert daily[0].date == (today - timedelta(days=29)).isoformat()
    assert sum(d.count for d in daily[:-1]) == 0
    assert len(await client.get_daily_downloads("stats", days=7)) == 7
    with pytest.raises(PluginNotFoundError):
        await client.record_download("stats", "9.9.9")


# -- downloading and verifying ---------------------------------------------------


async def test_download_streams_with_progress_and_verifies(
    client: RegistryClient, market: Market, tmp_path: Path
) -> None:
    calls: list[tuple[int, int | None]] = []
    result = await client.download_artifact(
        "big", "1.0.0", dest=tmp_path, progress=lambda done, total: calls.append((done, total))
    )
    published = market.packages[("big", "1.0.0")].read_bytes()
    assert result.path == tmp_path / f"big-1.0.0-{PLATFORM}.tar.gz"
    assert result.path.read_bytes() == published
    assert result.size == len(published)
    assert result.sha256 == result.artifact.checksum
    assert len(calls) >= 4  # streamed in chunks, not read at once
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (len(published), len(published))
    verify_download(result, market.public_key)
    client.verify(result)  # the same, with the key from settings


async def test_download_to_a_file_path_and_other_platform(
    client: RegistryClient, market: Market, tmp_path: Path
) -> None:
    target = tmp_path / "pkg.tar.gz"
    result = await client.download_artifact("multi", "1.10.0", "darwin_arm64", dest=target)
    assert result.path == target and result.platform == "darwin_arm64"
    verify_download(result, market.public_key)
    with pytest.raises(PluginNotFoundError, match="no package for platform windows_amd64"):
        await client.download_artifact("multi", "1.10.0", "windows_amd64", dest=tmp_path)
    with pytest.raises(PluginNotFoundError):
        await client.download_artifact("multi", "7.0.0", dest=tmp_path)


async def test_verify_refuses_tampered_truncated_forged_and_unsigned(
    client: RegistryClient, market: Market, tmp_path: Path
) -> None:
    result = await client.download_artifact("stats", "1.0.0", dest=tmp_path)
    verify_download(result, market.public_key)

    with pytest.raises(ChecksumMismatchError, match="does not match"):
        verify_download(dataclasses.replace(result, sha256="0" * 64), market.public_key)
    with pytest.raises(TruncatedDownloadError):
        verify_download(dataclasses.replace(result, size=result.size - 1), market.public_key)
    with pytest.raises(SizeMismatchError):
        verify_download(dataclasses.replace(result, size=result.size + 1), market.public_key)

    other_private, other_public = generate_keypair()
    with pytest.raises(SignatureInvalidError):  # right signature, wrong trusted key
        verify_download(result, other_public)
    forged = result.artifact.model_copy(
        update={"signature": sign_checksum(result.artifact.checksum, other_private)}
    )
    with pytest.raises(SignatureInvalidError):  # signed by someone else
        verify_download(dataclasses.replace(result, artifact=forged), market.public_key)

    unsigned = dataclasses.replace(
        result, artifact=result.artifact.model_copy(update={"signature": ""})
    )
    with pytest.raises(UnsignedArtifactError, match="not signed"):
        verify_download(unsigned, market.public_key)
    verify_download(unsigned, market.public_key, require_signature=False)
    with pytest.raises(SettingsMissingError, match="registry_public_key"):
        verify_download(result, "")


async def test_a_package_altered_on_the_server_is_refused(
    client: RegistryClient, market: Market, tmp_path: Path
) -> None:
    result = await client.download_artifact("tampered", "1.0.0", dest=tmp_path)
    with pytest.raises(ChecksumMismatchError) as info:
        verify_download(result, market.public_key)
    assert info.value.plugin_id == "tampered"


# -- enrichment -------------------------------------------------------------------


async def test_enrich_marks_installed_and_updates(client: RegistryClient) -> None:
    plugins = await client.search_plugins(category="tools")
    marked = enrich(plugins, {"multi": "1.9.0", "plug-00": "1.0.0", "big": "2.0.0"})
    by_id = {p.id: p for p in marked}
    assert by_id["multi"].installed and by_id["multi"].installed_version == "1.9.0"
    assert by_id["multi"].update_available  # 1.10.0 > 1.9.0
    assert by_id["plug-00"].installed and not by_id["plug-00"].update_available
    assert by_id["big"].installed and not by_id["big"].update_available  # local is newer
    assert not by_id["plug-03"].installed and by_id["plug-03"].installed_version == ""
    assert not by_id["plug-03"].update_available
    assert by_id["multi"].name == "Multi" and by_id["multi"].latest_version == "1.10.0"


def test_compare_versions_is_semver_and_total() -> None:
    assert compare_versions("1.10.0", "1.9.0") == 1
    assert compare_versions("v1.2.0", "1.2") == 0
    assert compare_versions("2.0.0-rc.1", "2.0.0") == -1
    assert compare_versions("2.0.0-rc.2", "2.0.0-rc.10") == -1
    assert compare_versions("2.0.0-alpha", "2.0.0-1") == 1
    assert compare_versions("1.0.0+build.7", "1.0.0") == 0
    assert compare_versions("banana", "0.0.1") == -1
    assert compare_versions("b", "a") == 1
    enriched = enrich([Plugin(id="x", latest_version="1.0.0-beta")], {"x": "1.0.0"})
    assert not enriched[0].update_available


# -- errors ---------------------------------------------------------------------


def free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_unreachable_marketplace_is_a_clear_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_closed_port()}"
    path = tmp_path / "plughost.toml"
    write_settings(path, url, "")
    async with RegistryClient(SettingsProvider(path), timeout=5) as client:
        with pytest.raises(RegistryUnavailableError) as info:
            await client.list_plugins()
    message = str(info.value)
    assert f"cannot reach the marketplace at {url}" in message
    assert "check marketplace_url" in message
    assert info.value.suggestions


async def test_unknown_plugin_is_plugin_not_found(client: RegistryClient) -> None:
    with pytest.raises(PluginNotFoundError) as info:
        await client.get_plugin("no-such-plugin")
    assert info.value.plugin_id == "no-such-plugin"
    assert "not found" in str(info.value)
    for call in (
        client.get_version("multi", "0.0.9"),
        client.list_versions("nope"),
        client.get_plugin_reviews("nope"),
        client.get_download_stats("nope"),
        client.get_daily_downloads("nope"),
    ):
        with pytest.raises(PluginNotFoundError):
            await call


async def test_server_error_shows_the_server_message(stub_client: RegistryClient) -> None:
    with pytest.raises(RegistryUnavailableError) as info:
        await stub_client.get_plugin("boom")
    assert BOOM_MESSAGE in str(info.value) and "500" in str(info.value)


async def test_bad_request_shows_the_server_message(client: RegistryClient) -> None:
    # A 4xx that is not a 404 of a plugin: the server's message, not a generic one.
    with pytest.raises(RegistryUnavailableError, match="unknown order_field 'stars'"):
        await client._get_all("/v1/plugins", Plugin, "plugins", params={"order_field": "stars"})


async def test_missing_or_invalid_marketplace_url(tmp_path: Path) -> None:
    async with RegistryClient(SettingsProvider(tmp_path / "absent.toml")) as client:
        with pytest.raises(SettingsMissingError, match="marketplace_url"):
            await client.list_plugins()
    path = tmp_path / "bad.toml"
    write_settings(path, "ftp://example.invalid", "")
    async with RegistryClient(SettingsProvider(path)) as client:
        with pytest.raises(ValidationError, match="marketplace_url"):
            await client.list_plugins()


async def test_a_web_page_is_not_taken_for_the_api(
    tmp_path: Path, stub: tuple[StubMarketplace, str]
) -> None:
    path = tmp_path / "plughost.toml"
    write_settings(path, stub[1] + "/html", "")
    async with RegistryClient(SettingsProvider(path)) as client:
        with pytest.raises(RegistryUnavailableError, match="not an API answer"):
            await client.list_categories()


async def test_settings_are_re_read_before_each_call(
    settings_file: Path, market: Market, stub: tuple[StubMarketplace, str]
) -> None:
    async with RegistryClient(SettingsProvider(settings_file)) as client:
        ours = {c.category for c in await client.list_categories()}
        assert ours == {"network", "themes", "tools"}
        write_settings(settings_file, stub[1], stub[0].public_key_hex)
        theirs = {c.category for c in await client.list_categories()}
        assert theirs == {"themes", "tools"}
        assert client.public_key == stub[0].public_key_hex
        write_settings(settings_file, market.url, market.public_key)
        assert len(await client.search_plugins(category="network")) == 15


# -- the same client against the stub ------------------------------------------


async def test_read_endpoints_against_the_stub(stub_client: RegistryClient) -> None:
    assert (await stub_client.health())["status"] == "ok"
    plugins = await stub_client.list_plugins()  # pages of two
    assert [p.id for p in plugins] == ["alpha", "beta", "gamma"]
    assert [p.id for p in await stub_client.search_plugins("kubernetes")] == ["gamma"]  # q
    assert [p.id for p in await stub_client.search_plugins(category="tools")] == ["alpha", "gamma"]
    assert [p.id for p in await stub_client.search_plugins(sort="downloads")] == [
        "alpha",
        "gamma",
        "beta",
    ]
    assert [p.id for p in await stub_client.search_plugins(featured=True)] == ["alpha"]
    assert (await stub_client.get_plugin_readme("alpha")).startswith("# Alpha")
    assert {c.category: c.count for c in await stub_client.list_categories()} == {
        "themes": 1,
        "tools": 2,
    }
    versions = await stub_client.list_versions("alpha")
    assert [v.version for v in versions] == ["2.0.0", "1.10.0", "1.2.0"]
    history = await stub_client.get_release_history("alpha")
    assert [h.changelog for h in history] == ["Big rewrite", "More things", "First public"]
    version = await stub_client.get_version("alpha", "1.2.0")
    assert set(version.artifacts) == {"linux_amd64", "darwin_arm64"}
    reviews = await stub_client.get_plugin_reviews("alpha", page=2, per_page=3)
    assert [r.id for r in reviews] == ["r3", "r4", "r5"] and reviews[0].user_id == 103
    daily = await stub_client.get_daily_downloads("alpha")
    assert len(daily) == 30 and daily[-1].date == datetime.now(UTC).date().isoformat()
    await stub_client.record_download("alpha", "2.0.0", "linux_amd64")
    stats = await stub_client.get_download_stats("alpha")
    assert stats.total_count >= 1
    enriched = enrich(plugins, {"alpha": "1.10.0"})
    assert enriched[0].update_available and not enriched[1].installed


async def test_download_and_verify_against_the_stub(
    stub_client: RegistryClient, stub: tuple[StubMarketplace, str], tmp_path: Path
) -> None:
    marketplace = stub[0]
    result = await stub_client.download_artifact("alpha", "2.0.0", "linux_amd64", dest=tmp_path)
    assert result.path.read_bytes() == marketplace.files["alpha-2.0.0-linux_amd64.tar.gz"]
    verify_download(result, marketplace.public_key_hex)  # signed by the stub's own key
    unsigned = await stub_client.download_artifact("beta", "1.0.0", "linux_amd64", dest=tmp_path)
    with pytest.raises(UnsignedArtifactError):
        verify_download(unsigned, marketplace.public_key_hex)


async def test_a_download_cut_off_midway_leaves_no_file(
    stub_client: RegistryClient, tmp_path: Path
) -> None:
    dest = tmp_path / "downloads"
    dest.mkdir()
    with pytest.raises(RegistryUnavailableError, match=r"0\.9\.0 \(linux_amd64\) .* broke off"):
        await stub_client.download_artifact("gamma", "0.9.0", "linux_amd64", dest=dest)
    assert list(dest.iterdir()) == []
