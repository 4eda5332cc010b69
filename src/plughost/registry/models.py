"""The marketplace's wire types (docs/publishing.md, "The marketplace API"), shared by
client and server.

Field names are the original marketplace's JSON names, so that either side can
be swapped for the original. Where the original Go client decodes into a
typed field the type here matches it: ``Review.user_id`` is an unsigned
integer, counts are integers, times are RFC 3339. Unknown fields sent by a
newer server are ignored rather than rejected.

Besides the wire types this module holds what both sides need to agree on:
platform names (``GOOS_GOARCH``, and ``any`` for a package that runs
everywhere) and version ordering (a tolerant semver
compare, so ``1.10.0`` is newer than ``1.9.0`` and ``2.0.0-rc.1`` older than
``2.0.0``).
"""

from __future__ import annotations

import platform as _platform
import re
import sys
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..packages.platforms import ANY_PLATFORM

__all__ = [
    "ANY_PLATFORM",
    "SUPPORTED_PLATFORMS",
    "Artifact",
    "ArtifactManifest",
    "AvailablePlugin",
    "Category",
    "DailyDownloads",
    "DownloadStats",
    "Envelope",
    "HealthStatus",
    "Pagination",
    "Plugin",
    "PluginAuthor",
    "PluginVersion",
    "RecordDownloadInput",
    "Review",
    "SignedManifest",
    "VersionDownloads",
    "VersionInfo",
    "compare_versions",
    "current_platform",
    "is_platform_name",
    "latest_version",
]

SUPPORTED_PLATFORMS: tuple[str, ...] = (
    "linux_amd64",
    "linux_arm64",
    "darwin_amd64",
    "darwin_arm64",
    "windows_amd64",
)
"""The platforms the original marketplace builds artifacts for."""

_PLATFORM_RE = re.compile(r"[a-z0-9]+_[a-z0-9]+")

# Python's names for operating systems and machines, mapped to Go's GOOS/GOARCH.
_GOOS = {"linux": "linux", "darwin": "darwin", "win32": "windows", "cygwin": "windows"}
_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "x86": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def current_platform() -> str:
    """This machine's platform as the marketplace names it: ``GOOS_GOARCH``.

    ``linux_amd64`` on a 64-bit Intel Linux, ``darwin_arm64`` on Apple silicon.
    """
    goos = _GOOS.get(sys.platform, sys.platform.split("-")[0].rstrip("0123456789"))
    machine = _platform.machine().lower()
    return f"{goos}_{_GOARCH.get(machine, machine)}"


def is_platform_name(name: str) -> bool:
    """True for a well-formed ``GOOS_GOARCH`` name (not only the supported five) or ``any``."""
    return name == ANY_PLATFORM or bool(_PLATFORM_RE.fullmatch(name))


# -- versions ---------------------------------------------------------------------

_SEMVER_RE = re.compile(
    r"v?(?P<core>\d+(?:\.\d+)*)(?:-(?P<pre>[0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?",
    re.IGNORECASE,
)


def _pre_key(pre: str | None) -> tuple[int, tuple[tuple[int, int, str], ...]]:
    # A release sorts after all of its pre-releases (semver 11.3).
    if pre is None:
        return (1, ())
    parts: list[tuple[int, int, str]] = []
    for ident in pre.split("."):
        # Numeric identifiers sort numerically and before alphanumeric ones (11.4).
        parts.append((0, int(ident), "") if ident.isdigit() else (1, 0, ident))
    return (0, tuple(parts))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``.

    Semantic versions compare as semver says (numeric parts numerically, a
    pre-release before its release, build metadata ignored, a leading ``v``
    ignored, missing parts are zero). Anything unparsable sorts before every
    parsable version, and two unparsable versions compare as strings, so the
    order is total and never raises.
    """
    ma, mb = _SEMVER_RE.fullmatch(a.strip()), _SEMVER_RE.fullmatch(b.strip())
    if ma is None or mb is None:
        if ma is not None:
            return 1
        if mb is not None:
            return -1
        return (a > b) - (a < b)
    core_a = [int(x) for x in ma["core"].split(".")]
    core_b = [int(x) for x in mb["core"].split(".")]
    width = max(len(core_a), len(core_b))
    core_a += [0] * (width - len(core_a))
    core_b += [0] * (width - len(core_b))
    ka = (core_a, _pre_key(ma["pre"]))
    kb = (core_b, _pre_key(mb["pre"]))
    return (ka > kb) - (ka < kb)


def latest_version(versions: list[str]) -> str:
    """The newest of ``versions`` by :func:`compare_versions` ('' for none)."""
    best = ""
    for version in versions:
        if not best or compare_versions(version, best) > 0:
            best = version
    return best


# -- wire types -------------------------------------------------------------------


class _Wire(BaseModel):
    # Ignore unknown fields: a newer marketplace may send more than we know.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Pagination(_Wire):
    page: int = 1
    per_page: int = 20
    total: int = 0
    total_pages: int = 0


T = TypeVar("T")


class Envelope(_Wire, Generic[T]):
    """Every JSON answer: ``{success, data, message, pagination}``."""

    success: bool
    data: T | None = None
    message: str = ""
    pagination: Pagination | None = None


class HealthStatus(_Wire):
    status: str = ""


class PluginAuthor(_Wire):
    name: str = ""
    email: str = ""
    url: str = ""


class ArtifactManifest(_Wire):
    """What a signature vouches for: one artifact (signed by the registry, and by its
    publisher when published with a publisher key)."""

    id: str
    version: str
    platform: str
    sha256: str
    size: int


class SignedManifest(_Wire):
    """An :class:`ArtifactManifest` with the Ed25519 signature over its canonical JSON."""

    manifest: ArtifactManifest
    key_id: str
    signature: str


class Artifact(_Wire):
    """One platform's package of one version."""

    checksum: str = Field("", description="SHA-256 of the package, lower-case hex")
    signature: str = Field(
        "", description="standard base64 of the Ed25519 signature over the checksum's hex string"
    )
    download_url: str = Field("", description="where the package is (may be relative)")
    size: int = 0
    manifest: SignedManifest | None = Field(
        None,
        description="plughost extension: {id, version, platform, sha256, size} signed with "
        "the registry's key",
    )
    publisher_manifest: SignedManifest | None = Field(
        None,
        description="plughost extension: the same manifest signed with the publisher's own key "
        "(plughost keygen), when the package was published with one",
    )


class PluginVersion(_Wire):
    id: str = ""
    plugin_id: str = ""
    version: str
    description: str = ""
    changelog: str = ""
    min_ide_version: str = ""
    max_ide_version: str = ""
    capabilities: list[str] | None = None
    visible: bool = True
    artifacts: dict[str, Artifact] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Plugin(_Wire):
    id: str
    name: str = ""
    description: str = ""
    icon_url: str = ""
    category: str = ""
    tags: list[str] | None = None
    license: str = ""
    repository: str = ""
    url: str = ""
    readme: str = ""
    official: bool = False
    featured: bool = False
    download_count: int = 0
    average_rating: float = 0.0
    review_count: int = 0
    publisher_id: str = ""
    publisher_name: str = ""
    latest_version: str = ""
    version: PluginVersion | None = None
    author: PluginAuthor = Field(default_factory=PluginAuthor)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class AvailablePlugin(Plugin):
    """A marketplace plugin as the host shows it: with what is installed locally."""

    installed: bool = False
    installed_version: str = ""
    update_available: bool = False


class Review(_Wire):
    id: str
    plugin_id: str = ""
    user_id: int = Field(0, description="an unsigned integer: the original client decodes a uint")
    rating: int = Field(0, description="1 to 5")
    title: str = ""
    body: str = ""
    response: str | None = None
    response_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class VersionDownloads(_Wire):
    version: str
    count: int = 0


class DownloadStats(_Wire):
    plugin_id: str = ""
    total_count: int = 0
    by_version: list[VersionDownloads] | None = None


class DailyDownloads(_Wire):
    date: str = Field(..., description="YYYY-MM-DD (UTC)")
    count: int = 0


class Category(_Wire):
    category: str
    count: int = 0


class RecordDownloadInput(_Wire):
    """Body of ``POST /v1/plugins/{id}/downloads``."""

    plugin_id: str = ""
    version: str = Field("", max_length=128)
    arch: str = Field("", max_length=64)


class VersionInfo(_Wire):
    """One version as the host lists it (the seed's ``registry.VersionInfo``)."""

    plugin_id: str = ""
    version: str
    description: str = ""
    changelog: str = ""
    min_ide_version: str = ""
    max_ide_version: str = ""
    capabilities: list[str] = Field(default_factory=list)
    platforms: list[str] = Field(
        default_factory=list, description="platforms with an artifact (empty if not listed)"
    )
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_plugin_version(cls, version: PluginVersion) -> VersionInfo:
        return cls(
            plugin_id=version.plugin_id,
            version=version.version,
            description=version.description,
            changelog=version.changelog,
            min_ide_version=version.min_ide_version,
            max_ide_version=version.max_ide_version,
            capabilities=list(version.capabilities or []),
            platforms=sorted(version.artifacts),
            created_at=version.created_at,
            updated_at=version.updated_at,
        )
