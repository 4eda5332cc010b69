"""A stop waits for the plugin's exit, not for its answer, and says where its time went.

Real plugin processes: the ``hello`` example and ``tests/plugins/problem``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from plughost.process.backend import StopPath
from plughost.process.local import LaunchSpec, start_process

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

REPO = Path(__file__).resolve().parents[1]
HELLO = REPO / "examples" / "hello"
PROBLEM = Path(__file__).resolve().parent / "plugins" / "problem"


def _spec(location: Path, run_dir: Path, **kw: Any) -> LaunchSpec:
    return LaunchSpec(
        plugin_id=location.name,
        executable=location / "bin" / "plugin",
        cwd=location,
        socket_dir=run_dir,
        **kw,
    )


async def test_a_stop_records_its_steps_and_leaves_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    backend = await start_process(_spec(HELLO, run_dir))
    pid = backend.pid
    assert pid is not None
    assert await backend.stop() is StopPath.GRACEFUL
    marks = backend.stop_timings
    assert marks["began"] <= marks["shutdown sent"] <= marks["exited"] <= marks["cleaned"]
    assert marks["channel closed"] <= marks["cleaned"]
    assert backend.returncode == 0
    assert not psutil.pid_exists(pid)  # reaped, not a zombie
    assert list(run_dir.iterdir()) == []  # its socket directory is gone when stop returns
    again = dict(marks)
    assert await backend.stop() is StopPath.GRACEFUL  # idempotent: nothing runs twice
    assert backend.stop_timings == again


async def test_a_refused_shutdown_goes_to_sigterm_without_waiting_the_grace(
    tmp_path: Path,
) -> None:
    # No GRPCController: the request fails at once, and the long grace is not waited.
    spec = _spec(PROBLEM, tmp_path / "run", stop_grace=20.0, kill_grace=5.0)
    spec.extra_env = {"PROBLEM_MODE": "bare"}
    backend = await start_process(spec)
    started = time.monotonic()
    assert await backend.stop() is StopPath.TERMINATED
    assert time.monotonic() - started < 5
    assert list((tmp_path / "run").iterdir()) == []
