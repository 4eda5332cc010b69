"""``plughost omniview``: Omniview's plugin SDK from the command line.

``stubs`` writes the Python modules protoc generates for the SDK's v1 protos, for
an application that prefers checked-in stubs to ``plughost.omniview.load_sdk()``,
which builds the same classes at run time.

``settings`` (top level: ``plughost settings ID [KEY [VALUE]]``) lists, reads and
sets an SDK plugin's own settings through the running host (the local service's
``/v1/plugins/{id}/settings``); they live in the plugin, so there is nothing to
read without a host.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..errors import ValidationError
from ._common import (
    IdArg,
    JsonOpt,
    ProfileOpt,
    RootOpt,
    app,
    console,
    handle_errors,
    print_json,
    resolve_target,
)

__all__ = ["omniview_app", "parse_setting_value", "settings", "stubs"]

omniview_app = typer.Typer(
    help="Omniview's plugin SDK: its protos as Python stubs.", no_args_is_help=True
)
app.add_typer(omniview_app, name="omniview")

_LIFECYCLE_NOTE = (
    "proto/v1/lifecycle/lifecycle_pb2 defines omniview.sdk.lifecycle.v1, which plughost's "
    "host also registers for its health checks: in a process that runs a PluginManager, "
    "use plughost.omniview's lifecycle client instead of importing it"
)


@omniview_app.command()
def stubs(
    out: Annotated[
        Path,
        typer.Option("-o", "--out", metavar="DIR", help="directory to write the modules into"),
    ],
    sdk: Annotated[
        Path | None,
        typer.Option(
            "--sdk",
            metavar="DIR",
            help="the SDK's directory (default: $PLUGHOST_OMNIVIEW_SDK, the omniview_sdk "
            "setting, else the newest plugin-sdk in Go's module cache)",
            show_default=False,
        ),
    ] = None,
    package: Annotated[
        str | None,
        typer.Option(
            "--package",
            metavar="PACKAGE",
            help="write under DIR/<package path> and import as <package>.proto.v1.* "
            "(default: proto.v1.*, with DIR on sys.path)",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write the Python stubs (_pb2.py, _pb2.pyi, _pb2_grpc.py) of the SDK's v1 protos."""
    from ..omniview.generate import sdk_digest, write_python_stubs
    from ..omniview.locate import locate_sdk

    with handle_errors(as_json):
        location = locate_sdk(sdk, root=resolve_target(root, profile).root)
        target = out.expanduser()
        written = write_python_stubs(location.path, target, package)
        digest = sdk_digest(location.path)
        data = {
            "sdk": str(location.path),
            "source": location.source,
            "version": location.version,
            "sha256": digest,
            "out": str(target.resolve()),
            "package": package,
            "files": [str(p) for p in written],
        }
        if as_json:
            print_json(data)
            return
        version = location.version or f"sha256 {digest[:12]}"
        console.print(
            f"Omniview SDK {version} at {escape(str(location.path))} ({escape(location.source)})"
        )
        for path in written:
            console.print(f"  wrote {escape(str(path))}")
        prefix = f"{package}." if package else ""
        where = "" if package else f" (with {escape(str(target))} on sys.path)"
        console.print(
            f"{len(written)} files; import e.g. {prefix}proto.v1.settings.settings_pb2{where}"
        )
        console.print(f"note: {escape(_LIFECYCLE_NOTE)}")


# -- plughost settings ID [KEY [VALUE]] ---------------------------------------------------
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _option_value(setting: dict[str, Any], text: str) -> Any:
    """The option ``text`` names: its value (as text), else its label (any case)."""
    options = [o for o in setting.get("options") or [] if isinstance(o, dict)]
    if not options:
        return text
    for option in options:
        if _shown(option.get("value")) == text:
            return option.get("value")
    for option in options:
        if str(option.get("label", "")).casefold() == text.casefold():
            return option.get("value")
    names = ", ".join(_shown(o.get("value")) for o in options)
    raise ValidationError(
        f"{text!r} is not an option of setting {setting.get('id')!r}; its options: {names}",
        title="Wrong setting value",
    )


def parse_setting_value(setting: dict[str, Any], text: str) -> Any:
    """``VALUE`` of the command line as the value of ``setting`` (the API's JSON of it):
    true/false for a toggle, numbers, an option's value (or label) for a select, a
    comma-separated list for a multi_select, the text itself for anything else."""
    kind = str(setting.get("type", "text"))
    key = setting.get("id")

    def wrong(expected: str) -> ValidationError:
        return ValidationError(
            f"setting {key!r} ({kind}) takes {expected}, not {text!r}",
            title="Wrong setting value",
        )

    word = text.strip().lower()
    if kind == "toggle":
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise wrong("true or false")
    if kind == "integer":
        if re.fullmatch(r"[+-]?\d+", word):
            return int(word)
        raise wrong("a whole number")
    if kind == "float":
        try:
            number = float(word)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
        raise wrong("a number")
    if kind == "select":
        return _option_value(setting, text)
    if kind == "multi_select":
        return [_option_value(setting, p.strip()) for p in text.split(",") if p.strip()]
    return text


def _shown(value: Any) -> str:
    """A value as the command line writes it: text as itself, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    return json.dumps(value)


def _value_cell(setting: dict[str, Any]) -> str:
    if setting.get("redacted"):
        return "[dim](hidden)[/]" if setting.get("hasValue") else "[dim](not set)[/]"
    value = setting.get("value")
    if value is None or value == "":
        return "[dim](empty)[/]"
    return escape(_shown(value))


def _type_cell(setting: dict[str, Any]) -> str:
    kind = str(setting.get("type", ""))
    options = [_shown(o.get("value")) for o in setting.get("options") or [] if isinstance(o, dict)]
    return escape(f"{kind}: {' | '.join(options)}" if options else kind)


def _settings_table(settings: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    defaults = any(s.get("default") is not None for s in settings)
    table = Table("KEY", "TYPE", "VALUE", *(["DEFAULT"] if defaults else []))
    table.add_column("DESCRIPTION", overflow="fold")
    for s in settings:
        label, about = str(s.get("label") or ""), str(s.get("description") or "")
        text = f"{label}: {about}" if label and about else label or about
        default = [] if not defaults else [escape(_shown(s.get("default") or ""))]
        table.add_row(
            escape(str(s.get("id", ""))), _type_cell(s), _value_cell(s), *default, escape(text)
        )
    return table


def settings(
    plugin_id: IdArg,
    key: Annotated[
        str | None, typer.Argument(metavar="KEY", help="one setting", show_default=False)
    ] = None,
    value: Annotated[
        str | None,
        typer.Argument(
            metavar="VALUE",
            help="its new value: true/false, a number, an option, text",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A plugin's own settings (Omniview SDK plugins): list them, show one, or set one.

    Through the running host: the settings live in the plugin.
    """
    from ._hosts import session

    with session(root, profile, as_json) as host:
        if key is None:
            found = host.settings(plugin_id)
            if as_json:
                print_json(found)
            elif found:
                console.print(_settings_table(found))
            else:
                console.print(f"{escape(plugin_id)} has no settings")
            return
        setting = host.setting(plugin_id, key)
        if value is not None:
            setting = host.set_setting(plugin_id, key, parse_setting_value(setting, value))
        if as_json:
            print_json(setting)
        elif value is not None:
            shown = "(hidden)" if setting.get("redacted") else _shown(setting.get("value"))
            console.print(f"{escape(plugin_id)}: {escape(key)} = {escape(shown)}")
        else:
            print(_shown(setting.get("value")), flush=True)  # as it is: no markup, no wrapping
