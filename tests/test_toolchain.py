"""Tool discovery on a fake HOME: PATH first, then install locations (nvm, volta, sdk globs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from plughost.dev.toolchain import (
    BuildOpts,
    candidate_dirs,
    find_go_binary,
    find_node_binary,
    find_pnpm_binary,
    hydrate_build_opts,
    prepare_command_with_binaries,
)
from plughost.errors import SettingsMissingError
from plughost.settings import Settings


def tool(path: Path, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


NOWHERE = {"path_env": "", "system_dirs": []}


def test_path_comes_first(tmp_path: Path, home: Path) -> None:
    on_path = tool(tmp_path / "bin" / "go")
    tool(home / "sdk" / "go1.22.0" / "bin" / "go")
    found = find_go_binary(home=home, path_env=str(tmp_path / "bin"), system_dirs=[])
    assert found == str(on_path)


def test_nvm_newest_version_first(home: Path) -> None:
    for version in ("v9.11.2", "v18.19.0", "v20.11.1", "v20.9.0"):
        tool(home / ".nvm" / "versions" / "node" / version / "bin" / "node")
    tool(home / ".volta" / "bin" / "node")
    found = find_node_binary(home=home, **NOWHERE)
    assert found == str(home / ".nvm/versions/node/v20.11.1/bin/node")


def test_volta_when_there_is_no_nvm(home: Path) -> None:
    volta = tool(home / ".volta" / "bin" / "node")
    assert find_node_binary(home=home, **NOWHERE) == str(volta)
    pnpm = tool(home / ".volta" / "bin" / "pnpm")
    assert find_pnpm_binary(home=home, **NOWHERE) == str(pnpm)


def test_pnpm_home_locations(home: Path) -> None:
    library = tool(home / "Library" / "pnpm" / "pnpm")
    assert find_pnpm_binary(home=home, **NOWHERE) == str(library)
    share = tool(home / ".local" / "share" / "pnpm" / "pnpm")
    assert find_pnpm_binary(home=home, **NOWHERE) == str(share)


def test_go_sdk_glob_and_gopath_bin(home: Path) -> None:
    tool(home / "sdk" / "go1.9.7" / "bin" / "go")
    newest = tool(home / "sdk" / "go1.22.3" / "bin" / "go")
    assert find_go_binary(home=home, **NOWHERE) == str(newest)
    gobin = tool(home / "go" / "bin" / "go")
    assert find_go_binary(home=home, **NOWHERE) == str(gobin)


def test_system_locations_after_home(tmp_path: Path, home: Path) -> None:
    system = tool(tmp_path / "usr-local-go" / "bin" / "go")
    found = find_go_binary(home=home, path_env="", system_dirs=[system.parent])
    assert found == str(system)
    defaults = candidate_dirs("go", home=home)
    assert Path("/usr/local/go/bin") in defaults and Path("/opt/homebrew/bin") in defaults
    assert defaults.index(home / "go" / "bin") < defaults.index(Path("/usr/local/go/bin"))


def test_non_executable_files_are_skipped(home: Path) -> None:
    tool(home / ".volta" / "bin" / "node", executable=False)
    with pytest.raises(SettingsMissingError):
        find_node_binary(home=home, **NOWHERE)


@pytest.mark.parametrize(
    ("finder", "setting"),
    [
        (find_go_binary, "go_binary"),
        (find_node_binary, "node_binary"),
        (find_pnpm_binary, "pnpm_binary"),
    ],
)
def test_nothing_found_names_the_setting(home: Path, finder: object, setting: str) -> None:
    with pytest.raises(SettingsMissingError) as info:
        finder(home=home, **NOWHERE)  # type: ignore[operator]
    assert info.value.type == "settings_missing_config"
    assert any(setting in s for s in info.value.suggestions)


def test_setting_wins_and_a_bad_setting_is_named(tmp_path: Path, home: Path) -> None:
    configured = tool(tmp_path / "custom" / "go")
    tool(tmp_path / "bin" / "go")
    settings = Settings(go_binary=str(configured))
    found = find_go_binary(settings=settings, home=home, path_env=str(tmp_path / "bin"))
    assert found == str(configured)
    with pytest.raises(SettingsMissingError, match="go_binary"):
        find_go_binary(settings=Settings(go_binary=str(tmp_path / "nope")), home=home)


def test_hydrate_build_opts_fills_blanks(tmp_path: Path, home: Path) -> None:
    go = tool(home / "go" / "bin" / "go")
    node = tool(home / ".volta" / "bin" / "node")
    opts = BuildOpts(pnpm_path="/explicit/pnpm")
    same = hydrate_build_opts(opts, home=home, **NOWHERE)  # type: ignore[arg-type]
    assert same is opts
    assert (opts.go_path, opts.node_path, opts.pnpm_path) == (str(go), str(node), "/explicit/pnpm")

    optional = hydrate_build_opts(
        BuildOpts(),
        require=["go"],
        optional=["pnpm"],
        home=home,
        **NOWHERE,  # type: ignore[arg-type]
    )
    assert optional.go_path == str(go) and optional.pnpm_path == ""
    with pytest.raises(SettingsMissingError, match="pnpm"):
        hydrate_build_opts(BuildOpts(), require=["pnpm"], home=home, **NOWHERE)  # type: ignore[arg-type]


def test_prepare_command_with_binaries_prepends_their_directories() -> None:
    env = {"PATH": "/usr/bin:/bin", "KEEP": "1"}
    prepared = prepare_command_with_binaries(
        "pnpm",
        ["run", "dev"],
        "/opt/node/bin/node",
        "/opt/pnpm/pnpm",
        "/opt/node/bin/npm",
        env=env,
        cwd="/src",
    )
    assert prepared.argv == ["pnpm", "run", "dev"]
    assert prepared.env["PATH"].split(os.pathsep) == [
        "/opt/node/bin",
        "/opt/pnpm",
        "/usr/bin",
        "/bin",
    ]
    assert prepared.env["KEEP"] == "1" and prepared.cwd == "/src"
    assert env["PATH"] == "/usr/bin:/bin"  # the caller's mapping is not changed
    again = prepare_command_with_binaries("go", [], "/usr/bin/go", env=env)
    assert again.env["PATH"] == "/usr/bin:/bin"  # no duplicates
    default = prepare_command_with_binaries("x", [], "/a/b")
    assert default.env["PATH"].startswith("/a" + os.pathsep)
