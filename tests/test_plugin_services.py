"""Plugins declare their own gRPC services (proto/<name>/v1/<name>.proto).

``plughost init`` scaffolds the .proto, its generated stubs and a plugin that
serves it (Python and Go); the host calls it with those stubs. In dev mode a
.proto edit regenerates the stubs and reloads, and a broken .proto is a build
error with its file and line. Real processes and real builds; waits are on bus
events.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import grpc.aio
import pytest
from devplugins.support import FAST, dev_host, replace_in
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from plughost.dev.builder import PluginBuilder
from plughost.dev.protos import python_stub_paths
from plughost.dev.scaffold import scaffold
from plughost.events import EVENT_RELOAD_COMPLETE, EVENT_RELOAD_ERROR, EVENT_RELOAD_START
from plughost.host.manager import PluginManager
from plughost.packages.archive import pack
from plughost.phases import Phase
from plughost.settings import SettingsProvider

needs_go = pytest.mark.usefixtures("go")


# -- calling a service from its .proto (a private descriptor pool: no clash between tests) --
class ServiceStub:
    """Like a generated ``<Service>Stub``, built from a .proto at run time.

    ``ServiceStub.of(proto, "pkg.v1.Greeter")`` gives a stub class for
    ``client.stub(...)``; ``message(type_name, **fields)`` builds a request.
    """

    service: Any
    pool: descriptor_pool.DescriptorPool

    def __init__(self, channel: grpc.aio.Channel) -> None:
        for method in self.service.methods:
            request = message_factory.GetMessageClass(method.input_type)
            reply = message_factory.GetMessageClass(method.output_type)
            setattr(
                self,
                method.name,
                channel.unary_unary(
                    f"/{self.service.full_name}/{method.name}",
                    request_serializer=request.SerializeToString,
                    response_deserializer=reply.FromString,
                ),
            )

    @classmethod
    def of(cls, proto: Path, service: str) -> type[ServiceStub]:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "set.pb"
            subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}",
                 "--include_imports", f"--descriptor_set_out={out}", proto.name],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
            files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        return type(
            f"{service}Stub", (cls,), {"service": pool.FindServiceByName(service), "pool": pool}
        )

    @classmethod
    def message(cls, type_name: str, /, **fields: Any) -> Any:
        package = cls.service.full_name.rsplit(".", 1)[0]
        descriptor = cls.pool.FindMessageTypeByName(f"{package}.{type_name}")
        return message_factory.GetMessageClass(descriptor)(**fields)


def greeter(proto: Path) -> type[ServiceStub]:
    """The stub of ``<name>.v1.Greeter`` as ``proto`` declares it now."""
    return ServiceStub.of(proto, f"{proto.stem}.v1.Greeter")


async def greet(
    manager: PluginManager, plugin_id: str, stub_class: type[ServiceStub], **fields: Any
) -> str:
    """Call ``Greet`` through ``manager.client(plugin_id)``: the answer's ``message``."""
    stub: Any = manager.client(plugin_id).stub(stub_class)
    reply = await stub.Greet(stub_class.message("GreetRequest", **fields), timeout=10)
    return str(reply.message)


def tree_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(root.rglob("*")) if p.is_file())


# -- Python --------------------------------------------------------------------------
def test_init_python_serves_its_own_service_to_the_host_example(tmp_path: Path) -> None:
    source = scaffold("svcpy", "python", tmp_path)
    proto = source / "proto" / "svcpy" / "v1" / "svcpy.proto"
    assert "service Greeter" in proto.read_text() and "package svcpy.v1;" in proto.read_text()
    stubs = python_stub_paths(source, proto)
    assert [p.name for p in stubs] == ["svcpy_pb2.py", "svcpy_pb2.pyi", "svcpy_pb2_grpc.py"]
    assert all(p.is_file() for p in stubs)
    assert "plughost._proto" not in tree_text(source)
    assert "import svcpy_pb2_grpc" in (source / "plugin.py").read_text()
    assert os.access(source / "gen_stubs.sh", os.X_OK)

    # gen_stubs.sh makes the same stubs again.
    before = [p.read_bytes() for p in stubs]
    for stub in stubs:
        stub.unlink()
    env = dict(os.environ, PLUGHOST_PYTHON=sys.executable)
    subprocess.run(["sh", "gen_stubs.sh"], cwd=source, env=env, check=True, timeout=60)
    assert [p.read_bytes() for p in stubs] == before

    # host_example.py: a PluginManager on a root, install, then
    # manager.client(id).stub(GreeterStub).Greet(...) with the generated stubs.
    example = (source / "host_example.py").read_text()
    assert "client = manager.client(PLUGIN_ID)" in example
    assert "stub = client.stub(svcpy_pb2_grpc.GreeterStub)" in example
    for run in (1, 2):  # installs it, then finds it installed
        done = subprocess.run(
            [sys.executable, "host_example.py", str(tmp_path / "root")],
            cwd=source, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, f"run {run}:\n{done.stdout}\n{done.stderr}"
        assert done.stdout.strip() == "hello, world", done.stdout
    assert (tmp_path / "root" / "plugins" / "svcpy" / "svcpy_pb2_grpc.py").is_file()


async def test_dev_mode_regenerates_python_stubs_on_proto_edit_and_reports_proto_errors(
    tmp_path: Path,
) -> None:
    source = scaffold("svcdev", "python", tmp_path)
    proto = source / "proto" / "svcdev" / "v1" / "svcdev.proto"
    relative = "proto/svcdev/v1/svcdev.proto"
    async with dev_host(tmp_path / "root") as (manager, _dsm, events):
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING, info.last_error
        assert await greet(manager, "svcdev", greeter(proto), name="x") == "hello, x"

        # A new field: the stubs are regenerated, the plugin reloaded.
        first_pid = manager.get_plugin("svcdev").pid
        mark = events.mark()
        replace_in(proto, "string name = 1;", "string name = 1;\n  string punctuation = 2;")
        start = await events.wait(EVENT_RELOAD_START, start=mark)
        assert start.payload["changes"] == [relative]  # the stubs it wrote are not edits
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert "punctuation" in (source / "svcdev_pb2.py").read_text()
        assert manager.get_plugin("svcdev").pid != first_pid

        # The plugin uses the new field.
        mark = events.mark()
        replace_in(
            source / "plugin.py",
            'f"hello, {request.name}"',
            'f"hello, {request.name}{request.punctuation}"',
        )
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        stub = greeter(proto)
        assert await greet(manager, "svcdev", stub, name="x", punctuation="!") == "hello, x!"

        # A broken .proto: a build error at its file and line; the last build keeps serving.
        mark = events.mark()
        replace_in(proto, "string punctuation = 2;", "string punctuation = 2")
        error = await events.wait(EVENT_RELOAD_ERROR, start=mark)
        [parsed] = error.payload["errors"]
        assert parsed["file"] == relative, parsed
        lines = proto.read_text().splitlines()
        # protoc points at the token after the missing ';': the line after the field.
        assert lines[parsed["line"] - 2].strip() == "string punctuation = 2", parsed
        assert parsed["column"] >= 1 and 'Expected ";"' in parsed["message"], parsed
        assert manager.get_plugin("svcdev").phase is Phase.RUNNING
        assert await greet(manager, "svcdev", stub, name="y", punctuation="?") == "hello, y?"

        # Fixed: built and reloaded again.
        mark = events.mark()
        replace_in(proto, "string punctuation = 2\n", "string punctuation = 2;\n")
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark)
        assert await greet(manager, "svcdev", stub, name="z", punctuation=".") == "hello, z."


# -- Go ------------------------------------------------------------------------------
def _go(go: str, source: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [go, *args], cwd=source, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, GOFLAGS="-buildvcs=false", PLUGHOST_PYTHON=sys.executable),
    )  # fmt: skip


@needs_go
async def test_init_go_builds_runs_and_serves_its_own_service(tmp_path: Path, go: str) -> None:
    source = scaffold("svcgo", "go", tmp_path / "src")
    proto = source / "proto" / "svcgo" / "v1" / "svcgo.proto"
    generated = source / "gen" / "svcgo" / "v1"
    assert {p.name for p in generated.iterdir()} == {"svcgo.pb.go", "svcgo_grpc.pb.go"}
    assert "svcgov1.RegisterGreeterServer(s, " in (source / "main.go").read_text()
    assert "//go:generate sh gen_stubs.sh" in (source / "main.go").read_text()
    # The committed go.mod / go.sum are complete and tidy: what a user needs.
    tidy = _go(go, source, "mod", "tidy", "-diff")
    assert tidy.returncode == 0, tidy.stdout + tidy.stderr

    # Build (dev.build: go build -o build/bin/plugin .), pack, install, run, call.
    tree = tmp_path / "tree" / "svcgo"
    result = await PluginBuilder().build(source, tree)
    assert result.ok, result.summary()
    assert (source / "build" / "bin" / "plugin").is_file()
    package = pack(tree, tmp_path / "svcgo.tar.gz")
    manager = PluginManager(tmp_path / "root", settings=SettingsProvider(None, FAST))
    await manager.initialize()
    try:
        await manager.install_plugin_from_path(package)
        assert manager.get_plugin("svcgo").phase is Phase.RUNNING
        assert await greet(manager, "svcgo", greeter(proto), name="go") == "hello, go"
    finally:
        await manager.shutdown()


@needs_go
async def test_dev_mode_regenerates_go_stubs_on_proto_edit_and_reports_proto_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOFLAGS", "-buildvcs=false")
    source = scaffold("svcgodev", "go", tmp_path)
    proto = source / "proto" / "svcgodev" / "v1" / "svcgodev.proto"
    relative = "proto/svcgodev/v1/svcgodev.proto"
    async with dev_host(tmp_path / "root") as (manager, _dsm, events):
        info = await manager.install_in_dev_mode(source)
        assert info.phase is Phase.RUNNING, info.last_error
        assert await greet(manager, "svcgodev", greeter(proto), name="x") == "hello, x"

        # A new field, used by main.go in the same save: go generate, go build, reload.
        mark = events.mark()
        replace_in(proto, "string name = 1;", "string name = 1;\n  string punctuation = 2;")
        replace_in(
            source / "main.go",
            '"hello, " + req.GetName()',
            '"hello, " + req.GetName() + req.GetPunctuation()',
        )
        await events.wait(EVENT_RELOAD_COMPLETE, start=mark, timeout=120)
        stub = greeter(proto)
        assert await greet(manager, "svcgodev", stub, name="x", punctuation="!") == "hello, x!"

        # A broken .proto: the build error names it, with its line; the last build keeps serving.
        mark = events.mark()
        replace_in(proto, "rpc Greet(GreetRequest)", "rpc Greet(GreetRequst)")
        error = await events.wait(EVENT_RELOAD_ERROR, start=mark, timeout=120)
        assert error.payload["errors"], error.payload
        parsed = error.payload["errors"][0]
        assert parsed["file"] == relative, error.payload
        line = proto.read_text().splitlines()[parsed["line"] - 1]
        assert "GreetRequst" in line and "GreetRequst" in parsed["message"], parsed
        assert not any(e["message"].startswith("running ") for e in error.payload["errors"])
        assert manager.get_plugin("svcgodev").phase is Phase.RUNNING
        assert await greet(manager, "svcgodev", stub, name="y", punctuation="?") == "hello, y?"


def test_pack_regenerates_stale_python_stubs_before_packing(tmp_path: Path) -> None:
    source = scaffold("packme", "python", tmp_path)
    proto = next((source / "proto").rglob("*.proto"))
    proto.write_text(proto.read_text() + "\nmessage AddedLater {\n  string note = 1;\n}\n")
    out = tmp_path / "packme.tar.gz"
    done = subprocess.run(
        [sys.executable, "-m", "plughost", "pack", str(source), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [stubs] = [p for p in python_stub_paths(source, proto) if p.name.endswith("_pb2.py")]
    assert b"AddedLater" in stubs.read_bytes(), "the stubs in the source were regenerated"
    with tarfile.open(out) as tar:
        member = tar.extractfile(stubs.name)
        assert member is not None and b"AddedLater" in member.read(), "and packed"
