"""The author's and publisher's tools: pack, keygen, sign, registry serve/publish, init,
doctor and version.

Unlike the plugin commands, these work on files (a source tree, a package, a
key, a registry directory) rather than on a host, so none of them needs a
session; ``doctor`` checks a root without changing it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .. import __version__
from ..errors import InternalError, ValidationError
from ._common import (
    JsonOpt,
    ProfileOpt,
    RootOpt,
    app,
    console,
    err_console,
    handle_errors,
    print_json,
    resolve_target,
)

if TYPE_CHECKING:
    from ..dev.builder import BuildPlan
    from ..metadata import PluginMeta

__all__ = [
    "doctor",
    "init",
    "keygen",
    "pack",
    "registry_app",
    "registry_publish",
    "registry_serve",
    "sign",
    "version",
]

registry_app = typer.Typer(
    help="Host your own marketplace: a registry served from a directory.",
    no_args_is_help=True,
)
app.add_typer(registry_app, name="registry")


# --------------------------------------------------------------------------- packages
def _build_tree(
    source: Path, meta: PluginMeta, plan: BuildPlan, tmp: Path, settings_file: Path, as_json: bool
) -> Path:
    """Run the plugin's build into ``tmp``; the built tree, with its README and LICENSE."""
    import asyncio
    import shutil

    from ..dev.builder import PluginBuilder
    from ..settings import SettingsProvider

    settings = SettingsProvider(settings_file).settings
    tree = tmp / meta.id
    if not as_json:
        err_console.print(f"building {meta.id}: {plan.command}")
    builder = PluginBuilder(settings=settings)
    result = asyncio.run(builder.build(source, tree, meta))
    if not result.ok:
        raise result.error(meta.id) or InternalError("build failed")
    for extra in ("README.md", "LICENSE"):
        if (source / extra).is_file():
            shutil.copy2(source / extra, tree / extra)
    return tree


def _refresh_stubs(plan: BuildPlan, root: Path | None, profile: str | None) -> None:
    """Regenerate stale stubs in the source tree, which is what gets packed."""
    import asyncio

    from ..dev.builder import PluginBuilder
    from ..settings import SettingsProvider

    settings = SettingsProvider(resolve_target(root, profile).layout.settings_file).settings
    asyncio.run(PluginBuilder(settings=settings).generate_stubs(plan))


@app.command()
def pack(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="the plugin's source tree")],
    out: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--out",
            metavar="PATH",
            help="package file or directory (default ./ID-VERSION.tar.gz)",
        ),
    ] = None,
    build: Annotated[
        bool, typer.Option(help="run the plugin's build first (dev.build, or go build)")
    ] = True,
    root: RootOpt = None,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a plugin package (.tar.gz) from a source tree."""
    import tempfile

    from ..dev.builder import plan_build
    from ..metadata import load_meta
    from ..packages.archive import pack as pack_tree
    from ..packages.archive import sha256_file

    with handle_errors(as_json):
        source = directory.expanduser().resolve()
        meta = load_meta(source)
        plan = plan_build(source, meta)
        target = (out or Path.cwd()).expanduser()
        if out is None or target.is_dir():
            target = target / f"{meta.id}-{meta.version}.tar.gz"
        with tempfile.TemporaryDirectory(prefix="plughost-pack-") as tmp:
            tree = source
            if build and plan.protos and plan.command is None:  # the packed tree is the source
                _refresh_stubs(plan, root, profile)
            if build and plan.command is not None:
                settings_file = resolve_target(root, profile).layout.settings_file
                tree = _build_tree(source, meta, plan, Path(tmp), settings_file, as_json)
            pack_tree(tree, target)
        data: dict[str, Any] = {
            "path": str(target.resolve()),
            "id": meta.id,
            "version": meta.version,
            "sha256": sha256_file(target),
            "size": target.stat().st_size,
        }
        if as_json:
            print_json(data)
        else:
            console.print(f"packed {meta.id} {meta.version} → {escape(data['path'])}")
            console.print(f"  sha256 {data['sha256']}, {data['size']} bytes")


@app.command()
def keygen(
    out: Annotated[
        Path, typer.Option("-o", "--out", metavar="FILE", help="private key file (PEM)")
    ] = Path("plughost-signing.pem"),
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing key file")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key; prints the public key (64 hex chars)."""
    from ..packages.signing import generate_keypair, key_id_for

    with handle_errors(as_json):
        target = out.expanduser()
        if target.exists() and not force:
            raise ValidationError(
                f"{target} already exists",
                title="Key file exists",
                suggestions=["choose another file with -o, or pass --force to replace it"],
            )
        pem, public_hex = generate_keypair()
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        data = {
            "key_file": str(target),
            "public_key_hex": public_hex,
            "key_id": key_id_for(public_hex),
        }
        if as_json:
            print_json(data)
        else:
            print(public_hex)
            err_console.print(f"private key written to {escape(str(target))} (keep it secret)")
            err_console.print(
                "publish with it: plughost registry publish PACKAGE --dir DIR --key "
                f"{escape(str(target))}"
            )
            err_console.print(
                'clients trust it with: trusted_keys = [{public_key_hex = "<the hex above>"}] '
                "in plughost.toml (see docs/publishing.md)"
            )


@app.command()
def sign(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="the .tar.gz to sign")],
    key: Annotated[
        Path, typer.Option("--key", metavar="KEY", help="private key file from 'plughost keygen'")
    ],
    platform: Annotated[
        str,
        typer.Option(
            metavar="PLATFORM",
            help="GOOS_GOARCH or any (default: read from the package: any for a Python or "
            "UI-only plugin, the binary's platform for a native bin/plugin)",
        ),
    ] = "",
    as_json: JsonOpt = False,
) -> None:
    """Sign a package: writes PACKAGE.sig (base64) and PACKAGE.manifest.json (signed manifest)."""
    from ..packages import signing
    from ..packages.archive import inspect_package, sha256_file
    from ..packages.platforms import detect_platform

    with handle_errors(as_json):
        path = package.expanduser()
        if not path.is_file():
            raise ValidationError(f"{path}: no such file", title="No package")
        private = signing.load_private_key(key.expanduser())
        public_hex = signing.public_key_hex(private)
        meta = inspect_package(path)
        checksum = sha256_file(path)
        signature = signing.sign_checksum(checksum, private)
        manifest = signing.Manifest(
            id=meta.id,
            version=meta.version,
            platform=platform or detect_platform(path),
            sha256=checksum,
            size=path.stat().st_size,
        )
        signed = signing.sign_manifest(manifest, private)
        sig_file = path.with_name(path.name + ".sig")
        manifest_file = path.with_name(path.name + ".manifest.json")
        sig_file.write_text(signature + "\n")
        manifest_file.write_text(json.dumps(signed, indent=2) + "\n")
        data = {
            "package": str(path),
            "sha256": checksum,
            "signature": signature,
            "signature_file": str(sig_file),
            "manifest_file": str(manifest_file),
            "platform": manifest.platform,
            "public_key_hex": public_hex,
            "key_id": signed["key_id"],
        }
        if as_json:
            print_json(data)
        else:
            console.print(f"signed {escape(path.name)} for {manifest.platform} (sha256 {checksum})")
            console.print(f"  {escape(str(sig_file))}\n  {escape(str(manifest_file))}")
            console.print(f"  public key {public_hex}")


# --------------------------------------------------------------------------- registry
DatabaseOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        envvar="PLUGHOST_REGISTRY_DATABASE",
        help="the index database: sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASS@"
        "HOST:PORT/DB (default: DIR/index.db)",
    ),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        envvar="PLUGHOST_REGISTRY_STORAGE",
        help="where packages are kept: s3://BUCKET/PREFIX (endpoint and credentials from "
        "AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) or a directory (default: DIR)",
    ),
]


@registry_app.command("serve")
def registry_serve(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="registry directory")],
    host: Annotated[str, typer.Option(metavar="HOST", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="port to listen on")] = 8080,
    base_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="public URL, when behind a proxy (default: the address listened on; "
            "never the request's Host header)",
        ),
    ] = None,
    database: DatabaseOpt = None,
    storage: StorageOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="print what clients need as one JSON line {url, public_key_hex}"
        ),
    ] = False,
) -> None:
    """Serve a registry as a marketplace (the marketplace HTTP API); several servers may
    share one PostgreSQL database and one S3 bucket."""
    from ..registry.index import RegistryIndex
    from ..registry.server import run_server

    with handle_errors(as_json):
        directory = directory.expanduser()
        directory.mkdir(parents=True, exist_ok=True)
        _, public_hex, _ = RegistryIndex(
            directory, database=database, storage=storage
        ).signing_key()
        url = f"http://{host}:{port}"
        if as_json:
            data = {"url": url, "public_key_hex": public_hex, "directory": str(directory)}
            print(json.dumps(data), flush=True)
        else:
            err_console.print(f"registry {escape(str(directory))} on {url}")
            err_console.print(
                f'clients: marketplace_url = "{url}", registry_public_key = "{public_hex}"'
            )
        run_server(
            directory,
            host,
            port,
            base_url=base_url,
            log_level="warning",
            database=database,
            storage=storage,
        )


@registry_app.command("publish")
def registry_publish(
    package: Annotated[Path, typer.Argument(metavar="PACKAGE", help="a .tar.gz plugin package")],
    directory: Annotated[Path, typer.Option("--dir", metavar="DIR", help="registry directory")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="the publisher's private key (plughost keygen): sign the package now",
        ),
    ] = None,
    public_key: Annotated[
        str,
        typer.Option(
            "--public-key",
            metavar="HEX",
            help="the publisher's public key (64 hex chars) that PACKAGE's existing "
            "signature must verify with",
        ),
    ] = "",
    signature: Annotated[
        Path | None,
        typer.Option(
            "--signature",
            metavar="FILE",
            help="the publisher's checksum signature (default: PACKAGE.sig, if any)",
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            metavar="FILE",
            help="the publisher's signed manifest (default: PACKAGE.manifest.json, if any, "
            "when --signature is not given either)",
        ),
    ] = None,
    platform: Annotated[
        str,
        typer.Option(
            metavar="PLATFORM",
            help="GOOS_GOARCH or any (default: what the publisher signed, else read from the "
            "package: any for a Python or UI-only plugin, the binary's platform for a native "
            "bin/plugin)",
        ),
    ] = "",
    readme: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Markdown readme (default: the package's README.md)"),
    ] = None,
    changelog: Annotated[
        str, typer.Option(metavar="TEXT", help="what changed in this version")
    ] = "",
    database: DatabaseOpt = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a package to a registry directory, signed with the registry's key and the
    publisher's (--key, or the PACKAGE.sig / PACKAGE.manifest.json of 'plughost sign')."""
    from ..registry.index import publish

    with handle_errors(as_json):
        path = package.expanduser()
        signed, checksum_signature = _publisher_files(path, key, signature, manifest)
        result = publish(
            directory.expanduser(),
            path,
            platform=platform or None,
            readme=readme.read_text() if readme else None,
            changelog=changelog,
            publisher_key=key.expanduser() if key else None,
            publisher_manifest=signed,
            publisher_signature=checksum_signature,
            publisher_public_key=public_key,
            database=database,
            storage=storage,
        )
        data = {
            "id": result.plugin_id,
            "version": result.version,
            "platform": result.platform,
            "path": str(result.path),
            "sha256": result.sha256,
            "public_key_hex": result.public_key_hex,
            "key_id": result.key_id,
            "created_key": result.created_key,
            "publisher_public_key_hex": result.publisher_public_key_hex,
            "publisher_key_id": result.publisher_key_id,
        }
        if as_json:
            print_json(data)
            return
        console.print(
            f"published {escape(result.plugin_id)} {escape(result.version)} ({result.platform})"
        )
        if result.publisher_key_id:
            console.print(
                f"  signed by the publisher (key {result.publisher_key_id}) "
                f"and the registry (key {result.key_id})"
            )
        else:
            console.print(
                f"  signed by the registry (key {result.key_id}) only; "
                "publish with --key KEY to add the publisher's signature"
            )
        if result.created_key:
            console.print(
                f'new registry key; clients need registry_public_key = "{result.public_key_hex}"'
            )


def _publisher_files(
    package: Path, key: Path | None, signature: Path | None, manifest: Path | None
) -> tuple[dict[str, Any] | None, str | None]:
    """The publisher's signed manifest and checksum signature that go with ``package``:
    the files given, else the ``.manifest.json`` / ``.sig`` next to it (not with --key)."""
    if key is not None:
        if signature is not None or manifest is not None:
            raise ValidationError(
                "--key signs the package now; --signature and --manifest publish an existing "
                "signature: give one or the other",
                title="Two publisher signatures",
            )
        return None, None
    manifest_file, signature_file = manifest, signature
    if manifest is None and signature is None:
        beside_manifest = package.with_name(package.name + ".manifest.json")
        beside_signature = package.with_name(package.name + ".sig")
        manifest_file = beside_manifest if beside_manifest.is_file() else None
        signature_file = beside_signature if beside_signature.is_file() else None
    signed: dict[str, Any] | None = None
    checksum_signature: str | None = None
    for given in (manifest_file, signature_file):
        if given is not None and not given.expanduser().is_file():
            raise ValidationError(f"{given}: no such file", title="Signature file missing")
    if manifest_file is not None:
        from ..errors import SignatureInvalidError

        try:
            loaded = json.loads(manifest_file.expanduser().read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SignatureInvalidError(
                f"{manifest_file} is not valid JSON: {exc}",
                suggestions=["sign the package again with 'plughost sign PACKAGE --key KEY'"],
            ) from None
        if not isinstance(loaded, dict):
            raise SignatureInvalidError(
                f"{manifest_file} is not a signed manifest (a JSON object from 'plughost sign')"
            )
        signed = loaded
    if signature_file is not None:
        checksum_signature = signature_file.expanduser().read_text().strip()
    return signed, checksum_signature


# --------------------------------------------------------------------------- tooling
@app.command()
def init(
    name: Annotated[str, typer.Argument(metavar="NAME", help="the plugin id (and directory name)")],
    lang: Annotated[str, typer.Option("--lang", metavar="LANG", help="python or go")] = "python",
    directory: Annotated[
        Path | None,
        typer.Option("--dir", metavar="DIR", help="where to create it (default: here)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a new plugin that builds, installs and runs."""
    from ..dev.scaffold import scaffold

    with handle_errors(as_json):
        created = scaffold(name, lang, directory)
        files = sorted(str(p.relative_to(created)) for p in created.rglob("*") if p.is_file())
        if as_json:
            print_json({"path": str(created), "id": name, "lang": lang, "files": files})
            return
        console.print(f"created {escape(str(created))} ({lang}): {', '.join(files)}")
        console.print("next:")
        console.print(f"  plughost dev {escape(str(created))}          # run it, rebuilt on save")
        console.print(
            f"  plughost pack {escape(str(created))} && plughost install {name}-0.1.0.tar.gz"
        )


@app.command()
def doctor(root: RootOpt = None, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Check the root, the lock, stale processes, toolchains and the marketplace."""
    from ..service.doctor import run_checks

    with handle_errors(as_json):
        target = resolve_target(root, profile)
        checks = run_checks(target.root, target.profile)
        problems = [c for c in checks if c.status == "problem"]
        if as_json:
            print_json({"ok": not problems, "checks": [c.to_dict() for c in checks]})
        else:
            style = {"ok": "green", "warn": "yellow", "problem": "red"}
            for c in checks:
                console.print(
                    f"[{style[c.status]}]{c.status:7}[/] [bold]{c.name}[/]: {escape(c.detail)}"
                )
                if c.fix and c.status != "ok":
                    console.print(f"         [cyan]fix[/]: {escape(c.fix)}")
            summary = f"{len(problems)} problem(s)" if problems else "no problems"
            console.print(summary)
        if problems:
            raise typer.Exit(1)


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print plughost's version (also: plughost --version)."""
    if as_json:
        print_json({"version": __version__})
    else:
        print(__version__)
