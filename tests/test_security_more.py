"""Hostile neighbours, continued: a marketplace that answers without end, paths that cannot
name a file, log patterns, the modes of what the installer keeps, and the event loop.

Real servers on 127.0.0.1, a real local service on its unix socket, the real CLI, a
real manager under ``umask 000`` and a real host process.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import clean_env, cli
from filemodes import mode, umask
from test_install import FAST, make_package

from plughost import MAX_PLUGIN_SIZE
from plughost.errors import RegistryUnavailableError
from plughost.host.manager import PluginManager
from plughost.logs import parse_log_line
from plughost.packages.signing import SizeMismatchError
from plughost.registry.client import RegistryClient
from plughost.registry.models import current_platform
from plughost.service.api import LocalService
from plughost.settings import SettingsProvider

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).resolve().parent
ANSWER_MAX = 16 * 1024 * 1024  # what the client reads of one answer at most
CHUNK = b" " * (256 * 1024)  # JSON whitespace: an endless answer stays valid JSON so far


# -- 1. a marketplace answering without end -------------------------------------------------
@dataclass
class Marketplace:
    """A hostile marketplace on 127.0.0.1: ``routes`` maps a path to what it answers."""

    url: str
    routes: dict[str, Callable[[BaseHTTPRequestHandler], int]]
    sent: dict[str, int] = field(default_factory=dict)  # path -> body bytes written


@contextlib.contextmanager
def marketplace() -> Iterator[Marketplace]:
    market = Marketplace("", {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # a body without a length ends when the server closes

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            answer = market.routes.get(path)
            if answer is None:
                self.send_error(404)
                return
            try:
                market.sent[path] = answer(self)
            except (BrokenPipeError, ConnectionResetError):
                market.sent[path] = -1  # the client went away before the end

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    market.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield market
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def start(handler: BaseHTTPRequestHandler, length: int | None = None) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    if length is not None:
        handler.send_header("Content-Length", str(length))
    handler.end_headers()


def huge(handler: BaseHTTPRequestHandler) -> int:
    """A valid envelope of 20 MiB, with no length announced."""
    start(handler)
    body = b'{"success": true, "data": {"status": "ok", "pad": "' + b"x" * (20 << 20) + b'"}}'
    handler.wfile.write(body)
    return len(body)


def endless(handler: BaseHTTPRequestHandler) -> int:
    """An envelope that never ends (stops at 1 GiB, so that a reader reading it all fails)."""
    start(handler)
    handler.wfile.write(b'{"success": true, "data": ')
    sent = 0
    while sent < 1 << 30:
        handler.wfile.write(CHUNK)
        sent += len(CHUNK)
    return sent


def announced(handler: BaseHTTPRequestHandler) -> int:
    """Announces 1 GiB: refused on the header, whatever follows."""
    start(handler, 1 << 30)
    handler.wfile.write(b'{"success": true, "data": {}}')
    return 0


@pytest.mark.parametrize("answer", [huge, endless, announced], ids=lambda f: f.__name__)
async def test_a_marketplace_answer_is_read_up_to_a_cap(
    answer: Callable[[BaseHTTPRequestHandler], int],
) -> None:
    with marketplace() as market:
        market.routes["/v1/health"] = answer
        provider = SettingsProvider(None, {"marketplace_url": market.url})
        async with RegistryClient(provider) as client:
            with pytest.raises(RegistryUnavailableError) as caught:
                await client.health()
    detail = caught.value.detail
    assert f"GET {market.url}/v1/health" in detail, detail
    assert f"{ANSWER_MAX:,} bytes" in detail, detail
    assert caught.value.suggestions and "marketplace_url" in caught.value.suggestions[0]


def listing(size: int) -> Callable[[BaseHTTPRequestHandler], int]:
    def answer(handler: BaseHTTPRequestHandler) -> int:
        artifact = {"checksum": "0" * 64, "download_url": "/package", "size": size}
        body = json.dumps(
            {
                "success": True,
                "data": {"version": "1.0.0", "artifacts": {current_platform(): artifact}},
            }
        ).encode()
        start(handler, len(body))
        handler.wfile.write(body)
        return len(body)

    return answer


def package(handler: BaseHTTPRequestHandler) -> int:
    body = b"\x1f\x8b" + b"\0" * 1000
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
    return len(body)


async def test_a_package_listed_larger_than_any_package_may_be_is_not_downloaded(
    tmp_path: Path,
) -> None:
    with marketplace() as market:
        market.routes["/v1/plugins/big/versions/1.0.0"] = listing(MAX_PLUGIN_SIZE + 1)
        market.routes["/package"] = package
        provider = SettingsProvider(None, {"marketplace_url": market.url})
        async with RegistryClient(provider) as client:
            with pytest.raises(SizeMismatchError) as caught:
                await client.download_artifact("big", "1.0.0", dest=tmp_path)
    assert f"{MAX_PLUGIN_SIZE:,} bytes a plugin package may be" in caught.value.detail
    assert "/package" not in market.sent  # refused on the listing: nothing was fetched
    assert list(tmp_path.iterdir()) == []


# -- 2, 3. paths in request bodies: what cannot name a file is a 422 on every route ---------
@contextlib.asynccontextmanager
async def service_on(root: Path) -> AsyncIterator[httpx.AsyncClient]:
    manager = PluginManager(root, settings=SettingsProvider(None), start_plugins=False)
    await manager.initialize()
    service = LocalService(manager)
    await service.start()
    transport = httpx.AsyncHTTPTransport(uds=str(service.socket))
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://plughost", timeout=30
        ) as api:
            yield api
    finally:
        await service.stop()
        await manager.shutdown()


@pytest.mark.parametrize("route", ["/v1/install", "/v1/ui/install", "/v1/dev"])
async def test_a_path_that_cannot_name_a_file_is_refused_on_every_route(
    tmp_path: Path, route: str
) -> None:
    async with service_on(tmp_path / "root") as api:
        for path, why in (("x" * 4097, "4096 characters"), ("a\0b", "NUL byte")):
            response = await api.post(route, json={"path": path})
            problem = response.json()
            assert response.status_code == 422, (route, why, problem)
            assert problem["errorType"] == "validation"
            assert "body.path" in problem["detail"] and why in problem["detail"], problem
        # A path that can name a file still gets through to the handler (and is not found).
        response = await api.post(route, json={"path": str(tmp_path / "missing")})
        assert response.status_code != 422, response.json()


# -- 4. plughost logs --grep without a host: the host's search, RE2 -------------------------
def write_log(root: Path, plugin_id: str, messages: list[str]) -> None:
    (root / "logs").mkdir(parents=True, exist_ok=True)
    lines = [parse_log_line(f"[INFO] {m}", plugin_id).model_dump_json() for m in messages]
    (root / "logs" / f"{plugin_id}.log").write_text("\n".join(lines) + "\n")


def test_offline_log_search_speaks_re2_as_the_host_does(
    tmp_path: Path, make_plugin: Callable[..., Path]
) -> None:
    root = tmp_path / "root"
    make_plugin(root / "plugins", "quiet")
    write_log(root, "quiet", ["started", "answered code 42", "stopped"])
    # RE2's Unicode classes, which Python's re does not know.
    found = cli("logs", "quiet", "--grep", r"\pN", "--json", root=root).ok().stdout
    assert [json.loads(line)["message"] for line in found.splitlines()] == ["answered code 42"]
    # Lookarounds, which RE2 refuses (the host's API answers the same).
    refused = cli("logs", "quiet", "--grep", "code(?= 42)", root=root)
    assert refused.returncode != 0
    assert "invalid log search pattern" in refused.out and "RE2 syntax" in refused.out


# -- 5. what the installer keeps is private, whatever the umask -----------------------------


async def test_the_installer_keeps_its_directories_private_under_umask_000(
    tmp_path: Path,
) -> None:
    with umask(0):
        manager = PluginManager(
            tmp_path / "root", settings=SettingsProvider(None, FAST), start_plugins=False
        )
        await manager.initialize()
        plugins = manager.plugins_dir
        staging: dict[str, int] = {}

        def watch_staging(done: int, total: int | None) -> None:
            staging.update({p.name: mode(p) for p in plugins.iterdir() if p.name[0] == "."})

        try:
            await manager.install_plugin_from_path(make_package(tmp_path, "1.0.0"), watch_staging)
            (plugins / "hello").chmod(0o755)  # as an older host left it
            await manager.install_plugin_from_path(make_package(tmp_path, "2.0.0"), watch_staging)
            assert staging and set(staging.values()) == {0o700}, staging
            assert mode(plugins / ".previous") == 0o700
            assert (await manager.rollback_plugin("hello")).version == "1.0.0"
            assert mode(plugins / "hello") == 0o700  # the rollback's staging directory
        finally:
            await manager.shutdown()


# -- 6. the marketplace client is imported off the event loop -------------------------------
IMPORT_WATCH = textwrap.dedent(
    """\
    import asyncio, importlib.abc, json, sys, threading

    sys.path.insert(0, sys.argv[2])
    from waiting import async_wait_until

    NAME = "plughost.registry.client"
    importers = []

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == NAME:
                importers.append(threading.current_thread().name)
            return None

    sys.meta_path.insert(0, Watch())

    from plughost.host.manager import PluginManager
    from plughost.settings import SettingsProvider

    async def main():
        manager = PluginManager(sys.argv[1], settings=SettingsProvider(None))
        await manager.initialize()
        try:
            await async_wait_until(
                lambda: hasattr(sys.modules.get(NAME), "RegistryClient"),
                message="the marketplace client imported while the host starts",
            )
            manager.marketplace()
        finally:
            await manager.shutdown()
        print(json.dumps({"importers": importers, "main": threading.main_thread().name}))

    asyncio.run(main())
    """
)


def test_the_marketplace_client_is_imported_off_the_event_loop(tmp_path: Path) -> None:
    script = tmp_path / "watch.py"
    script.write_text(IMPORT_WATCH)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "root"), str(TESTS)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert len(seen["importers"]) == 1 and seen["importers"] != [seen["main"]], seen
