"""Dev-loop benchmark: edit a plugin in dev mode, time until it runs the new code.

For a Python plugin (the hello example) and a Go plugin (gohello, built with
the machine's Go toolchain), each installed with ``install_in_dev_mode``:
10 edits that change the Greet reply; each is timed from the file write to
the first Greet RPC that returns the new reply (polled every few ms). The Go
build time of each edit (from ``plugin/dev_reload_complete``) is measured in
the same run. Goals: Python p50 <= 800 ms; Go p50 <= 500 ms + go build p50.

    python -m bench.devloop            # both
    python -m bench.devloop python     # one
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from google.protobuf import wrappers_pb2

from plughost import PluginManager, SettingsProvider
from plughost._proto import hello_pb2_grpc
from plughost.dev.watch import DevServerManager
from plughost.events import EVENT_RELOAD_COMPLETE, EVENT_RELOAD_ERROR

from ._common import EXAMPLES, REPO, fresh_root, print_table, summary, write_result

EDITS = int(os.environ.get("BENCH_DEVLOOP_EDITS", "10"))
GO_SOURCE = REPO / "tests" / "goplugins" / "goplugin"


async def _greet(manager: PluginManager, plugin_id: str) -> str | None:
    backend = manager.backend(plugin_id)
    if backend is None or backend.exited:
        return None
    try:
        stub: Any = backend.stub(hello_pb2_grpc.GreeterStub)
        reply = await stub.Greet(wrappers_pb2.StringValue(value="bench"), timeout=0.5)
    except Exception:
        return None  # mid-reload: the old channel is closing or the new one is not up yet
    return str(reply.value)


async def _until_reply(manager: PluginManager, plugin_id: str, expected: str) -> None:
    deadline = time.monotonic() + 60
    while await _greet(manager, plugin_id) != expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{plugin_id} never answered {expected!r}")
        await asyncio.sleep(0.003)


def _python_source(work: Path) -> tuple[Path, str, str]:
    source = work / "pysrc"
    shutil.copytree(EXAMPLES / "hello", source, ignore=shutil.ignore_patterns("__pycache__"))
    return source, "hello", "plugin.py"


def _go_source(work: Path) -> tuple[Path, str, str]:
    source = work / "gosrc"
    shutil.copytree(GO_SOURCE, source)
    (source / "plugin.yaml").write_text(
        "id: gohello\nversion: 0.1.0\ncapabilities: [exec]\n"
        "dev:\n  build: go build -mod=readonly -o build/bin/plugin .\n"
    )
    return source, "gohello", "main.go"


def _edit(path: Path, language: str, i: int) -> str:
    """Change the reply; returns the reply the edited plugin gives."""
    text = path.read_text()
    if language == "python":
        start = text.index('GREETING = "')
        end = text.index('"', start + len('GREETING = "'))
        path.write_text(f'{text[:start]}GREETING = "edit{i}{text[end:]}')
        return f"edit{i}, bench"
    start = text.index('wrapperspb.String("')
    end = text.index('"', start + len('wrapperspb.String("'))
    path.write_text(f'{text[:start]}wrapperspb.String("edit{i}, {text[end:]}')
    return f"edit{i}, bench"


async def run_case(language: str) -> dict[str, Any]:
    root = fresh_root()
    source, plugin_id, edited = (_go_source if language == "go" else _python_source)(root)
    manager = PluginManager(root / "home", settings=SettingsProvider(None, {}))
    dsm = DevServerManager(manager.table)
    manager.set_dev_server_manager(dsm)
    await manager.initialize()
    latency_ms: list[float] = []
    build_ms: list[float] = []
    try:
        info = await manager.install_in_dev_mode(source)
        if info.phase.value != "Running":
            raise RuntimeError(f"dev install failed: {info.last_error}")
        for i in range(EDITS):
            events = manager.bus.stream("plugin/dev_reload_*")
            expected_path = source / edited
            t0 = time.perf_counter()
            expected = _edit(expected_path, language, i)
            await _until_reply(manager, plugin_id, expected)
            latency_ms.append((time.perf_counter() - t0) * 1000)
            while True:  # the build time the dev server measured for this edit
                event = await events.next(30)
                if event.name == EVENT_RELOAD_ERROR:
                    raise RuntimeError(f"rebuild failed: {event.payload}")
                if event.name == EVENT_RELOAD_COMPLETE:
                    build_ms.append(float(event.payload["buildDuration"]))
                    break
            events.close()
    finally:
        await manager.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return {"latency_ms": latency_ms, "build_ms": build_ms}


async def main(languages: list[str] | None = None) -> None:
    languages = languages or ["python", "go"]
    os.environ.setdefault("GOFLAGS", "-buildvcs=false")
    rows, raw = [], {}
    for language in languages:
        result = await run_case(language)
        raw[language] = result
        lat, build = summary(result["latency_ms"]), summary(result["build_ms"])
        goal = 800.0 if language == "python" else 500.0 + build["p50"]
        rows.append(
            {
                "plugin": language,
                "edits": EDITS,
                "write->new code p50 ms": lat["p50"],
                "max ms": lat["max"],
                "build p50 ms": build["p50"],
                "goal p50 ms": goal,
                "met": "yes" if lat["p50"] <= goal else "NO",
            }
        )
    print_table("devloop: file write -> plugin running the new code", rows)
    print("goals: Python p50 <= 800 ms; Go p50 <= 500 ms + go build p50 (same run)")
    write_result("devloop", {"edits": EDITS, "summary": rows, "raw": raw})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or None))
