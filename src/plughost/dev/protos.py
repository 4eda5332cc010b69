"""A plugin's own gRPC services: the ``.proto`` files under ``proto/`` and their stubs.

A plugin declares its services in ``proto/**/*.proto`` (by convention
``proto/<name>/v1/<name>.proto``, package ``<name>.v1``).

- **Python**: the stubs (``<name>_pb2.py``, ``<name>_pb2_grpc.py``,
  ``<name>_pb2.pyi``) are generated next to plugin.py with grpcio-tools' protoc
  (``python -m grpc_tools.protoc``), so plugin.py, run as a script, imports
  them as top-level modules. Each .proto's own directory comes first on the
  include path, then ``proto/``.
- **Go**: the plugin's ``go generate ./...`` step (the scaffold's
  ``//go:generate sh gen_stubs.sh``: the same protoc with protoc-gen-go and
  protoc-gen-go-grpc, at the versions pinned by go.mod's ``tool`` directive).

A dev build regenerates them first when a .proto is newer than its stubs
(``stubs_stale``). protoc reports errors as ``proto/x/v1/x.proto:12:3: msg``,
which the builder parses like any compiler's.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "GENERATED_GLOBS",
    "GO_GENERATE",
    "PROTO_DIR",
    "find_protos",
    "has_grpc_tools",
    "proto_name",
    "python_protoc_commands",
    "python_stub_paths",
    "stubs_stale",
]

PROTO_DIR = "proto"
GO_GENERATE = "go generate ./..."
GENERATED_GLOBS: tuple[str, ...] = (
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*_pb2_grpc.pyi",
    "*.pb.go",
)
"""Generated stubs: written by the build itself, so they never trigger a rebuild."""

_SKIPPED_DIRS = frozenset({"node_modules", "build", "dist", "__pycache__", "vendor"})


def proto_name(plugin_id: str) -> str:
    """A proto package / Python module / Go package stem for a plugin id: ``my-plugin`` -> ``my_plugin``."""
    stem = "".join(c if c.isascii() and c.isalnum() else "_" for c in plugin_id.lower())
    stem = "_".join(part for part in stem.split("_") if part)
    if not stem or not stem[0].isalpha():
        stem = f"p_{stem}".rstrip("_")
    return stem


def find_protos(source: Path) -> list[Path]:
    """``proto/**/*.proto`` of a source tree (hidden and build directories skipped), sorted."""
    root = source / PROTO_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.rglob("*.proto"):
        parts = path.relative_to(root).parts[:-1]
        if path.is_file() and not any(p.startswith(".") or p in _SKIPPED_DIRS for p in parts):
            found.append(path)
    return sorted(found)


def python_stub_paths(source: Path, proto: Path) -> tuple[Path, ...]:
    """The Python stubs generated from ``proto``: next to plugin.py, named after the file."""
    stem = proto.stem
    return (source / f"{stem}_pb2.py", source / f"{stem}_pb2.pyi", source / f"{stem}_pb2_grpc.py")


def python_protoc_commands(
    source: Path, protos: Sequence[Path], python: str = sys.executable
) -> list[list[str]]:
    """The protoc runs (cwd ``source``) that write the Python stubs of ``protos`` into ``source``.

    One run per directory of .proto files: that directory is first on the
    include path (so the stubs import each other as top-level modules), then
    ``proto/``. grpcio-tools adds the well-known types (google/protobuf/*.proto).
    """
    by_dir: dict[Path, list[str]] = {}
    for proto in protos:
        by_dir.setdefault(proto.parent, []).append(proto.relative_to(source).as_posix())
    commands = []
    for directory, files in sorted(by_dir.items()):
        include = directory.relative_to(source).as_posix()
        commands.append(
            [
                python,
                "-m",
                "grpc_tools.protoc",
                f"-I{include}",
                f"-I{PROTO_DIR}",
                "--python_out=.",
                "--pyi_out=.",
                "--grpc_python_out=.",
                *files,
            ]
        )
    return commands


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def stubs_stale(source: Path, language: str, protos: Sequence[Path]) -> bool:
    """Must the stubs be regenerated: one is missing, or older than a .proto?

    Python: each .proto's three stubs next to plugin.py. Go: the ``*.pb.go``
    files of the tree (where they go is the plugin's business).
    """
    if not protos:
        return False
    newest = max((_mtime(p) or 0) for p in protos)
    if language == "python":
        for proto in protos:
            written = [_mtime(stub) for stub in python_stub_paths(source, proto)]
            if any(w is None or w < (_mtime(proto) or 0) for w in written):
                return True
        return False
    if language == "go":
        stamps: list[int] = []
        for stub in source.rglob("*.pb.go"):
            parts = stub.relative_to(source).parts[:-1]
            stamp = _mtime(stub)
            if stamp is not None and not any(
                p.startswith(".") or p in _SKIPPED_DIRS for p in parts
            ):
                stamps.append(stamp)
        return not stamps or min(stamps) < newest
    return False


def has_grpc_tools() -> bool:
    """Is grpcio-tools (``python -m grpc_tools.protoc``) importable by this Python?"""
    return importlib.util.find_spec("grpc_tools") is not None
