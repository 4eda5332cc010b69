"""PluginBuilder: plans, error parsing, atomic installs, backend and UI in parallel."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from plughost.dev.builder import (
    BuildError,
    PluginBuilder,
    install_binary,
    matches_watch,
    parse_build_errors,
    plan_build,
    sync_metadata,
)
from plughost.dev.protos import GENERATED_GLOBS, proto_name, python_protoc_commands, stubs_stale
from plughost.errors import PluginBuildError
from plughost.metadata import load_meta

GO_OUTPUT = """\
# example.com/plugin
./main.go:37:20: undefined: wrapperspb.Strin
pkg/server.go:12:5: missing return
"""

PY_TRACEBACK = """\
Traceback (most recent call last):
  File "/src/plugin.py", line 4, in <module>
    import nope
ModuleNotFoundError: No module named 'nope'
"""

PY_SYNTAX = """\
  File "plugin.py", line 3
    def f(:
          ^
SyntaxError: invalid syntax
"""


def test_parse_go_errors() -> None:
    assert parse_build_errors(GO_OUTPUT) == [
        BuildError("main.go", 37, 20, "undefined: wrapperspb.Strin"),
        BuildError("pkg/server.go", 12, 5, "missing return"),
    ]


def test_parse_python_errors(tmp_path: Path) -> None:
    assert parse_build_errors(PY_TRACEBACK, Path("/src")) == [
        BuildError("plugin.py", 4, 0, "ModuleNotFoundError: No module named 'nope'")
    ]
    [syntax] = parse_build_errors(PY_SYNTAX)
    assert (syntax.file, syntax.line, syntax.column) == ("plugin.py", 3, 7)
    assert syntax.message == "SyntaxError: invalid syntax"
    assert str(syntax) == "plugin.py:3:7: SyntaxError: invalid syntax"
    assert parse_build_errors("all good\n") == []


def test_plan_defaults_per_language(tmp_path: Path) -> None:
    go = tmp_path / "go"
    go.mkdir()
    (go / "go.mod").write_text("module x\n")
    (go / "plugin.yaml").write_text("id: g\nversion: 1\ncapabilities: [exec]\n")
    plan = plan_build(go, load_meta(go))
    assert (plan.language, plan.command) == ("go", "go build -o build/bin/plugin .")
    assert plan.output == go / "build" / "bin" / "plugin"
    assert plan.watch == ("*.go", "*.proto", "go.mod", "go.sum", "plugin.yaml")
    (go / "pkg").mkdir()
    assert plan_build(go, load_meta(go)).command == "go build -o build/bin/plugin ./pkg"

    py = tmp_path / "py"
    py.mkdir()
    (py / "plugin.py").write_text("x = 1\n")
    (py / "plugin.yaml").write_text(
        "id: p\nversion: 1\ncapabilities: [exec]\ndev:\n  watch: ['src/*.py']\n"
    )
    plan = plan_build(py, load_meta(py))
    assert (plan.language, plan.command, plan.watch) == ("python", None, ("src/*.py",))
    assert plan.output == py / "bin" / "plugin" and not plan.has_ui


def test_matches_watch() -> None:
    globs = ("*.go", "go.mod", "cmd/*.txt")
    assert matches_watch("main.go", globs) and matches_watch("pkg/a/b.go", globs)
    assert matches_watch("go.mod", globs) and matches_watch("cmd/x.txt", globs)
    assert not matches_watch("README.md", globs) and not matches_watch("other/x.txt", globs)
    assert not matches_watch("node_modules/x/y.go", globs)
    assert not matches_watch("build/gen.go", globs)


def test_plan_knows_the_plugins_own_protos_and_when_their_stubs_are_stale(
    tmp_path: Path,
) -> None:
    assert [proto_name(i) for i in ("hello", "my-plugin", "a.b_c", "9lives")] == [
        "hello", "my_plugin", "a_b_c", "p_9lives",
    ]  # fmt: skip
    py = tmp_path / "py"
    (py / "proto" / "svc" / "v1").mkdir(parents=True)
    (py / "plugin.py").write_text("x = 1\n")
    (py / "plugin.yaml").write_text("id: p\nversion: 1\ncapabilities: [exec]\n")
    assert plan_build(py, load_meta(py)).protos == ()
    proto = py / "proto" / "svc" / "v1" / "svc.proto"
    proto.write_text('syntax = "proto3";\n')
    plan = plan_build(py, load_meta(py))
    assert plan.protos == (proto,) and plan.generated == GENERATED_GLOBS
    assert "*.proto" in plan.watch
    assert matches_watch("svc_pb2_grpc.py", plan.generated)
    assert matches_watch("gen/svc/v1/svc.pb.go", plan.generated)
    [argv] = python_protoc_commands(py, plan.protos, "python3")
    assert argv[:5] == ["python3", "-m", "grpc_tools.protoc", "-Iproto/svc/v1", "-Iproto"]
    assert argv[-1] == "proto/svc/v1/svc.proto"

    assert stubs_stale(py, "python", plan.protos)  # no stubs yet
    stubs = [py / n for n in ("svc_pb2.py", "svc_pb2.pyi", "svc_pb2_grpc.py")]
    for stub in stubs:
        stub.write_text("")
    ns = proto.stat().st_mtime_ns
    for stub in stubs:
        os.utime(stub, ns=(ns + 10**9, ns + 10**9))
    assert not stubs_stale(py, "python", plan.protos)
    os.utime(proto, ns=(ns + 2 * 10**9, ns + 2 * 10**9))  # the .proto was saved after
    assert stubs_stale(py, "python", plan.protos)

    assert stubs_stale(py, "go", plan.protos)  # no *.pb.go at all
    (py / "gen").mkdir()
    (py / "gen" / "svc.pb.go").write_text("")
    os.utime(py / "gen" / "svc.pb.go", ns=(ns + 3 * 10**9, ns + 3 * 10**9))
    assert not stubs_stale(py, "go", plan.protos)


def test_install_binary_is_atomic_and_keeps_exec_bits(tmp_path: Path) -> None:
    built = tmp_path / "out"
    built.write_bytes(b"\x7fELF new")
    built.chmod(0o700)
    dest = tmp_path / "plugins" / "p" / "bin" / "plugin"
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old")
    with dest.open("rb") as held:  # a running plugin holds the old file open
        install_binary(built, dest)
        assert held.read() == b"old"
    assert dest.read_bytes() == b"\x7fELF new"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o711
    assert sorted(p.name for p in dest.parent.iterdir()) == ["plugin"]


def test_sync_metadata_refuses_an_id_change(tmp_path: Path) -> None:
    src, target = tmp_path / "src", tmp_path / "plugins" / "p"
    src.mkdir()
    target.mkdir(parents=True)
    (src / "plugin.yaml").write_text("id: p\nversion: 1\n")
    assert sync_metadata(src, target).id == "p"
    assert (target / "plugin.yaml").read_text() == "id: p\nversion: 1\n"
    (src / "plugin.yaml").write_text("id: q\nversion: 1\n")
    with pytest.raises(PluginBuildError, match="now says id 'q'"):
        sync_metadata(src, target)


async def test_python_build_writes_a_launcher_and_reports_syntax_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "plugin.yaml").write_text("id: p\nversion: 1\ncapabilities: [exec]\n")
    (src / "plugin.py").write_text("import lib.util\n")
    (src / "lib" / "util.py").write_text("x = 1\n")
    target = tmp_path / "plugins" / "p"
    result = await PluginBuilder().build(src, target)
    assert result.ok and result.backend_built and not result.ui_built
    launcher = (target / "bin" / "plugin").read_text()
    assert str(src / "plugin.py") in launcher and os.access(target / "bin" / "plugin", os.X_OK)

    (src / "lib" / "util.py").write_text("x = (\n")
    result = await PluginBuilder().build(src, target)
    assert not result.ok
    [error] = result.errors
    assert (error.file, error.line) == ("lib/util.py", 1) and "SyntaxError" in error.message
    with pytest.raises(PluginBuildError, match=r"lib/util\.py:1"):
        await PluginBuilder().build(src, target, check=True)
    assert not list(src.rglob("__pycache__"))  # checking compiles nothing to disk


async def test_failing_build_command_changes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plugin.yaml").write_text(
        "id: p\nversion: 1\ncapabilities: [exec]\ndev:\n"
        "  build: \"echo 'x.c:3:9: error: expected ;' && exit 2\"\n"
    )
    target = tmp_path / "plugins" / "p"
    result = await PluginBuilder().build(src, target)
    assert not result.ok and "build command failed" in result.error_message
    assert result.errors == [BuildError("x.c", 3, 9, "error: expected ;")]
    assert not target.exists()
    (src / "plugin.yaml").write_text(
        "id: p\nversion: 1\ncapabilities: [exec]\ndev:\n  build: 'true'\n  output: out/plugin\n"
    )
    result = await PluginBuilder().build(src, target)
    assert not result.ok and "did not produce" in result.error_message


@pytest.mark.usefixtures("node")
async def test_backend_and_ui_build_in_parallel(tmp_path: Path) -> None:
    """Each half waits for the other to have started: built one after the other, it would hang."""
    src = tmp_path / "src"
    (src / "ui").mkdir(parents=True)
    (src / "ui" / "package.json").write_text("{}")
    backend = (
        "touch backend.started; "
        "while [ ! -e ui/ui.started ]; do sleep 0.01; done; "
        "mkdir -p build/bin && printf '#!/bin/sh\\nexit 0\\n' > build/bin/plugin && chmod +x build/bin/plugin"
    )
    (src / "plugin.yaml").write_text(
        f'id: p\nversion: 1\ncapabilities: [exec, ui]\ndev:\n  build: "{backend}"\n'
    )
    (src / "ui" / "build.js").write_text(
        "const fs = require('fs');\n"
        "fs.writeFileSync('ui.started', '');\n"
        "const wait = () => fs.existsSync('../backend.started') ? done() : setTimeout(wait, 10);\n"
        "const done = () => { fs.mkdirSync('dist', {recursive: true});"
        " fs.writeFileSync('dist/app.js', 'ok'); console.log('ui built'); };\n"
        "wait();\n"
    )
    lines: list[tuple[str, str]] = []
    builder = PluginBuilder(
        ui_build_command=["node", "build.js"],
        timeout=20,
        on_output=lambda source, line: lines.append((source, line)),
    )
    target = tmp_path / "plugins" / "p"
    result = await builder.build(src, target)
    assert result.ok, result.output
    assert result.backend_built and result.ui_built
    assert (target / "assets" / "app.js").read_text() == "ok"
    assert os.access(target / "bin" / "plugin", os.X_OK)
    assert ("ui-build", "ui built") in lines

    (src / "ui" / "dist" / "app.js").write_text("v2")  # a rebuild replaces the assets whole
    (src / "backend.started").unlink()
    (src / "ui" / "ui.started").unlink()
    assert (await builder.build(src, target)).ok
    assert (target / "assets" / "app.js").read_text() == "ok"
    assert sorted(p.name for p in target.iterdir()) == ["assets", "bin", "plugin.yaml"]
