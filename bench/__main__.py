"""Run benchmarks: ``python -m bench`` (all) or ``python -m bench startup crash``."""

from __future__ import annotations

import asyncio
import sys

from . import crash, initialize, install, startup

BENCHMARKS = {
    "startup": startup.main,
    "initialize": initialize.main,
    "crash": crash.main,
    "install": install.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        asyncio.run(BENCHMARKS[name]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
