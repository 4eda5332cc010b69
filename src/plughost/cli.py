"""The ``plughost`` command line: run the host, look at plugins.

Uses only the public API; every PlughostError is printed as title, detail and
suggestions, with a non-zero exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import PlughostError
from .events import EVENT_PROCESS_LOG, Event
from .fsutil import copy_dir
from .manager import PluginManager
from .metadata import load_meta
from .paths import RootLayout, resolve_root
from .phases import Phase
from .records import PluginInfo
from .service import LocalService
from .store import StateFileCorrupt, StateStore

__all__ = ["app", "main"]

app = typer.Typer(
    name="plughost",
    help="Install, run and supervise plugins as separate processes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEMO_PLUGINS = ("hello", "slowstart")
RootOpt = Annotated[
    Path | None, typer.Option("--root", help="plugin root (default: $PLUGHOST_HOME or per user)")
]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="'omniview' manages an Omniview plugin root")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

PHASE_STYLE = {
    Phase.RUNNING: "green",
    Phase.DEGRADED: "yellow",
    Phase.RECOVERING: "yellow",
    Phase.FAILED: "red",
    Phase.BUILD_FAILED: "red",
    Phase.STOPPED: "dim",
}


@contextlib.contextmanager
def _errors(as_json: bool = False) -> Iterator[None]:
    try:
        yield
    except PlughostError as exc:
        if as_json:
            print(json.dumps({"error": exc.to_dict()}, indent=2))
        else:
            err_console.print(f"[bold red]{exc.title}[/]: {exc}")
            for hint in exc.suggestions:
                err_console.print(f"  [cyan]hint[/]: {hint}")
        raise typer.Exit(1) from None


def _table(infos: list[PluginInfo]) -> Table:
    table = Table("ID", "VERSION", "PHASE", "PID", "CAPABILITIES", "DEV", "LAST ERROR")
    for i in infos:
        style = PHASE_STYLE.get(i.phase, "")
        table.add_row(
            i.id,
            i.version,
            f"[{style}]{i.phase.value}[/]" if style else i.phase.value,
            str(i.pid or ""),
            ", ".join(i.capabilities),
            "yes" if i.dev_mode else "",
            (i.last_error.splitlines() or [""])[0][:60],
        )
    return table


def _install_examples(layout: RootLayout) -> list[str]:
    """Seed an empty root with the bundled example plugins."""
    installed = []
    bundled = resources.files("plughost") / "examples"
    for name in DEMO_PLUGINS:
        with resources.as_file(bundled / name) as src:
            copy_dir(layout.plugin_dir(name), src)
        installed.append(name)
    return installed


def _is_fresh(layout: RootLayout) -> bool:
    return not layout.state_file.exists() and (
        not layout.plugins.is_dir() or not any(layout.plugins.iterdir())
    )


def _describe(event: Event) -> str | None:
    p = event.payload
    who = p.get("pluginID", "")
    if event.name == "plugin/state_change":
        reason = f" ({p['reason']})" if p.get("reason") else ""
        return f"[bold]{who}[/] {p['from']} → {p['to']}{reason}"
    if event.name == "plugin/crash":
        return f"[red]{who} {p.get('kind', 'crashed')}[/]: {p.get('reason', '')}"
    if event.name == "plugin/recovered":
        return f"[green]{who} recovered[/] (attempt {p.get('attempt')})"
    if event.name == "plugin/crash_recovery_failed":
        return f"[red]{who} gave up recovering[/]: {p.get('reason', '')}"
    if event.name == EVENT_PROCESS_LOG:
        return None
    return f"{event.name} {json.dumps(p)[:120]}"


async def _run_host(manager: PluginManager, exit_after: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stream = manager.bus.stream("plugin/*")

    async def show() -> None:
        async for event in stream:
            line = _describe(event)
            if line:
                console.print(line)

    printer = asyncio.create_task(show())
    service: LocalService | None = None
    try:
        infos = await manager.initialize()
        s = manager.settings
        service = LocalService(manager, tcp_port=s.service_port, token=s.service_token or None)
        await service.start()
        console.print(_table(infos))
        console.print(f"host running on [bold]{manager.layout.root}[/]; API on {service.socket}")
        if service.tcp_address:
            host, port = service.tcp_address
            console.print(f"API also on http://{host}:{port} (bearer token required)")
        console.print("Ctrl-C stops the host and every plugin")
        if exit_after is not None:
            loop.call_later(exit_after, stop.set)
        await stop.wait()
        console.print("stopping plugins ...")
    finally:
        if service is not None:
            await service.stop()
        await manager.shutdown()
        stream.close()
        await asyncio.gather(printer, return_exceptions=True)
    console.print("host stopped; no plugin process left running")


@app.command()
def run(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    examples: Annotated[
        bool, typer.Option(help="seed an empty root with the bundled example plugins")
    ] = True,
    exit_after: Annotated[
        float | None, typer.Option(help="stop after this many seconds (demos, scripts)")
    ] = None,
) -> None:
    """Run the host in the foreground: load plugins, supervise them, show what happens."""
    with _errors():
        layout = RootLayout(resolve_root(root, profile))
        if examples and _is_fresh(layout):
            names = _install_examples(layout)
            console.print(f"new root {layout.root}: installed example plugins {', '.join(names)}")
        manager = PluginManager(layout.root, profile=profile)
        asyncio.run(_run_host(manager, exit_after))


def _offline_infos(layout: RootLayout) -> list[PluginInfo]:
    """What a root holds, read from disk without starting anything."""
    from .reconcile import Reconciler

    try:
        persisted = StateStore(layout.root).read() if layout.state_file.exists() else []
    except StateFileCorrupt:
        persisted = []
    result = Reconciler().reconcile(layout.plugins, persisted)
    phases = {p.id: p.phase for p in persisted}
    infos = []
    for record in result.records.values():
        info = record.to_info()
        infos.append(info.model_copy(update={"phase": phases.get(record.id, info.phase)}))
    return sorted(infos, key=lambda i: i.id)


@app.command("list")
def list_(root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List installed plugins and their last known phase."""
    with _errors(as_json):
        infos = _offline_infos(RootLayout(resolve_root(root, profile)))
        if as_json:
            print(json.dumps([i.to_json_dict() for i in infos], indent=2))
        else:
            console.print(_table(infos))


@app.command()
def info(
    plugin_id: str, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one plugin's metadata."""
    with _errors(as_json):
        layout = RootLayout(resolve_root(root, profile))
        meta = load_meta(layout.plugin_dir(plugin_id))
        data: dict[str, Any] = meta.model_dump(mode="json", exclude_none=True)
        print(json.dumps(data, indent=2))


@app.command()
def version() -> None:
    """Print plughost's version."""
    print(__version__)


def main() -> None:
    app()
