"""What every ``plughost`` command shares: the Typer app, the consoles, the options, errors.

Kept apart from the command modules so that each of them (and the session
helper in ``_hosts``) can import the same app and the same conventions: the
root a command works on (``--root``/``--profile``, given before or after the
command), a PlughostError printed as title, detail and suggestions (``--json``:
``{"error": {...}}``) with exit status 1, and JSON printed one way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import InternalError, PlughostError, ValidationError
from ..paths import PROFILES, RootLayout, resolve_root

__all__ = [
    "IdArg",
    "JsonOpt",
    "ProfileOpt",
    "RootOpt",
    "Target",
    "YesOpt",
    "app",
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

RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="plugin root (default: $PLUGHOST_HOME, else per user)", show_default=False
    ),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option("--profile", help="'omniview' manages an Omniview root (~/.omniview)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
IdArg = Annotated[str, typer.Argument(metavar="ID")]

_GLOBAL_OPTIONS: dict[str, Any] = {}


@app.callback()
def _options(root: RootOpt = None, profile: ProfileOpt = None) -> None:
    """plughost: a plugin host. Options given here apply to every command."""
    _GLOBAL_OPTIONS.update(root=root, profile=profile)


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
