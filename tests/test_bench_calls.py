"""Smoke test of the calls benchmark (``python -m bench calls``, bench/calls.py).

Runs the whole measurement with tiny counts — goecho under plughost's PluginClient
stub and the bare grpc.aio stub, and go-plugin's own host (``refhost -calls``) — then
the summary and the tables, so CI notices when the benchmark machinery breaks. The
figures themselves are not checked (two shared cores). Needs Go (the ``go`` fixture:
skipped with a how-to locally, failed in CI).
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from gobuild import CACHE_DIR, REPO, go_plugins

pytestmark = pytest.mark.interop

CASES = ("plughost", "bare", "go")


@pytest.fixture
def bench_calls(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``bench.calls`` (the bench package lives at the repository root, not in src/)."""
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("bench.calls")


@pytest.fixture
def go_out(go: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built Go plugins plus goecho and refhost, in a private directory."""
    out = go_plugins(tmp_path_factory)
    shutil.copytree(CACHE_DIR / "goecho", out / "goecho")
    shutil.copy2(CACHE_DIR / "refhost", out / "refhost")
    return out


async def test_calls_benchmark_runs_with_tiny_counts(
    bench_calls: ModuleType, go_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    counts = bench_calls.Counts(
        unary=20, parallel=40, callers=4, stream=50, warmup=3, rounds=2, path_calls=50
    )
    raw = await bench_calls.measure(go_out, counts, root=tmp_path / "root")

    assert set(raw) == {*CASES, "client_path"}
    assert all(us > 0 for us in raw["client_path"].values())
    for case in CASES:
        data = raw[case]
        assert len(data["unary_us"]) == 20, case
        assert all(us > 0 for us in data["unary_us"]), case
        assert data["parallel"]["calls"] == 40 and data["parallel"]["callers"] == 4, case
        assert data["parallel"]["seconds"] > 0, case
        assert data["stream"]["messages"] == 50 and data["stream"]["seconds"] > 0, case

    summary = bench_calls.summarize(raw)
    json.dumps({"counts": counts.__dict__, "summary": summary, "raw": raw})  # what is written
    assert [row["case"] for row in summary["rows"]] == list(CASES)
    assert set(summary["goals_met"]) == set(bench_calls.GOALS)
    assert summary["ratios_plughost_over_go"]["p50 ratio"] > 0

    bench_calls.report(summary, counts)
    assert "plughost" in capsys.readouterr().out


def test_calls_is_a_default_benchmark(bench_calls: ModuleType) -> None:
    runner = importlib.import_module("bench.__main__")
    assert runner.BENCHMARKS["calls"] is bench_calls.main
    assert "calls" in runner.DEFAULT
