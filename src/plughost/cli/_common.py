"""What every ``plughost`` command shares: the Typer app, the consoles, the options, errors.

Kept apart from the command modules so that each of them (and the session
helper in ``_hosts``) can import the same app and the same conventions: the
root a command works on (``--root``/``--profile``, given before or after the
command), a PlughostError printed as title, detail and suggestions (``--json``:
``{"error": {...}}``) with exit status 1, and JSON printed one way.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import InternalError, PlughostError, ValidationError
from ..paths import PROFILES, RootLayout, resolve_root
from ._typer_compat import install as _install_typer_fixes

_install_typer_fixes()  # plain values without pydantic; flags without "<bool>"

__all__ = [
    "IdArg",
    "JsonOpt",
    "ProfileOpt",
    "RootOpt",
    "Target",
    "YesOpt",
    "app",
    "command_app",
    "complete_plugin_id",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "print_error",
    "print_json",
    "resolve_target",
    "segment",
    "setup_logging",
]

app = typer.Typer(
    name="plughost",
    help="Install, run and supervise plugins as separate processes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # metadata's plugin id, without importing it


def _context_option(ctx: typer.Context, name: str) -> Any:
    """``--NAME`` of the command being completed, else of the commands around it."""
    current: Any = ctx
    while current is not None:
        value = (getattr(current, "params", None) or {}).get(name)
        if value:
            return value
        current = getattr(current, "parent", None)
    return None


def complete_plugin_id(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of ID: the plugins installed in the root (``plugins/<id>/plugin.yaml``).

    Reads one directory, starts nothing and imports nothing more; never fails (a
    completion that raised would print a traceback into the user's command line).
    """
    try:
        root = _context_option(ctx, "root")
        profile = _context_option(ctx, "profile")
        plugins = resolve_root(root, profile) / "plugins"
        with os.scandir(plugins) as entries:
            names = [e.name for e in entries if e.name.startswith(incomplete)]
        return sorted(
            name
            for name in names
            if _ID.fullmatch(name)
            and ".." not in name
            and (plugins / name / "plugin.yaml").is_file()
        )
    except (OSError, ValueError):
        return []


RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        metavar="DIR",
        help="plugin root (default: $PLUGHOST_HOME, else per user)",
        show_default=False,
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", metavar="NAME", help="'omniview' manages an Omniview root (~/.omniview)"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
IdArg = Annotated[
    str, typer.Argument(metavar="ID", help="a plugin id", autocompletion=complete_plugin_id)
]

_GLOBAL_OPTIONS: dict[str, Any] = {}


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"plughost {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    root: RootOpt = None,
    profile: ProfileOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            expose_value=False,
            help="print plughost's version and exit",
        ),
    ] = False,
) -> None:
    """plughost: a plugin host. Options given here apply to every command."""
    _GLOBAL_OPTIONS.update(root=root, profile=profile)


_GLOBAL_VALUES = ("--root", "--profile")  # the options before a command that take a value


def command_app(argv: list[str]) -> typer.Typer:
    """The app to run ``argv`` with: only the command it names, when it names one.

    Typer turns every command's signature into click parameters before it runs one
    (~25 ms for all of them, a sixth of ``plughost list``); the others are left out of
    this process. With no command, --help or --version before it, a group (``registry
    ...``), an unknown name or shell completion at work, the whole app.
    """
    if "_PLUGHOST_COMPLETE" in os.environ:  # the shell asks what to complete
        return app
    words = iter(argv)
    name = None
    for word in words:
        if word in _GLOBAL_VALUES:
            next(words, None)
        elif not word.startswith("-"):
            name = word
            break
        elif not word.startswith(tuple(f"{option}=" for option in _GLOBAL_VALUES)):
            return app  # --help, --version, --install-completion ...
    found = [info for info in app.registered_commands if _command_name(info) == name]
    if name is None or len(found) != 1:
        return app
    single = copy.copy(app)
    single.registered_commands = found
    single.registered_groups = []
    return single


def _command_name(info: Any) -> str | None:
    """A registered command's name, as Typer gives it (``list_`` is registered as list)."""
    if info.name:
        return str(info.name)
    return info.callback.__name__.lower().replace("_", "-") if info.callback else None


@dataclasses.dataclass(frozen=True)
class Target:
    """The root a command works on."""

    layout: RootLayout
    profile: str | None

    @property
    def root(self) -> Path:
        return self.layout.root


def resolve_target(root: Path | None, profile: str | None) -> Target:
    """The command's ``--root``/``--profile``, else the ones given before the command."""
    root = root or _GLOBAL_OPTIONS.get("root")
    profile = profile or _GLOBAL_OPTIONS.get("profile")
    if profile is not None and profile not in PROFILES:
        raise ValidationError(
            f"unknown profile {profile!r}; expected one of: {', '.join(PROFILES)}",
            title="Unknown profile",
        )
    return Target(RootLayout(resolve_root(root, profile)), profile)


def print_error(exc: PlughostError, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": exc.to_dict()}, indent=2))
        return
    who = f" ({exc.plugin_id})" if exc.plugin_id else ""
    err_console.print(f"[bold red]error[/]: [bold]{escape(exc.title)}[/]{escape(who)}")
    for line in exc.detail.splitlines() or [""]:
        err_console.print(f"  {escape(line)}")
    for hint in exc.suggestions:
        err_console.print(f"  [cyan]hint[/]: {escape(hint)}")


@contextlib.contextmanager
def handle_errors(as_json: bool = False) -> Iterator[None]:
    """Print a PlughostError (or an OSError) and exit 1; Ctrl-C exits 130."""
    try:
        yield
    except PlughostError as exc:
        print_error(exc, as_json)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except OSError as exc:
        error = InternalError(str(exc), title="System error")
        print_error(error, as_json)
        raise typer.Exit(1) from None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def segment(value: str) -> str:
    """``value`` quoted as one segment of a URL path."""
    return quote(value, safe="")


def fail(exc: PlughostError) -> NoReturn:
    raise exc


def setup_logging(level: int = logging.WARNING) -> None:
    """Library warnings (and worse) as tidy one-liners on stderr."""
    from rich.logging import RichHandler

    handler = RichHandler(
        console=err_console, show_path=False, show_time=False, rich_tracebacks=False
    )
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[handler], force=True)
