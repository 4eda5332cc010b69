"""A plughost host for the host-killed tests: initialize ROOT, report, wait to be killed.

Prints one JSON line, ``{"ready": true, "pids": {id: pid}, "phases": {id: phase}}``,
once every plugin is loaded, then runs until it is killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from plughost.host.manager import PluginManager
from plughost.settings import SettingsProvider


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--no-parent-death-signal", action="store_true")
    args = parser.parse_args()
    settings = SettingsProvider(None, {"parent_death_signal": not args.no_parent_death_signal})
    manager = PluginManager(args.root, settings=settings)
    infos = await manager.initialize()
    report = {
        "ready": True,
        "pids": {i.id: i.pid for i in infos},
        "phases": {i.id: i.phase.value for i in infos},
    }
    print(json.dumps(report), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
