"""Initialize benchmark: 50 installed Python plugins to Running, then shutdown.

The floor, in the same run: spawning the same 50 plugin processes to their
handshake line with the same parallelism and no manager at all. The parallelism
is the host's default (one per CPU core, settings.load_concurrency = 0), and for
comparison the fixed 4 it used to be. The host's own CPU time (all its threads,
user and system) during initialize is reported per plugin: on a machine with few
cores it is taken from the plugins' starts.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
from pathlib import Path

import psutil

from plughost import Phase, PluginManager
from plughost.process.handshake import build_plugin_env
from plughost.settings import Settings, SettingsProvider

from ._common import EXAMPLES, fresh_root, install_copy, print_table, timer, write_result

PLUGINS = int(os.environ.get("BENCH_INIT_PLUGINS", "50"))
PARALLEL = Settings().effective_load_concurrency
FORMER_PARALLEL = 4  # the fixed figure before it came from the machine


def _make_root() -> tuple[Path, list[str]]:
    root = fresh_root()
    ids = [f"hello{i:02d}" for i in range(PLUGINS)]
    for plugin_id in ids:
        install_copy(root, EXAMPLES / "hello", plugin_id)
    return root, ids


async def _spawn_to_handshake(root: Path, plugin_id: str) -> asyncio.subprocess.Process:
    plugin_dir = root / "plugins" / plugin_id
    env = build_plugin_env(
        cookie_key="PLUGHOST",
        cookie_value=plugin_id,
        plugin_id=plugin_id,
        protocol_versions=[1],
        min_port=10000,
        max_port=25000,
        socket_dir=str(root / "run"),
        extra={"PLUGHOST_PYTHON": sys.executable},
    )
    proc = await asyncio.create_subprocess_exec(
        str(plugin_dir / "bin" / "plugin"),
        cwd=plugin_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    return proc


async def _floor(root: Path, ids: list[str], parallel: int) -> float:
    (root / "run").mkdir(mode=0o700, exist_ok=True)
    limit = asyncio.Semaphore(parallel)

    async def one(plugin_id: str) -> asyncio.subprocess.Process:
        async with limit:
            return await _spawn_to_handshake(root, plugin_id)

    with timer() as t:
        procs = await asyncio.gather(*(one(i) for i in ids))
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    return t[0]


def _host_cpu() -> float:
    """This process's CPU time so far, in milliseconds (every thread, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


async def _one(root: Path, ids: list[str], parallel: int) -> dict[str, float | int]:
    floors = [await _floor(root, ids, parallel)]
    manager = PluginManager(root, settings=SettingsProvider(None, {"load_concurrency": parallel}))
    cpu_before = _host_cpu()
    with timer() as t_init:
        infos = await manager.initialize()
    host_cpu_ms = _host_cpu() - cpu_before
    running = sum(i.phase is Phase.RUNNING for i in infos)
    rss_mib = psutil.Process().memory_info().rss / (1024 * 1024)
    with timer() as t_stop:
        await manager.shutdown()
    leftovers = [p.pid for p in psutil.Process().children(recursive=True)]
    floors.append(await _floor(root, ids, parallel))  # before and after: the better one
    floor_ms = min(floors)
    return {
        "plugins": PLUGINS,
        "parallel": parallel,
        "running": running,
        "initialize ms": t_init[0],
        "floor ms": floor_ms,
        "ratio": t_init[0] / floor_ms,
        "host CPU ms per plugin": host_cpu_ms / PLUGINS,
        "shutdown ms": t_stop[0],
        "host RSS MiB": rss_mib,
        "left running": len(leftovers),
    }


async def main() -> None:
    root, ids = _make_root()
    row = await _one(root, ids, PARALLEL)
    rows = [row]
    if FORMER_PARALLEL != PARALLEL:
        rows.append(await _one(root, ids, FORMER_PARALLEL))
    cores = os.cpu_count()
    print_table(f"initialize: {PLUGINS} Python plugins ({cores} CPU cores)", rows)
    print("goals: ratio <= 1.1 (at one per core), shutdown <= 1000 ms, host RSS <= 150 MiB")
    write_result("initialize", {"summary": row, "cores": cores, "rows": rows})
