"""Build the Go interop plugins (tests/goplugins) for the tests that run them.

``go_plugins(tmp_factory)`` runs ``scripts/build_go_plugins.sh`` into the
repository's ``.cache/goplugins`` (what ``scripts/test.sh`` builds, so in CI
and on a second run this is a no-op served from Go's build cache), then copies
the installed-plugin directories into a private temporary directory, so a
rebuild started by someone else meanwhile cannot change a binary under a test.

Without a Go toolchain (or with one too old for the pinned modules) the
interop tests skip on a developer's machine, saying how to enable them, and
fail in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_go_plugins.sh"
CACHE_DIR = REPO / ".cache" / "goplugins"
MIN_GO = (1, 26)
PLUGINS = ("gohello", "omnihello")
HOW_TO_ENABLE = (
    f"install Go >= {MIN_GO[0]}.{MIN_GO[1]} to run the interop tests: https://go.dev/dl/ "
    "(on PATH, at /usr/local/go/bin/go, or named by $GO); the first build also needs "
    "the Go module proxy"
)


def find_go() -> str | None:
    """The Go tool the build script would use: $GO, then PATH, then /usr/local/go/bin/go."""
    for candidate in (os.environ.get("GO"), shutil.which("go"), "/usr/local/go/bin/go"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def go_version(go: str) -> tuple[int, int] | None:
    """(major, minor) of ``go version``, or None if it does not run."""
    try:
        out = subprocess.run(
            [go, "version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"\bgo(\d+)\.(\d+)", out)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _unavailable(reason: str) -> None:
    """Skip on a developer's machine; fail in CI, where the interop tests must run."""
    message = f"{HOW_TO_ENABLE} ({reason})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the Go interop tests cannot run: {message}", pytrace=False)
    pytest.skip(message)


def go_plugins(tmp_factory: pytest.TempPathFactory) -> Path:
    """Build the Go plugins and return a private directory holding gohello/ and omnihello/."""
    go = find_go()
    if go is None:
        _unavailable("no Go toolchain found")
    assert go is not None
    version = go_version(go)
    if version is None:
        _unavailable(f"{go} does not run ('{go} version' failed)")
    elif version < MIN_GO:
        _unavailable(f"{go} is Go {version[0]}.{version[1]}, too old")
    env = {**os.environ, "GO": go}
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(CACHE_DIR)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        # Go is there but the build broke: a real failure everywhere, never a skip.
        pytest.fail(
            f"scripts/build_go_plugins.sh failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}",
            pytrace=False,
        )
    out = tmp_factory.mktemp("goplugins")
    for name in PLUGINS:
        shutil.copytree(CACHE_DIR / name, out / name)
    return out
