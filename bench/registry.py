"""Registry benchmark: downloads/s and listings/s with 64 concurrent connections over
loopback, one ``plughost registry serve`` vs two on one PostgreSQL (goal: two >= 1.7x one).

A download is the 302 plus the package it points at (served by the registry from
its directory, 64 KiB); a listing is ``GET /v1/plugins`` (a page of 20), the same
page each time, as a popular listing is: after the first, a server answers it from
its read cache once it has read the catalog's generation (registry/cache.py). The load
comes from ``wrk`` (Debian's, a C program: scripts/install_services.sh installs
it), one process per server with an even share of the 64 connections, so that the
2 cores go to the servers and PostgreSQL rather than to Python clients. Every
request carries ``Accept-Encoding: gzip``, as Go's HTTP client (every marketplace
client) sends it, so listings come gzip-compressed; packages are gzip tarballs
already and are sent as they are. Its Lua script follows each 302 to the package
(any connection fetches it) and counts every answer that is not the expected one:
a listing must be a 200 with ``Content-Encoding: gzip`` whose body is byte for byte
the compressed listing checked before. Latencies are per request (a download is
two). Before the timed part each server is checked from Python: the package it
hands out is byte for byte the one published, and its compressed listing decodes
to exactly its plain one, the right page. PostgreSQL is a throw-away cluster
started as the tests do (tests/services.py).

A second table says where the CPU went during each run, in cores: on 2 shared
cores two servers can be 1.7x one only if each gets a core nearly to itself.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from ._common import REPO, print_table, write_result

CLIENTS = 64
SECONDS = float(os.environ.get("BENCH_REGISTRY_SECONDS", "10"))
PLUGINS = 20
LISTING = "/v1/plugins?per_page=20"

# Shared by both kinds: count what is not the expected answer, report totals and the
# latency histogram (microseconds) as one JSON line. ``done`` runs in another Lua
# state, so it reads the worker thread's counters through ``thread:get``.
_REPORT = """
wrk.headers["Accept-Encoding"] = "gzip"
local threads = {}
setup = function(thread) table.insert(threads, thread) end
bad, packages = 0, 0
done = function(summary, latency, requests)
  local t = threads[1]
  local hist = {}
  for i = 1, #latency do
    local value, count = latency(i)
    hist[#hist + 1] = string.format("[%d,%d]", value, count)
  end
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests":%d,"duration_us":%d,"bad":%d,"packages":%d,"errors":%d,"hist":[%s]}\\n',
    summary.requests, summary.duration, t:get("bad"), t:get("packages"),
    e.connect + e.read + e.write + e.status + e.timeout, table.concat(hist, ",")))
end
"""

# A 302's Location goes on a queue that the next free connection fetches first.
_DOWNLOADS = """
local pending, n, plugins, prefix = {}, 0, 0, ""
init = function(args) plugins, prefix = tonumber(args[1]), args[2] end
request = function()
  local path = table.remove(pending)
  if path == nil then
    n = n + 1
    path = string.format("/v1/plugins/bench-%02d/download/1.0.0/any", n % plugins)
  end
  return wrk.format("GET", path)
end
response = function(status, headers, body)
  local location = headers["location"] or headers["Location"]
  if status == 302 and location and location:sub(1, #prefix) == prefix then
    table.insert(pending, location:sub(#prefix + 1))
  elseif status == 200 and #body > 64 * 1024 then
    packages = packages + 1
  else
    bad = bad + 1
  end
end
"""

# The expected body: the server's compressed listing, as checked from Python (_check).
_LISTINGS = """
local expected
init = function(args)
  local file = assert(io.open(args[3], "rb"))
  expected = file:read("*a")
  file:close()
end
response = function(status, headers, body)
  local encoding = headers["content-encoding"] or headers["Content-Encoding"]
  if status ~= 200 or encoding ~= "gzip" or body ~= expected then bad = bad + 1 end
end
"""


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


def _wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is not installed: run bash scripts/install_services.sh")
    return found


def _pct(hist: list[tuple[int, int]], p: float) -> float:
    """The p-th percentile (nearest rank) of a merged histogram, in ms."""
    total = sum(count for _, count in hist)
    rank = max(1, round(p / 100 * total + 0.5))
    seen = 0
    for value, count in sorted(hist):
        seen += count
        if seen >= rank:
            return value / 1000
    return float("nan")


def _busy() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


class _Meter:
    """Where the CPU goes during a run, in cores: the registry servers, PostgreSQL (the
    postmaster and its backends), wrk, and the rest of the machine ("other": other
    people's work on a shared machine, and kernel time charged to no process)."""

    def __init__(self, servers: list[subprocess.Popen[bytes]], postgres_port: int) -> None:
        self.servers = [psutil.Process(s.pid) for s in servers]
        self.master = next(
            p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(postgres_port) in (p.info["cmdline"] or [])
        )  # fmt: skip

    def __enter__(self) -> _Meter:
        # The backends as they are now: the servers' pools opened their connections
        # in the warm-up run, which is why a run comes first that is not reported.
        self.postgres = [self.master, *self.master.children(recursive=True)]
        self.start = (time.monotonic(), _busy(), _cpu(self.servers), _cpu(self.postgres),
                      resource.getrusage(resource.RUSAGE_CHILDREN))  # fmt: skip
        return self

    def __exit__(self, *_: object) -> None:
        wall, busy, servers, postgres, children = self.start
        wall = time.monotonic() - wall
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wrk = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
        used = {
            "registry": _cpu(self.servers) - servers,
            "postgres": _cpu(self.postgres) - postgres,
            "wrk": wrk,
        }
        used["other"] = max(0.0, _busy() - busy - sum(used.values()))
        self.cores = {name: seconds / wall for name, seconds in used.items()}


def _load(urls: list[str], kind: str, scripts: Path, meter: _Meter) -> dict[str, Any]:
    """One wrk per server, all at once, each with its share of the connections."""
    per = CLIENTS // len(urls)
    runs = []
    for n, url in enumerate(urls):
        path = LISTING if kind == "listings" else "/"
        argv = [_wrk(), "-t1", f"-c{per}", f"-d{SECONDS:g}s", "--timeout", "30s",
                "-s", str(scripts / f"{kind}.lua"), url + path,
                "--", str(PLUGINS), url, str(scripts / f"listing-{n}.gz")]  # fmt: skip
        runs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    reports = []
    with meter:
        outs = [run.communicate(timeout=SECONDS + 60)[0] for run in runs]
    for run, out in zip(runs, outs, strict=True):
        if run.returncode != 0:
            raise RuntimeError(f"wrk failed ({run.returncode}): {out[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    if any(r["bad"] or r["errors"] for r in reports):
        raise RuntimeError(f"{kind}: unexpected answers or socket errors: "
                           f"{[(r['bad'], r['errors']) for r in reports]}")  # fmt: skip
    seconds = max(r["duration_us"] for r in reports) / 1e6
    done = sum(r["packages"] if kind == "downloads" else r["requests"] for r in reports)
    hist = [(value, count) for r in reports for value, count in r["hist"]]
    return {
        "servers": len(urls),
        "kind": kind,
        "per s": done / seconds,
        "req/s": sum(r["requests"] for r in reports) / seconds,
        "p50 ms": _pct(hist, 50),
        "p99 ms": _pct(hist, 99),
        # Per CPU-second of the servers: what a second server costs in work, however busy
        # the machine is with other work (which decides how many cores the servers get).
        "per cpu-s": done / seconds / max(meter.cores["registry"], 1e-9),
        "cpu": meter.cores,
    }


def _check(url: str, expected: dict[str, str]) -> bytes:
    """Untimed: each package a server hands out is the one published, and its listing is
    right, compressed or not. Returns the compressed listing as sent."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for plugin_id, sha256 in expected.items():
            answer = client.get(f"/v1/plugins/{plugin_id}/download/1.0.0/any")
            if answer.status_code != 302:
                raise RuntimeError(f"{url}: download of {plugin_id} answered {answer.status_code}")
            package = client.get(answer.headers["location"])
            package.raise_for_status()
            if hashlib.sha256(package.content).hexdigest() != sha256:
                raise RuntimeError(f"{url}: the package of {plugin_id} is not the one published")
        plain = client.get(LISTING, headers={"Accept-Encoding": "identity"})
        with client.stream("GET", LISTING, headers={"Accept-Encoding": "gzip"}) as answer:
            sent = b"".join(answer.iter_raw())
        if answer.headers.get("content-encoding") != "gzip" or len(sent) >= len(plain.content):
            raise RuntimeError(f"{url}: the listing was not compressed: {answer.headers}")
        if gzip.decompress(sent) != plain.content:
            raise RuntimeError(f"{url}: the compressed listing is not the plain one")
        listing = plain.json()
        if listing["pagination"]["total"] != len(expected) or len(listing["data"]) != 20:
            raise RuntimeError(f"{url}: the listing is wrong: {listing['pagination']}")
        return sent


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

    _wrk()
    work = Path(tempfile.mkdtemp(prefix="plughost-bench-registry-"))
    try:
        for kind, body in (("downloads", _DOWNLOADS), ("listings", _LISTINGS)):
            (work / f"{kind}.lua").write_text(_REPORT + body)
        with postgres_cluster() as postgres:
            database = postgres.database()
            expected = {}
            for n in range(PLUGINS):
                result = publish(work / "registry", _package(work, n), database=database)
                expected[result.plugin_id] = result.sha256
            servers: list[subprocess.Popen[bytes]] = []
            urls = []
            try:
                for n in range(2):
                    port = free_port()
                    servers.append(_serve(work / "registry", database, port, work / f"{n}.log"))
                    urls.append(f"http://127.0.0.1:{port}")
                for n, (url, process) in enumerate(zip(urls, servers, strict=True)):
                    _wait(url, process)
                    (work / f"listing-{n}.gz").write_bytes(_check(url, expected))
                meter = _Meter(servers, postgres.port)
                _load(urls, "downloads", work, meter)  # warm-up: pools, caches, page cache
                rows = [
                    _load(urls[:n], kind, work, meter)
                    for kind in ("downloads", "listings")
                    for n in (1, 2)
                ]
            finally:
                for process in servers:
                    process.terminate()
                    process.wait(timeout=20)
        by = {(r["kind"], r["servers"]): r["per s"] for r in rows}
        summary = {
            f"{kind} 2/1": by[(kind, 2)] / by[(kind, 1)] for kind in ("downloads", "listings")
        }
        title = f"registry: {CLIENTS} connections (wrk), {SECONDS:g} s each, PostgreSQL"
        print_table(title, [{k: v for k, v in r.items() if k != "cpu"} for r in rows])
        print_table(
            "where the CPU went, in cores (the machine has 2; 'other' is everything else on it)",
            [{"servers": r["servers"], "kind": r["kind"], **r["cpu"]} for r in rows],
        )
        print_table("scaling", [summary])
        print(f"goal: two servers >= 1.7x one (machine: {os.cpu_count()} CPUs)")
        write_result("registry", {"clients": CLIENTS, "rows": rows, "summary": summary})
    finally:
        shutil.rmtree(work, ignore_errors=True)
