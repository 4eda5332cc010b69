"""How plugins, log lines and host events look on the terminal.

Shared by ``plughost run`` (its event feed and plugin table), the plugin
commands (list, info, logs, events, install) and the marketplace commands, so
that a phase, a log line or a crash reads the same wherever it is printed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.markup import escape
from rich.table import Table

from ._common import console, err_console
from ._hosts import entry_text

__all__ = [
    "build_lines",
    "capabilities_cell",
    "clock",
    "describe_event",
    "dev_error_lines",
    "duration",
    "key_value_grid",
    "phase_markup",
    "plugin_table",
    "print_answer",
    "print_info",
    "print_log_entry",
    "progress_bar",
    "state_line",
    "when",
]

PHASE_STYLE = {
    "Running": "green",
    "Degraded": "yellow",
    "Recovering": "yellow",
    "Starting": "cyan",
    "Failed": "red",
    "BuildFailed": "red",
    "Stopped": "dim",
}
LEVEL_STYLE = {"trace": "dim", "debug": "dim", "info": "", "warn": "yellow", "error": "red"}


def phase_markup(phase: str) -> str:
    style = PHASE_STYLE.get(phase, "")
    return f"[{style}]{phase}[/]" if style else phase


def duration(milliseconds: Any) -> str:
    """A duration with its unit: ``350 ms``, ``1.2 s`` (``?`` when unknown)."""
    if not isinstance(milliseconds, int | float):
        return "?"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    return f"{milliseconds / 1000:.1f} s"


def _local(stamp: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(stamp)).astimezone()
    except (TypeError, ValueError):
        return None


def when(stamp: Any) -> str:
    """An ISO time as local ``14:03`` (today) or ``2024-05-01 14:03``; "" when unknown."""
    moment = _local(stamp)
    if moment is None:
        return ""
    today = datetime.now().astimezone().date()
    return moment.strftime("%H:%M" if moment.date() == today else "%Y-%m-%d %H:%M")


def clock(stamp: Any = None) -> str:
    """``HH:MM:SS`` of an ISO time (default: now), local."""
    moment = _local(stamp) if stamp is not None else datetime.now().astimezone()
    return moment.strftime("%H:%M:%S") if moment is not None else ""


def _phase_cell(info: dict[str, Any]) -> str:
    """The phase; with no host, the last known one, said to be so and never live-looking."""
    phase = str(info.get("phase", ""))
    if info.get("live", True) is not False:
        return phase_markup(phase)
    seen = when(info.get("lastSeen"))
    return f"[dim]{escape(phase)} ({'last seen ' + seen + ', ' if seen else ''}no host)[/]"


def _build_failed(info: dict[str, Any]) -> dict[str, Any] | None:
    build = info.get("lastBuild")
    return build if isinstance(build, dict) and build.get("ok") is False else None


def capabilities_cell(info: dict[str, Any]) -> str:
    """The capabilities the plugin reported (else plugin.yaml's); when plugin.yaml declares
    others, flagged and shown too: ``resource, settings ≠ (plugin.yaml: resource)``."""
    reported = [str(c) for c in info.get("capabilities") or []]
    declared = info.get("declaredCapabilities")
    if declared is None:  # an answer from before the field existed
        declared = (info.get("metadata") or {}).get("capabilities")
    text = escape(", ".join(reported))
    if isinstance(declared, list) and set(map(str, declared)) != set(reported):
        said = ", ".join(str(c) for c in declared) or "none"
        text += f" [yellow]≠ (plugin.yaml: {escape(said)})[/]"
    return text


def plugin_table(infos: list[dict[str, Any]]) -> Table:
    table = Table("ID", "VERSION", "PHASE", "ENABLED", "PID", "CAPABILITIES")
    table.add_column("LAST ERROR", overflow="fold")  # wrapped, never cut: it says what to fix
    for i in infos:
        error = (str(i.get("lastError") or "").splitlines() or [""])[0][:500]
        dev = " (dev)" if i.get("devMode") else ""
        failed = _build_failed(i) if i.get("devMode") else None
        if failed is not None:  # the last build failed (the last good one may still run)
            dev = " [red](dev, build failed)[/]"
            where = _issues(failed)[:1]  # where it broke says more than "build failed"
            error = (where or [error or str(failed.get("error", ""))])[0][:500]
        table.add_row(
            escape(i["id"]) + dev,
            escape(str(i.get("version", ""))),
            _phase_cell(i),
            "yes" if i.get("enabled", True) else "[dim]no[/]",
            str(i.get("pid") or ""),
            capabilities_cell(i),
            escape(error),
        )
    return table


def state_line(info: dict[str, Any]) -> str:
    if info.get("live", True) is False:
        return _phase_cell(info)  # no host: no pid either
    pid = f", pid {info['pid']}" if info.get("pid") else ""
    return f"{phase_markup(str(info.get('phase')))}{pid}"


def _issues(build: dict[str, Any]) -> list[str]:
    """A build's errors as ``file:line:column: message``."""
    found = []
    for e in build.get("errors") or []:
        if not isinstance(e, dict):
            continue
        column = f":{e['column']}" if e.get("column") else ""
        found.append(f"{e.get('file', '?')}:{e.get('line', 0)}{column}: {e.get('message', '')}")
    return found


def build_lines(build: dict[str, Any], *, limit: int = 20) -> list[str]:
    """A build as markup lines: the outcome (when, how long), then each error's place."""
    took = duration(build.get("durationMs", build.get("buildDuration")))
    stamp = f"{when(build['at'])}, " if build.get("at") else ""
    if build.get("ok"):
        return [f"[green]ok[/] ({stamp}took {took})"]
    lines = [f"[red]failed[/] ({stamp}after {took}): {escape(str(build.get('error', '')))}"]
    issues = _issues(build)
    lines += [f"  [red]{escape(issue)}[/]" for issue in issues[:limit]]
    if len(issues) > limit:
        lines.append(f"  [dim]... and {len(issues) - limit} more[/]")
    return lines


def key_value_grid(rows: list[tuple[str, str]]) -> Table:
    """Two columns, the keys in bold; a row with an empty value is left out."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        if value:
            table.add_row(key, value)
    return table


def _runtime_rows(runtime: dict[str, Any] | None, why: str) -> list[tuple[str, str]]:
    """What a running plugin says about itself (``/introspect``), as info rows."""
    if runtime is None:
        return [("serves", f"[dim]unknown: {escape(why)}[/]")] if why else []
    rows: list[tuple[str, str]] = []
    address = runtime.get("address") or {}
    if address:
        rows.append(("address", escape(f"{address.get('network')} {address.get('address')}")))
    services = runtime.get("services")
    if services is not None:
        how = (
            "" if runtime.get("reflection") else "\n[dim](no server reflection: the known ones)[/]"
        )
        rows.append(("serves", escape("\n".join(services)) + how))
    lifecycle = runtime.get("lifecycle")
    if lifecycle:
        rows.append(("lifecycle", escape(str(lifecycle.get("service", "")))))
        got = lifecycle.get("info") or {}
        if got:
            rows.append(
                (
                    "  GetInfo",
                    escape(
                        f"id {got.get('pluginID')}, version {got.get('version')}, "
                        f"SDK protocol {got.get('sdkProtocolVersion')}"
                    ),
                )
            )
        caps = lifecycle.get("capabilities")
        if caps is not None:
            rows.append(("  GetCapabilities", escape(", ".join(caps)) or "[dim](none)[/]"))
    elif "lifecycle" not in (runtime.get("errors") or {}):
        rows.append(("lifecycle", "[dim]none (no lifecycle service)[/]"))
    for part, error in (runtime.get("errors") or {}).items():
        rows.append((f"{part} error", f"[red]{escape(str(error))}[/]"))
    return rows


def print_info(info: dict[str, Any], runtime: dict[str, Any] | None = None, why: str = "") -> None:
    """One plugin; with ``runtime`` (the running plugin's ``/introspect``) also what it
    serves, its lifecycle answers and address, else ``why`` that is unknown."""
    meta = info.get("metadata") or {}
    rows: list[tuple[str, str]] = [
        ("id", escape(info["id"])),
        ("name", escape(str(info.get("name", "")))),
        ("version", escape(str(info.get("version", "")))),
        ("phase", state_line(info)),
        ("enabled", "yes" if info.get("enabled", True) else "no"),
        ("capabilities", capabilities_cell(info)),
        ("description", escape(str(meta.get("description", "")))),
        ("author", escape(str((meta.get("author") or {}).get("name", "")))),
        ("category", escape(str(meta.get("category", "")))),
        ("installed", escape(str(info.get("installedAt", "")))),
    ]
    if info.get("devMode"):
        rows.append(("dev source", escape(str(info.get("devPath", "")))))
    protocol = (runtime or {}).get("protocolVersion") or info.get("protocolVersion")
    if protocol:
        rows.append(("protocol", str(protocol)))
    build = info.get("lastBuild")
    failed = _build_failed(info)
    said = failed is not None and str(info.get("lastError", "")).startswith(
        str(failed.get("error") or "\0")
    )  # the last error is that build's: shown once, under "last build"
    if info.get("lastError") and not said:
        rows.append(("last error", f"[red]{escape(str(info['lastError']))}[/]"))
    if isinstance(build, dict):
        rows.append(("last build", "\n".join(build_lines(build))))
    rows += _runtime_rows(runtime, why)
    console.print(key_value_grid(rows))


def print_answer(answer: Any) -> None:
    """A method's answer: a lone value as itself (``SERVING``), anything else as JSON."""
    value = answer
    if isinstance(value, dict) and len(value) == 1:
        [value] = value.values()
    if isinstance(value, str):
        print(value, flush=True)  # as it is: no markup, no wrapping
    elif value is None or isinstance(value, bool | int | float):
        print(json.dumps(value), flush=True)
    else:
        console.print_json(data=answer)


def _log_line(entry: dict[str, Any]) -> str:
    level = str(entry.get("level", "info"))
    stamp = str(entry.get("timestamp", ""))[11:23]
    style = LEVEL_STYLE.get(level, "")
    text = escape(entry_text(entry))
    label = f"{level.upper():5}"
    if style:
        label, text = f"[{style}]{label}[/]", f"[{style}]{text}[/]"
    return f"[dim]{stamp}[/] {label} {text}"


def print_log_entry(entry: dict[str, Any], as_json: bool) -> None:
    """One log entry: a JSON line (flushed, for pipes that follow), else a styled line."""
    if as_json:
        print(json.dumps(entry), flush=True)
    else:
        console.print(_log_line(entry))


def progress_bar(label: str, as_json: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
        disable=as_json or not err_console.is_terminal,
    )


def describe_event(name: str, payload: Any) -> str | None:
    """One readable line for an event of the host (None: not shown)."""
    p = payload if isinstance(payload, dict) else {}
    who = escape(str(p.get("pluginID") or ""))
    if name == "plugin/state_change":
        reason = f" [dim]({escape(str(p['reason']))})[/]" if p.get("reason") else ""
        return f"[bold]{who}[/] {p.get('from')} → {phase_markup(str(p.get('to')))}{reason}"
    if name == "plugin/crash":
        return _describe_crash(who, p)
    if name == "plugin/recovered":
        stable = p.get("stableFor")
        held = f", Running for {stable:g} s since" if isinstance(stable, int | float) else ""
        return f"[bold green]{who} recovered[/] after {p.get('attempt', '?')} attempt(s){held}"
    if name == "plugin/crash_recovery_failed":
        return _describe_give_up(who, p)
    if name == "plugin/install_finished":
        return f"[green]installed[/] {who} {escape(str(p.get('version', '')))}"
    if name == "plugin/install_error":
        error = p.get("error") or {}
        return f"[red]install failed[/]: {escape(str(error.get('detail', error)))}"
    if name == "plugin/update_started":
        return f"downloading {who} {escape(str(p.get('version', '')))} from the marketplace"
    if name == "plugin/update_error":
        error = p.get("error") or {}
        return f"[red]{who} update failed[/]: {escape(str(error.get('detail', error)))}"
    if name == "plugin/init_complete":
        return (
            f"host ready: {p.get('plugins', 0)} plugin(s), {p.get('running', 0)} running, "
            f"{p.get('failed', 0)} failed"
        )
    if name == "plugin/dev_reload_error":
        return "\n".join(dev_error_lines(who, p))
    if name in ("plugin/dev_install_error", "plugin/devserver/error"):
        return f"[red]{who} {name.rsplit('/', 1)[-1]}[/]: {escape(str(p.get('error', '')))}"
    if name == "plugin/dev_reload_complete":
        return (
            f"[green]{who} rebuilt[/] (build {duration(p.get('buildDuration'))}, "
            f"{duration(p.get('duration'))} in all): {phase_markup(str(p.get('phase')))}"
        )
    if name == "plugin/dev_install_complete":
        took = p.get("buildDuration")
        built = f" (built in {duration(took)})" if isinstance(took, int | float) else ""
        return f"[green]{who} dev install complete[/]{built}"
    if name == "plugin/state_write_error":
        return f"[red]cannot write the state file[/]: {escape(str(p.get('error', '')))}"
    if name == "plugin/deprecated_protocol":
        return f"[yellow]{who} speaks deprecated protocol {p.get('protocolVersion')}[/]"
    return None  # process logs, dev-server chatter, install_started, update_complete


def dev_error_lines(who: str, p: dict[str, Any]) -> list[str]:
    """A failed dev rebuild (``plugin/dev_reload_error``): why, where, and what still runs."""
    error = escape(str(p.get("error", "")))
    if p.get("stage") == "reload":
        lines = [f"[red]{who} built, but did not reload[/]: {error}"]
    else:
        lines = [f"[red]{who} build failed[/] after {duration(p.get('buildDuration'))}: {error}"]
    issues = _issues(p)
    lines += [f"  [red]{escape(issue)}[/]" for issue in issues[:20]]
    if len(issues) > 20:
        lines.append(f"  [dim]... and {len(issues) - 20} more[/]")
    if p.get("phase") in ("Running", "Degraded"):
        lines.append("  [dim]the last good build keeps running[/]")
    return lines


def _describe_crash(who: str, p: dict[str, Any]) -> str:
    kind = p.get("kind", "crashed")
    how = ""
    if p.get("signal"):
        how = f" (signal {p['signal']})"
    elif p.get("exitCode") is not None:
        how = f" (exit {p['exitCode']})"
    attempt = f"attempt {p.get('attempt', 1)} of {p.get('maxAttempts', '?')}"
    wait = p.get("nextRetryIn")
    retry = f"; {attempt}, next try in {wait:.2f} s" if isinstance(wait, int | float) else ""
    reason = escape(str(p.get("reason", "")))
    return f"[bold red]{who} {kind}[/]{how}: {reason}{retry}"


def _describe_give_up(who: str, p: dict[str, Any]) -> str:
    lines = [f"[bold red]{who} gave up recovering[/]: {escape(str(p.get('reason', '')))}"]
    tail = [str(line) for line in p.get("lines") or []][-5:]
    if tail:
        lines.append("  last log lines:")
        lines += [f"    {escape(line)}" for line in tail]
    lines += [f"  {escape(str(step))}" for step in p.get("next") or []]
    return "\n".join(lines)
