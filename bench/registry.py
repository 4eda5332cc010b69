"""Registry benchmark: downloads/s and listings/s with 64 concurrent clients over
loopback, one ``plughost registry serve`` vs two on one PostgreSQL (goal: two >= 1.7x one).

A download is the 302 plus the package it points at (served by the registry from
its directory, 64 KiB); a listing is ``GET /v1/plugins`` (a page of 20). The
clients run in separate processes (BENCH_REGISTRY_CLIENT_PROCS, default 4) so the
load generator is not the bottleneck; each client connection sticks to one
server, spread evenly. PostgreSQL is a throw-away cluster started as the tests
do (tests/services.py; scripts/install_services.sh installs it).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from ._common import REPO, pct, print_table, write_result

CLIENTS = 64
SECONDS = float(os.environ.get("BENCH_REGISTRY_SECONDS", "10"))
PROCS = int(os.environ.get("BENCH_REGISTRY_CLIENT_PROCS", "4"))
PLUGINS = 20


def _package(work: Path, n: int) -> Path:
    import io
    import tarfile

    meta = f'id: bench-{n:02d}\nversion: "1.0.0"\nname: Bench {n}\ncategory: bench\n'.encode()
    path = work / f"bench-{n:02d}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("plugin.yaml", meta), ("assets/blob.bin", os.urandom(64 * 1024))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


async def _clients(urls: list[str], kind: str, seconds: float, count: int, first: int) -> Any:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def one(n: int) -> None:
        url = urls[n % len(urls)]
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            i = n
            while time.perf_counter() < deadline:
                i += 1
                t0 = time.perf_counter()
                if kind == "downloads":
                    plugin = f"bench-{i % PLUGINS:02d}"
                    answer = await client.get(f"/v1/plugins/{plugin}/download/1.0.0/any")
                    answer = await client.get(answer.headers["location"])
                else:
                    answer = await client.get("/v1/plugins", params={"per_page": 20})
                answer.raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)

    await asyncio.gather(*(one(first + n) for n in range(count)))
    return latencies


def _client_process(urls: list[str], kind: str, seconds: float, count: int, first: int) -> Any:
    return asyncio.run(_clients(urls, kind, seconds, count, first))


def _load(urls: list[str], kind: str) -> dict[str, Any]:
    per = CLIENTS // PROCS
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCS) as pool:
        jobs = [
            pool.apply_async(_client_process, (urls, kind, SECONDS, per, p * per))
            for p in range(PROCS)
        ]
        latencies = [ms for job in jobs for ms in job.get()]
    return {
        "servers": len(urls),
        "kind": kind,
        "per s": len(latencies) / SECONDS,
        "p50 ms": pct(latencies, 50),
        "p99 ms": pct(latencies, 99),
    }


def _serve(directory: Path, database: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "plughost", "registry", "serve", str(directory),
             "--port", str(port), "--database", database],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the registry server at {url} exited")
        try:
            if httpx.get(f"{url}/v1/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the registry server at {url} did not answer within 60 s")


async def main() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from services import free_port, postgres_cluster  # the tests' throw-away cluster

    from plughost.registry.index import publish

    work = Path(tempfile.mkdtemp(prefix="plughost-bench-registry-"))
    try:
        with postgres_cluster() as postgres:
            database = postgres.database()
            for n in range(PLUGINS):
                publish(work / "registry", _package(work, n), database=database)
            servers: list[subprocess.Popen[bytes]] = []
            urls = []
            try:
                for n in range(2):
                    port = free_port()
                    servers.append(_serve(work / "registry", database, port, work / f"{n}.log"))
                    urls.append(f"http://127.0.0.1:{port}")
                for url, process in zip(urls, servers, strict=True):
                    _wait(url, process)
                rows = [_load(urls[:n], kind) for kind in ("downloads", "listings") for n in (1, 2)]
            finally:
                for process in servers:
                    process.terminate()
                    process.wait(timeout=20)
        by = {(r["kind"], r["servers"]): r["per s"] for r in rows}
        summary = {
            f"{kind} 2/1": by[(kind, 2)] / by[(kind, 1)] for kind in ("downloads", "listings")
        }
        print_table(f"registry: {CLIENTS} clients, {SECONDS:.0f} s each, PostgreSQL", rows)
        print_table("scaling", [summary])
        print(f"goal: two servers >= 1.7x one (machine: {os.cpu_count()} CPUs)")
        write_result("registry", {"clients": CLIENTS, "rows": rows, "summary": summary})
    finally:
        shutil.rmtree(work, ignore_errors=True)
