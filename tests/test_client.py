"""PluginClient: the application calls its plugins through reloads and crashes.

Real plugin processes (the hello example); the only thing the caller may ever see
besides an answer is a bounded wait or a typed PluginUnavailableError.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fixtures_plugins import (
    Managers,
    install_example,
    managers_fixture,  # noqa: F401  (the `managers` fixture)
    root_fixture,  # noqa: F401  (the `root` fixture)
)
from google.protobuf import wrappers_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from waiting import async_wait_until

from plughost import PluginClient, PluginUnavailableError
from plughost._proto import hello_pb2_grpc
from plughost.phases import Phase
from plughost.records import PluginInfo

MakePlugin = Callable[..., Path]
Greeter = hello_pb2_grpc.GreeterStub


async def greet(client: PluginClient, name: str = "x", **kwargs: Any) -> str:
    reply = await client.stub(Greeter).Greet(wrappers_pb2.StringValue(value=name), **kwargs)
    return str(reply.value)


async def test_a_client_calls_the_plugin_and_follows_it_through_a_reload(
    managers: Managers,
) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    client = manager.client("hello")
    assert isinstance(client, PluginClient)
    assert await greet(client, timeout=10) == "hello, x"
    first = client.info.pid
    reload = asyncio.create_task(manager.reload_plugin("hello"))
    await async_wait_until(lambda: client.info.phase is not Phase.RUNNING, message="reloading")
    assert await greet(client, timeout=20) == "hello, x", "a call during a reload waits"
    await reload
    assert await greet(client, timeout=10) == "hello, x"
    assert client.info.pid != first


async def test_calls_keep_working_through_a_sigkill(managers: Managers) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    client = manager.client("hello")
    assert await greet(client, timeout=10) == "hello, x"
    pid = client.info.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    answers = [await greet(client, f"n{i}", timeout=20) for i in range(20)]
    assert answers == [f"hello, n{i}" for i in range(20)]
    info = await client.wait_running(10)
    assert info.pid != pid and info.phase is Phase.RUNNING


async def test_concurrent_callers_see_answers_only_across_reloads_and_a_kill(
    managers: Managers,
) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    client = manager.client("hello")
    stop = asyncio.Event()
    seen: list[str] = []

    async def caller(n: int) -> None:
        while not stop.is_set():
            seen.append(await greet(client, str(n), timeout=30))

    callers = [asyncio.create_task(caller(n)) for n in range(4)]
    await manager.reload_plugin("hello")
    pid = client.info.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await client.wait_running(20)
    await manager.reload_plugin("hello")
    count = len(seen)
    await async_wait_until(lambda: len(seen) >= count + 8, message="answers after the restarts")
    stop.set()
    await asyncio.gather(*callers)  # any error a caller saw is raised here
    assert all(answer.startswith("hello, ") for answer in seen)


@pytest.mark.parametrize("how", ["unloaded", "disabled", "uninstalled"])
async def test_a_plugin_that_is_not_coming_back_fails_at_once(managers: Managers, how: str) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    client = manager.client("hello")
    if how == "unloaded":
        await manager.unload_plugin("hello")
    elif how == "disabled":
        await manager.set_enabled("hello", False)
    else:
        await manager.uninstall_plugin("hello")
    started = time.monotonic()
    with pytest.raises(PluginUnavailableError) as caught:
        await greet(client, timeout=30)
    assert time.monotonic() - started < 2, "no waiting for a plugin that is not coming back"
    error = caught.value
    assert error.plugin_id == "hello" and error.status == 503
    expected = {"unloaded": "Stopped", "disabled": "Stopped", "uninstalled": "Uninstalled"}
    assert error.phase == expected[how]
    assert error.to_dict()["phase"] == expected[how]
    if how == "disabled":
        assert "disabled" in error.detail


async def test_a_failed_plugin_fails_at_once_with_its_last_error(
    managers: Managers, make_plugin: MakePlugin
) -> None:
    make_plugin(managers.root / "plugins", "broken", executable=False)
    manager = managers.new()
    await manager.initialize()
    with pytest.raises(PluginUnavailableError, match="not executable") as caught:
        await greet(manager.client("broken"), timeout=30)
    assert caught.value.phase == "Failed"
    assert "plughost logs broken" in caught.value.suggestions[0]


async def test_a_restart_that_outlasts_the_deadline_is_a_bounded_wait(
    managers: Managers,
) -> None:
    install_example(managers.root, "hello")
    manager = managers.new(backoff_initial=30.0, backoff_max=30.0)
    await manager.initialize()
    client = manager.client("hello")
    manager.handle_plugin_crash("hello")  # the next attempt is 30 s away
    assert client.info.phase is Phase.RECOVERING
    started = time.monotonic()
    with pytest.raises(PluginUnavailableError, match="did not come back in time") as caught:
        await greet(client, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert caught.value.phase == "Recovering"
    with pytest.raises(PluginUnavailableError):
        await client.wait_running(0.2)


async def test_services_lists_what_the_plugin_serves(managers: Managers) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    services = await manager.client("hello").services()
    assert "grpc.health.v1.Health" in services
    assert "plugin.GRPCController" in services


class TalkingController:
    """A capability controller that, like the original's, gets the plugin's client."""

    def __init__(self) -> None:
        self.said: list[str] = []
        self.client: PluginClient | None = None

    async def on_plugin_start(self, info: PluginInfo, client: PluginClient) -> None:
        self.client = client
        self.said.append("start:" + await greet(client, "start", timeout=10))

    async def on_plugin_stop(self, info: PluginInfo, client: PluginClient) -> None:
        self.said.append("stop:" + await greet(client, "stop", timeout=10))

    def on_plugin_init(self, info: PluginInfo) -> None:  # one argument: info only
        self.said.append("init")


async def test_controllers_and_hooks_get_a_live_client(managers: Managers) -> None:
    install_example(managers.root, "hello")
    controller = TalkingController()
    manager = managers.new(hooks={"talk": controller})
    await manager.initialize()
    assert controller.said == ["init", "start:hello, start"]
    assert controller.client is not None
    assert await greet(controller.client, timeout=10) == "hello, x", "kept, it stays usable"
    await manager.unload_plugin("hello")
    assert controller.said[-1] == "stop:hello, stop", "on_plugin_stop runs before the process goes"


async def test_an_error_the_plugin_answers_reaches_the_caller_as_it_is(
    managers: Managers,
) -> None:
    install_example(managers.root, "hello")
    manager = managers.new()
    await manager.initialize()
    health: Any = manager.client("hello").stub(health_pb2_grpc.HealthStub)
    request = health_pb2.HealthCheckRequest(service="no.such.Service")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await health.Check(request, timeout=5)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert manager.get_plugin("hello").phase is Phase.RUNNING


async def test_calls_follow_the_plugin_through_an_update_and_a_rollback(
    managers: Managers, tmp_path: Path
) -> None:
    from plughost.packages.archive import pack

    def package(version: str, greeting: str) -> Path:
        source = install_example(tmp_path / version, "hello")
        meta = source / "plugin.yaml"
        meta.write_text(meta.read_text().replace("version: 1.0.0", f"version: {version}"))
        code = source / "plugin.py"
        code.write_text(code.read_text().replace('GREETING = "hello"', f'GREETING = "{greeting}"'))
        return pack(source, tmp_path / f"hello-{version}.tar.gz")

    manager = managers.new()
    await manager.initialize()
    await manager.install_plugin_from_path(package("1.0.0", "hello"))
    client = manager.client("hello")
    assert await greet(client, timeout=10) == "hello, x"
    update = asyncio.create_task(manager.install_plugin_from_path(package("2.0.0", "howdy")))
    during = await greet(client, timeout=30)  # before, during or after the swap: an answer
    assert during in ("hello, x", "howdy, x")
    await update
    assert await greet(client, timeout=10) == "howdy, x"
    await manager.rollback_plugin("hello")
    assert await greet(client, timeout=10) == "hello, x"
