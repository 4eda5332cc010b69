"""The marketplace commands: search, show and update.

They read the marketplace through the same session as the plugin commands (the
running host's service, else a registry client of the root's settings, which
serves the root's bundled registry when that is the marketplace), so that
"installed" and "update available" are those of the root. ``update`` installs
the way ``install`` does.
"""

from __future__ import annotations

from pathlib import Path
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
    handle_errors,
    print_json,
    resolve_target,
    segment,
)
from ._hosts import Host, session
from ._plugins import install_one, report_install
from ._render import key_value_grid
from ._tools import DatabaseOpt, registry_app

__all__ = ["login", "publish", "search", "show", "update"]

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


# ----------------------------------------------------------------- login, publish
# A marketplace served by 'plughost registry serve': sign in with the device flow,
# publish through a submission (create, upload, submit; a reviewer approves it).

CREDENTIALS_FILE = "registry-credentials.json"
TOKEN_ENV = "PLUGHOST_REGISTRY_TOKEN"  # CI: an API token instead of 'plughost login'
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

RegistryOpt = Annotated[
    str,
    typer.Option(
        "--registry",
        metavar="URL",
        help="the marketplace's URL (default: the root's marketplace_url setting)",
    ),
]


def _registry_url(root: Any, profile: str | None, given: str) -> tuple[Path, str]:
    from ..errors import SettingsMissingError
    from ..settings import SettingsProvider

    target = resolve_target(root, profile)
    url = given or SettingsProvider(target.layout.settings_file).settings.marketplace_url
    if not url:
        raise SettingsMissingError(
            "no marketplace to sign in to",
            suggestions=["pass --registry URL, or set marketplace_url in the root's settings"],
        )
    return target.root, url.rstrip("/")


def _credentials(root: Path) -> dict[str, str]:
    import json

    path = root / CREDENTIALS_FILE
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_token(root: Path, url: str, token: str) -> Path:
    """Keep the token for ``url`` in the root's credentials file (mode 0600, written whole)."""
    import json
    import os

    from ..store import atomic_replace

    saved = _credentials(root)
    saved[url] = token
    path = root / CREDENTIALS_FILE
    root.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(saved, out, indent=2)

    atomic_replace(path, write, 0o600)
    return path


def _call(method: str, url: str, token: str | None = None, body: Any = None, **kw: Any) -> Any:
    """One marketplace call: its envelope's data, or a PlughostError saying why not."""
    import httpx

    from ..errors import RegistryUnavailableError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        answer = httpx.request(method, url, json=body, headers=headers, timeout=120, **kw)
        data = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RegistryUnavailableError(
            f"{method} {url}: {exc}", suggestions=["check --registry and that it is running"]
        ) from None
    if answer.status_code >= 400 or not data.get("success"):
        raise RegistryUnavailableError(
            f"{method} {url}: {answer.status_code}: {data.get('message', answer.text)}",
            title="The marketplace refused",
            suggestions=["sign in again: plughost login"] if answer.status_code == 401 else [],
        )
    return data.get("data")


@app.command()
def login(
    registry: RegistryOpt = "",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign in to a marketplace: approve the code shown in a signed-in browser."""
    import time

    import httpx

    from ..errors import RegistryUnavailableError
    from ..registry.accounts import AuthenticationError

    with handle_errors(as_json):
        where, url = _registry_url(root, profile, registry)
        start = _call("POST", f"{url}/v1/auth/device/authorize")
        page = f"{start['verification_uri']}?code={start['user_code']}"
        if as_json:
            print_json({"user_code": start["user_code"], "verification_uri": page})
        else:
            err_console.print(
                f"open [bold]{escape(page)}[/], sign in and approve the code "
                f"[bold]{escape(start['user_code'])}[/]"
            )
        deadline = time.monotonic() + float(start["expires_in"])
        interval = max(1, int(start.get("interval") or 5))
        while True:
            time.sleep(interval)
            answer = httpx.post(
                f"{url}/v1/auth/device/token",
                json={"device_code": start["device_code"], "grant_type": DEVICE_GRANT},
                timeout=60,
            )
            if answer.status_code == 200:
                token = answer.json()["data"]["access_token"]
                break
            code = answer.json().get("error", "") if answer.status_code == 400 else ""
            if code == "slow_down":
                interval += 5
            elif code != "authorization_pending" or time.monotonic() > deadline:
                raise (AuthenticationError if code else RegistryUnavailableError)(
                    f"the sign-in did not complete: {code or answer.text}",
                    suggestions=["run plughost login again and approve the code in time"],
                )
        saved = _save_token(where, url, token)
        me = _call("GET", f"{url}/v1/auth/me", token)
        if as_json:
            print_json({"registry": url, "user": me, "credentials": str(saved)})
        else:
            console.print(f"signed in to {escape(url)} as {escape(me['email'])}")


@app.command()
def publish(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="a .tar.gz plugin package")],
    publisher: Annotated[
        str, typer.Option("--publisher", metavar="SLUG", help="the publisher to submit for")
    ],
    platform: Annotated[
        str,
        typer.Option(
            metavar="PLATFORM", help="GOOS_GOARCH or any (default: read from the package)"
        ),
    ] = "",
    changelog: Annotated[
        str, typer.Option(metavar="TEXT", help="what changed in this version")
    ] = "",
    registry: RegistryOpt = "",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a package to a marketplace for review: create a submission, upload, submit."""
    import os

    from ..packages.archive import inspect_package
    from ..packages.platforms import detect_platform
    from ..registry.accounts import AuthenticationError

    with handle_errors(as_json):
        where, url = _registry_url(root, profile, registry)
        token = os.environ.get(TOKEN_ENV) or _credentials(where).get(url)
        if not token:
            raise AuthenticationError(
                f"not signed in to {url}",
                suggestions=["plughost login", f"or set {TOKEN_ENV} to an API token (CI)"],
            )
        path = package.expanduser()
        meta = inspect_package(path)
        arch = platform or detect_platform(path)
        body = {"plugin_id": meta.id, "version": meta.version, "changelog": changelog}
        made = _call("POST", f"{url}/v1/publishers/{segment(publisher)}/submissions", token, body)
        sid = segment(made["id"])
        urls = _call(
            "POST", f"{url}/v1/submissions/{sid}/upload-urls", token, {"architectures": [arch]}
        )["urls"]
        import httpx

        put = httpx.put(
            urls[arch],
            content=path.read_bytes(),
            headers={"Content-Type": "application/gzip"},
            timeout=600,
        )
        if put.status_code >= 300:
            from ..errors import RegistryUnavailableError

            raise RegistryUnavailableError(f"uploading {path.name}: {put.status_code} {put.text}")
        done = _call("POST", f"{url}/v1/submissions/{sid}/submit", token)
        if as_json:
            print_json(done)
        else:
            console.print(
                f"{escape(meta.id)} {escape(meta.version)} ({arch}): submission "
                f"{escape(done['id'])} is {escape(done['status'])}"
            )
            if done["validation_result"]:
                console.print(escape(done["validation_result"]))
        if done["status"] != "pending_review":
            raise typer.Exit(1)


# ------------------------------------------------- registry users and publishers
# Made by whoever runs the registry's servers, on its directory and database.

RegistryDirArg = Annotated[Path, typer.Argument(metavar="DIR", help="registry directory")]


@registry_app.command("user")
def registry_user(
    directory: RegistryDirArg,
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="the user's email")],
    role: Annotated[
        str, typer.Option(metavar="ROLE", help="user, reviewer (approves submissions) or admin")
    ] = "user",
    username: Annotated[str, typer.Option(metavar="NAME", help="default: EMAIL's local part")] = "",
    api_token: Annotated[
        str, typer.Option("--api-token", metavar="NAME", help="also make an API token (CI)")
    ] = "",
    database: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a marketplace user; the password is read from stdin (one line)."""
    import sys

    from ..registry.accounts import Accounts, administer

    with handle_errors(as_json):
        password = sys.stdin.readline().rstrip("\n")

        async def make(accounts: Accounts) -> dict[str, Any]:
            user = await accounts.create_user(email, password, username=username, role=role)
            made: dict[str, Any] = {"user": user.model_dump(mode="json")}
            if api_token:
                made["api_token"] = await accounts.create_api_token(user.id, api_token)
            return made

        made = administer(directory.expanduser(), make, database=database)
        if as_json:
            print_json(made)
        else:
            console.print(f"user {made['user']['id']}: {escape(made['user']['email'])} ({role})")
            if api_token:
                console.print(f"API token (shown once): {made['api_token']}")


@registry_app.command("publisher")
def registry_publisher(
    directory: RegistryDirArg,
    slug: Annotated[str, typer.Argument(metavar="SLUG", help="the publisher's short name")],
    owner: Annotated[str, typer.Option(metavar="EMAIL", help="its owner (a user)")],
    name: Annotated[str, typer.Option(metavar="NAME", help="display name (default: SLUG)")] = "",
    member: Annotated[
        list[str] | None,
        typer.Option(metavar="EMAIL=ROLE", help="add a member: owner, admin, developer, viewer"),
    ] = None,
    database: DatabaseOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a publisher (or, when it exists, its --member users)."""
    from ..errors import ValidationError
    from ..registry.accounts import Accounts, AlreadyExistsError, administer

    with handle_errors(as_json):
        pairs = [m.partition("=") for m in member or []]
        if any(not sep for _, sep, _ in pairs):
            raise ValidationError(
                "a --member is EMAIL=ROLE", suggestions=["--member ada@example.com=developer"]
            )

        async def make(accounts: Accounts) -> dict[str, Any]:
            owner_user = await accounts.user_by_email(owner)
            try:
                made = await accounts.create_publisher(slug, name, owner_id=owner_user.id)
            except AlreadyExistsError:
                if not pairs:
                    raise
                made = await accounts.publisher(slug)
            for email, _, role in pairs:
                user = await accounts.user_by_email(email)
                await accounts.set_member(slug, user.id, role)
            return made.model_dump(mode="json")

        made = administer(directory.expanduser(), make, database=database)
        if as_json:
            print_json(made)
        else:
            console.print(f"publisher {escape(made['slug'])} ({escape(made['name'])})")
