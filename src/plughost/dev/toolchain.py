"""Finding the tools a dev build needs (go, node, pnpm) and running commands with them.

Desktop apps are often started without the user's shell PATH (from a dock, a
launcher or a service), so a plain PATH lookup misses a Go or Node that is
installed. Each finder tries, in order: the setting (``go_binary`` ...), PATH,
then the usual install locations of each platform, version managers (nvm,
volta) included; when nothing is found it fails with a SettingsMissingError
naming the setting that would fix it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import SettingsMissingError

__all__ = [
    "BuildOpts",
    "PreparedCommand",
    "candidate_dirs",
    "find_binary",
    "find_go_binary",
    "find_node_binary",
    "find_pnpm_binary",
    "hydrate_build_opts",
    "prepare_command_with_binaries",
]

_WINDOWS = sys.platform == "win32"
_SETTING = {"go": "go_binary", "node": "node_binary", "pnpm": "pnpm_binary"}
_DOCS = {
    "go": "install Go from https://go.dev/dl/",
    "node": "install Node.js (e.g. with nvm or volta)",
    "pnpm": "install pnpm (npm install -g pnpm, or corepack enable)",
}


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for 'v20.11.1' / 'go1.22.3' directories: newest first when reversed."""
    return tuple(int(n) for n in re.findall(r"\d+", path.name))


def _newest_first(parent: Path, pattern: str) -> list[Path]:
    """``parent/<pattern>/bin`` for each matching version directory, newest version first."""
    if not parent.is_dir():
        return []
    versions = sorted(parent.glob(pattern), key=_version_key, reverse=True)
    return [v / "bin" for v in versions if v.is_dir()]


def _system_dirs(tool: str) -> list[Path]:
    """Install locations outside the home directory, per platform."""
    if _WINDOWS:
        program_files = Path(os.environ.get("PROGRAMFILES", r"C:\Program Files"))
        return {
            "go": [program_files / "Go" / "bin", Path(r"C:\Go\bin")],
            "node": [program_files / "nodejs"],
            "pnpm": [program_files / "nodejs"],
        }[tool]
    common = [Path("/opt/homebrew/bin"), Path("/usr/local/bin"), Path("/usr/bin")]
    if tool == "go":
        return [Path("/usr/local/go/bin"), *common, Path("/usr/lib/go/bin")]
    return common


def candidate_dirs(
    tool: str, *, home: Path | None = None, system_dirs: Sequence[Path] | None = None
) -> list[Path]:
    """Where ``tool`` is looked for after PATH, in order (user installs, then the system's)."""
    home = home if home is not None else Path.home()
    user: list[Path] = []
    nvm = _newest_first(home / ".nvm" / "versions" / "node", "v*")
    volta = [home / ".volta" / "bin"]
    if tool == "go":
        user = [home / "go" / "bin", *_newest_first(home / "sdk", "go*")]
    elif tool == "node":
        user = [*nvm, *volta, home / ".local" / "bin"]
    elif tool == "pnpm":
        pnpm_home = os.environ.get("PNPM_HOME")
        user = [
            *([Path(pnpm_home)] if pnpm_home else []),
            home / ".local" / "share" / "pnpm",
            home / "Library" / "pnpm",
            *nvm,
            *volta,
            home / ".local" / "bin",
        ]
    else:
        raise ValueError(f"unknown tool {tool!r}; expected one of {sorted(_SETTING)}")
    system = list(system_dirs) if system_dirs is not None else _system_dirs(tool)
    return [*user, *system]


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(
    tool: str,
    *,
    setting: str = "",
    home: Path | None = None,
    path_env: str | None = None,
    system_dirs: Sequence[Path] | None = None,
) -> str:
    """The path of ``tool``: the setting, then PATH, then :func:`candidate_dirs`."""
    setting_name = _SETTING.get(tool, f"{tool}_binary")
    if setting:
        configured = Path(setting).expanduser()
        if _is_executable(configured):
            return str(configured)
        raise SettingsMissingError(
            f"setting '{setting_name}' is {setting!r}, which is not an executable file",
            title=f"{tool} not found",
            suggestions=[f"fix or clear '{setting_name}' in plughost.toml"],
        )
    name = f"{tool}.exe" if _WINDOWS and tool == "go" else tool
    found = shutil.which(name, path=path_env if path_env is not None else os.environ.get("PATH"))
    if found:
        return found
    for directory in candidate_dirs(tool, home=home, system_dirs=system_dirs):
        candidate = directory / name
        if _is_executable(candidate):
            return str(candidate)
    raise SettingsMissingError(
        f"cannot find the {tool} executable on PATH or in the usual install locations",
        title=f"{tool} not found",
        suggestions=[
            f'set {setting_name} = "/path/to/{tool}" in plughost.toml',
            _DOCS.get(tool, f"install {tool}"),
        ],
    )


def _setting(settings: Any, key: str) -> str:
    value = getattr(settings, key, "") if settings is not None else ""
    return str(value or "")


def _find_tool(
    tool: str,
    settings: Any,
    home: Path | None,
    path_env: str | None,
    system_dirs: Sequence[Path] | None,
) -> str:
    setting = _setting(settings, _SETTING.get(tool, f"{tool}_binary"))
    return find_binary(tool, setting=setting, home=home, path_env=path_env, system_dirs=system_dirs)


def find_go_binary(
    *,
    settings: Any = None,
    home: Path | None = None,
    path_env: str | None = None,
    system_dirs: Sequence[Path] | None = None,
) -> str:
    """The go tool (setting ``go_binary``, PATH, /usr/local/go/bin, ~/go/bin, ~/sdk/go*/bin ...)."""
    return _find_tool("go", settings, home, path_env, system_dirs)


def find_node_binary(
    *,
    settings: Any = None,
    home: Path | None = None,
    path_env: str | None = None,
    system_dirs: Sequence[Path] | None = None,
) -> str:
    """Node.js (setting ``node_binary``, PATH, nvm newest version first, volta, /usr/local/bin ...)."""
    return _find_tool("node", settings, home, path_env, system_dirs)


def find_pnpm_binary(
    *,
    settings: Any = None,
    home: Path | None = None,
    path_env: str | None = None,
    system_dirs: Sequence[Path] | None = None,
) -> str:
    """pnpm (setting ``pnpm_binary``, PATH, ~/.local/share/pnpm, ~/Library/pnpm, nvm, volta ...)."""
    return _find_tool("pnpm", settings, home, path_env, system_dirs)


@dataclasses.dataclass
class BuildOpts:
    """The tool paths a build uses (the seed's types.BuildOpts); blank = find it."""

    go_path: str = ""
    node_path: str = ""
    pnpm_path: str = ""

    def binaries(self) -> list[str]:
        return [p for p in (self.go_path, self.node_path, self.pnpm_path) if p]


_FINDERS = {"go": find_go_binary, "node": find_node_binary, "pnpm": find_pnpm_binary}
_FIELDS = {"go": "go_path", "node": "node_path", "pnpm": "pnpm_path"}


def hydrate_build_opts(
    opts: BuildOpts,
    *,
    require: Iterable[str] = ("go", "node", "pnpm"),
    optional: Iterable[str] = (),
    settings: Any = None,
    home: Path | None = None,
    path_env: str | None = None,
    system_dirs: Sequence[Path] | None = None,
) -> BuildOpts:
    """Fill the blank paths of ``opts`` in place (and return it).

    A tool in ``require`` that cannot be found raises SettingsMissingError; one
    in ``optional`` is left blank (a Go-only build does not need pnpm).
    """
    kw: dict[str, Any] = {
        "settings": settings,
        "home": home,
        "path_env": path_env,
        "system_dirs": system_dirs,
    }
    required = list(require)
    for tool in dict.fromkeys([*required, *optional]):
        field = _FIELDS[tool]
        if getattr(opts, field):
            continue
        try:
            setattr(opts, field, _FINDERS[tool](**kw))
        except SettingsMissingError:
            if tool in required:
                raise
    return opts


@dataclasses.dataclass(frozen=True)
class PreparedCommand:
    """A command ready for ``subprocess`` / ``asyncio.create_subprocess_exec``."""

    argv: list[str]
    env: dict[str, str]
    cwd: str | None = None


def prepare_command_with_binaries(
    command: str,
    args: Sequence[str] = (),
    *binaries: str,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> PreparedCommand:
    """``command args...`` with the directories of ``binaries`` put first on PATH.

    So that ``pnpm`` finds the ``node`` we found, and a build script's ``go``
    is the one we found, even when the host was started without a login PATH.
    """
    base = dict(os.environ if env is None else env)
    dirs = [str(Path(b).parent) for b in binaries if b]
    old = [p for p in base.get("PATH", "").split(os.pathsep) if p]
    base["PATH"] = os.pathsep.join(dict.fromkeys([*dirs, *old]))
    return PreparedCommand([command, *args], base, str(cwd) if cwd is not None else None)
