"""CLI benchmark: how soon ``plughost list``, ``info`` and ``logs`` answer.

A ``plughost run --root R --no-examples`` with the ``hello`` example installed runs in
the background, and each command is run BENCH_CLI_RUNS times (default 30) as a user
runs it: a new process, wall time from start to exit, its output discarded. In the
same run, interleaved so that the machine's drift hits every case alike, the floors:
``python -c pass`` (the interpreter alone) and ``pip --version`` (a small, familiar
Python command line). Goal: each command's p50 <= 150 ms.

Byte-code caches are written first (one warm-up run of each, without
PYTHONDONTWRITEBYTECODE), as they are for an installed plughost.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ._common import EXAMPLES, fresh_root, install_copy, pct, print_table, write_result

RUNS = int(os.environ.get("BENCH_CLI_RUNS", "30"))
GOAL_MS = 150.0
COMMANDS = {
    "plughost list": ["list"],
    "plughost info hello": ["info", "hello"],
    "plughost logs hello -n 20": ["logs", "hello", "-n", "20"],
}
FLOORS = ("python -c pass", "pip --version")


def _script(name: str, module: str) -> list[str]:
    """The console script of this interpreter's environment, else ``python -m``."""
    script = Path(sys.executable).with_name(name)
    return [str(script)] if script.is_file() else [sys.executable, "-m", module]


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith(("PLUGHOST_", "_PLUGHOST_"))
    }
    env.update(NO_COLOR="1", COLUMNS="120")
    return env


def _cases(root: Path) -> dict[str, list[str]]:
    plughost = _script("plughost", "plughost")
    cases = {name: [*plughost, *args, "--root", str(root)] for name, args in COMMANDS.items()}
    cases["python -c pass"] = [sys.executable, "-c", "pass"]
    cases["pip --version"] = [*_script("pip", "pip"), "--version"]
    return cases


def _start_host(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    log = root.parent / f"{root.name}-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*_script("plughost", "plughost"), "run", "--root", str(root), "--no-examples"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while "Ctrl-C stops the host" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"plughost run did not get ready:\n{log.read_text()}")
        time.sleep(0.05)
    return proc, log


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    return (time.perf_counter() - start) * 1000, done


def measure(root: Path, runs: int = RUNS) -> dict[str, list[float]]:
    """Wall milliseconds of every case, ``runs`` times each, interleaved."""
    env = _env()
    cases = _cases(root)
    for name, argv in cases.items():  # warm-up: byte-code caches, and a check of the answers
        _, done = _run(argv, env)
        if done.returncode != 0 or (name in COMMANDS and "hello" not in done.stdout):
            raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    timings: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, argv in cases.items():
            elapsed, done = _run(argv, env)
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed ({done.returncode}):\n{done.stderr}")
            timings[name].append(elapsed)
    return timings


def summarize(timings: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    interpreter = pct(timings["python -c pass"], 50)
    pip = pct(timings["pip --version"], 50)
    summary: dict[str, dict[str, Any]] = {}
    for name, values in timings.items():
        p50 = pct(values, 50)
        summary[name] = {
            "p50_ms": p50,
            "p90_ms": pct(values, 90),
            "min_ms": min(values),
            "over_python_ms": p50 - interpreter,
            "x_python": p50 / interpreter,
            "x_pip": p50 / pip,
            "goal_met": p50 <= GOAL_MS if name in COMMANDS else None,
        }
    return summary


def report(summary: dict[str, dict[str, Any]], runs: int) -> None:
    rows = []
    for name, s in summary.items():
        goal = "" if s["goal_met"] is None else ("met" if s["goal_met"] else "MISSED")
        rows.append(
            {
                "command": name.removeprefix("plughost "),
                "p50 ms": s["p50_ms"],
                "p90 ms": s["p90_ms"],
                "min ms": s["min_ms"],
                "x python": s["x_python"],
                "x pip": s["x_pip"],
                "p50<=150": goal,
            }
        )
    print_table(f"cli: plughost COMMAND against a running host, a process each ({runs} runs)", rows)
    print("x python: p50 / p50 of 'python -c pass'; x pip: p50 / p50 of 'pip --version'")


async def main() -> None:
    root = fresh_root()
    install_copy(root, EXAMPLES / "hello")
    host, log = _start_host(root, _env())
    try:
        timings = measure(root, RUNS)
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(host.pid, signal.SIGKILL)
            host.wait()
    summary = summarize(timings)
    report(summary, RUNS)
    write_result(
        "cli",
        {
            "runs": RUNS,
            "goal_p50_ms": GOAL_MS,
            "floors": list(FLOORS),
            "summary": summary,
            "raw": timings,
        },
    )
    shutil.rmtree(root, ignore_errors=True)
    log.unlink(missing_ok=True)
