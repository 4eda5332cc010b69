"""Build the Go interop plugins (tests/goplugins) for the tests that run them.

``go_plugins(tmp_factory)`` runs ``scripts/build_go_plugins.sh`` into the
repository's ``.cache/goplugins`` (what ``scripts/test.sh`` builds, so in CI
and on a second run this is a no-op served from Go's build cache), then copies
the installed-plugin directories into a private temporary directory, so a
rebuild started by someone else meanwhile cannot change a binary under a test.

Without a Go toolchain (or with one too old for the pinned modules) the
interop tests follow the policy of tests/toolchains.py: skipped on a
developer's machine, saying how to enable them, failed in CI (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
from toolchains import require_go

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_go_plugins.sh"
CACHE_DIR = REPO / ".cache" / "goplugins"
# Copied unless the caller names others; every one is ~20 MB. All that the script
# builds: gohello, goecho, gobidir and the Omniview SDK plugins omnihello,
# omnisettings, omniresource, omnipanic and omnilegacy (tests/goplugins/README.md).
PLUGINS = ("gohello", "gobidir", "omnihello")


_built: list[bool] = []  # the script ran in this test session: once is enough


def go_plugins(tmp_factory: pytest.TempPathFactory, plugins: Iterable[str] = PLUGINS) -> Path:
    """Build the Go plugins; return a private directory holding a copy of each of ``plugins``."""
    go = require_go(purpose="the Go interop tests")
    if not _built:
        _build(go)
        _built.append(True)
    out = tmp_factory.mktemp("goplugins")
    for name in plugins:
        shutil.copytree(CACHE_DIR / name, out / name)
    return out


def _build(go: str) -> None:
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
