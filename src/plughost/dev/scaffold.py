"""``plughost init NAME --lang python|go``: a new plugin source tree that builds, installs and runs.

Both languages get the plugin's own gRPC service: ``proto/<name>/v1/<name>.proto``
(package ``<name>.v1``, ``service Greeter { rpc Greet(GreetRequest) returns
(GreetReply); }``), its generated stubs, a plugin that implements it and a
``gen_stubs.sh`` that regenerates the stubs (dev mode regenerates them itself
whenever the .proto changes; see ``plughost.dev.protos``). ``<name>`` is the
plugin id made an identifier (``my-plugin`` -> ``my_plugin``).

Python: ``plugin.yaml``, a ``bin/plugin`` launcher, ``plugin.py`` on plughost's
SDK, the stubs (``<name>_pb2.py``, ``<name>_pb2_grpc.py``, ``<name>_pb2.pyi``,
made here with grpcio-tools) next to it, and ``host_example.py``: the host
side, calling the service through ``manager.client(id).stub(GreeterStub)``. It
packs as it is.

Go: ``plugin.yaml`` (with ``dev.build: go build -o build/bin/plugin .``),
``go.mod`` + ``go.sum`` pinned to the go-plugin release plughost is tested
against (and, as ``tool`` dependencies, protoc-gen-go and protoc-gen-go-grpc),
and ``main.go``, a go-plugin gRPC server that registers the service (go-plugin
serves the standard health service ``plugin`` by itself). Its stubs
(``gen/<name>/v1/``) come from ``go generate ./...``: run here when a Go
toolchain is found, else by the first build. Both answer plughost's and
Omniview's cookie key.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

from ..errors import PlughostError, PluginBuildError, ValidationError
from ..metadata import validate_plugin_id
from .protos import GO_GENERATE, find_protos, has_grpc_tools, proto_name, python_protoc_commands
from .toolchain import find_go_binary

__all__ = ["LANGUAGES", "scaffold"]

log = logging.getLogger(__name__)

Lang = Literal["python", "go"]
LANGUAGES: tuple[str, ...] = ("python", "go")

# The templates' @ID@, @NAME@, @TITLE@, @AUTHOR@ and @GO_PACKAGE@ are filled in by _fill.

_PROTO = """\
// @TITLE@'s own gRPC service. After an edit, regenerate the stubs with
// `sh gen_stubs.sh` (`plughost dev` does that by itself when this file changes).
syntax = "proto3";

package @NAME@.v1;
@GO_PACKAGE@
// Greeter answers greetings.
service Greeter {
  // Greet says hello to the caller.
  rpc Greet(GreetRequest) returns (GreetReply);
}

message GreetRequest {
  // Who is greeted.
  string name = 1;
}

message GreetReply {
  // The greeting.
  string message = 1;
}
"""

_PY_YAML = """\
# plughost plugin metadata; every key is described in plughost's docs/plugin-yaml.md
id: @ID@
version: 0.1.0
name: @TITLE@
description: A plughost plugin written in Python.
category: tools
license: MIT
author:
  name: @AUTHOR@
tags: [python]
capabilities: [exec]
dev:
  watch: ["*.py", "*.proto", "plugin.yaml"]
"""

_PY_LAUNCHER = """\
#!/bin/sh
# Launcher: run the plugin with the host's Python (it has the plughost SDK).
exec "${PLUGHOST_PYTHON:-python3}" "$(dirname "$0")/../plugin.py" "$@"
"""

_PY_MAIN = '''\
"""@TITLE@: a plughost plugin.

It serves its own gRPC service, @NAME@.v1.Greeter, declared in
proto/@NAME@/v1/@NAME@.proto. The stubs next to this file (@NAME@_pb2*.py) are
generated from it by gen_stubs.sh; ``plughost dev`` regenerates them whenever
the .proto changes. id, version and capabilities are read from plugin.yaml.
``print()`` output and log lines reach the host's log (``plughost logs @ID@``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from plughost.sdk import PluginServer, serve

import @NAME@_pb2  # generated from proto/@NAME@/v1/@NAME@.proto
import @NAME@_pb2_grpc


class Greeter(@NAME@_pb2_grpc.GreeterServicer):
    """The @NAME@.v1.Greeter service."""

    def Greet(self, request: @NAME@_pb2.GreetRequest, context: Any) -> @NAME@_pb2.GreetReply:
        logging.info("greeting %s", request.name)
        return @NAME@_pb2.GreetReply(message=f"hello, {request.name}")


def register(server: Any) -> None:
    """Add the plugin's services to its gRPC server."""
    @NAME@_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[%(levelname)s] %(message)s")
    logging.info("@ID@ starting")
    serve(PluginServer(services=[register]))


if __name__ == "__main__":
    main()
'''

_PY_GEN = """\
#!/bin/sh
# Regenerates the Python stubs (<name>_pb2.py, <name>_pb2_grpc.py, <name>_pb2.pyi)
# next to plugin.py from proto/ with grpcio-tools' protoc, as `plughost dev` does
# when a .proto changes: each .proto's own directory first on the include path.
set -eu
cd "$(dirname "$0")"
python=${PLUGHOST_PYTHON:-python3}
for dir in $(find proto -name '*.proto' -exec dirname {} \\; | sort -u); do
  "$python" -m grpc_tools.protoc -I"$dir" -Iproto \\
    --python_out=. --pyi_out=. --grpc_python_out=. "$dir"/*.proto
done
"""

_PY_HOST = '''\
"""Calling @ID@ from your own application, through plughost.

    python host_example.py [ROOT]

starts a PluginManager on ROOT (default: a new temporary directory), installs
this plugin there unless it is installed already (packed from this directory),
calls its Greeter service with the generated stubs, prints the answer and
stops. In an application, keep the manager running and keep ``client``: each
call finds the plugin's current process, across reloads, crashes and updates.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from plughost import PluginManager
from plughost.packages.archive import pack

import @NAME@_pb2  # the stubs generated from proto/@NAME@/v1/@NAME@.proto
import @NAME@_pb2_grpc

HERE = Path(__file__).resolve().parent
PLUGIN_ID = "@ID@"


async def main(root: Path) -> None:
    manager = PluginManager(root)
    await manager.initialize()  # lock the root, start the installed plugins
    try:
        if PLUGIN_ID not in {info.id for info in manager.list_plugins()}:
            with tempfile.TemporaryDirectory() as tmp:
                package = pack(HERE, Path(tmp) / f"{PLUGIN_ID}.tar.gz")
                await manager.install_plugin_from_path(package)
        client = manager.client(PLUGIN_ID)
        stub = client.stub(@NAME@_pb2_grpc.GreeterStub)
        reply = await stub.Greet(@NAME@_pb2.GreetRequest(name="world"), timeout=10)
        print(reply.message)
    finally:
        await manager.shutdown()  # stops the plugin too


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="plughost-"))
    asyncio.run(main(root))
'''

_GO_YAML = """\
# plughost plugin metadata; every key is described in plughost's docs/plugin-yaml.md
id: @ID@
version: 0.1.0
name: @TITLE@
description: A plughost plugin written in Go with hashicorp/go-plugin.
category: tools
license: MIT
author:
  name: @AUTHOR@
tags: [go]
capabilities: [exec]
dev:
  build: go build -o build/bin/plugin .
  output: build/bin/plugin
  watch: ["*.go", "*.proto", "go.mod", "plugin.yaml"]
"""

# The versions of tests/goplugins/goplugin/go.mod (what plughost is tested
# against), plus the stub generators as tool dependencies.
_GO_MOD = """\
module plughost.local/plugins/@ID@

go 1.26.0

require (
\tgithub.com/hashicorp/go-hclog v1.6.3
\tgithub.com/hashicorp/go-plugin v1.8.0
\tgoogle.golang.org/grpc v1.85.0
\tgoogle.golang.org/protobuf v1.36.12
)

require (
\tgithub.com/fatih/color v1.13.0 // indirect
\tgithub.com/golang/protobuf v1.5.4 // indirect
\tgithub.com/hashicorp/yamux v0.1.2 // indirect
\tgithub.com/mattn/go-colorable v0.1.12 // indirect
\tgithub.com/mattn/go-isatty v0.0.17 // indirect
\tgithub.com/oklog/run v1.1.0 // indirect
\tgolang.org/x/net v0.60.0 // indirect
\tgolang.org/x/sys v0.48.0 // indirect
\tgolang.org/x/text v0.42.0 // indirect
\tgoogle.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
\tgoogle.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 // indirect
)

tool (
\tgoogle.golang.org/grpc/cmd/protoc-gen-go-grpc
\tgoogle.golang.org/protobuf/cmd/protoc-gen-go
)
"""

_GO_SUM = """\
github.com/bufbuild/protocompile v0.14.1 h1:iA73zAf/fyljNjQKwYzUHD6AD4R8KMasmwa/FBatYVw=
github.com/bufbuild/protocompile v0.14.1/go.mod h1:ppVdAIhbr2H8asPk6k4pY7t9zB1OU5DoEw9xY/FUi1c=
github.com/davecgh/go-spew v1.1.0/go.mod h1:J7Y8YcW2NihsgmVo/mv3lAwl/skON4iLHjSsI+c5H38=
github.com/davecgh/go-spew v1.1.1 h1:vj9j/u1bqnvCEfJOwUhtlOARqs3+rkHYY13jYWTU97c=
github.com/davecgh/go-spew v1.1.1/go.mod h1:J7Y8YcW2NihsgmVo/mv3lAwl/skON4iLHjSsI+c5H38=
github.com/fatih/color v1.13.0 h1:8LOYc1KYPPmyKMuN8QV2DNRWNbLo6LZ0iLs8+mlH53w=
github.com/fatih/color v1.13.0/go.mod h1:kLAiJbzzSOZDVNGyDpeOxJ47H46qBXwg5ILebYFFOfk=
github.com/golang/protobuf v1.5.4 h1:i7eJL8qZTpSEXOPTxNKhASYpMn+8e5Q6AdndVa1dWek=
github.com/golang/protobuf v1.5.4/go.mod h1:lnTiLA8Wa4RWRcIUkrtSVa5nRhsEGBg48fD6rSs7xps=
github.com/google/go-cmp v0.7.0 h1:wk8382ETsv4JYUZwIsn6YpYiWiBsYLSJiTsyBybVuN8=
github.com/google/go-cmp v0.7.0/go.mod h1:pXiqmnSA92OHEEa9HXL2W4E7lf9JzCmGVUdgjX3N/iU=
github.com/hashicorp/go-hclog v1.6.3 h1:Qr2kF+eVWjTiYmU7Y31tYlP1h0q/X3Nl3tPGdaB11/k=
github.com/hashicorp/go-hclog v1.6.3/go.mod h1:W4Qnvbt70Wk/zYJryRzDRU/4r0kIg0PVHBcfoyhpF5M=
github.com/hashicorp/go-plugin v1.8.0 h1:ie8S6RRY8RvB2usYZv+AAZ/wBvx2AU5p5QeP5j/FORs=
github.com/hashicorp/go-plugin v1.8.0/go.mod h1:BExt6KEaIYx804z8k4gRzRLEvxKVb+kn0NMcihqOqb8=
github.com/hashicorp/yamux v0.1.2 h1:XtB8kyFOyHXYVFnwT5C3+Bdo8gArse7j2AQ0DA0Uey8=
github.com/hashicorp/yamux v0.1.2/go.mod h1:C+zze2n6e/7wshOZep2A70/aQU6QBRWJO/G6FT1wIns=
github.com/jhump/protoreflect v1.17.0 h1:qOEr613fac2lOuTgWN4tPAtLL7fUSbuJL5X5XumQh94=
github.com/jhump/protoreflect v1.17.0/go.mod h1:h9+vUUL38jiBzck8ck+6G/aeMX8Z4QUY/NiJPwPNi+8=
github.com/mattn/go-colorable v0.1.9/go.mod h1:u6P/XSegPjTcexA+o6vUJrdnUu04hMope9wVRipJSqc=
github.com/mattn/go-colorable v0.1.12 h1:jF+Du6AlPIjs2BiUiQlKOX0rt3SujHxPnksPKZbaA40=
github.com/mattn/go-colorable v0.1.12/go.mod h1:u5H1YNBxpqRaxsYJYSkiCWKzEfiAb1Gb520KVy5xxl4=
github.com/mattn/go-isatty v0.0.12/go.mod h1:cbi8OIDigv2wuxKPP5vlRcQ1OAZbq2CE4Kysco4FUpU=
github.com/mattn/go-isatty v0.0.14/go.mod h1:7GGIvUiUoEMVVmxf/4nioHXj79iQHKdU27kJ6hsGG94=
github.com/mattn/go-isatty v0.0.17 h1:BTarxUcIeDqL27Mc+vyvdWYSL28zpIhv3RoTdsLMPng=
github.com/mattn/go-isatty v0.0.17/go.mod h1:kYGgaQfpe5nmfYZH+SKPsOc2e4SrIfOl2e/yFXSvRLM=
github.com/oklog/run v1.1.0 h1:GEenZ1cK0+q0+wsJew9qUg/DyD8k3JzYsZAi5gYi2mA=
github.com/oklog/run v1.1.0/go.mod h1:sVPdnTZT1zYwAJeCMu2Th4T21pA3FPOQRfWjQlk7DVU=
github.com/pmezard/go-difflib v1.0.0 h1:4DBwDE0NGyQoBHbLQYPwSUPoCMWR5BEzIk/f1lZbAQM=
github.com/pmezard/go-difflib v1.0.0/go.mod h1:iKH77koFhYxTK1pcRnkKkqfTogsbg7gZNVY4sRDYZ/4=
github.com/stretchr/objx v0.1.0/go.mod h1:HFkY916IF+rwdDfMAkV7OtwuqBVzrE8GR6GFx+wExME=
github.com/stretchr/testify v1.7.2 h1:4jaiDzPyXQvSd7D0EjG45355tLlV3VOECpq10pLC+8s=
github.com/stretchr/testify v1.7.2/go.mod h1:R6va5+xMeoiuVRoj+gSkQ7d3FALtqAAGI1FQKckRals=
golang.org/x/net v0.60.0 h1:79p50tfZlm0J9YfoDsSi639qSXNGVwEzOPLCxM2FsYU=
golang.org/x/net v0.60.0/go.mod h1:2DA/G1UfVbCpQPeWTmMPGY7Cs2PkBkwu743bVX5PIVg=
golang.org/x/sys v0.0.0-20200116001909-b77594299b42/go.mod h1:h1NjWce9XRLGQEsW7wpKNCjG9DtNlClVuFLEZdDNbEs=
golang.org/x/sys v0.0.0-20200223170610-d5e6a3e2c0ae/go.mod h1:h1NjWce9XRLGQEsW7wpKNCjG9DtNlClVuFLEZdDNbEs=
golang.org/x/sys v0.0.0-20210630005230-0f9fa26af87c/go.mod h1:oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=
golang.org/x/sys v0.0.0-20210927094055-39ccf1dd6fa6/go.mod h1:oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=
golang.org/x/sys v0.0.0-20220503163025-988cb79eb6c6/go.mod h1:oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=
golang.org/x/sys v0.0.0-20220811171246-fbc7d0a398ab/go.mod h1:oPkhp1MJrh7nUepCBck5+mAzfO9JrbApNNgaTdGDITg=
golang.org/x/sys v0.48.0 h1:bbX/i/6MgT9BVLM9RT1thmxL04yeTAhbEz4SyadbXoo=
golang.org/x/sys v0.48.0/go.mod h1:hNLxWAXmnKAxqDtdwIYC4bM9oQPEecfsnNMuSxOs3og=
golang.org/x/text v0.42.0 h1:JbOZXgfeCPU9gacVtYliJqOhD+zhrEqK4LfdpmlUZqI=
golang.org/x/text v0.42.0/go.mod h1:ojzP1Z+2QtioaF8DTtO8K5q7JWVVYwZKenzujK0Zd0E=
gonum.org/v1/gonum v0.17.0 h1:VbpOemQlsSMrYmn7T2OUvQ4dqxQXU+ouZFQsZOx50z4=
gonum.org/v1/gonum v0.17.0/go.mod h1:El3tOrEuMpv2UdMrbNlKEh9vd86bmQ6vqIcDwxEOc1E=
google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 h1:utmqiUzZAEINbLmRyAt1QjVkMyLQ+lvIwCpLaB1rZfw=
google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1/go.mod h1:4Hqkh8ycfw05ld/3BWL7rJOSfebL2Q+DVDeRgYgxUU8=
google.golang.org/grpc v1.85.0 h1:BPBCfuVRQ1qvBhKDOq9uvQllMvO59rKsYhXpp7Dd8vw=
google.golang.org/grpc v1.85.0/go.mod h1:0rQrOD58yjal/0EaVbGBANindixsCZNQPDV3VKtaKuQ=
google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 h1:rgSNvqscFZ1JgV/4wH5GOsZFSFkR2Eua9As3KIr2LlM=
google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2/go.mod h1:iMEtFwDlAhjDU9L5mY6U1XLwlIId/G3h+QcBHDIvrJ8=
google.golang.org/protobuf v1.36.12 h1:pJOKDDOyeXErUroCihFAd5LQuwXBSpVnKGrj5o/fwxc=
google.golang.org/protobuf v1.36.12/go.mod h1:HTf+CrKn2C3g5S8VImy6tdcUvCska2kB7j23XfzDpco=
gopkg.in/check.v1 v0.0.0-20161208181325-20d25e280405/go.mod h1:Co6ibVJAznAaIkqp8huTwlJQCZ016jof/cbN4VW5Yz0=
gopkg.in/yaml.v3 v3.0.1 h1:fxVm/GzAzEWqLHuvctI91KS9hhNmmWOoWu0XTYJS7CA=
gopkg.in/yaml.v3 v3.0.1/go.mod h1:K4uyk7z7BCEPqu6E+C64Yfv1cQ7kz7rIZviUmN+EgEM=
"""

_GO_GEN = """\
#!/bin/sh
# Regenerates the Go stubs in gen/ from proto/. `go generate ./...` runs it (see
# main.go), and so does `plughost dev` whenever a .proto changes. protoc is
# grpcio-tools' (installed with plughost; PLUGHOST_PYTHON, default python3);
# protoc-gen-go and protoc-gen-go-grpc are the versions go.mod pins (tool).
set -eu
cd "$(dirname "$0")"
go=${GO:-go}
gen_go=$("$go" tool -n protoc-gen-go)
gen_go_grpc=$("$go" tool -n protoc-gen-go-grpc)
mkdir -p gen
exec "${PLUGHOST_PYTHON:-python3}" -m grpc_tools.protoc -Iproto \\
  --plugin=protoc-gen-go="$gen_go" --go_out=gen --go_opt=paths=source_relative \\
  --plugin=protoc-gen-go-grpc="$gen_go_grpc" --go-grpc_out=gen --go-grpc_opt=paths=source_relative \\
  $(find proto -name '*.proto')
"""

_GO_MAIN = """\
// Command @ID@ is a plughost plugin written with hashicorp/go-plugin.
//
// It serves its own gRPC service, @NAME@.v1.Greeter, declared in
// proto/@NAME@/v1/@NAME@.proto. The Go stubs in gen/@NAME@/v1 are generated
// from it by `go generate ./...` (gen_stubs.sh); `plughost dev` runs that
// whenever the .proto changes.
//
// The host starts it with the magic cookie <KEY>=@ID@ (KEY is PLUGHOST, or
// OMNIVIEW under the Omniview profile) and talks gRPC to it. go-plugin serves
// the standard health service ("plugin"), the controller (Shutdown) and stdio
// by itself.
package main

//go:generate sh gen_stubs.sh

import (
\t"context"
\t"errors"
\t"os"

\t"github.com/hashicorp/go-hclog"
\t"github.com/hashicorp/go-plugin"
\t"google.golang.org/grpc"

\t@NAME@v1 "plughost.local/plugins/@ID@/gen/@NAME@/v1"
)

// pluginID must be plugin.yaml's id: it is the magic cookie's value.
const pluginID = "@ID@"

// greeter implements @NAME@.v1.Greeter.
type greeter struct {
\t@NAME@v1.UnimplementedGreeterServer
\tlogger hclog.Logger
}

func (g *greeter) Greet(_ context.Context, req *@NAME@v1.GreetRequest) (*@NAME@v1.GreetReply, error) {
\tg.logger.Info("greeting", "name", req.GetName())
\treturn &@NAME@v1.GreetReply{Message: "hello, " + req.GetName()}, nil
}

// serverPlugin plugs the gRPC services into go-plugin. It must be a GRPCPlugin:
// go-plugin offers the "grpc" protocol only when the plugin set holds one.
type serverPlugin struct {
\tplugin.NetRPCUnsupportedPlugin
\tlogger hclog.Logger
}

func (p serverPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
\t@NAME@v1.RegisterGreeterServer(s, &greeter{logger: p.logger})
\treturn nil
}

func (serverPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
\treturn nil, errors.New(pluginID + " is server-only")
}

func main() {
\tcookieKey := "PLUGHOST"
\tif os.Getenv(cookieKey) == "" && os.Getenv("OMNIVIEW") != "" {
\t\tcookieKey = "OMNIVIEW"
\t}
\tlogger := hclog.New(&hclog.LoggerOptions{
\t\tName: pluginID, JSONFormat: true, Output: os.Stderr, Level: hclog.Info,
\t})
\tlogger.Info(pluginID+" starting", "pid", os.Getpid())
\tplugin.Serve(&plugin.ServeConfig{
\t\tHandshakeConfig: plugin.HandshakeConfig{
\t\t\tProtocolVersion:  1,
\t\t\tMagicCookieKey:   cookieKey,
\t\t\tMagicCookieValue: pluginID,
\t\t},
\t\tPlugins:    plugin.PluginSet{"plugin": serverPlugin{logger: logger}},
\t\tGRPCServer: plugin.DefaultGRPCServer,
\t\tLogger:     logger,
\t})
}
"""

_GITIGNORE = "build/\n*.tar.gz\n__pycache__/\n"

_README_PY = """\
# @TITLE@

A plughost plugin (Python) with its own gRPC service, `@NAME@.v1.Greeter`
(`proto/@NAME@/v1/@NAME@.proto`).

```sh
plughost dev .                  # install in dev mode: rebuilt and reloaded on save
plughost pack . -o @ID@.tar.gz  # build a package
plughost install @ID@.tar.gz    # install it
plughost logs @ID@ -f           # follow its log
python host_example.py          # call the service from a host application
```

`@NAME@_pb2.py`, `@NAME@_pb2_grpc.py` and `@NAME@_pb2.pyi` are generated from the
.proto: `sh gen_stubs.sh` regenerates them (`plughost dev` does it on save).
"""

_README_GO = """\
# @TITLE@

A plughost plugin (Go, hashicorp/go-plugin) with its own gRPC service,
`@NAME@.v1.Greeter` (`proto/@NAME@/v1/@NAME@.proto`).

```sh
plughost dev .                  # install in dev mode: rebuilt and reloaded on save
plughost pack . -o @ID@.tar.gz  # build a package
plughost install @ID@.tar.gz    # install it
plughost logs @ID@ -f           # follow its log
```

`gen/@NAME@/v1/` is generated from the .proto: `go generate ./...` regenerates it
(`plughost dev` does it on save). It runs protoc from grpcio-tools, so it needs
a Python that has grpcio-tools (the one plughost runs on; set PLUGHOST_PYTHON).
"""


def _title(plugin_id: str) -> str:
    words = plugin_id.replace("_", "-").replace(".", "-").split("-")
    return " ".join(w.capitalize() for w in words if w) or plugin_id


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _files(plugin_id: str, lang: Lang) -> dict[str, str]:
    name = proto_name(plugin_id)
    go_package = (
        f'\noption go_package = "plughost.local/plugins/{plugin_id}/gen/{name}/v1;{name}v1";\n'
    )
    values = {
        "ID": plugin_id,
        "NAME": name,
        "TITLE": _title(plugin_id),
        "AUTHOR": os.environ.get("USER", "") or "you",
        "GO_PACKAGE": go_package if lang == "go" else "",
    }
    files = {".gitignore": _GITIGNORE, f"proto/{name}/v1/{name}.proto": _PROTO}
    if lang == "python":
        files.update(
            {
                "README.md": _README_PY,
                "plugin.yaml": _PY_YAML,
                "bin/plugin": _PY_LAUNCHER,
                "plugin.py": _PY_MAIN,
                "gen_stubs.sh": _PY_GEN,
                "host_example.py": _PY_HOST,
            }
        )
    else:
        files.update(
            {
                "README.md": _README_GO,
                "plugin.yaml": _GO_YAML,
                "go.mod": _GO_MOD,
                "go.sum": _GO_SUM,
                "main.go": _GO_MAIN,
                "gen_stubs.sh": _GO_GEN,
            }
        )
    return {path: _fill(text, values) for path, text in files.items()}


def _generate_python_stubs(target: Path) -> None:
    """The Python stubs, next to plugin.py (grpcio-tools is one of plughost's dependencies)."""
    if not has_grpc_tools():
        raise PluginBuildError(
            f"generating the gRPC stubs needs grpcio-tools in {sys.executable}",
            title="grpcio-tools is missing",
            suggestions=["pip install grpcio-tools (plughost depends on it)"],
        )
    for argv in python_protoc_commands(target, find_protos(target)):
        done = subprocess.run(argv, cwd=target, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise PluginBuildError(
                f"protoc failed: {(done.stderr or done.stdout).strip()}",
                title="Cannot generate the gRPC stubs",
            )


def _generate_go_stubs(target: Path) -> None:
    """``go generate ./...`` when a Go toolchain is found; otherwise the first build does it."""
    try:
        go = find_go_binary()
    except PlughostError:
        log.warning("%s: no Go toolchain found; the first build generates gen/", target)
        return
    env = dict(os.environ, PLUGHOST_PYTHON=sys.executable)
    env["PATH"] = os.pathsep.join([str(Path(go).parent), env.get("PATH", "")])
    try:
        done = subprocess.run(
            ["/bin/sh", "-c", GO_GENERATE],
            cwd=target,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s: %s failed (%s); the first build retries", target, GO_GENERATE, exc)
        return
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        log.warning("%s: %s failed; the first build retries:\n%s", target, GO_GENERATE, output)


def scaffold(name: str, lang: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Create ``<directory>/<name>/`` (default: the current directory) and return it.

    ``name`` becomes the plugin id. Refuses a directory that exists and is not empty.
    The gRPC stubs are generated too (Go: when a Go toolchain is found).
    """
    plugin_id = validate_plugin_id(name)
    if lang not in LANGUAGES:
        raise ValidationError(
            f"unknown language {lang!r}; expected one of: {', '.join(LANGUAGES)}",
            title="Unknown language",
        )
    target = Path(directory or Path.cwd()).expanduser() / plugin_id
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValidationError(
            f"{target} already exists and is not empty",
            title="Cannot create the plugin",
            suggestions=["choose another name, or another directory with --dir"],
        )
    language: Lang = "python" if lang == "python" else "go"
    created = not target.exists()
    try:
        for relative, text in _files(plugin_id, language).items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if relative in ("bin/plugin", "gen_stubs.sh"):
                path.chmod(0o755)
        if language == "python":
            _generate_python_stubs(target)
        else:
            _generate_go_stubs(target)
    except BaseException:
        if created:
            shutil.rmtree(target, ignore_errors=True)
        else:  # it was an empty directory: empty it again
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    return target
