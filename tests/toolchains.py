"""The one policy for tests that need an optional toolchain (Go, node, Chromium).

``require_go()``, ``require_node()`` and ``require_chromium()`` return the tool
when it is there. When it is missing they skip the test on a developer's
machine, with a reason saying how to enable it, and fail it in CI
(``CI=true``), where every test must run. Tests use them through the ``go``,
``node`` and ``chromium`` fixtures of conftest.py (e.g.
``pytestmark = pytest.mark.usefixtures("node")``), or call them directly in a
fixture of their own.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

MIN_GO = (1, 26)
SYSTEM_GO = "/usr/local/go/bin/go"
CHROMIUM = Path("/usr/bin/chromium")


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def unavailable(problem: str, how_to_enable: str) -> NoReturn:
    """Skip with "<problem>: <how to enable>" outside CI; fail the test in CI."""
    message = f"{problem}: {how_to_enable}"
    if in_ci():
        pytest.fail(f"CI=true, so this test must run, but {message}", pytrace=False)
    pytest.skip(message)


# -- Go ---------------------------------------------------------------------------------
def find_go() -> str | None:
    """The Go tool the build scripts use: $GO, then PATH, then /usr/local/go/bin/go."""
    for candidate in (os.environ.get("GO"), shutil.which("go"), SYSTEM_GO):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@functools.cache
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


def require_go(minimum: tuple[int, int] = MIN_GO, purpose: str = "the Go tests") -> str:
    """The path of a Go toolchain >= ``minimum``."""
    wanted = f"{minimum[0]}.{minimum[1]}"
    how = (
        f"install Go >= {wanted} (https://go.dev/dl/; on PATH or at {SYSTEM_GO}) or set $GO "
        f"to run {purpose}; the first build also needs the Go module proxy"
    )
    go = find_go()
    if go is None:
        unavailable("Go not found", how)
    version = go_version(go)
    if version is None:
        unavailable(f"Go at {go} does not run ('{go} version' failed)", how)
    if version < minimum:
        unavailable(f"Go at {go} is {version[0]}.{version[1]}, older than {wanted}", how)
    return go


# -- node -------------------------------------------------------------------------------
def require_node(purpose: str = "the UI build and dev-server tests") -> str:
    """The path of ``node`` on PATH (where plughost itself looks first)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node not found", f"install Node.js (node on PATH) to run {purpose}")
    return node


# -- Chromium ---------------------------------------------------------------------------
def require_chromium(purpose: str = "the dashboard browser tests") -> Path:
    """Debian's Chromium, driven through the playwright package (never a downloaded browser)."""
    if not CHROMIUM.exists():
        unavailable(
            f"Chromium not found ({CHROMIUM} is missing)",
            f"run scripts/install_browser.sh (apt-get install chromium) to run {purpose}",
        )
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        unavailable(
            "the playwright package is not installed",
            f"run scripts/bootstrap.sh (it installs the test dependencies) to run {purpose}",
        )
    return CHROMIUM
