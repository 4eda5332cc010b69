"""Startup case (d): a Go go-plugin plugin started, health-checked and stopped by pyvider-rpcplugin.

    python -m bench.pyvider_host --plugin PATH [-n RUNS] [--mtls-probe]

prints JSON: ``{"config", "start_ms", "stop_ms", "left_running_after_stop",
"error"?, "automtls_probe"?}``. bench/startup.py runs it in a process of its
own, as it runs the Go reference host: pyvider and plughost cannot share one
Python process, because both register go-plugin's protos (package ``plugin``:
``plugin.ConnInfo``, ``plugin.GRPCBroker`` ...) in protobuf's default
descriptor pool under different file names, and the second import fails with
"duplicate symbol 'plugin.ConnInfo'". This module must therefore never import
plughost.

What pyvider (0.5.5, read from its source) needs to run a plain go-plugin plugin:

- The magic cookie. Its defaults are ``PLUGIN_MAGIC_COOKIE=test_cookie_value``;
  gohello wants ``PLUGHOST=gohello``. Set with ``configure(magic_cookie_key=,
  magic_cookie=)`` (or env PLUGIN_MAGIC_COOKIE_KEY / PLUGIN_MAGIC_COOKIE_VALUE).
- Protocol version 1 (its default; set explicitly). The transport is a unix
  socket: go-plugin's default on Linux, accepted by pyvider's client, and what
  plughost uses by default too.
- AutoMTLS off. pyvider's default (``auto_mtls=True``) passes PLUGIN_CLIENT_CERT,
  so go-plugin answers with its AutoMTLS certificate, whose ECDSA P-521 key the
  TLS inside grpcio (BoringSSL) refuses: the TLS handshake fails ("SSL_ERROR_SSL
  ... Invalid certificate verification context") and ``start()`` times out
  (plughost gets past this with its OpenSSL relay, src/plughost/process/tlsrelay.py).
  So both hosts run without TLS on the unix socket; ``--mtls-probe`` makes one
  start with AutoMTLS on (short timeouts) and records what happens.
- Quiet logs: its logger (provide.foundation) prints every stdio stream end and a
  traceback from a stderr relay task it orphans on each close; PROVIDE_LOG_LEVEL.

Health: pyvider has no health API, so the check is ``grpc.health.v1.Health/Check``
of service ``plugin`` on its ``grpc_channel``, as plughost's backend does. Stop:
what its ``async with`` does, ``shutdown_plugin()`` (Controller/Shutdown, then a
fixed 50 ms sleep) and ``close()`` (channel close with 0.5 s grace, terminate,
reap).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

COOKIE = ("PLUGHOST", "gohello")


def _configure() -> dict[str, Any]:
    os.environ.setdefault("PROVIDE_LOG_LEVEL", "CRITICAL")  # read when pyvider is imported
    from pyvider.rpcplugin import configure
    from pyvider.rpcplugin.config import rpcplugin_config

    key, value = COOKIE
    configure(magic_cookie=value, magic_cookie_key=key, protocol_version=1, auto_mtls=False)
    return {
        "pyvider_rpcplugin": _version(),
        "magic_cookie": f"{rpcplugin_config.plugin_magic_cookie_key}="
        f"{rpcplugin_config.plugin_magic_cookie_value}",
        "protocol_versions": list(rpcplugin_config.plugin_protocol_versions),
        "auto_mtls": rpcplugin_config.plugin_auto_mtls,
        "client_transports": list(rpcplugin_config.plugin_client_transports),
    }


def _version() -> str:
    from importlib.metadata import version

    return version("pyvider-rpcplugin")


async def _start(plugin: str) -> Any:
    from pyvider.rpcplugin import plugin_client

    client = plugin_client(command=[plugin])
    await client.start()
    try:
        stub = health_pb2_grpc.HealthStub(client.grpc_channel)  # type: ignore[no-untyped-call]
        reply = await stub.Check(health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"health check answered {reply.status}")
    except BaseException:
        await client.close()
        raise
    return client


async def _stop(client: Any) -> None:
    await client.shutdown_plugin()
    await client.close()


def _still_running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        proc.kill()
        return True
    except psutil.Error:
        return False


async def _cycles(plugin: str, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {"start_ms": [], "stop_ms": [], "left_running_after_stop": []}
    try:
        for _ in range(runs):
            t0 = time.perf_counter()
            client = await _start(plugin)
            t1 = time.perf_counter()
            pid = client._process.pid if client._process else None
            await _stop(client)
            t2 = time.perf_counter()
            out["start_ms"].append((t1 - t0) * 1000)
            out["stop_ms"].append((t2 - t1) * 1000)
            if _still_running(pid):
                out["left_running_after_stop"].append(pid)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    return out


async def _mtls_probe(plugin: str) -> dict[str, Any]:
    """One start with pyvider's default AutoMTLS on and short timeouts."""
    from pyvider.rpcplugin import configure

    configure(
        auto_mtls=True, handshake_timeout=5.0, channel_ready_timeout=2.0, client_retry_enabled=False
    )
    t0 = time.perf_counter()
    try:
        client = await asyncio.wait_for(_start(plugin), 30)
    except Exception as exc:
        result: dict[str, Any] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    else:
        await _stop(client)
        result = {"ok": True}
    finally:
        configure(auto_mtls=False)
    return {**result, "seconds": time.perf_counter() - t0}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    try:
        config = _configure()
    except ImportError as exc:
        return {"error": f"pyvider-rpcplugin is not installed ({exc}); pip install -e '.[dev]'"}
    result = {"config": config, **await _cycles(args.plugin, args.n)}
    if args.mtls_probe and "error" not in result:
        result["automtls_probe"] = await _mtls_probe(args.plugin)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", required=True, help="the go-plugin plugin's executable")
    parser.add_argument("-n", type=int, default=50, help="sequential starts and stops")
    parser.add_argument("--mtls-probe", action="store_true", help="also try AutoMTLS once")
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
