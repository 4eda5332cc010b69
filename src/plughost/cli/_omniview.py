"""``plughost omniview``: Omniview's plugin SDK from the command line.

``stubs`` writes the Python modules protoc generates for the SDK's v1 protos, for
an application that prefers checked-in stubs to ``plughost.omniview.load_sdk()``,
which builds the same classes at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ._common import (
    JsonOpt,
    ProfileOpt,
    RootOpt,
    app,
    console,
    handle_errors,
    print_json,
    resolve_target,
)

__all__ = ["omniview_app", "stubs"]

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
    out: Annotated[Path, typer.Option("-o", "--out", help="directory to write the modules into")],
    sdk: Annotated[
        Path | None,
        typer.Option(
            "--sdk",
            help="the SDK's directory (default: $PLUGHOST_OMNIVIEW_SDK, the omniview_sdk "
            "setting, else the newest plugin-sdk in Go's module cache)",
            show_default=False,
        ),
    ] = None,
    package: Annotated[
        str | None,
        typer.Option(
            "--package",
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
