"""Where Omniview's plugin SDK is: the directory that holds its ``proto/v1/**/*.proto``.

Looked for, in order (the first one given wins; one given but wrong is an error,
never skipped):

1. the ``path`` a caller passes (``load_sdk(path)``, ``plughost omniview stubs --sdk``);
2. ``$PLUGHOST_OMNIVIEW_SDK``;
3. the setting ``omniview_sdk`` in ``plughost.toml`` (a relative path is taken from
   the file's directory);
4. Go's module cache (``go env GOMODCACHE``, else ``$GOMODCACHE``, ``$GOPATH/pkg/mod``,
   ``~/go/pkg/mod``): the newest ``github.com/omniviewdev/plugin-sdk@v*`` there, which
   ``go mod download github.com/omniviewdev/plugin-sdk@v0.5.0`` puts there.

Nothing found raises :class:`~plughost.errors.OmniviewSdkNotFoundError` naming every
place looked at and the three ways to point at an SDK.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from ..errors import OmniviewSdkNotFoundError, PlughostError
from ..paths import RootLayout, resolve_root
from ..settings import Settings, SettingsProvider

__all__ = [
    "ENV_VAR",
    "MODULE",
    "SETTING",
    "TESTED_VERSION",
    "SdkLocation",
    "go_module_cache",
    "is_sdk_dir",
    "locate_sdk",
]

ENV_VAR = "PLUGHOST_OMNIVIEW_SDK"
SETTING = "omniview_sdk"
MODULE = "github.com/omniviewdev/plugin-sdk"
TESTED_VERSION = "v0.5.0"
"""The SDK version plughost's own tests run against."""

PROTO_DIR = ("proto", "v1")

_SEMVER = re.compile(r"^v(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


@dataclasses.dataclass(frozen=True)
class SdkLocation:
    """An SDK directory, how it was found, and its version when its path says it."""

    path: Path
    source: str
    """Where it came from: ``argument``, ``$PLUGHOST_OMNIVIEW_SDK``, ``setting ...``, ``Go
    module cache``."""
    version: str | None = None
    """``v0.5.0`` for a module-cache directory ``plugin-sdk@v0.5.0``; None when unknown."""


def is_sdk_dir(path: Path) -> bool:
    """Does ``path`` hold the SDK's v1 protos (``proto/v1/<package>/*.proto``)?"""
    proto = path.joinpath(*PROTO_DIR)
    return proto.is_dir() and any(proto.glob("*/*.proto"))


def _version_of(path: Path) -> str | None:
    _, sep, version = path.name.partition("@")
    return version if sep and _SEMVER.match(version) else None


def _semver_key(version: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    """Semantic version order: a release after its pre-releases (and pseudo-versions)."""
    match = _SEMVER.match(version)
    if match is None:
        return (-1, -1, -1, -1, ())
    major, minor, patch, pre = match.groups()
    parts = tuple((0, int(p)) if p.isdigit() else (1, p) for p in (pre.split(".") if pre else ()))
    return (int(major), int(minor), int(patch), 0 if pre else 1, parts)


def _checked(path: Path, source: str, how: str) -> SdkLocation:
    path = path.expanduser()
    if not is_sdk_dir(path):
        what = "does not exist" if not path.exists() else "has no proto/v1/<package>/*.proto"
        raise OmniviewSdkNotFoundError(
            f"{path} ({source}) is not Omniview's plugin SDK: it {what}",
            suggestions=[
                f"{how} to the root of a {MODULE} checkout (the directory with go.mod and "
                "proto/), or clear it to use Go's module cache",
            ],
        )
    return SdkLocation(path.resolve(), source, _version_of(path.resolve()))


def go_module_cache(
    *, settings: Settings | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Path | None, str]:
    """Go's module cache directory and how it was found (``go env GOMODCACHE`` first)."""
    env = os.environ if environ is None else environ
    try:
        from ..dev.toolchain import find_go_binary

        go = find_go_binary(settings=settings)
        out = subprocess.run(
            [go, "env", "GOMODCACHE"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=dict(env),
        ).stdout.strip()
        if out:
            return Path(out), "go env GOMODCACHE"
    except (PlughostError, OSError, subprocess.SubprocessError):
        pass
    if env.get("GOMODCACHE"):
        return Path(env["GOMODCACHE"]), "$GOMODCACHE"
    gopath = env.get("GOPATH", "").split(os.pathsep)[0]
    if gopath:
        return Path(gopath) / "pkg" / "mod", "$GOPATH/pkg/mod"
    home = env.get("HOME")
    if home:
        return Path(home) / "go" / "pkg" / "mod", "~/go/pkg/mod"
    return None, "no GOMODCACHE, GOPATH or HOME"


def _settings_and_file(
    settings: Settings | None, root: str | os.PathLike[str] | None, profile: str | None
) -> tuple[Settings, Path | None]:
    if settings is not None:
        return settings, None
    path = RootLayout(resolve_root(root, profile)).settings_file
    return SettingsProvider(path).settings, path


def locate_sdk(
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    root: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> SdkLocation:
    """Find the SDK (see the module docstring for the order).

    ``settings`` are the host's (``manager.settings``); without them the
    ``plughost.toml`` of ``root``/``profile`` (default: the default root) is read.
    """
    env = os.environ if environ is None else environ
    if path is not None:
        return _checked(Path(path), "argument", "pass a path")
    looked = ["no path was passed"]
    if env.get(ENV_VAR):
        return _checked(Path(env[ENV_VAR]), f"${ENV_VAR}", f"set ${ENV_VAR}")
    looked.append(f"${ENV_VAR} is not set")
    config, file = _settings_and_file(settings, root, profile)
    where = f"{file}" if file else "the host's settings"
    if config.omniview_sdk:
        configured = Path(config.omniview_sdk).expanduser()
        if file is not None and not configured.is_absolute():
            configured = file.parent / configured
        return _checked(configured, f"setting {SETTING} in {where}", f"set {SETTING}")
    looked.append(f"setting {SETTING} is not set in {where}")
    cache, how = go_module_cache(settings=config, environ=env)
    if cache is not None:
        parent = cache / Path(*MODULE.split("/")[:-1])
        found = [
            p
            for p in (parent.glob("plugin-sdk@v*") if parent.is_dir() else [])
            if _version_of(p) and is_sdk_dir(p)
        ]
        if found:
            newest = max(found, key=lambda p: _semver_key(_version_of(p) or ""))
            return SdkLocation(newest.resolve(), f"Go module cache ({how})", _version_of(newest))
        looked.append(f"Go's module cache {cache} ({how}) has no {MODULE}@v*")
    else:
        looked.append(f"Go's module cache was not found ({how})")
    raise OmniviewSdkNotFoundError(
        "cannot find Omniview's plugin SDK (its .proto files); looked at: " + "; ".join(looked),
        suggestions=[
            f"point at a checkout: {ENV_VAR}=/path/to/plugin-sdk",
            f'or set {SETTING} = "/path/to/plugin-sdk" in {file or "plughost.toml"}',
            f"or download it into Go's module cache: go mod download {MODULE}@{TESTED_VERSION}",
        ],
    )
