"""The marketplace commands: search, show and update.

They read the marketplace through the same session as the plugin commands (the
running host's service, else a registry client of the root's settings, which
serves the root's bundled registry when that is the marketplace), so that
"installed" and "update available" are those of the root. ``update`` installs
the way ``install`` does.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import PlughostError, PluginNotFoundError
from ._common import (
    IdArg,
    JsonOpt,
    ProfileOpt,
    RootOpt,
    app,
    complete_plugin_id,
    console,
    err_console,
    fail,
    print_json,
    resolve_target,
    segment,
)
from ._hosts import Host, session
from ._plugins import install_one, report_install
from ._render import key_value_grid

__all__ = ["search", "show", "update"]

SPARK = "▁▂▃▄▅▆▇█"


def _stars(rating: float) -> str:
    full = round(rating)
    return "★" * full + "☆" * (5 - full)


def _rating(p: dict[str, Any]) -> float:
    return float(p.get("average_rating") or 0)


@app.command()
def search(
    query: Annotated[
        str,
        typer.Argument(metavar="QUERY", help="words to look for (name, description, tags)"),
    ] = "",
    category: Annotated[str, typer.Option(metavar="CATEGORY", help="only this category")] = "",
    sort: Annotated[
        str,
        typer.Option(
            metavar="ORDER", help="downloads, rating, name, updated, newest ('-' reverses)"
        ),
    ] = "",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the marketplace."""
    with session(root, profile, as_json) as host:
        found = host.market("/plugins", q=query, category=category, sort=sort)
        if as_json:
            print_json(found)
            return
        if not found:
            console.print("no plugin matches")
            return
        table = Table("ID", "NAME", "LATEST", "INSTALLED", "CATEGORY", "DOWNLOADS", "RATING")
        for p in found:
            installed = str(p.get("installed_version") or "")
            if p.get("update_available"):
                installed += " [yellow](update)[/]"
            table.add_row(
                escape(p["id"]),
                escape(str(p.get("name", ""))),
                escape(str(p.get("latest_version", ""))),
                installed,
                escape(str(p.get("category", ""))),
                str(p.get("download_count", 0)),
                f"{_stars(_rating(p))} ({p.get('review_count', 0)})",
            )
        console.print(table)


# --------------------------------------------------------------------------- show
def _sparkline(counts: list[int]) -> str:
    top = max(counts or [0])
    if top == 0:
        return SPARK[0] * len(counts)
    return "".join(SPARK[min(len(SPARK) - 1, round(c / top * (len(SPARK) - 1)))] for c in counts)


def _print_summary(plugin: dict[str, Any], stats: dict[str, Any]) -> None:
    from rich.markdown import Markdown
    from rich.panel import Panel

    installed = str(plugin.get("installed_version") or "not installed")
    if plugin.get("update_available"):
        installed += f" [yellow](update to {plugin.get('latest_version')} available)[/]"
    head = key_value_grid([
        ("latest", escape(str(plugin.get("latest_version", "")))),
        ("installed", installed),
        ("publisher", escape(str(plugin.get("publisher_name", "")))),
        ("category", escape(str(plugin.get("category", "")))),
        ("tags", escape(", ".join(plugin.get("tags") or []))),
        ("license", escape(str(plugin.get("license", "")))),
        ("rating", f"{_stars(_rating(plugin))} {_rating(plugin):.1f} "
                   f"({plugin.get('review_count', 0)} reviews)"),
        ("downloads", str(stats.get("total", 0))),
    ])  # fmt: skip
    title = f"{plugin.get('name') or plugin['id']} ({plugin['id']})"
    console.print(Panel(head, title=escape(title), subtitle=escape(plugin.get("description", ""))))
    if plugin.get("readme"):
        console.print(Panel(Markdown(plugin["readme"]), title="README"))


def _print_versions(versions: list[dict[str, Any]]) -> None:
    table = Table("VERSION", "RELEASED", "PLATFORMS", "CHANGELOG", title="Versions")
    for v in versions:
        changelog = (str(v.get("changelog") or "").splitlines() or [""])[0][:60]
        table.add_row(
            escape(v["version"]),
            str(v.get("created_at") or "")[:10],
            escape(", ".join(v.get("platforms") or [])),
            escape(changelog),
        )
    console.print(table)


def _print_reviews(reviews: list[dict[str, Any]]) -> None:
    if not reviews:
        console.print("[dim]no reviews yet[/]")
        return
    console.print("[bold]Reviews[/]")
    for r in reviews:
        console.print(
            f"  [yellow]{_stars(float(r.get('rating', 0)))}[/] "
            f"[bold]{escape(str(r.get('title', '')))}[/] "
            f"[dim]{str(r.get('created_at') or '')[:10]}[/]"
        )
        if r.get("body"):
            console.print(f"    {escape(str(r['body']))}")


def _print_downloads(stats: dict[str, Any]) -> None:
    by_version = ", ".join(
        f"{escape(str(b['version']))}: {b['count']}" for b in stats.get("by_version") or []
    )
    daily = [int(d.get("count", 0)) for d in stats.get("daily") or []]
    console.print(f"[bold]Downloads[/] {stats.get('total', 0)} total ({by_version or 'none'})")
    if daily:
        console.print(f"  last {len(daily)} days: {_sparkline(daily)}")


@app.command()
def show(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a marketplace plugin: readme, versions, reviews, downloads."""
    with session(root, profile, as_json) as host:
        base = f"/plugins/{segment(plugin_id)}"
        plugin = host.market(base)
        versions = host.market(f"{base}/versions")
        reviews = host.market(f"{base}/reviews", page=1)
        stats = host.market(f"{base}/stats")
        if as_json:
            print_json({"plugin": plugin, "versions": versions, "reviews": reviews, "stats": stats})
            return
        _print_summary(plugin, stats)
        _print_versions(versions)
        _print_reviews(reviews)
        _print_downloads(stats)


# --------------------------------------------------------------------------- update
def _installed_candidate(host: Host, plugin_id: str, as_json: bool) -> list[dict[str, Any]]:
    """The installed plugin ``plugin_id`` when it has an update (else none, and says so)."""
    plugin = host.market(f"/plugins/{segment(plugin_id)}")
    if not plugin.get("installed"):
        fail(
            PluginNotFoundError(
                f"{plugin_id} is not installed",
                plugin_id=plugin_id,
                suggestions=[f"install it: plughost install {plugin_id}"],
            )
        )
    candidates = [plugin] if plugin.get("update_available") else []
    if not candidates and not as_json:
        console.print(f"{escape(plugin_id)} is up to date ({plugin.get('installed_version')})")
    return candidates


def _print_updates(candidates: list[dict[str, Any]], as_json: bool) -> None:
    """The updates there are, without installing them."""
    if as_json:
        print_json({"updates": candidates, "updated": []})
        return
    if not candidates:
        console.print("every installed plugin is up to date")
    for p in candidates:
        console.print(
            f"{escape(p['id'])}: {p.get('installed_version')} → {p.get('latest_version')}"
        )
    if candidates:
        console.print("run 'plughost update --all' (or 'plughost update ID') to install")


@app.command()
def update(
    plugin_id: Annotated[
        str | None,
        typer.Argument(
            metavar="ID",
            help="an installed plugin (default: list the updates)",
            autocompletion=complete_plugin_id,
            show_default=False,
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="update every plugin that has an update")
    ] = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install the newest marketplace version of a plugin (or of all, with --all)."""
    with session(root, profile, as_json, wait=True) as host:
        if plugin_id:
            candidates = _installed_candidate(host, plugin_id, as_json)
        else:
            available = host.market("/plugins")
            # A plugin in dev mode is built from its source tree: never replace it.
            dev = {p["id"] for p in host.list_plugins() if p.get("devMode")}
            candidates = [p for p in available if p.get("update_available") and p["id"] not in dev]
            if not all_:
                _print_updates(candidates, as_json)
                return
        updated, failed = [], []
        for p in candidates:  # one failure does not stop the others
            body = {"id": p["id"], "version": p["latest_version"]}
            try:
                info = install_one(host, body, f"downloading {p['id']}", as_json)
            except PlughostError as exc:
                failed.append({"id": p["id"], "error": exc.to_dict()})
                if not as_json:
                    err_console.print(
                        f"[red]update of {escape(p['id'])} failed[/]: {escape(str(exc))}"
                    )
                continue
            updated.append(info)
            if not as_json:
                report_install(host, info, "updated", False, resolve_target(root, profile).root)
        if as_json:
            print_json({"updates": candidates, "updated": updated, "failed": failed})
        elif all_ and not candidates:
            console.print("every installed plugin is up to date")
        if failed:
            raise typer.Exit(1)
