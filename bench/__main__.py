"""Run benchmarks: ``python -m bench`` (every one in DEFAULT) or ``python -m bench startup soak``.

``soak`` runs for minutes (BENCH_SOAK_SECONDS, default 600), so only by name.
"""

from __future__ import annotations

import asyncio
import sys

from . import calls, cli, crash, devloop, initialize, install, registry, soak, startup

BENCHMARKS = {
    "startup": startup.main,
    "initialize": initialize.main,
    "crash": crash.main,
    "install": install.main,
    "devloop": devloop.main,
    "calls": calls.main,
    "cli": cli.main,
    "registry": registry.main,
    "soak": soak.main,
}
# What a bare ``python -m bench`` runs: everything but the long soak.
DEFAULT = [name for name in BENCHMARKS if name != "soak"]


def main(argv: list[str]) -> int:
    names = argv or DEFAULT
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        asyncio.run(BENCHMARKS[name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
