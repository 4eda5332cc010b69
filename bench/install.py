"""Install benchmark: a 200 MB package of 2 000 files.

Side by side in one run: ``install_plugin_from_path`` vs ``tar -xzf`` of the
same file, and a marketplace install over loopback (download, verify,
install) vs ``curl``-style download then ``tar -xzf``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from plughost import PluginManager, SettingsProvider
from plughost.packages.archive import pack
from plughost.registry import index as registry_index
from plughost.registry.server import create_app, running_server

from ._common import EXAMPLES, fresh_root, print_table, write_result

FILES = int(os.environ.get("BENCH_INSTALL_FILES", "2000"))
FILE_SIZE = int(os.environ.get("BENCH_INSTALL_FILE_KB", "100")) * 1024
ROUNDS = 3


def _make_package(work: Path) -> Path:
    src = work / "big"
    shutil.copytree(EXAMPLES / "hello", src, ignore=shutil.ignore_patterns("__pycache__"))
    data = src / "data"
    data.mkdir()
    for i in range(FILES):
        (data / f"blob{i:04d}.bin").write_bytes(os.urandom(FILE_SIZE))
    return pack(src, work / "big.tar.gz")


def _tar(package: Path) -> float:
    dest = Path(tempfile.mkdtemp(prefix="tar-"))
    t0 = time.perf_counter()
    subprocess.run(["tar", "-xzf", str(package), "-C", str(dest)], check=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed * 1000


def _download_then_tar(url: str) -> float:
    dest = Path(tempfile.mkdtemp(prefix="dl-"))
    t0 = time.perf_counter()
    with httpx.stream("GET", url, follow_redirects=True) as r, open(dest / "p.tgz", "wb") as fh:
        for chunk in r.iter_bytes(1 << 20):
            fh.write(chunk)
    subprocess.run(["tar", "-xzf", str(dest / "p.tgz"), "-C", str(dest)], check=True)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(dest)
    return elapsed * 1000


async def _timed_install(settings: SettingsProvider, action: str, package: Path) -> float:
    manager = PluginManager(fresh_root(), settings=settings, start_plugins=False)
    await manager.initialize()
    try:
        t0 = time.perf_counter()
        if action == "path":
            await manager.install_plugin_from_path(package)
        else:
            await manager.install_plugin_version("hello", "1.0.0")
        return (time.perf_counter() - t0) * 1000
    finally:
        await manager.shutdown()
        shutil.rmtree(manager.layout.root, ignore_errors=True)


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="plughost-bench-install-"))
    try:
        package = _make_package(work)
        size_mb = package.stat().st_size / 1e6
        published = registry_index.publish(work / "registry", package)
        rows = []
        with running_server(create_app(work / "registry")) as url:
            settings = SettingsProvider(
                None, {"marketplace_url": url, "registry_public_key": published.public_key_hex}
            )
            artifact = f"{url}/v1/plugins/hello/download/1.0.0/{published.platform}"
            for _ in range(ROUNDS):  # alternate, so drift hits both sides alike
                rows.append(
                    {
                        "path install ms": await _timed_install(settings, "path", package),
                        "tar -xzf ms": _tar(package),
                        "marketplace install ms": await _timed_install(settings, "market", package),
                        "download + tar ms": _download_then_tar(artifact),
                    }
                )
        best = {k: min(r[k] for r in rows) for k in rows[0]}
        summary = {
            "package MB": size_mb,
            "files": FILES,
            **best,
            "path ratio": best["path install ms"] / best["tar -xzf ms"],
            "marketplace ratio": best["marketplace install ms"] / best["download + tar ms"],
        }
        print_table(
            f"install: {size_mb:.0f} MB package, {FILES} files (best of {ROUNDS})", [summary]
        )
        print("goals: both ratios <= 1.3")
        write_result("install", {"summary": summary, "rounds": rows})
    finally:
        shutil.rmtree(work, ignore_errors=True)
