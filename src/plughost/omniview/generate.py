"""The SDK's .proto files, compiled by grpcio-tools' protoc at run time.

- :func:`descriptor_set` compiles every ``proto/v1/**/*.proto`` of the SDK (with the
  well-known types grpcio-tools bundles) into one ``FileDescriptorSet``, which
  :mod:`plughost.omniview.sdk` turns into message and stub classes. It is cached in
  the user's cache directory (``platformdirs.user_cache_dir("plughost")/omniview``),
  keyed by a hash of the .proto files and the grpcio-tools version, so protoc runs
  once per SDK version.
- :func:`write_python_stubs` writes protoc's Python modules (``*_pb2.py``,
  ``*_pb2.pyi``, ``*_pb2_grpc.py``) for the same files into a directory, for an
  application that prefers checked-in stubs (``plughost omniview stubs``).

Nothing of the SDK is shipped with plughost: both read the user's copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import platformdirs

from ..atomic import atomic_write_bytes
from ..errors import ValidationError

__all__ = ["cache_dir", "descriptor_set", "sdk_digest", "sdk_protos", "write_python_stubs"]

_FORMAT = "1"  # bump when what is cached changes
_PACKAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def sdk_protos(sdk: Path) -> list[str]:
    """The SDK's v1 .proto files, as protoc names them (``proto/v1/settings/settings.proto``)."""
    return sorted(p.relative_to(sdk).as_posix() for p in (sdk / "proto" / "v1").rglob("*.proto"))


def _tools_version() -> str:
    try:
        return importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sdk_digest(sdk: Path, protos: Sequence[str] | None = None) -> str:
    """SHA-256 of the SDK's v1 .proto files (names and contents): what generation depends on."""
    digest = hashlib.sha256()
    for name in protos if protos is not None else sdk_protos(sdk):
        data = (sdk / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where compiled descriptor sets are kept."""
    return Path(platformdirs.user_cache_dir("plughost", appauthor=False)) / "omniview"


def _protoc(sdk: Path, protos: Sequence[str], outputs: Sequence[str]) -> None:
    """Run grpcio-tools' protoc (which adds the well-known types' include dir) in ``sdk``."""
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I.", *outputs, *protos]
    try:
        result = subprocess.run(
            command, cwd=sdk, capture_output=True, text=True, timeout=300, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ValidationError(
            f"could not run protoc (grpcio-tools) on {sdk}: {exc}",
            title="Omniview SDK protos did not compile",
            suggestions=["install grpcio-tools into this Python: pip install grpcio-tools"],
        ) from exc
    if result.returncode != 0:
        errors = [
            line for line in result.stderr.splitlines() if "warning:" not in line and line.strip()
        ]
        raise ValidationError(
            f"protoc failed on the SDK's .proto files in {sdk} (exit {result.returncode}): "
            + ("\n".join(errors[-20:]) or result.stderr[-2000:]),
            title="Omniview SDK protos did not compile",
            suggestions=["check that the SDK directory is an unmodified plugin-sdk checkout"],
        )


def descriptor_set(sdk: Path, *, use_cache: bool = True) -> tuple[bytes, str]:
    """The compiled ``FileDescriptorSet`` of the SDK's v1 protos, and the SDK's digest."""
    protos = sdk_protos(sdk)
    digest = sdk_digest(sdk, protos)
    key = hashlib.sha256(f"{_FORMAT}\0{_tools_version()}\0{digest}".encode()).hexdigest()[:32]
    cached = cache_dir() / f"{key}.binpb"
    if use_cache:
        with contextlib.suppress(OSError):
            return cached.read_bytes(), digest
    with tempfile.TemporaryDirectory(prefix="plughost-omniview-") as tmp:
        out = Path(tmp) / "set.binpb"
        _protoc(sdk, protos, ["--include_imports", f"--descriptor_set_out={out}"])
        data = out.read_bytes()
    if use_cache:
        with contextlib.suppress(OSError):  # a read-only cache only costs the next run a protoc
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(cached, data)
    return data, digest


def _rewrite_imports(text: str, package: str) -> str:
    """``from proto.v1.x import y_pb2`` -> ``from PACKAGE.proto.v1.x import y_pb2`` (and the
    module name the classes are built in)."""
    text = re.sub(r"(?m)^(from|import) proto\.v1\.", rf"\1 {package}.proto.v1.", text)
    return text.replace(", 'proto.v1.", f", '{package}.proto.v1.")


def write_python_stubs(sdk: Path, out: Path, package: str | None = None) -> list[Path]:
    """Write the Python modules protoc generates for the SDK's v1 protos into ``out``.

    Without ``package`` they import each other as ``proto.v1.<name>`` (``out`` goes on
    ``sys.path``); with ``package="myapp.omniview"`` they are written under
    ``out/myapp/omniview/`` and import each other as ``myapp.omniview.proto.v1.<name>``.
    Every directory gets an ``__init__.py`` (an existing one is left alone). Returns the
    files written, sorted.
    """
    if package is not None and not _PACKAGE.match(package):
        raise ValidationError(
            f"{package!r} is not a Python package name",
            suggestions=["use dotted identifiers, e.g. myapp.omniview_stubs"],
        )
    protos = sdk_protos(sdk)
    base = out.joinpath(*package.split(".")) if package else out
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="plughost-omniview-") as tmp:
        staging = Path(tmp)
        flags = [f"--python_out={staging}", f"--pyi_out={staging}", f"--grpc_python_out={staging}"]
        _protoc(sdk, protos, flags)
        for source in sorted(staging.rglob("*.py*")):
            relative = source.relative_to(staging)
            target = base / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            text = source.read_text()
            if package:
                text = _rewrite_imports(text, package)
            target.write_text(text)
            written.append(target)
    packages = {d for p in written for d in p.parents if d != out and d.is_relative_to(out)}
    for directory in sorted(packages):
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
            written.append(init)
    return sorted(written)
