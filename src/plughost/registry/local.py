"""The bundled local registry: the example plugins as a signed marketplace inside the root.

On a fresh root ``plughost run`` packs the bundled examples, publishes them
into ``<root>/registry/`` (which creates the registry's Ed25519 key), serves
that directory on 127.0.0.1 and installs the examples through the full
marketplace path (download, checksum, signature). ``marketplace_url`` and
``registry_public_key`` are written to ``plughost.toml`` only when unset; the
URL written is remembered in ``registry/.served-url``, so later runs (and
one-shot CLI commands on an idle root) know the marketplace is this local
one and serve it again, on the same port when it is free.
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..fsutil import PRIVATE_DIR, PRIVATE_FILE, create_if_not_exists, private_dir, tighten
from ..paths import RootLayout
from ..store import atomic_write_text

__all__ = [
    "EXAMPLES",
    "LOCAL_REGISTRY_DIR",
    "local_registry_url",
    "owns_marketplace",
    "publish_examples",
    "read_toml",
    "serve_local_registry",
    "set_toml_keys",
]

EXAMPLES = ("hello", "slowstart")
LOCAL_REGISTRY_DIR = "registry"
_MARKER = ".served-url"


def registry_dir(layout: RootLayout) -> Path:
    return layout.registry


# -- plughost.toml (flat keys only: what we write is top-level) ---------------------------
def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def set_toml_keys(path: Path, values: Mapping[str, object]) -> None:
    """Set top-level ``key = value`` lines: replace the key's line, else add it before
    the first ``[table]`` (so it stays top-level). Other lines are kept as written."""
    lines = path.read_text().splitlines() if path.exists() else []
    todo = dict(values)
    first_table = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("[")), len(lines))
    for i, line in enumerate(lines[:first_table]):
        key = line.split("=", 1)[0].strip() if "=" in line else ""
        if key in todo:
            lines[i] = f"{key} = {_toml_value(todo.pop(key))}"
    added = [f"{key} = {_toml_value(value)}" for key, value in todo.items()]
    lines[first_table:first_table] = added
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # never write a file the host cannot read back
    atomic_write_text(path, text, PRIVATE_FILE)  # it may hold service_token: 0600


# -- the registry ----------------------------------------------------------------------
def local_registry_url(layout: RootLayout) -> str:
    """The URL this root's local registry was last served at ('' if never)."""
    try:
        return (registry_dir(layout) / _MARKER).read_text().strip()
    except OSError:
        return ""


def owns_marketplace(layout: RootLayout) -> bool:
    """True when ``marketplace_url`` is unset or is the local registry's own URL."""
    url = str(read_toml(layout.settings_file).get("marketplace_url", "")).strip().rstrip("/")
    return not url or url == local_registry_url(layout).rstrip("/")


def has_registry(layout: RootLayout) -> bool:
    from .db import DB_FILE, LEGACY_INDEX_FILE

    directory = registry_dir(layout)
    return (directory / DB_FILE).is_file() or (directory / LEGACY_INDEX_FILE).is_file()


def _readme(meta: Any) -> str:
    return (
        f"# {meta.name or meta.id}\n\n{meta.description}\n\n"
        "A bundled plughost example plugin, served by the root's local registry.\n\n"
        f"```sh\nplughost info {meta.id}\nplughost logs {meta.id} -f\n```\n"
    )


def publish_examples(
    layout: RootLayout, names: tuple[str, ...] = EXAMPLES
) -> list[tuple[str, str, Path]]:
    """Pack and publish the bundled examples into ``<root>/registry``.

    Returns (id, version, package path in the registry) for each.
    """
    from ..metadata import load_meta
    from ..packages.archive import pack
    from .index import publish

    out = []
    target = registry_dir(layout)
    private_dir(target)  # its signing key is in it
    bundled = resources.files("plughost") / "examples"
    with tempfile.TemporaryDirectory(prefix="plughost-pack-") as tmp:
        for name in names:
            with resources.as_file(bundled / name) as source:
                meta = load_meta(source)
                package = pack(source, Path(tmp) / f"{meta.id}-{meta.version}.tar.gz")
            result = publish(target, package, readme=_readme(meta), official=True)
            out.append((result.plugin_id, result.version, Path(result.path)))
    return out


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def serve_local_registry(layout: RootLayout, *, configure: bool = True) -> Iterator[str]:
    """Serve ``<root>/registry`` on 127.0.0.1 (the last port if free); yield its URL.

    With ``configure``, write ``marketplace_url`` (when unset or ours) and
    ``registry_public_key`` (when unset) into plughost.toml.
    """
    from .index import KEY_FILE, RegistryIndex
    from .server import create_app, running_server

    directory = registry_dir(layout)
    private_dir(directory)
    _, public_hex, _ = RegistryIndex(directory).signing_key()
    tighten(directory / KEY_FILE)  # an older host's key may be readable by others
    previous = urlsplit(local_registry_url(layout))
    port = previous.port if previous.port and _port_free("127.0.0.1", previous.port) else 0
    with running_server(create_app(directory), "127.0.0.1", port) as url:
        if configure:
            atomic_write_text(directory / _MARKER, url + "\n")
            current = read_toml(layout.settings_file)
            updates: dict[str, object] = {}
            if str(current.get("marketplace_url", "")).strip().rstrip("/") != url:
                updates["marketplace_url"] = url
            if not str(current.get("registry_public_key", "")).strip():
                updates["registry_public_key"] = public_hex
            if updates:
                create_if_not_exists(layout.root, PRIVATE_DIR)
                set_toml_keys(layout.settings_file, updates)
        yield url
