"""The commands on installed plugins: list, info, call, install, uninstall, reload, retry,
enable, disable, rollback, logs, events and dev.

Each works through ``session``: the running host's service when there is one
(the change takes effect at once), else the root on disk (the next ``plughost
run`` picks it up), and says which of the two happened. ``install_one`` and
``report_install`` are also how ``plughost update`` installs.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from ..errors import (
    CancelledError,
    PlughostError,
    PluginCallError,
    PluginInstallError,
    PluginLoadError,
    PluginNotFoundError,
    PluginNotLoadedError,
    ValidationError,
)
from ._common import (
    IdArg,
    JsonOpt,
    ProfileOpt,
    RootOpt,
    YesOpt,
    app,
    console,
    err_console,
    fail,
    handle_errors,
    print_json,
    resolve_target,
)
from ._hosts import Host, Remote, filter_logs, normalize_level, session
from ._render import (
    build_lines,
    describe_event,
    duration,
    plugin_table,
    print_answer,
    print_info,
    print_log_entry,
    progress_bar,
    state_line,
)

if TYPE_CHECKING:
    from ..metadata import Permissions

MAX_REQUEST_JSON = 1024 * 1024
"""Bytes of request JSON ``call`` sends (the service's cap too)."""

__all__ = [
    "attach",
    "call",
    "dev",
    "disable",
    "enable",
    "events",
    "grant",
    "info",
    "install",
    "install_one",
    "list_",
    "logs",
    "reload",
    "report_install",
    "retry",
    "rollback",
    "uninstall",
]


@app.command("list")
def list_(root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List installed plugins and their phase (last known, when no host runs)."""
    with session(root, profile, as_json) as host:
        infos = host.list_plugins()
        if as_json:
            print_json(infos)
            return
        console.print(plugin_table(infos))
        if not host.online:
            console.print("[dim]no host is running this root: phases are the last known[/]")


def _introspection(host: Host, plugin_id: str) -> tuple[dict[str, Any] | None, str]:
    """What the running plugin serves and says about itself, or why that is not known."""
    if not host.online:
        return None, "no host is running this root"
    try:
        return host.introspect(plugin_id), ""
    except (PluginNotLoadedError, PluginCallError) as exc:  # not running, or not answering
        return None, exc.detail


@app.command()
def info(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one installed plugin, and what it serves and answers when it runs.

    Phase, pid, metadata and last error; for a running plugin also its gRPC services,
    its lifecycle GetInfo and GetCapabilities answers, protocol version and address.
    """
    with session(root, profile, as_json) as host:
        data = host.get(plugin_id)
        runtime, why = _introspection(host, plugin_id)
        if as_json:
            found = runtime or {}
            data.update(
                services=found.get("services"),
                reflection=found.get("reflection"),
                lifecycle=found.get("lifecycle"),
                address=found.get("address"),
                introspectErrors=found.get("errors") or ({"plugin": why} if why else {}),
            )
            if found.get("protocolVersion") is not None:
                data["protocolVersion"] = found["protocolVersion"]
            print_json(data)
        else:
            print_info(data, runtime, why if host.online else "")
            _print_permissions(data)


def _permissions() -> type[Permissions]:
    """The model, imported on first use: pydantic stays out of commands that never need it."""
    from ..metadata import Permissions

    return Permissions


def _permission_lines(raw: object) -> list[str]:
    return _permissions().model_validate(raw).describe() if isinstance(raw, dict) else []


def _print_permissions(data: dict[str, Any]) -> None:
    """What the plugin asks for, what was granted, and how it is enforced."""
    asked = (data.get("metadata") or {}).get("permissions")
    if asked is None:
        console.print("permissions: none declared (runs unconfined)")
        return
    granted = data.get("grantedPermissions") or asked
    console.print("permissions granted:")
    for line in _permission_lines(granted):
        console.print(f"  {escape(line)}")
    if granted != asked:
        console.print("asks for: " + escape("; ".join(_permission_lines(asked))))
    console.print(f"sandbox: {escape(data.get('sandbox') or 'not started since the host began')}")


def _ask_to_grant(
    heading: str, lines: list[str], question: str, *, granted: bool, as_json: bool
) -> bool:
    """Print what is asked for in plain words; True when granted (--yes/--grant, or the
    user said yes), False when the user said no. Without a terminal to ask on, raises."""
    if not as_json:
        err_console.print(escape(heading))
        for line in lines:
            err_console.print(f"  {escape(line)}")
    if granted:
        return True
    if not sys.stdin.isatty():
        raise CancelledError(
            f"{heading.rstrip(':')}, and there is no terminal to ask on",
            title="Permissions not granted",
            suggestions=["read them above, then run again with --yes (or --grant)"],
        )
    return typer.confirm(question, default=False, err=True)


def _confirm_permissions(package: Path, grant: bool, as_json: bool) -> None:
    """Print what the package asks for in plain words; ask unless --yes/--grant said yes."""
    from ..metadata import load_meta_from_tarball

    try:
        meta = load_meta_from_tarball(package)
    except PlughostError:
        return  # not a package: the install itself says what is wrong, as it would without asking
    if meta.permissions is None:
        if not as_json:
            err_console.print(f"{meta.id} declares no permissions: it runs unconfined")
        return
    heading = f"{meta.id} {meta.version} asks to:"
    question = "Grant these permissions and install?"
    if not _ask_to_grant(
        heading, meta.permissions.describe(), question, granted=grant, as_json=as_json
    ):
        raise CancelledError(
            f"the permissions of {meta.id} were not granted", title="Install cancelled"
        )


def ungranted_lines(info: dict[str, Any]) -> list[str]:
    """What an installed plugin asks for beyond its grant (empty: nothing is held back)."""
    asked = (info.get("metadata") or {}).get("permissions")
    granted = info.get("grantedPermissions")
    if not isinstance(asked, dict) or not isinstance(granted, dict):
        return []
    return _permissions().model_validate(granted).exceeded_by(_permissions().model_validate(asked))


def _installed_version(host: Host, plugin_id: str) -> str | None:
    try:
        return str(host.get(plugin_id).get("version"))
    except PluginNotFoundError:
        return None


def _settle_held(
    host: Host, info: dict[str, Any], replaced: str | None, grant: bool, as_json: bool
) -> dict[str, Any]:
    """A marketplace install is downloaded, verified and put in place, but held (not
    started) while it asks for permissions not granted: ask, then grant it, or undo the
    install (uninstall it, or roll back to the replaced version)."""
    more = ungranted_lines(info)
    plugin_id, version = str(info["id"]), str(info.get("version"))
    if not more:
        granted = info.get("grantedPermissions")
        if grant and isinstance(granted, dict) and not as_json:  # said, even when unasked
            err_console.print(f"granted to {escape(plugin_id)} {escape(version)}:")
            for line in _permission_lines(granted):
                err_console.print(f"  {escape(line)}")
        return info
    if replaced is None:
        asked = _permissions().model_validate(info["metadata"]["permissions"])
        heading, lines = f"{plugin_id} {version} asks to:", asked.describe()
    else:
        heading, lines = f"{plugin_id} {version} asks for more than {replaced} was granted:", more
    try:
        agreed = _ask_to_grant(
            heading, lines, "Grant these permissions and start it?", granted=grant, as_json=as_json
        )
    except CancelledError as exc:
        undo = "uninstall" if replaced is None else "rollback"
        raise CancelledError(
            f"{plugin_id} {version} is installed but held (not started): {exc.detail}",
            title=exc.title,
            plugin_id=plugin_id,
            suggestions=[
                f"read them above, then grant them: plughost grant {plugin_id}",
                f"or undo the install: plughost {undo} {plugin_id}",
            ],
        ) from None
    if agreed:
        return host.grant(plugin_id)
    if replaced is None:
        host.uninstall(plugin_id)
        undone = "uninstalled it again"
    else:
        host.rollback(plugin_id)
        undone = f"rolled back to {replaced}"
    raise CancelledError(
        f"the permissions of {plugin_id} {version} were not granted: {undone}",
        title="Install cancelled",
    )


# --------------------------------------------------------------------------- call
def _request_json(text: str) -> Any:
    """The request argument as JSON ('-': read from stdin), within the size cap."""
    if text == "-":
        text = sys.stdin.read(MAX_REQUEST_JSON + 1)
    if len(text.encode()) > MAX_REQUEST_JSON:
        raise ValidationError(
            f"the request JSON is larger than {MAX_REQUEST_JSON // 1024} KiB",
            title="Request too large",
        )
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValidationError(
            f"the request is not valid JSON: {exc}",
            title="Invalid request JSON",
            suggestions=['quote it for the shell: \'{"field": "value"}\''],
        ) from None


@app.command()
def call(
    plugin_id: IdArg,
    method: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE/METHOD", help="e.g. grpc.health.v1.Health/Check", show_default=False
        ),
    ],
    request: Annotated[
        str,
        typer.Argument(
            metavar="JSON", help="the request message as protobuf JSON; '-' reads stdin"
        ),
    ] = "{}",
    timeout: Annotated[
        float,
        typer.Option("--timeout", metavar="SECONDS", min=0.001, max=300, help="for the whole call"),
    ] = 10.0,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Call a unary gRPC method of a running plugin and print its answer (JSON in and out).

    Messages are described by the plugin's gRPC server reflection, else by plughost's
    own descriptors of the services every plugin serves (health, go-plugin's
    controller and stdio, the lifecycle service).
    """
    with session(root, profile, as_json) as host:
        body = _request_json(request)
        answer = host.call(plugin_id, method, body, timeout)
        if as_json:
            print_json(answer)
        else:
            print_answer(answer)


# --------------------------------------------------------------------------- install
def _parse_spec(spec: str) -> tuple[str, str | None]:
    plugin_id, _, version = spec.partition("@")
    return plugin_id, version or None


def _looks_like_path(target: str) -> bool:
    """A package file or a plugin directory (an existing file, a path with '/', one starting
    with '.' or '~' as ids never do, a .tar.gz name), not ID[@VERSION]."""
    return (
        Path(target).expanduser().is_file()
        or "/" in target
        or target.startswith((".", "~"))
        or target.endswith((".tar.gz", ".tgz"))
    )


def _same_root_options(root: Path | None, profile: str | None) -> str:
    """`` --profile P --root R`` as this command was given them, for a suggested command."""
    from ..paths import resolve_root

    target = resolve_target(root, profile)
    options = f" --profile {target.profile}" if target.profile else ""
    if target.root != resolve_root(None, target.profile):
        options += f" --root {shlex.quote(str(target.root))}"
    return options


def _pack_directory(source: Path, workdir: Path, options: str) -> tuple[Path, str]:
    """``install DIR``: the plugin tree ``source`` packed into ``workdir`` by ``plughost
    pack``'s code, and the plugin's id (stale stubs regenerated first, as ``pack`` does). A
    tree that needs a build (a compiled plugin) is refused, naming the commands that do it.
    """
    from ..dev.builder import plan_build
    from ..dev.protos import stubs_stale
    from ..metadata import METADATA_FILE, load_meta
    from ..packages.archive import pack, validate_package_dir

    if not (source / METADATA_FILE).is_file():
        raise PluginInstallError(
            f"{source} has no {METADATA_FILE}, so it is not a plugin directory",
            title="Not a plugin directory",
            suggestions=[
                f"give the directory that holds the plugin's {METADATA_FILE}, or a .tar.gz package"
            ],
        )
    meta = load_meta(source)
    plan = plan_build(source, meta)
    build = plan.command
    if build is None and plan.protos and stubs_stale(source, plan.language, plan.protos):
        # Stale stubs of a plugin that needs no build: regenerated, as `pack` does.
        import asyncio

        from ..dev.builder import PluginBuilder

        asyncio.run(PluginBuilder().generate_stubs(plan))
    if build is not None:
        package = f"{meta.id}-{meta.version}.tar.gz"
        quoted = shlex.quote(str(source))
        raise PluginInstallError(
            f"{source} must be built before it is packed ({build}); install does not build",
            title="Plugin needs a build",
            plugin_id=meta.id,
            suggestions=[
                f"build and pack it: plughost pack {quoted} -o {package}{options}",
                f"then install the package: plughost install ./{package}{options}",
                f"or run it from its source, rebuilt on save: plughost dev {quoted}{options}",
            ],
        )
    validate_package_dir(source)  # what pack checks, before anything is written
    return pack(source, workdir / f"{meta.id}-{meta.version}.tar.gz"), meta.id


def _verify_package_signature(path: Path, public_key: str, settings_file: Path) -> str:
    """Check a local package against its detached signed manifest (``PATH.manifest.json``).

    The manifest must be signed by a trusted key (``trusted_keys`` and
    ``registry_public_key`` from the root's settings, plus ``--public-key``)
    and describe exactly this file, the plugin inside it and this machine's
    platform (or ``any``; docs/publishing.md). Without a
    manifest, the original ``PATH.sig`` (a signature over the hex checksum) is
    accepted only where the settings allow that scheme.
    """
    from ..errors import SignatureInvalidError
    from ..host.installer import trusted_keys
    from ..packages import signing
    from ..packages.archive import inspect_package, sha256_file
    from ..packages.platforms import ANY_PLATFORM
    from ..registry.models import current_platform
    from ..settings import SettingsProvider

    settings = SettingsProvider(settings_file).settings
    keys = trusted_keys(settings)
    key = public_key.strip().lower()
    if key and all(k.public_key_hex.lower() != key for k in keys):
        keys.append(signing.TrustedKey(key_id=signing.key_id_for(key), public_key_hex=key))
    if not keys:
        raise ValidationError(
            "--require-signature needs a public key to check against",
            title="No public key",
            suggestions=[
                "pass --public-key HEX, or set registry_public_key / trusted_keys in plughost.toml"
            ],
        )
    manifest_file = path.with_name(path.name + ".manifest.json")
    sig_file = path.with_name(path.name + ".sig")
    if manifest_file.is_file():
        try:
            signed = json.loads(manifest_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SignatureInvalidError(
                f"{manifest_file.name} is not valid JSON: {exc}",
                suggestions=["sign the package again with 'plughost sign'"],
            ) from None
        manifest = signing.verify_manifest(signed, keys)
        signing.verify_file(path, manifest)
        inside = inspect_package(path).id
        if manifest.id != inside:
            raise SignatureInvalidError(
                f"the manifest is signed for plugin {manifest.id!r}, but the package is {inside!r}",
                suggestions=["the package and its manifest do not belong together"],
            )
        if manifest.platform not in (ANY_PLATFORM, current_platform()):
            raise SignatureInvalidError(
                f"{path.name} is signed as a package for {manifest.platform}; this machine is "
                f"{current_platform()}",
                title="Package for another platform",
                suggestions=[f"install the package built for {current_platform()}"],
                plugin_id=inside,
            )
        return manifest.sha256
    if not sig_file.is_file():
        raise signing.UnsignedArtifactError(
            f"{path} has no signature file ({manifest_file.name} or {sig_file.name})",
            suggestions=["sign it with 'plughost sign PACKAGE --key KEYFILE'"],
        )
    if not (settings.legacy_signatures_allowed or key):
        raise signing.UnsignedArtifactError(
            f"{path} has only a checksum signature ({sig_file.name}), no signed manifest",
            suggestions=[
                "sign it again with 'plughost sign' (writes the manifest)",
                "or set accept_checksum_signatures = true",
            ],
        )
    checksum = sha256_file(path)
    signature = sig_file.read_text().strip()
    errors: list[SignatureInvalidError] = []
    for trusted in keys:
        try:
            signing.verify_checksum_signature(checksum, signature, trusted.public_key_hex)
            return checksum
        except SignatureInvalidError as exc:
            errors.append(exc)
    raise errors[-1]


def _install_request(
    target: str,
    *,
    require_signature: bool,
    public_key: str,
    root: Path | None,
    profile: str | None,
    as_json: bool,
    workdir: Path,
) -> tuple[dict[str, Any], str]:
    """What to ask the host for ``install TARGET``, and the progress bar's label.

    A directory is packed into ``workdir`` first, which must outlive the install.
    """
    if not _looks_like_path(target):
        plugin_id, version = _parse_spec(target)
        return {"id": plugin_id, "version": version}, f"downloading {plugin_id}"
    path = Path(target).expanduser().resolve()
    if path.is_dir():
        if require_signature or public_key.strip():
            raise ValidationError(
                f"{path} is a directory, which has no signature to check",
                title="Nothing to verify",
                suggestions=[
                    "pack and sign it (plughost pack DIR, plughost sign PACKAGE --key KEY), "
                    "then install the package with --require-signature"
                ],
            )
        package, plugin_id = _pack_directory(path, workdir, _same_root_options(root, profile))
        if not as_json:
            err_console.print(f"packed {escape(str(path))} as {escape(package.name)}")
        return {"path": str(package)}, f"installing {plugin_id}"
    if require_signature or public_key.strip():
        if not path.is_file():
            raise PluginInstallError(f"{path}: no such file")
        layout = resolve_target(root, profile).layout
        _verify_package_signature(path, public_key, layout.settings_file)
        if not as_json:
            err_console.print(f"signature of {path.name} verified")
    return {"path": str(path)}, f"installing {path.name}"


def install_one(host: Host, body: dict[str, Any], label: str, as_json: bool) -> dict[str, Any]:
    """Install through ``host``, with a progress bar on a terminal."""
    with progress_bar(label, as_json) as bar:
        task = bar.add_task(label, total=None)

        def progress(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        return host.install(body, progress)


def report_install(host: Host, info: dict[str, Any], verb: str, as_json: bool, root: Path) -> None:
    """Say what was installed and whether it runs; a plugin that failed to start fails."""
    if as_json:
        print_json(info)
    elif host.online:
        console.print(
            f"{verb} [bold]{escape(info['id'])}[/] {escape(str(info.get('version')))}: "
            f"{state_line(info)}"
        )
    else:
        console.print(
            f"{verb} [bold]{escape(info['id'])}[/] {escape(str(info.get('version')))} "
            f"into {escape(str(root))}; not started: no host is running this root "
            "('plughost run' starts it)"
        )
    if host.online and info.get("phase") == "Failed" and info.get("enabled", True):
        fail(
            PluginLoadError(
                f"{verb}, but it did not start: {info.get('lastError', '')}",
                title="Plugin failed to start",
                plugin_id=info["id"],
                suggestions=[f"see 'plughost logs {info['id']}'", f"plughost retry {info['id']}"],
            )
        )


@app.command()
def install(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PATH|DIR|ID[@VERSION]",
            help="a .tar.gz package, a plugin directory (packed first) or a plugin id",
        ),
    ],
    require_signature: Annotated[
        bool,
        typer.Option(
            "--require-signature",
            help="for a package file: refuse it unless PATH.manifest.json (or, where "
            "allowed, PATH.sig) verifies with a trusted key",
        ),
    ] = False,
    public_key: Annotated[
        str,
        typer.Option(
            "--public-key",
            metavar="HEX",
            help="for a package file: also trust this publisher key (64 hex chars) and "
            "require the signature (implies --require-signature)",
        ),
    ] = "",
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="grant the permissions the package asks for, unasked"),
    ] = False,
    grant: Annotated[
        bool,
        typer.Option("--grant", help="the same as --yes, for scripts: grant what it asks for"),
    ] = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install (or update) a plugin from a package file, a plugin directory or the marketplace.

    A directory (a path: './my-plugin', '.') is packed as 'plughost pack' packs it, then
    installed; one that must be built first is refused, with the commands that build it.
    A package's permissions are printed first and must be granted (asked on a terminal).
    """
    import tempfile

    with (
        session(root, profile, as_json, wait=True) as host,
        tempfile.TemporaryDirectory(prefix="plughost-install-") as workdir,
    ):
        body, label = _install_request(
            target,
            require_signature=require_signature,
            public_key=public_key,
            root=root,
            profile=profile,
            as_json=as_json,
            workdir=Path(workdir),
        )
        if "path" in body:
            _confirm_permissions(Path(body["path"]), yes or grant, as_json)
            info = install_one(host, body, label, as_json)
        else:  # the permissions are known once downloaded: asked before it starts
            replaced = _installed_version(host, body["id"])
            info = install_one(host, {**body, "grant": yes or grant}, label, as_json)
            info = _settle_held(host, info, replaced, yes or grant, as_json)
        report_install(host, info, "installed", as_json, resolve_target(root, profile).root)


@app.command()
def grant(
    plugin_id: IdArg,
    yes: YesOpt = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant the permissions an installed plugin asks for; a held install or update starts.

    Says first what it asks for beyond the current grant, and asks (unless --yes).
    """
    with session(root, profile, as_json, wait=True) as host:
        current = host.get(plugin_id)
        more = ungranted_lines(current)
        heading = f"{plugin_id} {current.get('version')} asks for more than was granted:"
        if more and not _ask_to_grant(
            heading, more, "Grant these permissions?", granted=yes, as_json=as_json
        ):
            raise CancelledError(f"nothing was granted to {plugin_id}", title="Grant cancelled")
        if not more and not as_json:
            err_console.print(f"{escape(plugin_id)} asks for nothing beyond its grant")
        info = host.grant(plugin_id)
        _print_done("granted", plugin_id, info, as_json)
        if info.get("phase") == "Failed":
            raise typer.Exit(1)


@app.command()
def uninstall(
    plugin_id: IdArg,
    yes: YesOpt = False,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop a plugin and remove it with its logs."""
    with session(root, profile, as_json, wait=True) as host:
        current = host.get(plugin_id)
        if not yes:
            typer.confirm(
                f"Uninstall {current['id']} {current.get('version', '')}?", abort=True, err=True
            )
        info = host.uninstall(plugin_id)
        if as_json:
            print_json(info)
        else:
            console.print(f"uninstalled [bold]{escape(plugin_id)}[/]")


# --------------------------------------------------------------------------- lifecycle
def _print_done(
    verb: str, plugin_id: str, info: dict[str, Any], as_json: bool, note: str = ""
) -> None:
    if as_json:
        print_json(info)
    else:
        console.print(f"{verb} [bold]{escape(plugin_id)}[/]: {state_line(info)}{note}")


def _simple_action(
    name: str, verb: str, plugin_id: str, root: Path | None, profile: str | None, as_json: bool
) -> None:
    with session(root, profile, as_json, wait=True) as host:
        info = host.action(name, plugin_id)
        _print_done(verb, plugin_id, info, as_json)
        failed = info.get("phase") == "Failed"
        if failed and not as_json and info.get("lastError"):
            err_console.print(f"  [red]{escape(str(info['lastError']))}[/]")
        if failed:
            raise typer.Exit(1)


@app.command()
def reload(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Stop a running plugin and start it again."""
    _simple_action("reload", "reloaded", plugin_id, root, profile, as_json)


@app.command()
def retry(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Start a failed plugin again, with a fresh crash budget."""
    _simple_action("retry", "retried", plugin_id, root, profile, as_json)


def _set_enabled(
    plugin_id: str, enabled: bool, root: Path | None, profile: str | None, as_json: bool
) -> None:
    with session(root, profile, as_json, wait=True) as host:
        info = host.set_enabled(plugin_id, enabled)
        note = "" if host.online or not enabled else "; 'plughost run' will not start it"
        if enabled and not host.online:
            note = "; 'plughost run' will start it"
        _print_done("enabled" if enabled else "disabled", plugin_id, info, as_json, note)


@app.command()
def enable(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Enable a plugin (and start it when a host runs); remembered across restarts."""
    _set_enabled(plugin_id, True, root, profile, as_json)


@app.command()
def disable(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Disable a plugin (and stop it); a disabled plugin is not started."""
    _set_enabled(plugin_id, False, root, profile, as_json)


@app.command()
def rollback(
    plugin_id: IdArg, root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Go back to the version the last install replaced."""
    with session(root, profile, as_json, wait=True) as host:
        info = host.rollback(plugin_id)
        report_install(host, info, "rolled back to", as_json, resolve_target(root, profile).root)


# --------------------------------------------------------------------------- watching
@app.command()
def logs(
    plugin_id: IdArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
    lines: Annotated[
        int, typer.Option("-n", "--lines", metavar="N", help="how many lines", min=0)
    ] = 50,
    grep: Annotated[
        str | None, typer.Option("--grep", metavar="REGEX", help="only lines matching this")
    ] = None,
    level: Annotated[
        str | None,
        typer.Option(
            "--level", metavar="LEVEL", help="only this level and above (info, warn, error)"
        ),
    ] = None,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print a plugin's recent log lines (-f: and follow them)."""
    with session(root, profile, as_json) as host:
        if level:
            level = normalize_level(level)
        if grep:
            filter_logs([], grep, None)  # a bad regex fails here, before any output
        entries = host.logs(plugin_id, lines, grep, level) if lines else []
        for entry in entries:
            print_log_entry(entry, as_json)
        if not as_json:
            _last_build_note(host, plugin_id)
        if not follow:
            return
        with contextlib.suppress(KeyboardInterrupt):
            for entry in host.follow(plugin_id):
                if filter_logs([entry], grep, level):
                    print_log_entry(entry, as_json)


def _last_build_note(host: Host, plugin_id: str) -> None:
    """Under a dev plugin's log (on stderr): its last build, when that build failed."""
    try:
        info = host.get(plugin_id)
    except PlughostError:  # a log without its plugin (removed by hand): the log is enough
        return
    build = info.get("lastBuild")
    if info.get("devMode") and isinstance(build, dict) and build.get("ok") is False:
        err_console.print(
            f"[bold]{escape(plugin_id)} last build[/]: " + "\n".join(build_lines(build))
        )


@app.command()
def events(
    pattern: Annotated[str, typer.Option(metavar="GLOB", help="event names to show")] = "plugin/*",
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow the running host's events (state changes, crashes, installs ...)."""
    with session(root, profile, as_json) as host:
        if not isinstance(host, Remote):
            fail(
                PluginNotLoadedError(
                    f"no host is running root {host.layout.root}, so there are no events",
                    title="No running host",
                    suggestions=[f"start one: plughost run --root {host.layout.root}"],
                )
            )
        with contextlib.suppress(KeyboardInterrupt):
            for name, data in host.client.stream("GET", "/v1/events", params={"pattern": pattern}):
                if as_json:
                    print(json.dumps(data), flush=True)
                    continue
                payload = data.get("payload", {}) if isinstance(data, dict) else {}
                line = describe_event(name, payload)
                if line:
                    console.print(line)


# --------------------------------------------------------------------------- dev mode
def _print_dev_install(info: dict[str, Any], path: Path, *, online: bool, failed: bool) -> None:
    head = f"dev install of [bold]{escape(info['id'])}[/] from {escape(str(path))}:"
    if online:
        console.print(f"{head} {state_line(info)}")
        if not failed:
            console.print("watching the source: saving a file rebuilds and reloads it")
    else:
        build = info.get("lastBuild") if isinstance(info.get("lastBuild"), dict) else {}
        took = f" in {duration(build.get('durationMs'))}" if build else ""
        result = "build failed" if failed else f"built{took}, installed, not started"
        console.print(
            f"{head} {result}; no host is running this root: 'plughost run' runs it and "
            "rebuilds it on save"
        )


@app.command()
def dev(
    path: Annotated[Path, typer.Argument(metavar="DIR", help="the plugin's source directory")],
    follow: Annotated[
        bool | None,
        typer.Option(
            "--follow/--no-follow",
            help="stay in the foreground showing each build, reload and error until Ctrl-C, "
            "which leaves the plugin installed (default: --follow when stdout is a terminal)",
            show_default=False,
        ),
    ] = None,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Install a plugin from its source tree in dev mode: built, run, rebuilt on save.

    With a running host the plugin runs, and each save rebuilds and reloads it. With
    none it is built and installed, not started ('plughost run' runs it).
    """
    with session(root, profile, as_json, wait=True) as host:
        source = path.expanduser().resolve()
        if follow if follow is not None else (sys.stdout.isatty() and not as_json):
            from ._devfollow import dev_and_follow

            dev_and_follow(host, resolve_target(root, profile), source, as_json)
            return
        info = host.dev(source)
        failed = info.get("phase") in ("BuildFailed", "Failed")
        if as_json:
            print_json(info)
        else:
            _print_dev_install(info, path, online=host.online, failed=failed)
        if failed:
            if not as_json and info.get("lastError"):
                err_console.print(f"[red]{escape(str(info['lastError']))}[/]")
            raise typer.Exit(1)


@app.command()
def attach(
    plugin_id: IdArg,
    command: Annotated[
        list[str],
        typer.Argument(
            metavar="-- CMD [ARGS...]",
            help="the plugin's executable, 'go run ./cmd/x', or a debugger running it",
            show_default=False,
        ),
    ],
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a plugin by hand (go run, a debugger) for the host to attach to.

    CMD runs in the foreground with the environment the host would give the plugin.
    From the handshake it prints, plugins/ID/.devinfo is written: a running host (or
    one started later) attaches to it without spawning. Ctrl-C stops it and removes
    the file; the exit status is CMD's. For SDKs that cannot write .devinfo themselves.
    --json prints the .devinfo written as one JSON line instead of the "attached" line.
    """
    import asyncio

    from ..dev.external import run_attached
    from ..settings import SettingsProvider

    def attached_json(info: Any, path: Path) -> None:
        data = json.loads(info.to_json())
        print(json.dumps({"attached": data, "path": str(path)}), flush=True)

    with handle_errors(as_json):
        target = resolve_target(root, profile)
        overrides = {"profile": target.profile} if target.profile else None
        settings = SettingsProvider(target.layout.settings_file, overrides).settings
        status = asyncio.run(
            run_attached(
                target.layout,
                plugin_id,
                command,
                settings,
                say=lambda text: err_console.print(escape(text), soft_wrap=True),
                on_attached=attached_json if as_json else None,
            )
        )
    raise typer.Exit(status)
