"""Schemathesis against the local service's OpenAPI.

A real PluginManager runs on a fresh root holding the hello example, with a real
marketplace (the registry server over a directory where hello 1.0.0 is
published). Schemathesis reads ``/openapi.json`` from ``create_app(manager)``
in-process (its ASGI support) and calls every operation with generated requests:
valid ones, invalid ones, and ones aimed at the installed plugin. Checks: no 5xx,
and every error (4xx/5xx) is problem JSON: ``application/problem+json`` with
type, title, status (the response's), detail and errorType.

The manager lives on an event loop of its own, in a thread; ``OnLoop`` runs the
app there (schemathesis drives ASGI apps from a loop of its own). The
server-sent-event streams never end, so they are called directly (their error
answers) instead of fuzzed; uninstall (DELETE) runs last, since it may remove
the plugin the other operations work on.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import Phase as HypothesisPhase  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.python.asgi import get_client  # noqa: E402
from waiting import async_wait_until  # noqa: E402

import plughost  # noqa: E402
from plughost.host.manager import PluginManager  # noqa: E402
from plughost.packages.archive import pack  # noqa: E402
from plughost.phases import Phase  # noqa: E402
from plughost.registry import index as registry_index  # noqa: E402
from plughost.registry.server import create_app as create_registry_app  # noqa: E402
from plughost.registry.server import running_server  # noqa: E402
from plughost.service.api import create_app  # noqa: E402
from plughost.settings import SettingsProvider  # noqa: E402

HELLO = Path(plughost.__file__).resolve().parent / "examples" / "hello"
PROBLEM = "application/problem+json"
PROBLEM_KEYS = frozenset({"type", "title", "status", "detail", "errorType"})
SSE_PATHS = ("/v1/events", "/v1/plugins/{plugin_id}/logs/stream", "/v1/ui/events")
MAX_EXAMPLES = 25  # per operation, valid requests
NEGATIVE_EXAMPLES = 10  # per operation, invalid requests
AIMED_EXAMPLES = 8  # per operation with {plugin_id}, aimed at the installed plugin
SETTINGS: dict[str, Any] = {
    "start_timeout": 20.0,
    "stop_grace": 2.0,
    "kill_grace": 1.0,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
}

T = TypeVar("T")


class OnLoop:
    """An ASGI app that runs ``app`` on ``loop``, whichever loop it is called from."""

    def __init__(self, app: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        caller = asyncio.get_running_loop()

        async def on_caller(coro: Awaitable[T]) -> T:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, caller))  # type: ignore[arg-type]

        async def bridged_receive() -> Any:
            return await on_caller(receive())

        async def bridged_send(message: Any) -> None:
            await on_caller(send(message))

        future = asyncio.run_coroutine_threadsafe(
            self.app(scope, bridged_receive, bridged_send), self.loop
        )
        await asyncio.wrap_future(future)


@dataclass
class Service:
    manager: PluginManager
    loop: asyncio.AbstractEventLoop
    schema: Any
    statuses: dict[str, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    def run(self, coro: Awaitable[T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


# -- checks -------------------------------------------------------------------------------


def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code >= 500:
        raise AssertionError(
            f"{case.operation.label} answered {response.status_code}: {response.content[:500]!r}"
        )


def errors_are_problem_json(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return
    label = f"{case.operation.label} ({response.status_code})"
    content_type = (response.headers.get("content-type") or [""])[0].split(";")[0].strip()
    assert content_type == PROBLEM, f"{label}: content type {content_type!r}, not {PROBLEM}"
    body = response.json()
    assert isinstance(body, dict), f"{label}: problem body is not an object: {body!r}"
    missing = PROBLEM_KEYS - body.keys()
    assert not missing, f"{label}: problem JSON lacks {sorted(missing)}: {body!r}"
    assert body["status"] == response.status_code, f"{label}: status member {body['status']!r}"
    assert all(isinstance(body[k], str) and body[k] for k in ("type", "title", "errorType")), body
    assert isinstance(body["detail"], str), body


CHECKS = [no_server_error, errors_are_problem_json]


def check_response(status: int, headers: dict[str, str], body: Any) -> None:
    """The same checks, for a response from the plain test client."""
    assert status < 500, (status, body)
    if status >= 400:
        assert headers.get("content-type", "").split(";")[0] == PROBLEM, headers
        assert body.keys() >= PROBLEM_KEYS and body["status"] == status, body


# -- the service --------------------------------------------------------------------------


async def _start_manager(root: Path, marketplace_url: str) -> PluginManager:
    manager = PluginManager(
        root, settings=SettingsProvider(None, {**SETTINGS, "marketplace_url": marketplace_url})
    )
    await manager.initialize()
    await async_wait_until(
        lambda: manager.get_plugin("hello").phase is Phase.RUNNING,
        timeout=30,
        interval=0.05,
        message=lambda: f"hello Running: {manager.get_plugin('hello')}",
    )
    return manager


async def _stop_manager(manager: PluginManager) -> None:
    await manager.shutdown()
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    # Relative paths the fuzzer sends (install, dev mode) resolve in an empty directory.
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    registry = tmp_path / "registry"
    registry_index.publish(registry, pack(HELLO, tmp_path / "hello-1.0.0.tar.gz"))
    root = tmp_path / "root"
    shutil.copytree(HELLO, root / "plugins" / "hello", ignore=shutil.ignore_patterns("__pycache__"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="manager-loop", daemon=True)
    thread.start()
    try:
        with running_server(create_registry_app(registry)) as url:
            manager = asyncio.run_coroutine_threadsafe(_start_manager(root, url), loop).result(60)
            try:
                app = OnLoop(create_app(manager), loop)
                schema = schemathesis.openapi.from_asgi("/openapi.json", app)
                yield Service(manager, loop, schema)
            finally:
                asyncio.run_coroutine_threadsafe(_stop_manager(manager), loop).result(60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def fuzz_operation(
    service: Service,
    operation: Any,
    *,
    examples: int,
    mode: GenerationMode = GenerationMode.POSITIVE,
    path_parameters: dict[str, Any] | None = None,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    counter = service.statuses[operation.label]

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run
        phases=[HypothesisPhase.explicit, HypothesisPhase.generate, HypothesisPhase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(timeout=30)
        counter[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Nothing can be invalid in a request without parameters or body.
        assert mode is GenerationMode.NEGATIVE, operation.label


def _operations(service: Service) -> list[Any]:
    found = [result.ok() for result in service.schema.get_all_operations()]
    return [op for op in found if op.path not in SSE_PATHS]


# -- the test -----------------------------------------------------------------------------


def test_openapi_no_5xx_and_every_error_is_problem_json(service: Service) -> None:
    started = time.monotonic()
    operations = _operations(service)
    labels = {op.label for op in operations}
    assert {"GET /v1/plugins", "POST /v1/install", "DELETE /v1/plugins/{plugin_id}"} <= labels
    destructive = [op for op in operations if op.method.upper() == "DELETE"]
    for operation in [op for op in operations if op not in destructive] + destructive:
        fuzz_operation(service, operation, examples=MAX_EXAMPLES)
        fuzz_operation(service, operation, examples=NEGATIVE_EXAMPLES, mode=GenerationMode.NEGATIVE)
        if "plugin_id" in operation.path and operation.method.upper() != "DELETE":
            fuzz_operation(
                service, operation, examples=AIMED_EXAMPLES, path_parameters={"plugin_id": "hello"}
            )
    # Uninstalling the plugin itself, last: a success, then problem JSON for it.
    [uninstall] = destructive
    fuzz_operation(service, uninstall, examples=1, path_parameters={"plugin_id": "hello"})
    assert service.statuses[uninstall.label][200] == 1
    assert not service.manager.list_plugins()
    with get_client(service.schema.app) as client:
        response = client.get("/v1/plugins/hello", timeout=30)
        check_response(response.status_code, dict(response.headers), response.json())
        assert response.status_code == 404

    elapsed = time.monotonic() - started
    summary = {label: dict(sorted(c.items())) for label, c in sorted(service.statuses.items())}
    print(
        f"\n{sum(sum(c.values()) for c in service.statuses.values())} requests in {elapsed:.1f} s"
    )
    for label, counts in summary.items():
        print(f"  {label}: {counts}")
    # The installed plugin was reached: its own operations answered 2xx too.
    for label in (
        "GET /v1/plugins/{plugin_id}",
        "GET /v1/plugins/{plugin_id}/meta",
        "GET /v1/plugins/{plugin_id}/services",
        "GET /v1/plugins/{plugin_id}/introspect",
    ):
        assert any(200 <= s < 300 for s in service.statuses[label]), summary[label]
    assert all(s < 500 for c in service.statuses.values() for s in c)


def test_direct_answers_and_found_bugs(service: Service) -> None:
    """The event streams' error answers, and the requests that once answered 5xx."""
    with get_client(service.schema.app) as client:

        def call(method: str, path: str, expect: int, **kwargs: Any) -> Any:
            response = client.request(method, path, timeout=30, **kwargs)
            body = response.json()
            check_response(response.status_code, dict(response.headers), body)
            assert response.status_code == expect, (path, response.status_code, body)
            return body

        call("GET", "/v1/plugins/nope/logs/stream", 404)
        call("GET", "/v1/plugins/nope/logs", 404)
        call("GET", "/nowhere", 404)
        # Calls of the running plugin's methods: JSON in and out.
        health = {"method": "grpc.health.v1.Health/Check"}
        assert call("POST", "/v1/plugins/hello/call", 200, json=health)["response"] == {
            "status": "SERVING"
        }
        call("POST", "/v1/plugins/hello/call", 400, json={"method": "grpc.health.v1.Health/Watch"})
        call("POST", "/v1/health", 405)
        # Found by schemathesis: a NUL byte in the dev-mode path was a 500 (ValueError).
        body = call("POST", "/v1/dev", 422, json={"path": "\x00"})
        assert "body.path" in body["detail"] and "NUL byte" in body["detail"]
        # Found by schemathesis: a huge page number overflowed the registry's SQLite
        # OFFSET (500 there, 503 here); past the last page is simply empty.
        for prefix in ("/v1/marketplace", "/v1/ui/marketplace"):
            body = call("GET", f"{prefix}/plugins/hello/reviews?page={10**36}", 200)
        assert body["reviews"] == []
