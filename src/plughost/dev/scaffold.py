"""``plughost init NAME --lang python|go``: a new plugin source tree that builds, installs and runs.

Python: ``plugin.yaml``, a ``bin/plugin`` launcher and ``plugin.py`` on
plughost's SDK; it packs as it is. Go: ``plugin.yaml`` (with
``dev.build: go build -o build/bin/plugin .``), ``go.mod`` + ``go.sum`` pinned
to the go-plugin release plughost is tested against, and ``main.go``, a
minimal go-plugin gRPC server (go-plugin serves the standard health service
``plugin`` by itself). Both answer plughost's and Omniview's cookie key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from ..errors import ValidationError
from ..metadata import validate_plugin_id

__all__ = ["LANGUAGES", "scaffold"]

Lang = Literal["python", "go"]
LANGUAGES: tuple[str, ...] = ("python", "go")

_PY_YAML = """\
# plughost plugin metadata (DESIGN section 2)
id: {id}
version: 0.1.0
name: {title}
description: A plughost plugin written in Python.
category: tools
license: MIT
author:
  name: {author}
tags: [python]
capabilities: [exec]
dev:
  watch: ["*.py", "plugin.yaml"]
"""

_PY_LAUNCHER = """\
#!/bin/sh
# Launcher: run the plugin with the host's Python (it has the plughost SDK).
exec "${PLUGHOST_PYTHON:-python3}" "$(dirname "$0")/../plugin.py" "$@"
"""

_PY_MAIN = '''\
"""{title}: a plughost plugin.

Register your gRPC services in ``register``; id, version and capabilities are
read from plugin.yaml. ``print()`` output and log lines reach the host's log
(``plughost logs {id}``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from plughost.sdk import PluginServer, serve


def register(server: Any) -> None:
    """Add your services here, e.g. ``add_GreeterServicer_to_server(Greeter(), server)``."""


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="[%(levelname)s] %(message)s")
    logging.info("{id} starting")
    serve(PluginServer(services=[register]))


if __name__ == "__main__":
    main()
'''

_GO_YAML = """\
# plughost plugin metadata (DESIGN section 2)
id: {id}
version: 0.1.0
name: {title}
description: A plughost plugin written in Go with hashicorp/go-plugin.
category: tools
license: MIT
author:
  name: {author}
tags: [go]
capabilities: [exec]
dev:
  build: go build -o build/bin/plugin .
  output: build/bin/plugin
  watch: ["*.go", "go.mod", "plugin.yaml"]
"""

# The versions of tests/goplugins/goplugin/go.mod: what plughost is tested against.
_GO_MOD = """\
module plughost.local/plugins/{id}

go 1.26.0

require (
\tgithub.com/hashicorp/go-hclog v1.6.3
\tgithub.com/hashicorp/go-plugin v1.8.0
\tgoogle.golang.org/grpc v1.85.0
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
\tgoogle.golang.org/protobuf v1.36.12 // indirect
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
google.golang.org/protobuf v1.36.12 h1:pJOKDDOyeXErUroCihFAd5LQuwXBSpVnKGrj5o/fwxc=
google.golang.org/protobuf v1.36.12/go.mod h1:HTf+CrKn2C3g5S8VImy6tdcUvCska2kB7j23XfzDpco=
gopkg.in/check.v1 v0.0.0-20161208181325-20d25e280405/go.mod h1:Co6ibVJAznAaIkqp8huTwlJQCZ016jof/cbN4VW5Yz0=
gopkg.in/yaml.v3 v3.0.1 h1:fxVm/GzAzEWqLHuvctI91KS9hhNmmWOoWu0XTYJS7CA=
gopkg.in/yaml.v3 v3.0.1/go.mod h1:K4uyk7z7BCEPqu6E+C64Yfv1cQ7kz7rIZviUmN+EgEM=
"""

_GO_MAIN = """\
// Command {id} is a plughost plugin written with hashicorp/go-plugin.
//
// The host starts it with the magic cookie <KEY>={id} (KEY is PLUGHOST, or
// OMNIVIEW under the Omniview profile) and talks gRPC to it. go-plugin serves
// the standard health service ("plugin"), the controller (Shutdown) and
// stdio by itself; register your own services in GRPCServer.
package main

import (
\t"context"
\t"errors"
\t"os"

\t"github.com/hashicorp/go-hclog"
\t"github.com/hashicorp/go-plugin"
\t"google.golang.org/grpc"
)

// pluginID must be plugin.yaml's id: it is the magic cookie's value.
const pluginID = "{id}"

// serverPlugin plugs gRPC services into go-plugin. It must be a GRPCPlugin:
// go-plugin offers the "grpc" protocol only when the plugin set holds one.
type serverPlugin struct {{
\tplugin.NetRPCUnsupportedPlugin
}}

func (serverPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {{
\t// Register your services here, e.g. pb.RegisterGreeterServer(s, &greeter{{}}).
\treturn nil
}}

func (serverPlugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {{
\treturn nil, errors.New(pluginID + " is server-only")
}}

func main() {{
\tcookieKey := "PLUGHOST"
\tif os.Getenv(cookieKey) == "" && os.Getenv("OMNIVIEW") != "" {{
\t\tcookieKey = "OMNIVIEW"
\t}}
\tlogger := hclog.New(&hclog.LoggerOptions{{
\t\tName: pluginID, JSONFormat: true, Output: os.Stderr, Level: hclog.Info,
\t}})
\tlogger.Info(pluginID+" starting", "pid", os.Getpid())
\tplugin.Serve(&plugin.ServeConfig{{
\t\tHandshakeConfig: plugin.HandshakeConfig{{
\t\t\tProtocolVersion:  1,
\t\t\tMagicCookieKey:   cookieKey,
\t\t\tMagicCookieValue: pluginID,
\t\t}},
\t\tPlugins:    plugin.PluginSet{{"plugin": serverPlugin{{}}}},
\t\tGRPCServer: plugin.DefaultGRPCServer,
\t\tLogger:     logger,
\t}})
}}
"""

_GITIGNORE = "build/\n*.tar.gz\n"

_README = """\
# {title}

A plughost plugin ({lang}).

```sh
plughost dev .                # install in dev mode: rebuilt and reloaded on save
plughost pack . -o {id}.tar.gz  # build a package
plughost install {id}.tar.gz  # install it
plughost logs {id} -f         # follow its log
```
"""


def _title(plugin_id: str) -> str:
    words = plugin_id.replace("_", "-").replace(".", "-").split("-")
    return " ".join(w.capitalize() for w in words if w) or plugin_id


def _files(plugin_id: str, lang: Lang) -> dict[str, str]:
    values = {
        "id": plugin_id,
        "title": _title(plugin_id),
        "author": os.environ.get("USER", "") or "you",
        "lang": "Python" if lang == "python" else "Go",
    }
    files = {"README.md": _README.format(**values), ".gitignore": _GITIGNORE}
    if lang == "python":
        files.update(
            {
                "plugin.yaml": _PY_YAML.format(**values),
                "bin/plugin": _PY_LAUNCHER,
                "plugin.py": _PY_MAIN.replace("{id}", plugin_id).replace(
                    "{title}", values["title"]
                ),
            }
        )
    else:
        files.update(
            {
                "plugin.yaml": _GO_YAML.format(**values),
                "go.mod": _GO_MOD.format(**values),
                "go.sum": _GO_SUM,
                "main.go": _GO_MAIN.format(**values),
            }
        )
    return files


def scaffold(name: str, lang: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Create ``<directory>/<name>/`` (default: the current directory) and return it.

    ``name`` becomes the plugin id. Refuses a directory that exists and is not empty.
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
    for relative, text in _files(plugin_id, language).items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if relative == "bin/plugin":
            path.chmod(0o755)
    return target
