"""Startup benchmark: spawn-to-healthy and stop, plughost vs other hosts.

Cases, all in one run so the ratios compare like with like:
  (a) the Python ``hello`` plugin under plughost;
  (b) the Go go-plugin plugin ``gohello`` under plughost;
  (c) the same Go plugin under a minimal Go host written with go-plugin (the reference);
  (d) the same Go plugin started, health-checked and stopped by ``pyvider-rpcplugin``,
      the pure-Python go-plugin host from PyPI (what a Python user would pick instead;
      in the ``dev`` extras). Goal: (b) start p50 and stop p50 <= (d)'s;
  (e) the Go plugin sandboxed (a copy declaring ``permissions``: bubblewrap, cgroups,
      the exec guard), taking turns with (b). Goal: (e) start p50 <= (b)'s + 5 ms.
Plus the health round trip over a unix socket and the host's memory per running plugin.
If pyvider cannot run the plugin, the reason is recorded in the table and the JSON.

Goals, each a ratio of p50s from this one run: (b)/(c) start <= 1.2,
health round trip <= 1.5, stop <= 1; and (a) <= 1.2x the Python floor: a minimal
go-plugin server (grpc, the health service, the handshake line, nothing else)
started the same way, interleaved with (a) run by run. (b)'s start is broken down
into phases (spawn, handshake line, channel ready, the rest of start_process, first
health answer), and so is its stop (times since the stop began at which the Shutdown
request left, its answer came, the exit was seen, the channel was closed, stop returned);
``import plughost.sdk`` is broken down by package.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from plughost.metadata import load_meta
from plughost.process.local import LaunchSpec, ProcessBackend, start_process
from plughost.process.sandbox import policy_for, probe
from plughost.settings import Settings

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
IMPORT_RUNS = 7
CHUNKS = 5
PHASES = ("spawn", "handshake line", "channel ready", "rest of start", "first health")
# ProcessBackend.stop_timings' marks, shown as times since "began" (they overlap: the
# answer may come after the exit, the channel closes while the plugin exits).
STOP_PHASES = {
    "Shutdown sent": "shutdown sent",
    "answer": "reply",
    "exit seen": "exited",
    "channel closed": "channel closed",
    "returned": "cleaned",
}

# The floor of a Python plugin: what any go-plugin server in Python must do (import
# grpc and the health service, listen, print the handshake line), and nothing else.
FLOOR_PLUGIN = """\
import os, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

class Health(health_pb2_grpc.HealthServicer):
    def Check(self, request, context):
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
health_pb2_grpc.add_HealthServicer_to_server(Health(), server)
directory = os.path.join(os.environ["PLUGIN_UNIX_SOCKET_DIR"], "floor" + os.urandom(6).hex())
os.mkdir(directory, 0o700)
path = os.path.join(directory, "sock")
server.add_insecure_port("unix:" + path)
server.start()
print(f"1|1|unix|{path}|grpc|", flush=True)
threading.Event().wait()
"""


def _spec(plugin_dir: Path, plugin_id: str, run_dir: Path) -> LaunchSpec:
    return LaunchSpec(
        plugin_id=plugin_id,
        executable=plugin_dir / "bin" / "plugin",
        cwd=plugin_dir,
        socket_dir=run_dir,
    )


def _floor_plugin(root: Path) -> Path:
    """The Python floor as an installed plugin, launched like the ``hello`` example."""
    plugin_dir = root / "floor"
    (plugin_dir / "bin").mkdir(parents=True)
    (plugin_dir / "floor.py").write_text(FLOOR_PLUGIN)
    launcher = (EXAMPLES / "hello" / "bin" / "plugin").read_text().replace("plugin.py", "floor.py")
    (plugin_dir / "bin" / "plugin").write_text(launcher)
    (plugin_dir / "bin" / "plugin").chmod(0o755)
    return plugin_dir


def _sandboxed(go: LaunchSpec, root: Path) -> LaunchSpec | str:
    """(e): a copy of the Go plugin declaring permissions, so bubblewrap confines it as
    the host would (cgroups, exec guard); the reason instead where no sandbox works here."""
    found = probe()
    if not found.usable:
        return found.reason
    plugin_dir = root / "sandboxed" / go.plugin_id
    shutil.copytree(go.cwd, plugin_dir)
    meta = yaml.safe_load((plugin_dir / "plugin.yaml").read_text())
    meta["permissions"] = {"network": "none"}
    (plugin_dir / "plugin.yaml").write_text(yaml.safe_dump(meta))
    policy = policy_for(load_meta(plugin_dir), None, Settings(sandbox="enforce"), root, plugin_dir)
    spec = _spec(plugin_dir, go.plugin_id, go.socket_dir)
    spec.sandbox = policy
    return spec


async def _start_healthy(spec: LaunchSpec) -> tuple[ProcessBackend, dict[str, float]]:
    """The started backend and its start's phases, in milliseconds."""
    backend = await start_process(spec)
    returned = time.perf_counter()
    if not await backend.healthy(5):
        raise RuntimeError(f"{spec.plugin_id} did not answer its health check")
    healthy = time.perf_counter()
    t = backend.timings
    steps = [t["began"], t["spawned"], t["handshake"], t["connected"], returned, healthy]
    pairs = zip(PHASES, itertools.pairwise(steps), strict=True)
    phases = {name: (b - a) * 1000 for name, (a, b) in pairs}
    return backend, phases


async def _cycles(
    specs: dict[str, LaunchSpec], runs: int, kill: frozenset[str] = frozenset()
) -> dict[str, dict[str, Any]]:
    """``runs`` starts and stops of every spec, taking turns so load hits all alike.

    The cases in ``kill`` are killed instead of stopped (the floor serves no Shutdown).
    """
    out: dict[str, dict[str, Any]] = {
        name: {
            "start_ms": [],
            "stop_ms": [],
            "phases_ms": {p: [] for p in PHASES},
            "stop_phases_ms": {p: [] for p in STOP_PHASES},
        }
        for name in specs
    }
    for _ in range(runs):
        for name, spec in specs.items():
            with timer() as t_start:
                backend, phases = await _start_healthy(spec)
            with timer() as t_stop:
                await (backend.kill() if name in kill else backend.stop())
            out[name]["start_ms"] += t_start
            out[name]["stop_ms"] += t_stop
            for phase, ms in phases.items():
                out[name]["phases_ms"][phase].append(ms)
            marks = backend.stop_timings
            for phase, mark in STOP_PHASES.items():
                if name not in kill and mark in marks:
                    ms = (marks[mark] - marks["began"]) * 1000
                    out[name]["stop_phases_ms"][phase].append(ms)
    return out


def _import_breakdown() -> dict[str, float]:
    """``python -c "import plughost.sdk"``, in milliseconds (median of IMPORT_RUNS runs):
    the interpreter's own start-up imports, then what plughost.sdk imports, by package
    (a package's figure includes whatever it imports in turn), and the whole run."""
    runs: list[dict[str, float]] = []
    for _ in range(IMPORT_RUNS):
        began = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import plughost.sdk"],
            capture_output=True,
            text=True,
            check=True,
        )
        run = {"python run": (time.perf_counter() - began) * 1000}
        pending: list[tuple[str, float]] = []  # a level-0 import's direct imports, so far
        for line in proc.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)([\w.]+)", line)
            if match is None:
                continue
            own, total, level, name = int(match[1]), int(match[2]), len(match[3]) // 2, match[4]
            if level == 1:
                pending.append((name, total / 1000))
            elif level == 0:
                if name == "plughost.sdk":
                    groups = {"grpc": "grpc", "google": "protobuf", "plughost": "plughost"}
                    for child, ms in pending:
                        key = groups.get(child.split(".")[0], "stdlib and others")
                        run[key] = run.get(key, 0.0) + ms
                    run["plughost"] = run.get("plughost", 0.0) + own / 1000
                else:
                    key = "plughost" if name == "plughost" else "interpreter start-up"
                    run[key] = run.get(key, 0.0) + total / 1000
                pending = []
        runs.append(run)
    keys = sorted({k for run in runs for k in run})
    return {k: statistics.median(run.get(k, 0.0) for run in runs) for k in keys}


async def _pings(spec: LaunchSpec, pings: int = PINGS) -> tuple[list[float], list[float]]:
    """Health round trips in µs: plughost's check, and a bare grpc.aio ``Health.Check`` on
    the same channel with no plughost code around it (grpcio's own floor), taking turns."""
    backend, _ = await _start_healthy(spec)
    bare = health_pb2_grpc.HealthStub(backend.channel)  # type: ignore[no-untyped-call]
    request = health_pb2.HealthCheckRequest()
    serving = health_pb2.HealthCheckResponse.SERVING
    try:
        ours: list[float] = []
        floor: list[float] = []
        for _ in range(pings):
            with timer() as t:
                ok = await backend.healthy(5)
            assert ok
            ours.append(t[0] * 1000)  # microseconds
            with timer() as t:
                answer = await bare.Check(request, timeout=5)
            assert answer.status == serving
            floor.append(t[0] * 1000)
        return ours, floor
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


def _reference(go_out: Path, runs: int, pings: int) -> dict[str, list[float]]:
    proc = subprocess.run(
        [
            str(go_out / "refhost"),
            "-plugin",
            str(go_out / "gohello" / "bin" / "plugin"),
            "-n",
            str(runs),
            "-pings",
            str(pings),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PLUGHOST": "gohello"},
    )
    data: dict[str, list[float]] = json.loads(proc.stdout)
    return data


def _extend(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Append ``part``'s lists (also those one dict down) to ``into``'s."""
    for key, value in part.items():
        if isinstance(value, dict):
            _extend(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            into.setdefault(key, []).extend(value)


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
    floor = _spec(_floor_plugin(root), "floor", run_dir)
    go = _spec(go_out / "gohello", "gohello", run_dir)
    results: dict[str, Any] = await _cycles(
        {"python_hello": py, "python_floor": floor}, RUNS, kill=frozenset({"python_floor"})
    )
    # The Go cases and go-plugin's own host take turns, CHUNKS rounds: a machine whose
    # load changes during the run then weighs on both sides of every ratio alike.
    go_cases = {"go_plughost": go}
    sandboxed = _sandboxed(go, root)
    if isinstance(sandboxed, LaunchSpec):
        go_cases["go_sandboxed"] = sandboxed
    reference: dict[str, list[float]] = {"start_ms": [], "stop_ms": [], "ping_us": []}
    go_pings: list[float] = []
    bare_pings: list[float] = []
    for _ in range(CHUNKS):
        for name, part in (await _cycles(go_cases, max(1, RUNS // CHUNKS))).items():
            _extend(results.setdefault(name, {}), part)
        ours, floor = await _pings(go, PINGS // CHUNKS)
        go_pings += ours
        bare_pings += floor
        _extend(reference, _reference(go_out, max(1, RUNS // CHUNKS), PINGS // CHUNKS))
    results["go_reference"] = reference
    results["go_pyvider"] = _pyvider(go_out)
    results["ping_us"] = {"go_plughost": go_pings, "python_hello": (await _pings(py))[0]}
    results["ping_us_bare_grpc_aio"] = bare_pings
    results["memory_mib_per_plugin"] = await _memory_per_plugin(
        lambda i: _spec(go_out / "gohello", "gohello", run_dir)
    )
    rows: list[dict[str, Any]] = []
    cases = ("python_hello", "go_plughost", "go_reference", "go_pyvider")
    for case in (*cases, "python_floor", "go_sandboxed"):
        if case not in results:
            continue
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
    ping_bare = summary(results["ping_us_bare_grpc_aio"])["p50"]
    by_case = {row["case"]: row for row in rows}
    phases = {
        case: {p: summary(v)["p50"] for p, v in results[case]["phases_ms"].items()}
        for case in ("go_plughost", "go_sandboxed", "python_hello", "python_floor")
        if case in results
    }
    stop_phases = {
        case: {p: summary(v)["p50"] for p, v in results[case]["stop_phases_ms"].items()}
        for case in ("go_plughost", "go_sandboxed", "python_hello")
        if case in results
    }
    imports = _import_breakdown()
    stop_ratio = by_case["go_plughost"]["stop p50 ms"] / by_case["go_reference"]["stop p50 ms"]
    ping_ratio = ping["go_plughost"] / ping_ref
    python_ratio = by_case["python_hello"]["start p50 ms"] / by_case["python_floor"]["start p50 ms"]
    goals: list[dict[str, Any]] = [
        {"goal": "start: (b)/(c) p50", "ratio": ratio, "must be": "<= 1.2"},
        {"goal": "health round trip: (b)/(c) p50", "ratio": ping_ratio, "must be": "<= 1.5"},
        {"goal": "stop: (b)/(c) p50", "ratio": stop_ratio, "must be": "<= 1"},
        {"goal": "Python plugin: (a)/floor start p50", "ratio": python_ratio, "must be": "<= 1.2"},
    ]
    sandbox_cost: float | None = None
    if "go_sandboxed" in by_case:
        sandbox_cost = (
            by_case["go_sandboxed"]["start p50 ms"] - by_case["go_plughost"]["start p50 ms"]
        )
        goals.append(
            {"goal": "sandbox: (e) - (b) start p50, ms", "ratio": sandbox_cost, "must be": "<= 5"}
        )
    for goal in goals:
        limit = float(str(goal["must be"]).split()[-1])
        goal["met"] = "yes" if goal["ratio"] <= limit else "NO"
    print_table(f"startup: {RUNS} sequential starts (spawn to healthy) and stops", rows)
    print_table(
        "plughost (b) vs pyvider-rpcplugin (d), same Go plugin",
        [{"metric": k, "value": v} for k, v in versus.items()],
    )
    if pyvider_error:
        print(f"pyvider-rpcplugin could not run the plugin: {pyvider_error}")
    if not isinstance(sandboxed, LaunchSpec):
        print(f"no sandboxed case (e): {sandboxed}")
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
                "go, bare grpc.aio Check": ping_bare,
            }
        ],
    )
    print_table(
        "start phases, p50 ms (spawn to healthy)",
        [{"case": case, **values} for case, values in phases.items()],
    )
    print_table(
        "stop phases, p50 ms since the stop began (go-plugin's host: stop p50 "
        f"{by_case['go_reference']['stop p50 ms']:.2f})",
        [{"case": case, **values} for case, values in stop_phases.items()],
    )
    print_table("import plughost.sdk, ms by package (median)", [imports])
    print_table(
        "summary",
        [
            {
                "(b)/(c) start p50": ratio,
                "goal": "<= 1.2",
                "host MiB per running plugin": results["memory_mib_per_plugin"],
            }
        ],
    )
    print_table("goals, from this run", goals)
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
                "ping_p50_us_bare_grpc_aio": ping_bare,
                "ping_ratio_bare_grpc_aio_over_c": ping_bare / ping_ref,
                "memory_mib_per_plugin": results["memory_mib_per_plugin"],
                "stop_ratio_b_over_c": stop_ratio,
                "ping_ratio_b_over_c": ping_ratio,
                "phases_p50_ms": phases,
                "stop_phases_p50_ms": stop_phases,
                "python_floor_start_p50_ms": by_case["python_floor"]["start p50 ms"],
                "python_ratio_over_floor": python_ratio,
                "sandbox_start_cost_ms": sandbox_cost,
                "sandbox_error": None if isinstance(sandboxed, LaunchSpec) else sandboxed,
                "sdk_import_ms": imports,
                "goals": goals,
            },
            "raw": results,
        },
    )
