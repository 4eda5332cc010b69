"""``plughost dev PATH --follow``: stay in the foreground and show each build, reload and error.

With a running host it follows the host's events (the service's ``/v1/events``):
the host runs the plugin and rebuilds and reloads it on each save; this prints
each rebuild, where a build broke (``file:line:column: message``), the reload,
crashes, and the plugin's own warnings and errors. With no host it builds the
plugin on each save itself, each build one short session on the root, so that
``plughost run`` can start between two builds; nothing runs the plugin then, and
it says so. When a host starts it follows that host; when the host stops it goes
back to building on save. Ctrl-C stops following and leaves the plugin installed.
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape

from ..errors import PlughostError, RootLockedError
from ._common import Target, console
from ._hosts import Host, Local, Remote, _host
from ._render import (
    build_lines,
    clock,
    describe_event,
    dev_error_lines,
    duration,
    print_log_entry,
    state_line,
)

if TYPE_CHECKING:
    from watchfiles import Change

__all__ = ["dev_and_follow"]

_END = "\0end"
"""Queued by the event reader when the host's stream ends (the host stopped or died)."""
_OUTPUT_LINES = 15
"""Lines of build output shown when a failed build named no file:line."""
_LOG_LEVELS = ("warn", "error")
"""The plugin's own log lines shown while following (all of them: ``plughost logs -f``)."""
_QUIET = {"plugin/devserver/status", "plugin/process/log"}
"""Not printed with ``--json`` (snapshots and chatter)."""


class _Printer:
    """What following prints: readable lines with a clock, or JSON lines."""

    def __init__(self, plugin_id: str, source: Path, as_json: bool) -> None:
        self.plugin_id = plugin_id
        self.who = f"[bold]{escape(plugin_id)}[/]"
        self.source = source
        self.as_json = as_json

    def say(self, text: str) -> None:
        if not self.as_json:
            console.print(text)

    def line(self, text: str, stamp: Any = None) -> None:
        if not self.as_json:
            console.print(f"[dim]{clock(stamp)}[/] {text}")

    def json(self, value: Any) -> None:
        if self.as_json:
            print(json.dumps(value), flush=True)

    def installed(self, info: dict[str, Any], *, online: bool) -> None:
        """The first build of the dev install, and what happens from now on."""
        self.json(info)
        build = info.get("lastBuild") if isinstance(info.get("lastBuild"), dict) else None
        took = f" (built in {duration(build.get('durationMs'))})" if build and build["ok"] else ""
        self.say(
            f"dev install of {self.who} from {escape(str(self.source))}: {state_line(info)}{took}"
        )
        if build and not build.get("ok"):
            self.say("  last build: " + "\n".join(build_lines(build)))
        if online:
            self.say(
                f"watching {escape(str(self.source))}: each save rebuilds and reloads it "
                f"(Ctrl-C stops following; {escape(self.plugin_id)} stays installed)"
            )
        else:
            self.offline_note()

    def offline_note(self) -> None:
        self.say(
            f"[yellow]no host runs this root[/]: {self.who} is built on each save but not "
            "started; start [bold]plughost run[/] (another terminal) to run it, and this "
            "follows that host. Ctrl-C stops following; the plugin stays installed."
        )

    def built(self, info: dict[str, Any]) -> None:
        """One build of our own (no host): how long, and where it broke."""
        self.json(info)
        build = info.get("lastBuild")
        if not isinstance(build, dict):
            self.line(f"{self.who}: {state_line(info)}")
            return
        if build.get("ok"):
            self.line(
                f"[green]{self.who} built[/] in {duration(build.get('durationMs'))}: "
                f"{state_line(info)}, not started (no host)"
            )
            return
        payload = {
            "error": build.get("error", ""),
            "errors": build.get("errors") or [],
            "buildDuration": build.get("durationMs"),
            "phase": info.get("phase"),
        }
        first, *rest = dev_error_lines(self.who, payload)
        self.line(first)
        for more in rest:
            self.say(more)


# --------------------------------------------------------------------------- with a host
def _read_events(root: Path, out: queue.Queue[tuple[str, Any]]) -> threading.Event:
    """Read the host's events on a thread into ``out``; the returned event is set once the
    stream is open (from then on nothing is missed) or failed to open."""
    from ..service.client import ServiceClient

    opened = threading.Event()

    def run() -> None:
        client = ServiceClient(root)
        try:
            for item in client.stream(
                "GET", "/v1/events", params={"pattern": "plugin/*"}, on_open=opened.set
            ):
                out.put(item)
            out.put((_END, None))
        except Exception as exc:  # the host went away: the follower goes on without it
            out.put((_END, exc))
        finally:
            opened.set()
            client.close()

    threading.Thread(target=run, name="plughost-dev-follow", daemon=True).start()
    return opened


def _follow_host(host: Remote, printer: _Printer, install: bool) -> bool:
    """Print the host's dev events for the plugin: True when it was uninstalled, False
    when the host went away."""
    plugin_id, who = printer.plugin_id, printer.who
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    _read_events(host.client.root, events).wait(30)
    if install:
        printer.installed(host.dev(printer.source), online=True)
    else:
        info = host.get(plugin_id)
        printer.json(info)
        printer.line(f"a host runs this root: {who} is {state_line(info)}; following it")
    output: list[str] = []  # the current build's output, for a failure that names no place
    while True:
        try:
            name, data = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if name == _END:
            return False
        payload = data.get("payload") if isinstance(data, dict) else None
        if not isinstance(payload, dict) or payload.get("pluginID") != plugin_id:
            continue
        if name == "plugin/state_change" and payload.get("to") == "Uninstalled":
            printer.json(data)
            printer.line(f"{who} was uninstalled: nothing left to follow", data.get("timestamp"))
            return True
        if printer.as_json:
            shown = name not in _QUIET or payload.get("level") in _LOG_LEVELS
            if shown and payload.get("source") != "host":
                printer.json(data)
            continue
        stamp = data.get("timestamp")
        if name == "plugin/dev_reload_start":
            output.clear()
            changed = ", ".join(str(c) for c in payload.get("changes") or [])
            what = f"{escape(changed)} changed" if changed else "rebuild asked"
            printer.line(f"{who}: {what}: building", stamp)
        elif name == "plugin/devserver/log":
            if payload.get("source") in ("build", "ui-build"):
                output.append(str(payload.get("message", "")))
                del output[: -_OUTPUT_LINES * 4]
        elif name == "plugin/dev_reload_error":
            first, *rest = dev_error_lines(who, payload)
            if payload.get("stage") != "reload" and not payload.get("errors") and output:
                rest += [f"  [dim]{escape(line)}[/]" for line in output[-_OUTPUT_LINES:]]
            printer.line(first, stamp)
            for more in rest:
                printer.say(more)
        elif name == "plugin/devserver/error":
            if payload.get("source") not in ("build", "manager"):  # those come as reload errors
                printer.line(describe_event(name, payload) or "", stamp)
        elif name == "plugin/process/log":
            if payload.get("level") in _LOG_LEVELS and payload.get("source") != "host":
                print_log_entry(payload, False)  # the plugin's own warnings and errors
        elif name == "plugin/state_change":
            if payload.get("to") == "Failed":
                printer.line(describe_event(name, payload) or "", stamp)
        elif name in (
            "plugin/dev_reload_complete",
            "plugin/crash",
            "plugin/crash_recovery_failed",
            "plugin/recovered",
        ):
            printer.line(describe_event(name, payload) or "", stamp)


# --------------------------------------------------------------------------- no host
def _service_up(root: Path) -> bool:
    from ..service.client import ServiceClient

    client = ServiceClient.connect(root, timeout=1.0)
    if client is None:
        return False
    client.close()
    return True


def _wait_gone(root: Path, timeout: float = 30.0) -> None:
    """Until a stopping host's service stops answering (it ends its streams first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _service_up(root):
        time.sleep(0.2)


def _watch_filter(source: Path) -> tuple[Callable[[Change, str], bool], Callable[[], None]]:
    """The dev server's filter (the ``dev.watch`` globs, less generated files), and a
    function that reads the globs again (plugin.yaml may change them)."""
    from ..dev.builder import matches_watch, plan_build
    from ..metadata import load_meta

    globs: list[tuple[str, ...]] = [("*",), ()]

    def refresh() -> None:
        try:
            plan = plan_build(source, load_meta(source))
            globs[:] = [plan.watch, plan.generated]
        except PlughostError:
            globs[:] = [("*",), ()]

    def accept(_change: Change, path: str) -> bool:
        relative = os.path.relpath(path, source).replace(os.sep, "/")
        watch, generated = globs
        return (
            not relative.startswith("..")
            and matches_watch(relative, watch)
            and not (generated and matches_watch(relative, generated))
        )

    refresh()
    return accept, refresh


def _follow_root(local: Local, printer: _Printer, install: bool) -> None:
    """No host: build on each save (a one-shot session each time), until a host starts."""
    from watchfiles import watch

    from ..settings import SettingsProvider

    root, source = local.layout.root, printer.source
    if install:
        printer.installed(local.dev(source), online=False)
    else:
        printer.offline_note()
    settings = SettingsProvider(local.layout.settings_file).settings
    accept, refresh = _watch_filter(source)
    for changes in watch(
        source,
        watch_filter=accept,
        debounce=settings.dev_debounce_ms,
        step=settings.dev_step_ms,
        rust_timeout=500,
        yield_on_timeout=True,
    ):
        if _service_up(root):
            return
        if not changes:
            continue
        paths = sorted({os.path.relpath(p, source) for _c, p in changes})
        printer.line(f"{printer.who}: {escape(', '.join(paths))} changed: building")
        try:
            info = local.dev(source)
        except RootLockedError:
            return  # a host is starting on the root: follow it
        except PlughostError as exc:
            printer.json({"error": exc.to_dict()})
            printer.line(f"[red]{printer.who}: {escape(exc.title)}[/]: {escape(exc.detail)}")
            continue
        refresh()
        printer.built(info)


# --------------------------------------------------------------------------- both
def dev_and_follow(host: Host, target: Target, source: Path, as_json: bool) -> None:
    """Install ``source`` in dev mode, then follow its builds until Ctrl-C (exit 0)."""
    from ..metadata import load_meta

    printer = _Printer(load_meta(source).id, source, as_json)
    current, install = host, True
    try:
        while True:
            if isinstance(current, Remote):
                if _follow_host(current, printer, install):
                    return
                printer.line(f"[yellow]the host stopped[/]: nothing runs {printer.who} now")
                _wait_gone(target.root)
            else:
                _follow_root(current, printer, install)
            install = False
            if current is not host:
                current.close()
            current = _host(target, wait=True)
    except KeyboardInterrupt:
        printer.say(f"stopped following; {escape(printer.plugin_id)} stays installed")
    finally:
        if current is not host:
            current.close()
