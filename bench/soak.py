"""Soak benchmark: 50 plugins, random SIGKILLs, nothing may leak.

``python -m bench soak`` (not part of a plain ``python -m bench``: it runs for
minutes). 50 copies of the Python ``hello`` example (ids ``soak-00`` ..
``soak-49``; the SDK takes its id, which is also the magic cookie's value,
from plugin.yaml, so copies work, where copies of the Go ``gohello``, whose
cookie value is hard-coded, would not) run under one PluginManager with a
large crash budget and a short backoff. Every ``BENCH_SOAK_KILL_EVERY``
seconds (default 0.5) a random Running plugin is SIGKILLed, for
``BENCH_SOAK_SECONDS`` (default 600 = 10 minutes); then the run settles
(every plugin Running again, or given up), the host's usage is sampled once
more, and the manager shuts down.

Reported: kills, restarts (``plugin/recovered``), recoveries that gave up and
plugins that ended Failed, kill-to-recovered latency, the host's open fds,
threads, asyncio tasks and RSS at the start (all plugins up, after a short
warm-up of kills) and at the end, and every process left behind after
shutdown (goal: none). ``BENCH_SOAK_SEED`` makes the kill sequence
repeatable.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from plughost import PluginManager, SettingsProvider
from plughost.events import (
    EVENT_CRASH,
    EVENT_CRASH_RECOVERY_FAILED,
    EVENT_RECOVERED,
    AsyncSubscription,
)
from plughost.phases import Phase

from ._common import EXAMPLES, fresh_root, install_copy, print_table, summary, write_result

PLUGINS = int(os.environ.get("BENCH_SOAK_PLUGINS", "50"))
SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
KILL_EVERY = float(os.environ.get("BENCH_SOAK_KILL_EVERY", "0.5"))
WARMUP_KILLS = 20  # before the "start" sample: gRPC and allocator pools fill first
SAMPLE_EVERY = 10.0  # seconds between usage samples (for the trend in the JSON)
SETTLE = 120.0  # seconds to wait for every plugin to be Running again at the end

SETTINGS: dict[str, Any] = {
    "backoff_initial": 0.05,
    "backoff_max": 0.5,
    "recovery_attempts": 5,
    "crash_budget": 1_000_000,  # never give up because of the budget: kills are ours
    "start_timeout": 30.0,  # 50 Python plugins starting on 2 cores at first
    "health_interval": 5.0,  # real periodic health checks while killing
    "health_timeout": 10.0,
    "load_concurrency": 8,
    "stop_grace": 5.0,
    "kill_grace": 2.0,
}


def _usage(manager: PluginManager) -> dict[str, float]:
    gc.collect()
    me = psutil.Process()
    return {
        "fds": me.num_fds(),
        "threads": me.num_threads(),
        "tasks": len(asyncio.all_tasks()),
        "rss_mib": me.memory_info().rss / (1024 * 1024),
        "subscribers": manager.bus.subscriber_count(),
        "children": len(psutil.Process().children(recursive=True)),
    }


def _left_behind(root: Path) -> list[dict[str, Any]]:
    """Live processes (anywhere) running something under ``root``, plus our own children."""
    needle = str(root)
    found: dict[int, dict[str, Any]] = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            found[proc.pid] = {"pid": proc.pid, "status": proc.status(), "cmd": proc.cmdline()}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if any(needle in part for part in cmd) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found[proc.pid] = {"pid": proc.pid, "status": proc.info["status"], "cmd": cmd}
    return list(found.values())


class _Tally:
    """Counts the manager's crash and recovery events; times kill -> recovered."""

    def __init__(self, streams: list[AsyncSubscription]) -> None:
        self.streams = streams
        self.crashes = 0
        self.restarts = 0
        self.gave_up: list[dict[str, Any]] = []
        self.killed_at: dict[str, float] = {}
        self.recover_ms: list[float] = []
        self.tasks = [asyncio.create_task(self._pump(s)) for s in streams]

    async def _pump(self, stream: AsyncSubscription) -> None:
        async for event in stream:
            plugin_id = event.plugin_id or ""
            if event.name == EVENT_CRASH:
                self.crashes += 1
            elif event.name == EVENT_RECOVERED:
                self.restarts += 1
                killed = self.killed_at.pop(plugin_id, None)
                if killed is not None:
                    self.recover_ms.append((time.perf_counter() - killed) * 1000)
            elif event.name == EVENT_CRASH_RECOVERY_FAILED:
                self.gave_up.append({"plugin": plugin_id, "reason": event.payload.get("reason")})

    async def close(self) -> None:
        for stream in self.streams:
            stream.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def _running(manager: PluginManager) -> list[tuple[str, int]]:
    return [
        (info.id, info.pid)
        for info in manager.list_plugins()
        if info.phase is Phase.RUNNING and info.pid is not None
    ]


def _kill_one(manager: PluginManager, rng: random.Random, tally: _Tally) -> bool:
    candidates = _running(manager)
    if not candidates:
        return False
    plugin_id, pid = rng.choice(candidates)
    backend = manager.backend(plugin_id)
    if backend is None or backend.pid != pid or backend.exited:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    tally.killed_at.setdefault(plugin_id, time.perf_counter())
    return True


def _settled(manager: PluginManager) -> bool:
    infos = manager.list_plugins()
    if any(info.phase not in (Phase.RUNNING, Phase.FAILED) for info in infos):
        return False
    # A recovery is done once it has published plugin/recovered, a moment after Running.
    return not any(manager.health.state(info.id).recovering for info in infos)


async def _settle(manager: PluginManager) -> float:
    """Wait until no plugin is between a crash and Running/Failed; returns the seconds taken."""
    start = time.monotonic()
    while time.monotonic() - start < SETTLE and not _settled(manager):
        await asyncio.sleep(0.1)
    return time.monotonic() - start


async def main() -> None:
    seed = int(os.environ.get("BENCH_SOAK_SEED", str(random.randrange(2**31))))
    rng = random.Random(seed)
    root = fresh_root()
    ids = [f"soak-{i:02d}" for i in range(PLUGINS)]
    for plugin_id in ids:
        install_copy(root, EXAMPLES / "hello", plugin_id)
    manager = PluginManager(root, settings=SettingsProvider(None, SETTINGS))
    # One warning per kill ("plugin ... exited unexpectedly") would bury the tables.
    logging.getLogger("plughost").setLevel(logging.ERROR)
    host_before = _usage(manager)
    tally = _Tally(
        [manager.bus.stream(name, maxsize=100_000) for name in ("plugin/crash*", EVENT_RECOVERED)]
    )
    kills = 0
    samples: list[dict[str, float]] = []
    try:
        t0 = time.monotonic()
        await manager.initialize()
        init_s = time.monotonic() - t0
        not_running = [i.id for i in manager.list_plugins() if i.phase is not Phase.RUNNING]
        if not_running:
            raise RuntimeError(f"plugins did not start: {not_running}")

        for _ in range(WARMUP_KILLS):
            kills += _kill_one(manager, rng, tally)
            await asyncio.sleep(KILL_EVERY)
        await _settle(manager)
        start = _usage(manager)

        t0 = time.monotonic()
        next_sample = t0
        while (elapsed := time.monotonic() - t0) < SECONDS:
            kills += _kill_one(manager, rng, tally)
            if time.monotonic() >= next_sample:
                samples.append({"t": round(elapsed, 1), **_usage(manager)})
                next_sample += SAMPLE_EVERY
            await asyncio.sleep(KILL_EVERY)
        settle_s = await _settle(manager)
        end = _usage(manager)
        failed = [i.id for i in manager.list_plugins() if i.phase is Phase.FAILED]
        not_settled = [
            f"{i.id}:{i.phase.value}"
            for i in manager.list_plugins()
            if i.phase not in (Phase.RUNNING, Phase.FAILED)
        ]
    finally:
        t0 = time.monotonic()
        await manager.shutdown()
        shutdown_s = time.monotonic() - t0
        await tally.close()
        manager.bus.close()
    left = _left_behind(root)
    for entry in left:  # clean up after ourselves, but report it
        with contextlib.suppress(psutil.Error):
            psutil.Process(entry["pid"]).kill()
    host_after = _usage(manager)

    recover = summary(tally.recover_ms)
    row = {
        "plugins": PLUGINS,
        "seconds": SECONDS,
        "kills": kills,
        "restarts": tally.restarts,
        "recoveries given up": len(tally.gave_up),
        "plugins ended Failed": len(failed),
        "kill to recovered p50 ms": recover["p50"],
        "kill to recovered p90 ms": recover["p90"],
        "processes left behind": len(left),
        "shutdown s": shutdown_s,
    }
    growth = [
        {
            "host": key,
            "start": start[key],
            "end": end[key],
            "growth": end[key] - start[key],
            "after shutdown": host_after[key],
        }
        for key in ("fds", "threads", "tasks", "rss_mib", "subscribers", "children")
    ]
    print_table(
        f"soak: {PLUGINS} Python plugins, a random SIGKILL every {KILL_EVERY:g} s "
        f"for {SECONDS:g} s (seed {seed})",
        [{"metric": key, "value": value} for key, value in row.items()],
    )
    print_table("soak: host usage, start (all up, after warm-up) vs end (settled)", growth)
    if left:
        print(f"processes left behind after shutdown: {left}")
    if not_settled:
        print(f"plugins still not settled after {SETTLE:g} s: {not_settled}")
    write_result(
        "soak",
        {
            "seed": seed,
            "settings": SETTINGS,
            "kill_every_s": KILL_EVERY,
            "warmup_kills": WARMUP_KILLS,
            "summary": row,
            "usage": {
                "before_manager": host_before,
                "start": start,
                "end": end,
                "after_shutdown": host_after,
                "growth": {r["host"]: r["growth"] for r in growth},
            },
            "timings_s": {"initialize": init_s, "settle": settle_s, "shutdown": shutdown_s},
            "crash_events_first_of_cycle": tally.crashes,
            "gave_up": tally.gave_up,
            "failed": failed,
            "not_settled": not_settled,
            "left_behind": left,
            "samples": samples,
            "raw": {"recover_ms": tally.recover_ms},
        },
    )
