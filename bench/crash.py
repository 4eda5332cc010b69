"""Crash benchmark: SIGKILL a Running plugin 20 times.

Detection: kill -> Recovering (the exit watcher, no polling). Recovery:
kill -> Running again with the backoff set to 0, next to the plugin's own
start time measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

from plughost import PluginManager, SettingsProvider
from plughost.events import EVENT_STATE_CHANGE

from ._common import EXAMPLES, fresh_root, install_copy, print_table, summary, timer, write_result

KILLS = int(os.environ.get("BENCH_CRASH_KILLS", "20"))


async def _wait_phase(stream: object, phase: str) -> float:
    async for event in stream:  # type: ignore[attr-defined]
        if event.payload.get("to") == phase:
            return time.perf_counter()
    raise RuntimeError("event stream ended")


async def main() -> None:
    root = fresh_root()
    install_copy(root, EXAMPLES / "hello")
    # Every kill comes right after the last recovery: as many attempts as kills, so the
    # restarter never gives up (that policy is not what this measures).
    overrides = {"backoff_initial": 0.0, "crash_budget": KILLS + 5, "recovery_attempts": KILLS + 5}
    settings = SettingsProvider(None, overrides)
    manager = PluginManager(root, settings=settings)
    await manager.initialize()
    detect_ms, recover_ms = [], []
    try:
        for _ in range(KILLS):
            pid = manager.get_plugin("hello").pid
            assert pid
            stream = manager.bus.stream(EVENT_STATE_CHANGE)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            detect_ms.append(
                (await asyncio.wait_for(_wait_phase(stream, "Recovering"), 10) - t0) * 1000
            )
            recover_ms.append(
                (await asyncio.wait_for(_wait_phase(stream, "Running"), 30) - t0) * 1000
            )
            stream.close()
        start_ms = []
        for _ in range(KILLS):
            await manager.unload_plugin("hello")
            with timer() as t:
                await manager.load_plugin("hello")
            start_ms += t
    finally:
        await manager.shutdown()
    d, r, s = summary(detect_ms), summary(recover_ms), summary(start_ms)
    row = {
        "kills": KILLS,
        "detect p50 ms": d["p50"],
        "detect max ms": d["max"],
        "recover p50 ms": r["p50"],
        "start p50 ms": s["p50"],
        "recover - start ms": r["p50"] - s["p50"],
    }
    print_table("crash: detection and recovery after SIGKILL", [row])
    print("goals: detection p50 <= 50 ms; recovery p50 <= start p50 + 100 ms")
    write_result(
        "crash",
        {
            "summary": row,
            "raw": {"detect_ms": detect_ms, "recover_ms": recover_ms, "start_ms": start_ms},
        },
    )
