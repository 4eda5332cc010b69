"""go-plugin's GRPCBroker, both ways.

- ``gobidir`` (tests/goplugins/bidir) is go-plugin's examples/bidirectional
  made ours: ``counter.v1.Counter/Put`` dials a broker id the host announced
  and calls the host's ``counter.v1.AddHelper/Sum``; ``Announce`` makes the
  plugin serve ``counter.v1.Echo`` through its own broker for the host to dial.
  It runs under the process backend with every transport x AutoMTLS setting,
  and once under a PluginManager.
- A fake plugin (a Python ``plugin.GRPCBroker`` server) plays the hostile and
  odd cases: addresses outside the socket directory or off loopback, floods,
  oversized messages, knocks, and gRPC's own TLS for a P-256 plugin certificate.

Real processes and sockets; waits poll with deadlines or await events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, Protocol

import grpc
import psutil
import pytest
from gobuild import go_plugins
from google.protobuf import empty_pb2, struct_pb2, wrappers_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from waiting import async_wait_until

from plughost._proto import grpc_broker_pb2, grpc_broker_pb2_grpc
from plughost.errors import BrokerError
from plughost.host.manager import PluginManager
from plughost.phases import Phase
from plughost.process.attach import ReattachConfig, attach
from plughost.process.backend import PluginBackend, StopPath
from plughost.process.broker import BrokerConfig, GRPCBroker, ServicerAdder
from plughost.process.local import LaunchSpec, ProcessBackend, start_process
from plughost.process.mtls import CertPair, generate_cert_pair
from plughost.sdk import PluginServer
from plughost.settings import SettingsProvider
from plughost.testing import InProcessBackend

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process semantics"),
]

START_TIMEOUT = 30.0
WAIT = 30.0  # generous for a loaded 2-core machine; never waited out on success


# -- the counter.v1 services, declared by hand like the Go side ---------------------------


def add_helper(calls: list[tuple[int, int]]) -> ServicerAdder:
    """The host's ``counter.v1.AddHelper/Sum(Struct{a, b}) -> Int64Value``; records calls."""

    async def total(request: struct_pb2.Struct, context: Any) -> wrappers_pb2.Int64Value:
        a, b = int(request.fields["a"].number_value), int(request.fields["b"].number_value)
        calls.append((a, b))
        return wrappers_pb2.Int64Value(value=a + b)

    handler = grpc.method_handlers_generic_handler(
        "counter.v1.AddHelper",
        {
            "Sum": grpc.unary_unary_rpc_method_handler(
                total,
                request_deserializer=struct_pb2.Struct.FromString,
                response_serializer=wrappers_pb2.Int64Value.SerializeToString,
            )
        },
    )

    def add(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handler,))

    return add


async def unary(channel: grpc.aio.Channel, method: str, request: Any, reply: Any) -> Any:
    call = channel.unary_unary(
        method, request_serializer=type(request).SerializeToString, response_deserializer=reply
    )
    return await call(request, timeout=WAIT)


async def put(backend: PluginBackend, key: str, value: int, add_server: int) -> None:
    request = struct_pb2.Struct()
    request.update({"key": key, "value": value, "add_server": add_server})
    await unary(backend.channel, "/counter.v1.Counter/Put", request, empty_pb2.Empty.FromString)


async def get(backend: PluginBackend, key: str) -> int:
    reply = await unary(
        backend.channel,
        "/counter.v1.Counter/Get",
        wrappers_pb2.StringValue(value=key),
        wrappers_pb2.Int64Value.FromString,
    )
    return int(reply.value)


async def announce(backend: PluginBackend) -> int:
    reply = await unary(
        backend.channel,
        "/counter.v1.Counter/Announce",
        empty_pb2.Empty(),
        wrappers_pb2.UInt32Value.FromString,
    )
    return int(reply.value)


async def echo(channel: grpc.aio.Channel, text: str) -> str:
    reply = await unary(
        channel,
        "/counter.v1.Echo/Echo",
        wrappers_pb2.StringValue(value=text),
        wrappers_pb2.StringValue.FromString,
    )
    return str(reply.value)


def health_adder() -> ServicerAdder:
    def add(server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)

    return add


async def health_check(channel: grpc.aio.Channel, timeout: float = WAIT) -> bool:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def target(network: str, address: str) -> str:
    return f"unix:{address}" if network == "unix" else address


# -- gobidir under the process backend -----------------------------------------------------


@pytest.fixture(scope="session")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return go_plugins(tmp_path_factory)


class Launch(Protocol):
    def __call__(self, **kw: Any) -> Awaitable[ProcessBackend]: ...


@pytest.fixture
async def launch_gobidir(go_build: Path, tmp_path: Path) -> AsyncIterator[Launch]:
    location = go_build / "gobidir"
    started: list[ProcessBackend] = []

    async def start(**kw: Any) -> ProcessBackend:
        spec = LaunchSpec(
            plugin_id="gobidir",
            executable=location / "bin" / "plugin",
            cwd=location,
            socket_dir=tmp_path / "run",
            cookie_key="PLUGHOST",
            **{"start_timeout": START_TIMEOUT, "stop_grace": 10.0, "kill_grace": 5.0, **kw},
        )
        backend = await start_process(spec)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        await backend.stop()
        assert backend.pid is not None and not psutil.pid_exists(backend.pid)


@pytest.mark.interop
@pytest.mark.parametrize(
    ("transport", "auto_mtls"),
    [("unix", "off"), ("unix", "always"), ("tcp", "off"), ("tcp", "always")],
)
async def test_gobidir_broker_both_ways(
    launch_gobidir: Launch, transport: str, auto_mtls: str
) -> None:
    backend = await launch_gobidir(transport=transport, auto_mtls=auto_mtls)
    hs = backend.handshake
    assert hs is not None
    tls = auto_mtls == "always"
    assert (hs.server_cert is not None) is tls
    assert hs.network == "unix"  # go-plugin always listens on unix on Linux
    socket_dir = Path(psutil.Process(backend.pid).environ()["PLUGIN_UNIX_SOCKET_DIR"])

    # host -> plugin: the plugin dials what the host serves (examples/bidirectional's Put).
    broker = backend.broker
    assert backend.broker is broker  # one per plugin, made on first use
    calls: list[tuple[int, int]] = []
    first = await broker.serve([add_helper(calls)])
    await put(backend, "apples", 3, first)
    second = await broker.serve([add_helper(calls)])
    assert second == first + 1  # go-plugin's NextId: 1, 2, ...
    await put(backend, "apples", 4, second)
    assert await get(backend, "apples") == 7
    assert calls == [(0, 3), (3, 4)]  # the sums were the host's

    served = broker.served
    assert [s.service_id for s in served] == [first, second]
    for s in served:
        assert s.network == transport  # the host listens as the settings ask
        if s.network == "unix":
            assert Path(s.address).parent.parent == socket_dir
            assert stat.S_IMODE(os.stat(Path(s.address).parent).st_mode) == 0o700
        else:
            assert s.address.startswith("127.0.0.1:")
    if tls:  # the plugin connected with its certificate; plaintext gets nowhere
        async with grpc.aio.insecure_channel(target(served[0].network, served[0].address)) as c:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_check(c, timeout=2.0)

    # A server can go once the call that used it is done (as go-plugin's example does).
    assert await broker.stop_serving(first) is True
    assert await broker.stop_serving(first) is False
    assert [s.service_id for s in broker.served] == [second]
    if served[0].network == "unix":
        assert not Path(served[0].address).exists()

    # plugin -> host: the plugin announces a service of its own, the host dials it.
    plugin_id = await announce(backend)
    channel = await broker.dial(plugin_id, timeout=WAIT)
    assert await echo(channel, "hi") == ("echo: hi [tls]" if tls else "echo: hi")
    assert broker.refused == 0

    # Stop closes the broker first: servers, sockets, dialled channels, the stream.
    assert await backend.stop() is StopPath.GRACEFUL
    assert broker.closed and backend.broker is broker
    assert broker.served == []
    for s in served:
        if s.network == "unix":
            assert not Path(s.address).parent.exists()
    with pytest.raises(BrokerError) as caught:
        await broker.dial(plugin_id)
    assert caught.value.type == "broker_failed" and "closed" in str(caught.value)
    await broker.close()  # idempotent


@pytest.mark.interop
async def test_gobidir_plugin_dial_of_unknown_id_fails_cleanly(launch_gobidir: Launch) -> None:
    backend = await launch_gobidir()
    # Nothing announced under 77: go-plugin's Dial gives up after its 5 s.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await put(backend, "pears", 1, 77)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "timeout waiting for connection info" in (caught.value.details() or "")
    # ... and the broker still works afterwards.
    calls: list[tuple[int, int]] = []
    await put(backend, "pears", 2, await backend.broker.serve([add_helper(calls)]))
    assert await get(backend, "pears") == 2 and calls == [(0, 2)]


@pytest.mark.interop
async def test_host_dial_of_unannounced_id_is_a_typed_error(launch_gobidir: Launch) -> None:
    backend = await launch_gobidir()
    with pytest.raises(BrokerError) as caught:
        await backend.broker.dial(4242, timeout=0.5)
    assert "did not announce broker id 4242 within 0.5 s" in str(caught.value)
    assert caught.value.plugin_id == "gobidir"


@pytest.mark.interop
async def test_attached_backend_brokers_too(launch_gobidir: Launch) -> None:
    owner = await launch_gobidir()
    hs = owner.handshake
    assert hs is not None and owner.pid is not None
    # Only the attached connection uses the broker: go-plugin allows one stream per plugin.
    attached = await attach("gobidir", ReattachConfig(pid=owner.pid, addr=hs.address))
    try:
        assert attached.broker.config.socket_dir == Path(hs.address).parent
        calls: list[tuple[int, int]] = []
        await put(attached, "plums", 9, await attached.broker.serve([add_helper(calls)]))
        assert await get(attached, "plums") == 9 and calls == [(0, 9)]
        channel = await attached.broker.dial(await announce(attached), timeout=WAIT)
        assert await echo(channel, "a") == "echo: a"
        broker = attached.broker
    finally:
        assert await attached.stop() is StopPath.DETACHED
    assert broker.closed
    assert not owner.exited  # detaching closed the broker, not the plugin


@pytest.mark.interop
async def test_gobidir_under_the_manager_with_tcp_and_automtls(
    go_build: Path, tmp_path: Path
) -> None:
    root = tmp_path / "r"
    (root / "plugins").mkdir(parents=True)
    shutil.copytree(go_build / "gobidir", root / "plugins" / "gobidir")
    settings = SettingsProvider(
        None,
        {
            "start_timeout": START_TIMEOUT,
            "stop_grace": 10.0,
            "transport": "tcp",
            "auto_mtls": "tcp",
        },
    )
    manager = PluginManager(root, settings=settings)
    await manager.initialize()
    try:
        info = manager.get_plugin("gobidir")
        assert info.phase is Phase.RUNNING, info.last_error
        backend = manager.backend("gobidir")
        assert isinstance(backend, ProcessBackend)
        assert backend.handshake is not None and backend.handshake.server_cert is not None
        calls: list[tuple[int, int]] = []
        await put(backend, "k", 5, await backend.broker.serve([add_helper(calls)]))
        assert await get(backend, "k") == 5 and calls == [(0, 5)]
        assert backend.broker.served[0].network == "tcp"
        channel = await backend.broker.dial(await announce(backend), timeout=WAIT)
        assert await echo(channel, "m") == "echo: m [tls]"
        broker = backend.broker
    finally:
        await manager.shutdown()
    assert broker.closed


# -- a fake plugin broker for the hostile and odd cases ------------------------------------


class FakePlugin(grpc_broker_pb2_grpc.GRPCBrokerServicer):
    """The plugin's side of StartStream: sends what ``send`` is given, keeps what comes in."""

    def __init__(self) -> None:
        self.outbox: asyncio.Queue[grpc_broker_pb2.ConnInfo | bytes | None] = asyncio.Queue()
        self.received: list[grpc_broker_pb2.ConnInfo] = []
        self.streams = 0

    def send(self, *infos: grpc_broker_pb2.ConnInfo) -> None:
        for info in infos:
            self.outbox.put_nowait(info)

    async def StartStream(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        self.streams += 1

        async def pump() -> None:
            async for info in request_iterator:
                self.received.append(info)

        reader = asyncio.create_task(pump())
        try:
            while (item := await self.outbox.get()) is not None:
                yield item
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader


def raw_bytes_serializer(message: Any) -> bytes:
    return message if isinstance(message, bytes) else bytes(message.SerializeToString())


class Fake:
    """A fake plugin's main server, its socket dir, and a host broker connected to it."""

    def __init__(self, tmp: Path) -> None:
        self.socket_dir = tmp / "s"
        self.socket_dir.mkdir(mode=0o700)
        self.plugin = FakePlugin()
        self.server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "plugin.GRPCBroker",
            {
                "StartStream": grpc.stream_stream_rpc_method_handler(
                    self.plugin.StartStream,
                    request_deserializer=grpc_broker_pb2.ConnInfo.FromString,
                    response_serializer=raw_bytes_serializer,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.main = self.socket_dir / "main"
        self.server.add_insecure_port(f"unix:{self.main}")
        self.channel = grpc.aio.insecure_channel(f"unix:{self.main}")
        self.extra: list[grpc.aio.Server] = []

    def broker(self, **kw: Any) -> GRPCBroker:
        config = BrokerConfig(
            plugin_id="fake", socket_dir=self.socket_dir, **{"network": "unix", **kw}
        )
        return GRPCBroker(self.channel, config)

    async def health_server(self, address: str) -> str:
        """A plaintext health server at ``address`` (``unix:...`` or ``127.0.0.1:0``)."""
        server = grpc.aio.server()
        health_adder()(server)
        port = server.add_insecure_port(address)
        await server.start()
        self.extra.append(server)
        return address.removeprefix("unix:") if address.startswith("unix:") else f"127.0.0.1:{port}"

    async def close(self) -> None:
        self.plugin.outbox.put_nowait(None)
        await self.channel.close()
        for server in [*self.extra, self.server]:
            await server.stop(None)


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[Fake]:
    made = Fake(tmp_path)
    await made.server.start()
    yield made
    await made.close()


def conn(service_id: int, network: str, address: str) -> grpc_broker_pb2.ConnInfo:
    return grpc_broker_pb2.ConnInfo(service_id=service_id, network=network, address=address)


async def test_host_dials_announced_unix_and_tcp_services(fake: Fake) -> None:
    broker = fake.broker()
    unix_addr = await fake.health_server(f"unix:{fake.socket_dir / 'p1'}")
    tcp_addr = await fake.health_server("127.0.0.1:0")
    fake.plugin.send(conn(1, "unix", unix_addr), conn(2, "tcp", tcp_addr))
    try:
        assert await health_check(await broker.dial(1, timeout=WAIT))
        assert await health_check(await broker.dial(2, timeout=WAIT))
        assert fake.plugin.streams == 1  # one stream for everything
    finally:
        await broker.close()
        await broker.close()


async def test_hostile_announcements_are_refused(fake: Fake, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    connections: list[int] = []

    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.close()

    trap = await asyncio.start_unix_server(count, path=str(outside / "sock"))
    (fake.socket_dir / "link").symlink_to(outside / "sock")
    (fake.socket_dir / "plainfile").write_text("")
    broker = fake.broker()
    hostile = {
        1: (conn(1, "tcp", "10.1.2.3:80"), "not a loopback address"),
        2: (conn(2, "tcp", "0.0.0.0:8080"), "not a loopback address"),
        3: (conn(3, "tcp", "localhost:8080"), "not an IP address"),
        4: (conn(4, "tcp", "example.com:443"), "not an IP address"),
        5: (conn(5, "tcp", "127.0.0.1:99999"), "no valid port"),
        6: (conn(6, "unix", str(outside / "sock")), "outside the plugin's socket directory"),
        7: (conn(7, "unix", str(fake.socket_dir / ".." / "outside" / "sock")), "outside"),
        8: (conn(8, "unix", str(fake.socket_dir / "link")), "outside"),
        9: (conn(9, "unix", "relative/sock"), "not an absolute path"),
        10: (conn(10, "unix", str(fake.socket_dir / "plainfile")), "not a socket"),
        11: (conn(11, "udp", "127.0.0.1:53"), "unknown network"),
        12: (conn(12, "unix", str(fake.socket_dir)), "outside"),
    }
    fake.plugin.send(*(info for info, _ in hostile.values()))
    try:
        for service_id, (_, why) in hostile.items():
            with pytest.raises(BrokerError) as caught:
                await broker.dial(service_id, timeout=WAIT)
            assert why in str(caught.value), (service_id, str(caught.value))
            assert caught.value.type == "broker_failed"
        assert broker.refused == len(hostile)
        assert connections == []  # the host never touched the socket outside
        # The stream is still fine for an honest announcement afterwards.
        fake.plugin.send(
            conn(20, "unix", await fake.health_server(f"unix:{fake.socket_dir / 'ok'}"))
        )
        assert await health_check(await broker.dial(20, timeout=WAIT))
    finally:
        await broker.close()
        trap.close()
        await trap.wait_closed()


async def test_the_hosts_own_sockets_are_refused(fake: Fake) -> None:
    broker = fake.broker()
    try:
        service_id = await broker.serve([health_adder()])
        await async_wait_until(lambda: fake.plugin.received, timeout=WAIT)
        own = fake.plugin.received[0]
        assert (own.service_id, own.network) == (service_id, "unix")
        fake.plugin.send(conn(5, "unix", own.address))
        with pytest.raises(BrokerError, match="one of the host's own sockets"):
            await broker.dial(5, timeout=WAIT)
    finally:
        await broker.close()


async def test_floods_and_oversized_messages_are_capped(fake: Fake) -> None:
    broker = fake.broker(pending_ttl=600.0, max_pending=8)
    address = await fake.health_server(f"unix:{fake.socket_dir / 'p'}")
    fake.plugin.send(*(conn(i, "unix", address) for i in range(1, 21)))
    fake.plugin.send(conn(1, "unix", address))  # a duplicate of a pending id
    try:
        broker._open_stream()  # the stream opens on first use; here, without dialling
        await async_wait_until(lambda: broker.refused == 13, timeout=WAIT)
        assert broker.pending == 8
        assert await health_check(await broker.dial(8, timeout=WAIT))  # kept: first 8
        with pytest.raises(BrokerError, match="did not announce broker id 9"):
            await broker.dial(9, timeout=0.2)  # dropped

        fake.plugin.outbox.put_nowait(conn(30, "unix", "/" + "x" * 5000).SerializeToString())
        with pytest.raises(BrokerError, match="oversized"):
            await broker.dial(30, timeout=WAIT)
        with pytest.raises(BrokerError, match="oversized"):
            await broker.serve([health_adder()])  # the stream is gone for good
    finally:
        await broker.close()


async def test_knocks_are_answered_with_an_error(fake: Fake) -> None:
    broker = fake.broker()
    knock = grpc_broker_pb2.ConnInfo(service_id=3, knock=grpc_broker_pb2.ConnInfo.Knock(knock=True))
    fake.plugin.send(knock)
    try:
        broker._open_stream()
        replies = await async_wait_until(lambda: fake.plugin.received, timeout=WAIT)
        reply = replies[0]
        assert reply.service_id == 3 and reply.knock.knock and reply.knock.ack
        assert "does not multiplex" in reply.knock.error
    finally:
        await broker.close()


async def test_a_plugin_without_a_broker_service(tmp_path: Path) -> None:
    server = grpc.aio.server()
    health_adder()(server)
    sock = tmp_path / "plain"
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{sock}")
    broker = GRPCBroker(channel, BrokerConfig("plain", "unix", tmp_path))
    try:
        with pytest.raises(BrokerError, match=r"does not serve go-plugin's broker"):
            await broker.dial(1, timeout=WAIT)
    finally:
        await broker.close()
        await channel.close()
        await server.stop(None)


def pair_files(pair: CertPair, root_pem: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=root_pem, private_key=pair.key_pem, certificate_chain=pair.cert_pem
    )


@pytest.mark.parametrize("network", ["tcp", "unix"])
async def test_serve_with_grpc_tls_for_a_p256_plugin(fake: Fake, network: str) -> None:
    host, plugin, stranger = generate_cert_pair(), generate_cert_pair(), generate_cert_pair()
    broker = fake.broker(network=network, server_cert=plugin.cert_der, client_cert=host)
    try:
        service_id = await broker.serve([health_adder()])
        await async_wait_until(lambda: fake.plugin.received, timeout=WAIT)
        info = fake.plugin.received[0]
        assert (info.service_id, info.network) == (service_id, network)
        where = target(info.network, info.address)
        options = [("grpc.ssl_target_name_override", "localhost")]
        # The plugin: trusts the host's certificate (PLUGIN_CLIENT_CERT), shows its own.
        creds = pair_files(plugin, host.cert_pem)
        async with grpc.aio.secure_channel(where, creds, options=options) as channel:
            assert await health_check(channel)
        # Anyone else's certificate, or none, is turned away.
        creds = pair_files(stranger, host.cert_pem)
        async with grpc.aio.secure_channel(where, creds, options=options) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_check(channel, timeout=2.0)
        async with grpc.aio.insecure_channel(where) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_check(channel, timeout=2.0)
    finally:
        await broker.close()
    assert broker.served == []
    if network == "unix":
        assert not Path(info.address).exists()


async def test_backend_without_broker_config_raises(tmp_path: Path) -> None:
    backend = await InProcessBackend(PluginServer(id="inproc", version="1.0.0")).start()
    try:
        with pytest.raises(BrokerError, match="no go-plugin broker"):
            _ = backend.broker
    finally:
        await backend.stop()
    with pytest.raises(BrokerError, match="stopped"):
        _ = backend.broker
