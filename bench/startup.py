"""Startup benchmark (issues 3 and 10): spawn-to-healthy and stop, plughost vs other hosts.

Cases, all in one run so the ratios compare like with like:
  (a) the Python ``hello`` plugin under plughost;
  (b) the Go go-plugin plugin ``gohello`` under plughost;
  (c) the same Go plugin under a minimal Go host written with go-plugin (the reference);
  (d) the same Go plugin started, health-checked and stopped by ``pyvider-rpcplugin``,
      the pure-Python go-plugin host from PyPI (what a Python user would pick instead;
      in the ``dev`` extras). Goal (issue 10): (b) start p50 and stop p50 <= (d)'s.
Plus the health round trip over a unix socket and the host's memory per running plugin.
If pyvider cannot run the plugin, the reason is recorded in the table and the JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from plughost.process.local import LaunchSpec, ProcessBackend, start_process

from ._common import (
    EXAMPLES,
    REPO,
    fresh_root,
    go_plugins,
    print_table,
    summary,
    timer,
    write_result,
)

RUNS = int(os.environ.get("BENCH_STARTUP_RUNS", "50"))
PINGS = 1000
MEMORY_PLUGINS = 20


def _spec(plugin_dir: Path, plugin_id: str, run_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        plugin_id=plugin_id,
        executable=plugin_dir / "bin" / "plugin",
        cwd=plugin_dir,
        socket_dir=run_dir,
    )


async def _start_healthy(spec: LaunchSpec) -> ProcessBackend:
    backend = await start_process(spec)
    if not await backend.healthy(5):
        raise RuntimeError(f"{spec.plugin_id} did not answer its health check")
    return backend


async def _cycles(spec: LaunchSpec, runs: int) -> dict[str, list[float]]:
    start_ms, stop_ms = [], []
    for _ in range(runs):
        with timer() as t_start:
            backend = await _start_healthy(spec)
        with timer() as t_stop:
            await backend.stop()
        start_ms += t_start
        stop_ms += t_stop
    return {"start_ms": start_ms, "stop_ms": stop_ms}


async def _pings(spec: LaunchSpec) -> list[float]:
    backend = await _start_healthy(spec)
    try:
        out = []
        for _ in range(PINGS):
            with timer() as t:
                ok = await backend.healthy(5)
            assert ok
            out.append(t[0] * 1000)  # microseconds
        return out
    finally:
        await backend.stop()


async def _memory_per_plugin(spec_for: Any) -> float:
    """Host RSS growth per running plugin, in MiB (the plugins' own memory excluded)."""
    me = psutil.Process()
    before = me.memory_info().rss
    backends = [await start_process(spec_for(i)) for i in range(MEMORY_PLUGINS)]
    after = me.memory_info().rss
    await asyncio.gather(*(b.stop() for b in backends))
    return (after - before) / MEMORY_PLUGINS / (1024 * 1024)


def _reference(go_out: Path) -> dict[str, list[float]]:
    proc = subprocess.run(
        [
            str(go_out / "refhost"),
            "-plugin",
            str(go_out / "gohello" / "bin" / "plugin"),
            "-n",
            str(RUNS),
            "-pings",
            str(PINGS),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PLUGHOST": "gohello"},
    )
    data: dict[str, list[float]] = json.loads(proc.stdout)
    return data


# -- (d) pyvider-rpcplugin ------------------------------------------------------------
# Run by bench/pyvider_host.py in a Python process of its own (pyvider and plughost
# cannot be imported into one process: both register go-plugin's ``plugin.*`` protos
# in protobuf's default pool). What pyvider needs to talk to a plain go-plugin plugin
# (the cookie PLUGHOST=gohello, protocol 1, AutoMTLS off because grpcio's TLS refuses
# go-plugin's P-521 AutoMTLS certificate) is documented there.
PYVIDER_MTLS_PROBE = os.environ.get("BENCH_STARTUP_PYVIDER_MTLS_PROBE", "1") != "0"


def _pyvider(go_out: Path) -> dict[str, Any]:
    """(d): RUNS sequential starts (spawn to healthy) and stops by pyvider-rpcplugin."""
    cmd = [
        sys.executable,
        "-m",
        "bench.pyvider_host",
        "--plugin",
        str(go_out / "gohello" / "bin" / "plugin"),
        "-n",
        str(RUNS),
    ]
    if PYVIDER_MTLS_PROBE:
        cmd.append("--mtls-probe")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-5:]
        return {"error": f"bench.pyvider_host exited {proc.returncode}: " + " | ".join(tail)}
    data: dict[str, Any] = json.loads(lines[-1])
    probe = data.get("automtls_probe")
    if probe is not None and not probe["ok"]:
        # Why the TLS handshake failed is only in gRPC core's own log, on stderr.
        tls = [line for line in proc.stderr.splitlines() if "SSL_ERROR" in line]
        probe["grpc_tls_error"] = tls[0].split("] ", 1)[-1] if tls else None
    return data


async def main() -> None:
    go_out = go_plugins()
    root = fresh_root()
    run_dir = root / "run"
    py = _spec(EXAMPLES / "hello", "hello", run_dir)
    go = _spec(go_out / "gohello", "gohello", run_dir)
    results: dict[str, Any] = {
        "python_hello": await _cycles(py, RUNS),
        "go_plughost": await _cycles(go, RUNS),
        "go_reference": _reference(go_out),
        "go_pyvider": _pyvider(go_out),
    }
    results["ping_us"] = {"go_plughost": await _pings(go), "python_hello": await _pings(py)}
    results["memory_mib_per_plugin"] = await _memory_per_plugin(
        lambda i: _spec(go_out / "gohello", "gohello", run_dir)
    )
    rows = []
    for case in ("python_hello", "go_plughost", "go_reference", "go_pyvider"):
        start = summary(results[case].get("start_ms", []))
        stop = summary(results[case].get("stop_ms", []))
        rows.append(
            {
                "case": case,
                "runs": start["n"],
                "start p50 ms": start["p50"],
                "start p90 ms": start["p90"],
                "stop p50 ms": stop["p50"],
                "stop p90 ms": stop["p90"],
            }
        )
    ratio = rows[1]["start p50 ms"] / rows[2]["start p50 ms"]
    plughost, pyvider = rows[1], rows[3]
    pyvider_error = results["go_pyvider"].get("error")
    versus = {
        "plughost start p50 ms": plughost["start p50 ms"],
        "pyvider start p50 ms": pyvider["start p50 ms"],
        "start (b)/(d)": plughost["start p50 ms"] / pyvider["start p50 ms"],
        "plughost stop p50 ms": plughost["stop p50 ms"],
        "pyvider stop p50 ms": pyvider["stop p50 ms"],
        "stop (b)/(d)": plughost["stop p50 ms"] / pyvider["stop p50 ms"],
        "goal": "<= 1",
    }
    ping = {k: summary(v)["p50"] for k, v in results["ping_us"].items()}
    ping_ref = summary(results["go_reference"]["ping_us"])["p50"]
    print_table(f"startup: {RUNS} sequential starts (spawn to healthy) and stops", rows)
    print_table(
        "plughost (b) vs pyvider-rpcplugin (d), same Go plugin",
        [{"metric": k, "value": v} for k, v in versus.items()],
    )
    if pyvider_error:
        print(f"pyvider-rpcplugin could not run the plugin: {pyvider_error}")
    probe = results["go_pyvider"].get("automtls_probe")
    if probe is not None:
        why = probe.get("grpc_tls_error") or probe.get("error", "")
        outcome = "works" if probe["ok"] else f"fails: {why[:200]}"
        print(f"pyvider with its default AutoMTLS on: {outcome} ({probe['seconds']:.1f} s)")
    print_table(
        "health round trip p50 (µs, unix socket)",
        [
            {
                "go under plughost": ping["go_plughost"],
                "python under plughost": ping["python_hello"],
                "go under go-plugin host": ping_ref,
            }
        ],
    )
    print_table(
        "summary",
        [
            {
                "(b)/(c) start p50": ratio,
                "goal": "<= 1.5",
                "host MiB per running plugin": results["memory_mib_per_plugin"],
            }
        ],
    )
    write_result(
        "startup",
        {
            "runs": RUNS,
            "summary": {
                "rows": rows,
                "start_ratio_b_over_c": ratio,
                "versus_pyvider": versus,
                "pyvider_error": pyvider_error,
                "pyvider_config": results["go_pyvider"].get("config"),
                "pyvider_automtls_probe": probe,
                "ping_p50_us": ping,
                "ping_p50_us_reference": ping_ref,
                "memory_mib_per_plugin": results["memory_mib_per_plugin"],
            },
            "raw": results,
        },
    )
