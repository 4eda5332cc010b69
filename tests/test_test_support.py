"""The test suite's own support: polling (tests/waiting.py) and the toolchain policy
(tests/toolchains.py: skip with a how-to locally, fail in CI)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import toolchains
from waiting import async_wait_until, wait_until


# -- waiting ------------------------------------------------------------------------------
def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([0, "", None, "ready"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0) == "ready"


def test_wait_until_fails_with_the_message_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(
        AssertionError, match=r"after 0.05 s waiting for the thing; last value: \[\]"
    ):
        wait_until(list, timeout=0.05, interval=0.01, message="the thing")
    assert time.monotonic() - started < 2


def test_wait_until_checks_once_more_at_the_deadline() -> None:
    started = time.monotonic()
    assert wait_until(lambda: time.monotonic() - started > 0.05, timeout=0.05, interval=1)


async def test_async_wait_until_awaits_async_predicates_and_lazy_messages() -> None:
    state = {"n": 0}

    async def bumped() -> int:
        state["n"] += 1
        return state["n"] if state["n"] >= 3 else 0

    assert await async_wait_until(bumped, timeout=5, interval=0) == 3
    with pytest.raises(AssertionError, match="waiting for n is 3; last value: False"):
        await async_wait_until(lambda: False, timeout=0.02, message=lambda: f"n is {state['n']}")


# -- toolchains ---------------------------------------------------------------------------
@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No tool on PATH, no $GO, no system Go or Chromium."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("GO", raising=False)
    monkeypatch.setattr(toolchains, "SYSTEM_GO", str(tmp_path / "no-go"))
    monkeypatch.setattr(toolchains, "CHROMIUM", tmp_path / "no-chromium")
    return tmp_path


@pytest.mark.parametrize(
    ("require", "reason"),
    [
        (toolchains.require_go, r"Go not found: install Go >= 1\.26 .* or set \$GO to run"),
        (toolchains.require_node, "node not found: install Node.js"),
        (toolchains.require_chromium, "Chromium not found .*: run scripts/install_browser.sh"),
    ],
)
def test_a_missing_toolchain_skips_with_a_how_to_and_fails_in_ci(
    nothing_installed: Path, monkeypatch: pytest.MonkeyPatch, require: object, reason: str
) -> None:
    assert callable(require)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=reason):
        require()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(
        pytest.fail.Exception, match=f"CI=true, so this test must run, but {reason}"
    ):
        require()


def test_too_old_a_go_skips(nothing_installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    go = nothing_installed / "go"
    go.write_text("#!/bin/sh\necho go version go1.20.3 linux/amd64\n")
    go.chmod(0o755)
    monkeypatch.setenv("GO", str(go))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"is 1\.20, older than 1\.26"):
        toolchains.require_go()
    assert toolchains.require_go((1, 20)) == str(go)
