"""A plugin that misbehaves on purpose, for the process backend's tests.

In the spirit of jupyter_client's ``problemkernel.py``: ``PROBLEM_MODE`` (a
comma-separated list; the host passes it through ``LaunchSpec.extra_env``)
picks what goes wrong.

Handshake problems (the plugin then stays alive, so the host must kill it):
  bad_core          core protocol version 2
  bad_app_version   app protocol version 99, which no host offers
  netrpc            protocol ``netrpc`` instead of ``grpc``
  no_protocol       only four fields, which go-plugin reads as netrpc
  malformed         a handshake-looking line with a non-numeric app version
  bad_network       network type ``pigeon``
Start problems:
  exit_before       exit with status 2 right after an error line, before any handshake
  never             never print a handshake
  chatty_then_ok    print non-handshake lines on stdout first, then serve
  stderr_spam       write PROBLEM_SPAM_LINES (default 3000) long stderr lines first
Running and stopping:
  ignore_shutdown   answer GRPCController/Shutdown but keep running (SIGTERM stops it)
  ignore_sigterm    ignore Shutdown and SIGTERM: only SIGKILL stops it
  spawn_child       start a long sleeping child in the plugin's process group
  exit_soon         serve, then exit with status 5 after PROBLEM_EXIT_MS (default 200) ms
  print_env         write the environment as one JSON line on stderr
  bare              no SDK: a hand-written go-plugin server with only grpc.health.v1
                    (service "plugin"): no lifecycle, controller or stdio services
  bare_no_health    no SDK and no services at all; health can only be process liveness
  stdout_ticks      after the handshake, print ``tick N`` every 50 ms (to the GRPCStdio
                    stream, as the SDK redirects sys.stdout) and one line straight to fd 1

Every mode first writes ``problem: pid=<pid> mode=<modes>`` on stderr (and the
pid to ``PROBLEM_PID_FILE`` when set), so a test knows which process must be
gone. ``stderr_spam`` runs before the handshake problems, so combined with one
of them it shows that a load error quotes the *last* stderr lines.
``PROBLEM_PROTOCOLS`` (default ``1``) lists the app protocol versions served.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from plughost._proto import grpc_controller_pb2, grpc_controller_pb2_grpc
from plughost.sdk import PluginServer, serve

MODES = {m.strip() for m in os.environ.get("PROBLEM_MODE", "").split(",") if m.strip()}

BAD_HANDSHAKES = {
    "bad_core": "2|1|unix|/tmp/problem.sock|grpc|",
    "bad_app_version": "1|99|unix|/tmp/problem.sock|grpc|",
    "netrpc": "1|1|unix|/tmp/problem.sock|netrpc|",
    "no_protocol": "1|1|unix|/tmp/problem.sock",
    "malformed": "1|one|unix|/tmp/problem.sock|grpc|",
    "bad_network": "1|1|pigeon|/tmp/problem.sock|grpc|",
}


def err(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


class DeafController(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """Answers Shutdown like a healthy plugin, then does nothing about it."""

    def Shutdown(self, request: Any, context: Any) -> Any:
        err("problem: Shutdown received and ignored")
        return grpc_controller_pb2.Empty()


def tick() -> None:
    original = sys.__stdout__
    deadline = time.monotonic() + 10
    while sys.stdout is original and time.monotonic() < deadline:
        time.sleep(0.01)  # serve() swaps sys.stdout right after the handshake
    os.write(1, b"problem: raw fd1 line after the handshake\n")
    n = 0
    while True:
        print(f"problem: tick {n} via {type(sys.stdout).__name__}", flush=True)
        n += 1
        time.sleep(0.05)


def exit_soon() -> None:
    err("problem: exiting with status 5")
    os._exit(5)


def serve_bare(with_health: bool) -> None:
    """What a minimal non-Go plugin does by hand (go-plugin's plugin-python example)."""
    import tempfile
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    if with_health:
        servicer = health.HealthServicer()
        servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    directory = tempfile.mkdtemp(prefix="plugin", dir=os.environ.get("PLUGIN_UNIX_SOCKET_DIR"))
    address = os.path.join(directory, "sock")
    server.add_insecure_port(f"unix:{address}")
    server.start()
    out(f"1|1|unix|{address}|grpc|")
    server.wait_for_termination()  # until SIGTERM (default action) ends the process


def main() -> None:
    err(f"problem: pid={os.getpid()} mode={','.join(sorted(MODES)) or 'ok'}")
    if pid_file := os.environ.get("PROBLEM_PID_FILE"):
        with open(pid_file, "w") as f:
            f.write(str(os.getpid()))
    if "stderr_spam" in MODES:
        for i in range(int(os.environ.get("PROBLEM_SPAM_LINES", "3000"))):
            err(f"problem: spam line {i} " + "x" * 100)
    for mode, line in BAD_HANDSHAKES.items():
        if mode in MODES:
            err(f"problem: about to print a bad handshake ({mode})")
            out(line)
            sleep_forever()
    if "exit_before" in MODES:
        err("problem: fatal: cannot read my configuration")
        os._exit(2)  # at once, as a Go panic does right after its stack trace
    if "never" in MODES:
        err("problem: waiting for something that never comes")
        sleep_forever()
    if MODES & {"bare", "bare_no_health"}:
        serve_bare(with_health="bare" in MODES)
        return
    if "chatty_then_ok" in MODES:
        out("problem: warming up")
        out("loading | 3 | modules")
    if "print_env" in MODES:
        err("problem: env=" + json.dumps(dict(os.environ), sort_keys=True))
    if "spawn_child" in MODES:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        err(f"problem: child pid={child.pid}")
    if "exit_soon" in MODES:
        threading.Timer(int(os.environ.get("PROBLEM_EXIT_MS", "200")) / 1000, exit_soon).start()
    if "stdout_ticks" in MODES:
        threading.Thread(target=tick, daemon=True).start()
    services = []
    if MODES & {"ignore_shutdown", "ignore_sigterm"}:
        # Registered after the SDK's own controller, so this one answers.
        services.append(
            lambda server: grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(  # type: ignore[no-untyped-call]
                DeafController(), server
            )
        )
    if "ignore_sigterm" in MODES:
        # Blocked before serve() starts any thread, so no thread ever takes SIGTERM.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    versions = [int(v) for v in os.environ.get("PROBLEM_PROTOCOLS", "1").split(",")]
    serve(
        PluginServer(
            id="problem",
            version="1.0.0",
            capabilities=["exec"],
            services=services,
            protocol_versions=versions,
        )
    )


if __name__ == "__main__":
    main()
