"""A plugin that probes what its network reaches, for the network: loopback tests.

Before serving it writes one line per probe on stderr, ``netprobe: <name>: <outcome>``
(``connected``, ``listening`` or ``blocked (<why>)``), with targets from the environment:

  loopback   connect to 127.0.0.1:$NETPROBE_LOOPBACK_PORT (a port on the host's loopback)
  outside    connect to $NETPROBE_OUTSIDE_HOST:$NETPROBE_OUTSIDE_PORT (another address)
  listen     listen on 127.0.0.1:$NETPROBE_LISTEN_PORT of its own (held while it runs)

A missing variable is reported as blocked.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable

from plughost.sdk import PluginServer, serve

held: list[socket.socket] = []


def report(name: str, attempt: Callable[[], str]) -> None:
    try:
        what = attempt()
    except Exception as exc:  # a refusal is an outcome, not a failure of the probe
        what = f"blocked ({type(exc).__name__}: {exc})"
    print(f"netprobe: {name}: {what}", file=sys.stderr, flush=True)


def connect(host: str, port: str) -> str:
    with socket.create_connection((host, int(port)), timeout=2):
        return "connected"


def listen() -> str:
    server = socket.socket()
    server.bind(("127.0.0.1", int(os.environ["NETPROBE_LISTEN_PORT"])))
    server.listen(4)
    held.append(server)
    return "listening"


def main() -> None:
    env = os.environ
    report("loopback", lambda: connect("127.0.0.1", env["NETPROBE_LOOPBACK_PORT"]))
    report("outside", lambda: connect(env["NETPROBE_OUTSIDE_HOST"], env["NETPROBE_OUTSIDE_PORT"]))
    report("listen", listen)
    serve(PluginServer())


if __name__ == "__main__":
    main()
