"""Async client of the marketplace HTTP API (docs/publishing.md, "The marketplace API").

Why it looks like this:

- The marketplace URL and the registry's public key are settings a user may
  edit while the host runs, so every call reads them from the
  SettingsProvider again (which re-reads ``plughost.toml`` when it changed).
- Lists are paged on the server; the host wants whole lists, so list calls
  walk every page.
- Failures become plughost errors that say what to do: an unreachable server
  names the URL and the setting, a 404 becomes PluginNotFoundError, any
  other error status shows the server's own ``message``. No more than
  ``_ERROR_BODY_MAX`` bytes of an error body are read, whatever the server
  sends: a marketplace answering a huge error must not fill the host's memory
  nor every place that shows the error. A successful answer is read up to
  ``_ANSWER_MAX`` bytes, and a download up to the size the listing gives (never
  more than ``MAX_PLUGIN_SIZE``, the largest package the installer takes), for
  the same reason.
- Downloading and verifying are separate steps. :meth:`RegistryClient.download_artifact`
  streams the package to disk computing SHA-256 on the way;
  :func:`verify_download` then compares the checksum and checks the Ed25519
  signature of the hex checksum with the configured key, and refuses an
  unsigned artifact. The installer runs both and installs nothing on failure.
- A version may list a package for this machine's platform and one for
  ``any`` (a Python or UI-only plugin); the exact platform wins.
- An artifact may carry two signed manifests, the registry's and its
  publisher's. :func:`checkable_artifact` hands the installer the publisher's
  whenever the settings name the publisher's key (trusted, or retired: so a
  retired publisher key is refused even though the registry signed too), and
  the registry's otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json as jsonlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pydantic
from pydantic import BaseModel

from .. import MAX_PLUGIN_SIZE
from ..errors import (
    ChecksumMismatchError,
    PlughostError,
    PluginNotFoundError,
    RegistryUnavailableError,
    SettingsMissingError,
    ValidationError,
    plugin_context,
)
from ..settings import Settings, SettingsProvider
from ..textcap import cut_note
from .models import (
    ANY_PLATFORM,
    Artifact,
    AvailablePlugin,
    Category,
    DailyDownloads,
    DownloadStats,
    Pagination,
    Plugin,
    PluginVersion,
    Review,
    VersionInfo,
    compare_versions,
    current_platform,
)

__all__ = [
    "SORT_FIELDS",
    "DownloadResult",
    "ProgressCallback",
    "RegistryClient",
    "checkable_artifact",
    "enrich",
    "sort_params",
    "verify_download",
]

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, total_bytes_or_None)`` while downloading."""

M = TypeVar("M", bound=BaseModel)

# Friendly sort names -> (order_field, default direction). A leading '-' asks
# for descending order, a leading '+' for ascending; a bare name takes the
# natural direction (names A-Z, numbers and dates biggest/newest first).
SORT_FIELDS: dict[str, tuple[str, str]] = {
    "downloads": ("download_count", "desc"),
    "download_count": ("download_count", "desc"),
    "popular": ("download_count", "desc"),
    "rating": ("average_rating", "desc"),
    "average_rating": ("average_rating", "desc"),
    "reviews": ("review_count", "desc"),
    "review_count": ("review_count", "desc"),
    "name": ("name", "asc"),
    "updated": ("updated_at", "desc"),
    "updated_at": ("updated_at", "desc"),
    "recent": ("updated_at", "desc"),
    "created": ("created_at", "desc"),
    "created_at": ("created_at", "desc"),
    "newest": ("created_at", "desc"),
}

_PAGE_SIZE = 100  # the API's maximum: fewest round trips when walking all pages
_MAX_PAGES = 10_000  # a server that never stops paging is a broken server
_CHUNK = 256 * 1024
_ERROR_BODY_MAX = 16 * 1024  # an error envelope is small: no more of an error body is read
_ERROR_TEXT_SHOWN = 300  # characters shown of an error body that is not an API answer
_ANSWER_MAX = 16 * 1024 * 1024  # bytes of one API answer: a whole page of plugins is far less
_REDIRECTS = (301, 302, 303, 307, 308)


def sort_params(sort: str) -> dict[str, str]:
    """``order_field`` / ``order_direction`` query parameters for a sort name.

    ``"downloads"`` -> most downloaded first, ``"name"`` -> A to Z,
    ``"-name"`` -> Z to A, ``"+downloads"`` -> least downloaded first.
    """
    sort = sort.strip()
    if not sort:
        return {}
    direction: str | None = None
    if sort[0] in "+-":
        direction = "asc" if sort[0] == "+" else "desc"
        sort = sort[1:]
    try:
        field, natural = SORT_FIELDS[sort.lower()]
    except KeyError:
        known = ", ".join(sorted(SORT_FIELDS))
        raise ValidationError(
            f"unknown sort {sort!r}; expected one of: {known} (prefix '-' for descending)",
            title="Invalid sort",
        ) from None
    return {"order_field": field, "order_direction": direction or natural}


@dataclass(frozen=True)
class DownloadResult:
    """A package downloaded to ``path``, with what was measured while streaming it."""

    path: Path
    sha256: str
    size: int
    artifact: Artifact
    plugin_id: str = ""
    version: str = ""
    platform: str = ""


def _seg(value: str) -> str:
    # Path segments come from callers and plugin lists; never let one add a '/'.
    return quote(value, safe="")


class RegistryClient:
    """The marketplace client (the seed's ``registry.Client``).

    Use as ``async with RegistryClient(provider) as client:`` or call
    :meth:`aclose` when done. ``page_size`` is the ``per_page`` asked for when
    walking a list (100, the API's maximum, unless a test wants many pages). Every method reads ``marketplace_url`` (and,
    for verification, ``registry_public_key``) from ``settings_provider``
    right before it talks to the server.
    """

    def __init__(
        self,
        settings_provider: SettingsProvider,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = _PAGE_SIZE,
    ) -> None:
        self._provider = settings_provider
        self._page_size = max(1, page_size)
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (the client can be used again afterwards)."""
        if self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    # -- settings ---------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The marketplace URL from settings, without a trailing slash."""
        url = str(self._provider.settings.marketplace_url).strip().rstrip("/")
        if not url:
            raise SettingsMissingError(
                "setting 'marketplace_url' is not set, so the marketplace cannot be reached",
                suggestions=[
                    'add marketplace_url = "https://..." to '
                    f"{self._provider.path or 'plughost.toml'}",
                    "or serve your own with 'plughost registry serve DIR'",
                ],
            )
        if not url.startswith(("http://", "https://")):
            raise ValidationError(
                f"setting 'marketplace_url' is {url!r}: expected an http:// or https:// URL",
                title="Invalid marketplace URL",
                suggestions=["fix marketplace_url in plughost.toml"],
            )
        return url

    @property
    def public_key(self) -> str:
        """The registry's Ed25519 public key (64 hex chars) from settings; may be ''."""
        return str(self._provider.settings.registry_public_key).strip()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport, follow_redirects=False
            )
        return self._http

    # -- transport and errors ------------------------------------------------

    def _unreachable(self, base: str, exc: Exception) -> RegistryUnavailableError:
        reason = str(exc) or type(exc).__name__
        return RegistryUnavailableError(
            f"cannot reach the marketplace at {base}: {reason}; check marketplace_url",
            suggestions=[
                "check that the marketplace is up and that marketplace_url in "
                f"{self._provider.path or 'plughost.toml'} is right",
                "check the network connection and any proxy settings",
            ],
        )

    @staticmethod
    async def _message(response: httpx.Response) -> str:
        """The server's ``message`` (else the start of its body) from a streamed error
        response, of which at most ``_ERROR_BODY_MAX`` bytes are read."""
        body = bytearray()
        whole = True
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _ERROR_BODY_MAX:
                    whole = False
                    break
        except httpx.TransportError:
            whole = False  # what did arrive still says something
        if whole:
            try:
                data = jsonlib.loads(body)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"]:
                return str(data["message"])
        text = body[:_ERROR_BODY_MAX].decode("utf-8", "replace").strip()
        if not text:
            return response.reason_phrase
        shown = text[:_ERROR_TEXT_SHOWN]
        if whole:
            return shown  # the body was read whole: what is left out is not the point
        length = response.headers.get("content-length", "")
        left = int(length) - len(shown.encode()) if length.isdigit() else None
        return shown + cut_note(left)

    def _status_error(
        self,
        base: str,
        method: str,
        path: str,
        response: httpx.Response,
        plugin_id: str | None,
        message: str,
    ) -> Exception:
        if response.status_code == 404 and plugin_id is not None:
            return PluginNotFoundError(
                f"not found in the marketplace at {base}: {message}",
                plugin_id=plugin_id,
                suggestions=["check the plugin id and version ('plughost search' lists plugins)"],
            )
        return RegistryUnavailableError(
            f"the marketplace at {base} answered {response.status_code} to {method} {path}: "
            f"{message}",
            plugin_id=plugin_id,
            suggestions=["try again later; if it persists, tell the marketplace's operator"],
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        plugin_id: str | None = None,
    ) -> dict[str, Any]:
        """One API call; returns the decoded envelope of a successful answer."""
        base = self.base_url
        client = self._client()
        request = client.build_request(method, base + path, params=dict(params or {}), json=json)
        try:
            response = await client.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    message = await self._message(response)
                    raise self._status_error(base, method, path, response, plugin_id, message)
                body = await self._answer(response, f"{method} {base}{path}", plugin_id)
            finally:
                await response.aclose()
        except httpx.TransportError as exc:
            raise self._unreachable(base, exc) from exc
        try:
            envelope = jsonlib.loads(body)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            raise RegistryUnavailableError(
                f"the marketplace at {base} sent something that is not an API answer to "
                f"{method} {path} (status {response.status_code}); check marketplace_url",
                plugin_id=plugin_id,
            )
        if envelope.get("success") is False:
            raise RegistryUnavailableError(
                f"the marketplace at {base} refused {method} {path}: "
                f"{envelope.get('message') or 'no message'}",
                plugin_id=plugin_id,
            )
        return envelope

    @staticmethod
    async def _answer(response: httpx.Response, what: str, plugin_id: str | None) -> bytes:
        """The body of a successful streamed answer, refused past ``_ANSWER_MAX`` bytes."""

        def too_big() -> RegistryUnavailableError:
            return RegistryUnavailableError(
                f"the answer to {what} is larger than {_ANSWER_MAX:,} bytes, the most plughost "
                "reads of one marketplace answer: stopped reading",
                title="Marketplace answer too large",
                plugin_id=plugin_id,
                suggestions=[
                    "check that marketplace_url names a plughost marketplace",
                    "if it does, tell the marketplace's operator: its answers are too large",
                ],
            )

        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > _ANSWER_MAX:
            raise too_big()
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _ANSWER_MAX:
                raise too_big()
        return bytes(body)

    @staticmethod
    def _parse(model: type[M], data: Any, what: str, plugin_id: str | None = None) -> M:
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise RegistryUnavailableError(
                f"the marketplace sent {what} that plughost cannot read: {exc.errors()[0]['msg']} "
                f"at {'.'.join(map(str, exc.errors()[0]['loc']))}",
                plugin_id=plugin_id,
            ) from exc

    def _parse_list(
        self, model: type[M], data: Any, what: str, plugin_id: str | None = None
    ) -> list[M]:
        if data is None:
            return []
        if not isinstance(data, list):
            raise RegistryUnavailableError(
                f"the marketplace sent {what} that is not a list", plugin_id=plugin_id
            )
        return [self._parse(model, item, what, plugin_id) for item in data]

    async def _get(
        self,
        path: str,
        model: type[M],
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        plugin_id: str | None = None,
    ) -> M:
        envelope = await self._request("GET", path, params=params, plugin_id=plugin_id)
        return self._parse(model, envelope.get("data"), what, plugin_id)

    async def _get_page(
        self,
        path: str,
        model: type[M],
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        plugin_id: str | None = None,
    ) -> tuple[list[M], Pagination | None]:
        envelope = await self._request("GET", path, params=params, plugin_id=plugin_id)
        items = self._parse_list(model, envelope.get("data"), what, plugin_id)
        raw = envelope.get("pagination")
        pagination = self._parse(Pagination, raw, "pagination") if raw is not None else None
        return items, pagination

    async def _get_all(
        self,
        path: str,
        model: type[M],
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        plugin_id: str | None = None,
    ) -> list[M]:
        """Walk every page of a list endpoint."""
        items: list[M] = []
        for page in range(1, _MAX_PAGES + 1):
            query = {**(params or {}), "page": page, "per_page": self._page_size}
            batch, pagination = await self._get_page(
                path, model, what, params=query, plugin_id=plugin_id
            )
            items.extend(batch)
            if pagination is None or not batch or page >= pagination.total_pages:
                break
        return items

    # -- plugins ----------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """``GET /v1/health``: the server's status object."""
        envelope = await self._request("GET", "/v1/health")
        data = envelope.get("data")
        return data if isinstance(data, dict) else {}

    async def list_plugins(self) -> list[Plugin]:
        """Every plugin of the marketplace (all pages)."""
        return await self.search_plugins()

    async def search_plugins(
        self, query: str = "", category: str = "", sort: str = "", *, featured: bool = False
    ) -> list[Plugin]:
        """Plugins matching ``query`` (name, description, tags) and ``category``, sorted.

        ``sort`` is a name of :data:`SORT_FIELDS` (``"downloads"``, ``"rating"``,
        ``"name"``, ``"updated"`` ...), optionally prefixed ``-`` (descending) or
        ``+`` (ascending).
        """
        params: dict[str, str | int] = dict(sort_params(sort))
        if query.strip():
            params["q"] = query.strip()
        if category.strip():
            params["category"] = category.strip()
        if featured:
            params["featured"] = "true"
        return await self._get_all("/v1/plugins", Plugin, "a plugin list", params=params)

    async def get_plugin(self, plugin_id: str) -> Plugin:
        """One plugin, with its readme."""
        return await self._get(
            f"/v1/plugins/{_seg(plugin_id)}", Plugin, "a plugin", plugin_id=plugin_id
        )

    async def get_plugin_readme(self, plugin_id: str) -> str:
        """The plugin's readme (Markdown; '' if it has none)."""
        return (await self.get_plugin(plugin_id)).readme

    async def list_categories(self) -> list[Category]:
        """Every category with its number of plugins."""
        envelope = await self._request("GET", "/v1/categories")
        return self._parse_list(Category, envelope.get("data"), "a category list")

    # -- versions ---------------------------------------------------------------

    async def list_versions(self, plugin_id: str) -> list[PluginVersion]:
        """Every version of a plugin (all pages), in the server's order."""
        return await self._get_all(
            f"/v1/plugins/{_seg(plugin_id)}/versions",
            PluginVersion,
            "a version list",
            plugin_id=plugin_id,
        )

    async def get_version(self, plugin_id: str, version: str) -> PluginVersion:
        """One version of a plugin, with its artifacts per platform."""
        return await self._get(
            f"/v1/plugins/{_seg(plugin_id)}/versions/{_seg(version)}",
            PluginVersion,
            "a plugin version",
            plugin_id=plugin_id,
        )

    async def get_plugin_versions(self, plugin_id: str) -> list[VersionInfo]:
        """The seed's GetPluginVersions: every version, as :class:`VersionInfo`."""
        return [VersionInfo.from_plugin_version(v) for v in await self.list_versions(plugin_id)]

    async def get_release_history(self, plugin_id: str) -> list[VersionInfo]:
        """Every version with its changelog, newest first (by semantic version)."""
        infos = await self.get_plugin_versions(plugin_id)

        def newer_first(a: VersionInfo, b: VersionInfo) -> int:
            return compare_versions(b.version, a.version)

        return sorted(infos, key=functools.cmp_to_key(newer_first))

    # -- reviews and statistics ----------------------------------------------

    async def get_plugin_reviews(
        self, plugin_id: str, page: int = 1, per_page: int = 20
    ) -> list[Review]:
        """One page of a plugin's reviews (newest first on plughost's server)."""
        items, _ = await self.get_plugin_reviews_page(plugin_id, page, per_page)
        return items

    async def get_plugin_reviews_page(
        self, plugin_id: str, page: int = 1, per_page: int = 20
    ) -> tuple[list[Review], Pagination | None]:
        """One page of reviews and the pagination (how many pages there are)."""
        return await self._get_page(
            f"/v1/plugins/{_seg(plugin_id)}/reviews",
            Review,
            "a review list",
            params={"page": max(1, page), "per_page": max(1, per_page)},
            plugin_id=plugin_id,
        )

    async def get_download_stats(self, plugin_id: str) -> DownloadStats:
        """Total downloads and downloads per version."""
        return await self._get(
            f"/v1/plugins/{_seg(plugin_id)}/downloads",
            DownloadStats,
            "download statistics",
            plugin_id=plugin_id,
        )

    async def get_daily_downloads(self, plugin_id: str, days: int = 30) -> list[DailyDownloads]:
        """Downloads per day for the last ``days`` days, oldest first."""
        envelope = await self._request(
            "GET",
            f"/v1/plugins/{_seg(plugin_id)}/downloads/daily",
            params={"days": days},
            plugin_id=plugin_id,
        )
        return self._parse_list(DailyDownloads, envelope.get("data"), "daily downloads", plugin_id)

    async def record_download(self, plugin_id: str, version: str, arch: str | None = None) -> None:
        """Tell the marketplace a version was downloaded (``arch`` defaults to this platform)."""
        body = {"plugin_id": plugin_id, "version": version, "arch": arch or current_platform()}
        await self._request(
            "POST", f"/v1/plugins/{_seg(plugin_id)}/downloads", json=body, plugin_id=plugin_id
        )

    # -- downloading ------------------------------------------------------------

    async def _artifact_location(
        self, plugin_id: str, version: str, platform: str, artifact: Artifact
    ) -> str:
        """Where the package is: the Location of the download endpoint's redirect."""
        base = self.base_url
        path = f"/v1/plugins/{_seg(plugin_id)}/download/{_seg(version)}/{_seg(platform)}"
        url = base + path
        client = self._client()
        try:
            response = await client.send(client.build_request("GET", url), stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(base, exc) from exc
        try:
            if response.status_code in _REDIRECTS and response.headers.get("location"):
                return str(response.url.join(response.headers["location"]))
            if response.status_code == 200:
                return url  # the server sends the package itself (not read twice)
            if response.status_code == 404 and artifact.download_url:
                # The listing names a location even though the redirect endpoint does not.
                return str(httpx.URL(base + "/").join(artifact.download_url))
            message = await self._message(response)
            raise self._status_error(base, "GET", path, response, plugin_id, message)
        finally:
            await response.aclose()

    async def download_artifact(
        self,
        plugin_id: str,
        version: str,
        platform: str | None = None,
        *,
        dest: Path,
        progress: ProgressCallback | None = None,
        max_bytes: int = MAX_PLUGIN_SIZE,
    ) -> DownloadResult:
        """Download one version's package for ``platform`` (default: this machine's).

        Without a package for that platform, the version's ``any`` package (one
        that runs everywhere) is taken; ``result.platform`` says which it was.
        ``result.artifact.manifest`` is the signed manifest the settings can
        check (see :func:`checkable_artifact`). ``dest`` is the file to write,
        or a directory to write ``<id>-<version>-<platform>.tar.gz`` into. SHA-256 and size are computed
        while streaming; ``progress(done, total)`` is called after each chunk
        (``total`` is None when neither the server nor the listing says). A
        failed download removes the partial file. No more than the listed size,
        nor than ``max_bytes``, is written. Nothing is verified here: call
        :func:`verify_download` on the result.
        """
        platform = platform or current_platform()
        listed = await self.get_version(plugin_id, version)
        if platform not in listed.artifacts and ANY_PLATFORM in listed.artifacts:
            platform = ANY_PLATFORM
        artifact = listed.artifacts.get(platform)
        if artifact is None:
            available = ", ".join(sorted(listed.artifacts)) or "none"
            raise PluginNotFoundError(
                f"version {version} has no package for platform {platform} "
                f"(available: {available})",
                title="No package for this platform",
                plugin_id=plugin_id,
                suggestions=["ask the plugin's publisher for a build for this platform"],
            )
        artifact = checkable_artifact(artifact, self._provider.settings)
        if artifact.size > max_bytes:
            why = f"the marketplace lists {artifact.size:,} bytes"
            raise self._too_large(version, platform, max_bytes, plugin_id, why)
        location = await self._artifact_location(plugin_id, version, platform, artifact)
        target = Path(dest)
        if target.is_dir():
            target = target / f"{plugin_id}-{version}-{platform}.tar.gz"
        base = self.base_url
        digest = hashlib.sha256()
        done = 0
        opened = False  # never delete a file we did not start writing
        try:
            async with self._client().stream("GET", location, follow_redirects=True) as response:
                if response.status_code >= 400:
                    message = await self._message(response)
                    raise self._status_error(base, "GET", location, response, plugin_id, message)
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else (artifact.size or None)
                # Never more than the listing promised (nor than any package may be):
                # an endless or oversized stream must not fill the disk before the check.
                limit = artifact.size or max_bytes
                if not artifact.size and total is not None and total > max_bytes:
                    why = f"the server announces {total:,} bytes"
                    raise self._too_large(version, platform, max_bytes, plugin_id, why)
                from ..packages import signing

                with open(target, "wb") as out:
                    opened = True
                    async for chunk in response.aiter_raw(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if done > limit and not artifact.size:
                            why = "the server sent more"
                            raise self._too_large(version, platform, limit, plugin_id, why)
                        if done > limit:
                            raise signing.SizeMismatchError(
                                f"the download of {version} ({platform}) passed {limit} bytes, "
                                "more than the marketplace listed: stopped",
                                plugin_id=plugin_id,
                                suggestions=["the server sends something else than listed"],
                            )
                        if progress is not None:
                            progress(done, total)
        except BaseException as exc:
            if opened:
                target.unlink(missing_ok=True)
            if isinstance(exc, httpx.TransportError) and opened:
                raise RegistryUnavailableError(
                    f"the download of {version} ({platform}) from {base} broke off after "
                    f"{done} bytes: {exc or type(exc).__name__}",
                    plugin_id=plugin_id,
                    suggestions=["try again; check the network connection and any proxy"],
                ) from exc
            if isinstance(exc, httpx.TransportError):
                raise self._unreachable(base, exc) from exc
            raise
        return DownloadResult(
            path=target,
            sha256=digest.hexdigest(),
            size=done,
            artifact=artifact,
            plugin_id=plugin_id,
            version=version,
            platform=platform,
        )

    @staticmethod
    def _too_large(
        version: str, platform: str, max_bytes: int, plugin_id: str, why: str
    ) -> PlughostError:
        from ..packages import signing

        return signing.SizeMismatchError(
            f"the package of {version} ({platform}) is larger than the {max_bytes:,} bytes "
            f"a plugin package may be ({why}): not downloaded",
            plugin_id=plugin_id,
            suggestions=["ask the plugin's publisher for a smaller package"],
        )

    def verify(self, result: DownloadResult, *, require_signature: bool = True) -> None:
        """:func:`verify_download` with the ``registry_public_key`` configured right now."""
        verify_download(result, self.public_key, require_signature=require_signature)


def _configured_key_ids(settings: Settings) -> set[str]:
    """The key ids ``trusted_keys`` names (retired ones included); bad entries are left
    to the verification, which reports them."""
    from ..packages import signing

    ids: set[str] = set()
    for entry in settings.trusted_keys:
        if entry.key_id:
            ids.add(entry.key_id)
            continue
        with contextlib.suppress(PlughostError):
            ids.add(signing.key_id_for(entry.public_key_hex))
    return ids


def checkable_artifact(artifact: Artifact, settings: Settings) -> Artifact:
    """``artifact`` with ``manifest`` set to the signed manifest these settings judge.

    The publisher's manifest when its key is in ``trusted_keys`` (even retired,
    so that retiring a publisher key refuses its packages) or when the registry
    signed none; the registry's otherwise. Choosing is not trusting: the
    installer still verifies the chosen manifest against the trusted keys.
    """
    publisher = artifact.publisher_manifest
    if publisher is None or publisher == artifact.manifest:
        return artifact
    if artifact.manifest is None or publisher.key_id in _configured_key_ids(settings):
        return artifact.model_copy(update={"manifest": publisher})
    return artifact


def verify_download(
    result: DownloadResult, public_key_hex: str, *, require_signature: bool = True
) -> None:
    """Check a download against its listing; raise if it must not be installed.

    In order: the size (when listed) and the SHA-256 must match the artifact's
    (TruncatedDownloadError / SizeMismatchError / ChecksumMismatchError, all
    ChecksumMismatchError); the artifact must be signed unless
    ``require_signature`` is False (UnsignedArtifactError); the signature
    must be a valid Ed25519 signature of the hex checksum by
    ``public_key_hex`` (SignatureInvalidError or a subclass). A missing key is
    SettingsMissingError naming ``registry_public_key``.
    """
    from ..packages import signing  # the signing module owns every Ed25519 detail

    artifact = result.artifact
    plugin_id = result.plugin_id or None
    where = f"{result.version} ({result.platform})" if result.version else str(result.path)
    expected = artifact.checksum.strip().lower()
    if not expected:
        raise ChecksumMismatchError(
            f"the marketplace lists no checksum for {where}: refusing to install it",
            plugin_id=plugin_id,
            suggestions=["ask the marketplace operator to publish checksums"],
        )
    with plugin_context(result.plugin_id) if result.plugin_id else contextlib.nullcontext():
        signing.check_download(
            result.size,
            result.sha256,
            expected_size=artifact.size or None,
            expected_sha256=expected,
        )
        if not artifact.signature.strip():
            if not require_signature:
                return
            raise signing.UnsignedArtifactError(
                f"the package of {where} is not signed: refusing to install an unsigned artifact",
                suggestions=["ask the marketplace operator to sign the package"],
            )
        if not public_key_hex.strip():
            raise SettingsMissingError(
                "setting 'registry_public_key' is not set, so the signature of "
                f"{where} cannot be checked",
                suggestions=['add registry_public_key = "<64 hex chars>" to plughost.toml'],
            )
        signing.verify_checksum_signature(expected, artifact.signature, public_key_hex.strip())


def enrich(plugins: Iterable[Plugin], installed: Mapping[str, str]) -> list[AvailablePlugin]:
    """Mark each plugin ``installed``, ``installed_version`` and ``update_available``.

    ``installed`` maps plugin id -> installed version. An update is available
    when the marketplace's latest version is newer (semver order) than the
    installed one.
    """
    result: list[AvailablePlugin] = []
    for plugin in plugins:
        local = installed.get(plugin.id)
        data = plugin.model_dump()
        data.update(
            installed=local is not None,
            installed_version=local or "",
            update_available=bool(
                local is not None
                and plugin.latest_version
                and compare_versions(plugin.latest_version, local) > 0
            ),
        )
        result.append(AvailablePlugin.model_validate(data))
    return result
