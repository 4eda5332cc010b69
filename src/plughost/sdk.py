"""Write a plughost (go-plugin compatible) plugin in Python in a few lines.

    from plughost.sdk import PluginServer, serve
    serve(PluginServer(id="hello", version="1.0.0", capabilities=["exec"]))

``serve`` checks the magic cookie, negotiates the protocol version, listens
on a unix socket (or tcp), turns on mutual TLS when the host sent a client
certificate, registers the standard services (health as ``plugin``, the
lifecycle service under both of Omniview's names, go-plugin's controller and
stdio), prints the handshake line and serves until Shutdown or SIGTERM.
"""

from __future__ import annotations

# Imports are what serving needs and nothing more: a plugin pays for each one at
# every start. The rarely used (yaml, json, tempfile, the devinfo writer) are
# imported where they are needed; tests/test_sdk.py checks none creep back.
import contextlib
import dataclasses
import io
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TextIO

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
    lifecycle_legacy_pb2,
    lifecycle_legacy_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
)
from .process.handshake import CORE_PROTOCOL_VERSION, Handshake, format_handshake

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["COOKIE_KEYS", "PluginServer", "ServiceRegistration", "serve"]

COOKIE_KEYS: tuple[str, ...] = ("PLUGHOST", "OMNIVIEW")
SDK_PROTOCOL_VERSION = 1

ServiceRegistration = Callable[[grpc.Server], None]
"""Registers the author's own services, e.g. ``lambda s: add_GreeterServicer_to_server(G(), s)``."""


@dataclasses.dataclass
class PluginServer:
    """What a plugin is and serves."""

    id: str = ""
    """Empty: taken from the plugin.yaml next to the plugin (so a copy under another id works)."""
    version: str = ""
    capabilities: Sequence[str] | None = None
    services: Sequence[ServiceRegistration] = ()
    protocol_versions: Sequence[int] = (1,)
    cookie_keys: Sequence[str] = COOKIE_KEYS
    max_workers: int = 8
    on_shutdown: Callable[[], None] | None = None
    health: Callable[[], bool] | None = None
    """Called by every health check; False reports NOT_SERVING (and blocking hangs it)."""

    def is_healthy(self) -> bool:
        return self.health() if self.health is not None else True


class _Lifecycle:
    """GetInfo / GetCapabilities / HealthCheck, for one of the two package names."""

    def __init__(self, plugin: PluginServer, pb: Any) -> None:
        self._plugin = plugin
        self._pb = pb

    def GetInfo(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return self._pb.GetInfoResponse(
            plugin_id=self._plugin.id,
            version=self._plugin.version,
            sdk_protocol_version=SDK_PROTOCOL_VERSION,
        )

    def GetCapabilities(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Any:
        return self._pb.GetCapabilitiesResponse(capabilities=list(self._plugin.capabilities or ()))

    def HealthCheck(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Any:
        ok = self._plugin.is_healthy()
        status = self._pb.SERVING_STATUS_SERVING if ok else self._pb.SERVING_STATUS_NOT_SERVING
        return self._pb.HealthCheckResponse(status=status)


class _Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 with go-plugin's service name, answering through the plugin's hook."""

    def __init__(self, plugin: PluginServer) -> None:
        self._plugin = plugin

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        if request.service not in ("plugin", ""):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        ok = self._plugin.is_healthy()
        resp = health_pb2.HealthCheckResponse
        return resp(status=resp.SERVING if ok else resp.NOT_SERVING)


class _Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def Shutdown(self, request: Any, context: grpc.ServicerContext) -> Any:
        # Answer first, then stop: go-plugin's host treats a reply as a clean stop.
        threading.Timer(0.01, self._stop).start()
        return grpc_controller_pb2.Empty()


class _Stdio(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """Streams what the plugin prints to stdout after the handshake to the host."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=10_000)
        self._taken = threading.Lock()

    def push(self, channel: Any, data: bytes) -> None:
        try:
            self.chunks.put_nowait(grpc_stdio_pb2.StdioData(channel=channel, data=data))
        except queue.Full:
            pass  # nobody reads; never block the plugin on its own print()

    def StreamStdio(self, request: empty_pb2.Empty, context: grpc.ServicerContext) -> Iterator[Any]:
        if not self._taken.acquire(blocking=False):
            context.abort(grpc.StatusCode.ALREADY_EXISTS, "StreamStdio may be called once")
        while context.is_active():
            try:
                yield self.chunks.get(timeout=0.5)
            except queue.Empty:
                continue


class _StreamWriter(io.TextIOBase):
    """A text stream that forwards whole lines into the stdio service."""

    def __init__(self, stdio: _Stdio, channel: int) -> None:
        self._stdio = stdio
        self._channel = channel
        self._buf = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        with self._lock:
            self._buf += s
            if "\n" in self._buf:
                head, _, self._buf = self._buf.rpartition("\n")
                self._stdio.push(self._channel, (head + "\n").encode())
        return len(s)

    def flush(self) -> None:
        with self._lock:
            if self._buf:
                self._stdio.push(self._channel, self._buf.encode())
                self._buf = ""


def _die(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _check_cookie(plugin: PluginServer) -> None:
    if not any(os.environ.get(k) == plugin.id for k in plugin.cookie_keys):
        _die(
            "This binary is a plugin. These are not meant to be executed directly.\n"
            "Please execute the program that consumes these plugins, which will\n"
            "load any plugins automatically"
        )


def _negotiate(plugin: PluginServer) -> int:
    offered = {
        int(v)
        for v in os.environ.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",")
        if v.strip().isdigit()
    }
    common = offered & set(plugin.protocol_versions)
    if not common:
        _die(
            f"plugin protocol versions {sorted(plugin.protocol_versions)} are not among "
            f"the host's {sorted(offered)}"
        )
    return max(common)


def _listen(server: grpc.Server, creds: grpc.ServerCredentials | None) -> tuple[str, str]:
    def bind(address: str) -> int:
        if creds is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, creds)

    if os.environ.get("PLUGHOST_TRANSPORT") == "tcp":
        lo, hi = (
            int(os.environ.get("PLUGIN_MIN_PORT", 10000)),
            int(os.environ.get("PLUGIN_MAX_PORT", 25000)),
        )
        for port in range(lo, hi + 1):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    continue
            try:
                if bind(f"127.0.0.1:{port}"):
                    return "tcp", f"127.0.0.1:{port}"
            except RuntimeError:
                continue
        _die(f"no free tcp port between {lo} and {hi}")
    path = os.path.join(_private_dir(os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or None), "sock")
    bind(f"unix:{path}")
    return "unix", path


def _private_dir(base: str | None) -> str:
    """``tempfile.mkdtemp(prefix="plugin", dir=base)`` without importing tempfile (~9 ms)."""
    if base is None:
        import tempfile

        base = tempfile.gettempdir()
    while True:
        path = os.path.join(base, "plugin" + os.urandom(6).hex())
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        return path


def _server_credentials() -> tuple[grpc.ServerCredentials | None, bytes | None]:
    client_pem = os.environ.get("PLUGIN_CLIENT_CERT")
    if not client_pem:
        return None, None
    from .process.mtls import generate_cert_pair  # cryptography is slow to import: only when asked

    pair = generate_cert_pair()
    creds = grpc.ssl_server_credentials(
        [(pair.key_pem, pair.cert_pem)],
        root_certificates=client_pem.encode(),
        require_client_auth=True,
    )
    return creds, pair.cert_der


def _register_standard(
    server: grpc.Server, plugin: PluginServer, stop: Callable[[], None]
) -> _Stdio:
    health_pb2_grpc.add_HealthServicer_to_server(_Health(plugin), server)
    lifecycle_pb2_grpc.add_PluginLifecycleServicer_to_server(  # type: ignore[no-untyped-call]
        _Lifecycle(plugin, lifecycle_pb2), server
    )
    lifecycle_legacy_pb2_grpc.add_PluginLifecycleServicer_to_server(  # type: ignore[no-untyped-call]
        _Lifecycle(plugin, lifecycle_legacy_pb2), server
    )
    grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(_Controller(stop), server)  # type: ignore[no-untyped-call]
    stdio = _Stdio()
    grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(stdio, server)  # type: ignore[no-untyped-call]
    return stdio


def _find_metadata() -> dict[str, Any]:
    """id, version and capabilities: from the host's environment when it started us (no
    YAML parser to import), else from the plugin.yaml in the working directory (the host
    runs plugins from their directory), beside the script or one level up from it."""
    env = os.environ
    if "PLUGHOST_PLUGIN_VERSION" in env and "PLUGHOST_PLUGIN_CAPABILITIES" in env:
        capabilities = env["PLUGHOST_PLUGIN_CAPABILITIES"]
        return {
            "id": env.get("PLUGHOST_PLUGIN_ID", ""),
            "version": env["PLUGHOST_PLUGIN_VERSION"],
            "capabilities": capabilities.split(",") if capabilities else [],
        }
    cwd = os.getcwd()
    script = os.path.dirname(os.path.realpath(sys.argv[0])) if sys.argv and sys.argv[0] else cwd
    for directory in (cwd, script, os.path.dirname(script)):
        candidate = os.path.join(directory, "plugin.yaml")
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as f:
                return _parse_yaml(f.read())
    return {}


def _parse_yaml(text: str) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(text)
    return data if isinstance(data, dict) else {}


def _complete(plugin: PluginServer) -> PluginServer:
    if plugin.id and plugin.version and plugin.capabilities is not None:
        return plugin
    meta = _find_metadata()
    return dataclasses.replace(
        plugin,
        id=plugin.id or str(meta.get("id", "")),
        version=plugin.version or str(meta.get("version", "0.0.0")),
        capabilities=(
            plugin.capabilities
            if plugin.capabilities is not None
            else [str(c) for c in meta.get("capabilities") or []]
        ),
    )


def _write_devinfo(plugin: PluginServer, hs: Handshake) -> Path | None:
    """With PLUGHOST_DEV=1, announce where we listen so a host can attach (dev mode).

    A developer runs the plugin by hand (under a debugger); the host watches
    for this file. The original SDK's file and format, written atomically:
    ``$PLUGHOST_DEVINFO``, else ``<root>/plugins/<id>/.devinfo`` (root as the
    host resolves it: PLUGHOST_HOME, else the user data dir). None if not written.
    """
    if os.environ.get("PLUGHOST_DEV") != "1":
        return None
    import json
    from datetime import UTC, datetime
    from pathlib import Path

    from .atomic import atomic_write_text
    from .paths import resolve_root

    explicit = os.environ.get("PLUGHOST_DEVINFO")
    path = Path(explicit) if explicit else resolve_root() / "plugins" / plugin.id / ".devinfo"
    vite = os.environ.get("PLUGHOST_VITE_PORT", "")
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "protocol": hs.protocol,
        "protocolVersion": hs.app_version,
        "addr": hs.address,
        **({"vitePort": int(vite)} if vite.isdigit() else {}),
        "pluginId": plugin.id,
        "version": plugin.version,
        "startedAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    try:
        atomic_write_text(path, json.dumps(info, indent=2), 0o600)
    except OSError as exc:
        sys.stderr.write(f"plughost sdk: cannot write {path}: {exc}\n")
        return None
    return path


def serve(plugin: PluginServer, *, stdout: TextIO | None = None) -> None:
    """Run the plugin until the host stops it. Never returns normally."""
    plugin = _complete(plugin)
    if not plugin.id:
        _die("plugin id unknown: pass PluginServer(id=...) or run beside its plugin.yaml")
    _check_cookie(plugin)
    version = _negotiate(plugin)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=plugin.max_workers))
    done = threading.Event()

    def stop() -> None:
        if plugin.on_shutdown is not None:
            plugin.on_shutdown()
        server.stop(grace=1.0)
        done.set()

    stdio = _register_standard(server, plugin, stop)
    for register in plugin.services:
        register(server)
    creds, cert_der = _server_credentials()
    network, address = _listen(server, creds)
    server.start()

    def on_signal(*_: object) -> None:
        threading.Thread(target=stop).start()

    dev = os.environ.get("PLUGHOST_DEV") == "1"  # run by hand: Ctrl-C is the developer's
    signal.signal(signal.SIGINT, on_signal if dev else signal.SIG_IGN)  # else the host's
    signal.signal(signal.SIGTERM, on_signal)
    hs = Handshake(CORE_PROTOCOL_VERSION, version, network, address, "grpc", cert_der)
    devinfo = _write_devinfo(plugin, hs)  # before the line: whoever reads it finds the file
    out = stdout or sys.stdout
    out.write(format_handshake(hs) + "\n")
    out.flush()
    sys.stdout = _StreamWriter(stdio, grpc_stdio_pb2.StdioData.STDOUT)
    done.wait()
    if devinfo is not None:
        with contextlib.suppress(OSError):
            devinfo.unlink()
    if network == "unix":
        # Separately: gRPC may have unlinked the socket already, the directory is still ours.
        with contextlib.suppress(OSError):
            os.unlink(address)
        with contextlib.suppress(OSError):
            os.rmdir(os.path.dirname(address))
    os._exit(0)
