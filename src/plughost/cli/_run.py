"""``plughost run`` and ``plughost ui``: the host in the foreground, and its dashboard.

``run`` is the one command that owns a root for as long as it lives: it starts
the manager and the local service (which the other commands then talk to),
installs the bundled examples on a fresh root, prints the host's events and
stops every plugin on Ctrl-C (at once, also while plugins are still starting).
It imports the manager, asyncio and FastAPI only when run, so that the other
commands start fast.

Nothing is printed or logged on the host's event loop: what ``run`` prints goes
to a thread of its own (:class:`_Terminal`), and log records to a listener
thread (:func:`._runlog.logging_off_the_loop`). Rendering (rich wraps a line in time
quadratic in its length) or a terminal that reads slowly would otherwise stall
every plugin's supervision and the API with it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..errors import InternalError, PlughostError
from ..paths import RootLayout
from ._common import (
    ProfileOpt,
    RootOpt,
    Target,
    app,
    console,
    err_console,
    handle_errors,
    print_error,
    resolve_target,
)
from ._render import describe_event, plugin_table

if TYPE_CHECKING:
    import asyncio

    from ..events import AsyncSubscription, Event
    from ..host.manager import PluginManager

__all__ = ["run", "ui"]

log = logging.getLogger(__name__)

Published = list[tuple[str, str, Path]]  # (plugin id, version, package file)
ShowError = Callable[[PlughostError], None]

EVENT_ROOM = 1000  # events waiting to be printed; more are dropped and counted
CLOSE_WAIT = 3.0  # seconds the host waits at exit for what is still to be printed


class _Terminal:
    """Prints what ``run`` prints, in order, on a thread of its own.

    The loop only queues. The host's own lines always wait their turn; an event
    waits only while fewer than ``room`` events do, else it is dropped and counted,
    and the count is printed before the next line, so a flood of events (or a
    terminal that reads slowly) costs the host nothing but the lines not shown.
    """

    def __init__(self, notice: Callable[[str], None], room: int = EVENT_ROOM) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], bool] | None] = queue.SimpleQueue()
        self._room = threading.BoundedSemaphore(room)
        self._notice = notice
        self._lock = threading.Lock()
        self._dropped = 0
        self._thread = threading.Thread(target=self._work, name="plughost-terminal", daemon=True)
        self._thread.start()

    def put(self, job: Callable[[], None]) -> None:
        """Run ``job`` (which prints) in turn; never dropped."""
        self._jobs.put((job, False))

    def offer(self, job: Callable[[], None]) -> None:
        """Run ``job`` in turn if there is room, else count it as not shown."""
        if self._room.acquire(blocking=False):
            self._jobs.put((job, True))
        else:
            self.count_dropped(1)

    def count_dropped(self, count: int) -> None:
        if count > 0:
            with self._lock:
                self._dropped += count

    def close(self, timeout: float = CLOSE_WAIT) -> None:
        """Print what is queued, waiting at most ``timeout`` seconds: a terminal that reads
        nothing must not keep the host from exiting."""
        self._jobs.put(None)
        self._thread.join(timeout)

    def _work(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, counted = item
            if counted:
                self._room.release()
            self._tell_dropped()
            try:
                job()
            except Exception:
                log.exception("cannot print")
        self._tell_dropped()

    def _tell_dropped(self) -> None:
        with self._lock:
            count, self._dropped = self._dropped, 0
        if count:
            self._notice(f"{count:,} events not shown (the terminal could not keep up)")


def _show_event(event: Event, as_json: bool) -> None:
    if as_json:
        print(json.dumps(event.to_dict()), flush=True)
        return
    line = describe_event(event.name, event.payload)
    if line:
        stamp = event.timestamp.astimezone().strftime("%H:%M:%S")
        console.print(f"[dim]{stamp}[/] {line}")


async def _print_events(stream: AsyncSubscription, terminal: _Terminal, as_json: bool) -> None:
    """The host's events as they come, to the terminal: JSON lines (less process logs), else
    readable lines. Plugins' own output is left out before it takes the terminal's room."""
    from ..events import EVENT_DEVSERVER_LOG, EVENT_PROCESS_LOG

    quiet = {EVENT_PROCESS_LOG} if as_json else {EVENT_PROCESS_LOG, EVENT_DEVSERVER_LOG}
    seen = 0
    async for event in stream:
        terminal.count_dropped(stream.dropped - seen)  # those the stream could not hold
        seen = stream.dropped
        if event.name not in quiet:
            terminal.offer(functools.partial(_show_event, event, as_json))


async def _publish_examples(layout: RootLayout, show_error: ShowError) -> Published:
    """The bundled examples, published to the root's registry; none when that fails."""
    import asyncio

    from ..registry.local import publish_examples

    try:
        return await asyncio.to_thread(publish_examples, layout)
    except (PlughostError, OSError) as exc:  # the host runs anyway, without examples
        error = exc if isinstance(exc, PlughostError) else InternalError(str(exc))
        error.title = "Cannot publish the example plugins"
        show_error(error)
        return []


async def _install_examples(
    manager: PluginManager,
    published: Published,
    *,
    owned: bool,
    stop: asyncio.Event,
    say: Callable[[str], None],
    show_error: ShowError,
) -> None:
    for plugin_id, version, package in published:
        if stop.is_set():
            break
        say(f"installing example plugin [bold]{plugin_id}[/] {version}")
        try:
            if owned:
                await manager.install_plugin_version(plugin_id, version)
            else:  # a marketplace of the user's: install the bundled package itself
                await manager.install_plugin_from_path(package)
        except PlughostError as exc:
            show_error(exc)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[None]) -> bool:
    """Run ``work`` to its end, or cancel it as soon as ``stop`` is set (Ctrl-C while the host
    starts: a plugin still starting is not waited for). True when ``work`` ended."""
    import asyncio

    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()  # its error, if it failed
    return True


async def _run_host(
    target: Target, *, fresh: bool, examples: bool, exit_after: float | None, as_json: bool
) -> None:
    import asyncio

    def notice(text: str) -> None:
        if as_json:  # stdout is JSON lines
            err_console.print(text, markup=False)
        else:
            console.print(f"[yellow]{escape(text)}[/]")

    terminal = _Terminal(notice)
    try:
        await _host(
            target,
            terminal,
            fresh=fresh,
            examples=examples,
            exit_after=exit_after,
            as_json=as_json,
        )
    finally:
        await asyncio.to_thread(terminal.close)


async def _host(
    target: Target,
    terminal: _Terminal,
    *,
    fresh: bool,
    examples: bool,
    exit_after: float | None,
    as_json: bool,
) -> None:
    import asyncio

    from ..host.manager import PluginManager
    from ..registry.local import has_registry, owns_marketplace, serve_local_registry
    from ..service.api import LocalService

    layout = target.layout
    manager = PluginManager(layout.root, profile=target.profile)
    manager.dev_servers()  # dev plugins: their watchers come back at start
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # HUP: the terminal closed
        loop.add_signal_handler(sig, stop.set)
    stream = manager.bus.stream("plugin/*")

    def say(text: str) -> None:
        if not as_json:
            terminal.put(functools.partial(console.print, text))

    def show_error(exc: PlughostError) -> None:
        terminal.put(functools.partial(print_error, exc, as_json))

    printer = asyncio.create_task(_print_events(stream, terminal, as_json))
    service: LocalService | None = None
    registry = contextlib.ExitStack()

    async def start() -> None:
        nonlocal service
        await manager.initialize()
        s = manager.settings
        service = LocalService(manager, tcp_port=s.service_port, token=s.service_token or None)
        await service.start()
        owned = owns_marketplace(layout)
        published: Published = []
        if fresh and examples and not stop.is_set():
            published = await _publish_examples(layout, show_error)
        if owned and has_registry(layout) and not stop.is_set():
            url = await asyncio.to_thread(registry.enter_context, serve_local_registry(layout))
            say(f"marketplace: the root's bundled registry at {url}")
        await _install_examples(
            manager, published, owned=owned, stop=stop, say=say, show_error=show_error
        )
        if not as_json:
            table = plugin_table([i.to_json_dict() for i in manager.list_plugins()])
            terminal.put(functools.partial(console.print, table))
        say(f"host running on [bold]{escape(str(layout.root))}[/]; API on {service.socket}")
        if service.tcp_address:
            host, port = service.tcp_address
            say(f"API also on http://{host}:{port} (bearer token required)")
        say("Ctrl-C stops the host and every plugin")

    try:
        if await _unless_stopped(stop, start()):
            if exit_after is not None:
                loop.call_later(exit_after, stop.set)
            await stop.wait()
        say("stopping plugins ...")
    finally:
        if service is not None:
            await service.stop()
        await manager.shutdown()
        await asyncio.to_thread(registry.close)
        stream.close()
        await asyncio.gather(printer, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    say("host stopped; no plugin process left running")


def _is_fresh(layout: RootLayout) -> bool:
    return not layout.state_file.exists() and (
        not layout.plugins.is_dir() or not any(layout.plugins.iterdir())
    )


@app.command()
def run(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    examples: Annotated[
        bool,
        typer.Option(help="on a fresh root, install the bundled examples from a local registry"),
    ] = True,
    exit_after: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="stop after this many seconds (demos, scripts)"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print events as JSON lines")] = False,
) -> None:
    """Run the host in the foreground: load plugins, supervise them, show what happens."""
    import asyncio

    from ._runlog import logging_off_the_loop  # only the host needs it: lighter commands

    with handle_errors(as_json), logging_off_the_loop(CLOSE_WAIT):
        target = resolve_target(root, profile)
        fresh = _is_fresh(target.layout)
        if fresh and examples and not as_json:
            console.print(f"new root {escape(str(target.root))}: installing the example plugins")
        asyncio.run(
            _run_host(
                target, fresh=fresh, examples=examples, exit_after=exit_after, as_json=as_json
            )
        )


@app.command()
def ui(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    port: Annotated[
        int, typer.Option(metavar="PORT", help="127.0.0.1 port (0 = any free port)")
    ] = 0,
    open_browser: Annotated[bool, typer.Option("--open", help="open a browser")] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="print the sign-in link as one JSON line {url, root, socket}"),
    ] = False,
) -> None:
    """Open the running host's web dashboard on 127.0.0.1 (one-time sign-in link)."""
    from ..service.dashboard.serve import run_ui

    with handle_errors(as_json):
        target = resolve_target(root, profile)  # --root given before 'ui' counts too

        def ready(url: str) -> None:
            if as_json:
                from ..service.client import socket_path

                socket = socket_path(target.root)
                print(json.dumps({"url": url, "root": str(target.root), "socket": str(socket)}))
                sys.stdout.flush()

        run_ui(
            target.root,
            target.profile,
            port=port,
            open_browser=open_browser,
            echo=(lambda _text: None) if as_json else console.print,
            on_ready=ready,
        )
