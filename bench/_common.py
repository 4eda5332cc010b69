"""Shared pieces of the benchmarks: timing, percentiles, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
EXAMPLES = REPO / "src" / "plughost" / "examples"
GO_OUT = Path(os.environ.get("BENCH_GO_OUT") or REPO / ".cache" / "goplugins")
"""Where the Go plugins are built; BENCH_GO_OUT keeps a bench off a build the tests share."""
console = Console()


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), in the values' unit."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": pct(values, 50),
        "p90": pct(values, 90),
        "max": max(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


@contextmanager
def timer() -> Iterator[list[float]]:
    """Yields a one-element list that receives the elapsed milliseconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append((time.perf_counter() - start) * 1000)


def go_plugins() -> Path:
    """Build (or reuse) the Go test plugins and reference host; fails clearly without Go."""
    subprocess.run(["bash", str(REPO / "scripts" / "build_go_plugins.sh"), str(GO_OUT)], check=True)
    return GO_OUT


def fresh_root() -> Path:
    return Path(tempfile.mkdtemp(prefix="plughost-bench-"))


def install_copy(root: Path, source: Path, plugin_id: str | None = None) -> Path:
    """Copy a plugin directory into ``root/plugins``, optionally under another id."""
    plugin_id = plugin_id or source.name
    dest = root / "plugins" / plugin_id
    shutil.copytree(source, dest, symlinks=True)
    if plugin_id != source.name:
        meta = dest / "plugin.yaml"
        text = meta.read_text().replace(f"id: {source.name}", f"id: {plugin_id}", 1)
        meta.write_text(text)
    return dest


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    console.print(f"wrote {path.relative_to(REPO)}")
    return path
