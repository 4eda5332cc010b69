"""What the manager needs from a running plugin, whatever runs it.

``PluginBackend`` is the seam between lifecycle bookkeeping and processes:
the process backend (``plughost.process.local``) spawns a real executable; the
in-process backend serves the same gRPC services from inside the host, for
unit tests of the manager; dev mode attaches to a plugin started by hand.
The gRPC client side (health, lifecycle, capabilities) and go-plugin's
broker (``backend.broker``, created on first use) are shared here.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .._proto import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    lifecycle_legacy_pb2_grpc,
    lifecycle_pb2,
    lifecycle_pb2_grpc,
)
from ..errors import BrokerError
from .broker import BrokerConfig, GRPCBroker

__all__ = [
    "GRPC_HEALTH_SERVICE",
    "ExitCallback",
    "LogCallback",
    "PluginBackend",
    "PluginInfoResponse",
    "StopPath",
]

log = logging.getLogger(__name__)

GRPC_HEALTH_SERVICE = "plugin"  # go-plugin registers its health under this name
_HEALTH_REQUEST = health_pb2.HealthCheckRequest(service=GRPC_HEALTH_SERVICE)
_SERVING = health_pb2.HealthCheckResponse.SERVING
_SHUTDOWN = grpc_controller_pb2.Empty()

ExitCallback = Callable[[int | None], None]
"""Called once when the plugin exits on its own (not when the host stopped it)."""
LogCallback = Callable[[str, str], None]
"""Called with (line, source) for every line the plugin writes; source is stdout/stderr."""

StubT = TypeVar("StubT")

_LIFECYCLE_STUBS: tuple[Callable[[grpc.aio.Channel], Any], ...] = (
    lifecycle_pb2_grpc.PluginLifecycleStub,
    lifecycle_legacy_pb2_grpc.PluginLifecycleStub,
)
_LIFECYCLE_SERVICES = (
    "omniview.sdk.lifecycle.v1.PluginLifecycle",
    "com.omniview.pluginsdk.PluginLifecycle",
)


class StopPath(enum.Enum):
    """How a stop ended, so tests and logs can tell which rung of the ladder ran."""

    ALREADY_EXITED = "already_exited"
    GRACEFUL = "graceful"  # Shutdown RPC, then the process left by itself
    TERMINATED = "terminated"  # needed SIGTERM
    KILLED = "killed"  # needed SIGKILL
    DETACHED = "detached"  # not ours to stop (attached plugin)


class PluginInfoResponse(dict[str, Any]):
    """GetInfo's answer as plain data: pluginID, version, sdkProtocolVersion."""


def _is_missing(exc: grpc.RpcError) -> bool:
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    return code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)


class PluginBackend(abc.ABC):
    """A started plugin reachable over a gRPC channel."""

    plugin_id: str
    negotiated_version: int | None = None

    def __init__(self, plugin_id: str) -> None:
        self.plugin_id = plugin_id
        self._channel: grpc.aio.Channel | None = None
        self._lifecycle_stub: Any = None  # the lifecycle stub that answered, once known
        self._lifecycle_probed = False
        self._broker: GRPCBroker | None = None
        self._broker_done = False  # closed (or stopped before first use): never recreated
        self._health: tuple[grpc.aio.Channel, Any] | None = None  # (channel, its stub)

    # -- identity and liveness -------------------------------------------------
    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """The plugin's process id, if there is a process."""

    @property
    @abc.abstractmethod
    def exited(self) -> bool:
        """True once the plugin is gone."""

    @property
    @abc.abstractmethod
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), None while running."""

    @property
    def address(self) -> tuple[str, str] | None:
        """(network, address) where the plugin's gRPC server listens, as it announced; None
        when unknown."""
        return None

    @abc.abstractmethod
    async def stop(self) -> StopPath:
        """Stop gracefully, escalating as needed; idempotent."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """Stop at once (SIGKILL); idempotent."""

    # -- gRPC ------------------------------------------------------------------
    @property
    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            raise RuntimeError(f"plugin {self.plugin_id} has no open channel")
        return self._channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A client of one of the plugin's services (a capability client by name)."""
        return stub_class(self.channel)

    # -- go-plugin's broker ------------------------------------------------------
    @property
    def broker(self) -> GRPCBroker:
        """go-plugin's GRPCBroker to this plugin, created on first use.

        ``await backend.broker.serve([...])`` offers host services to the plugin,
        ``await backend.broker.dial(id)`` reaches one the plugin offers. Stopping the
        backend closes it. BrokerError if this backend cannot broker or was stopped.
        """
        if self._broker is None:
            if self._broker_done:
                raise BrokerError(
                    "the plugin was stopped: its broker is closed", plugin_id=self.plugin_id
                )
            config = self._broker_config()
            if config is None or self._channel is None:
                raise BrokerError(
                    "this plugin connection has no go-plugin broker", plugin_id=self.plugin_id
                )
            self._broker = GRPCBroker(self._channel, config)
        return self._broker

    def _broker_config(self) -> BrokerConfig | None:
        """What the broker needs (network, socket dir, TLS); None: no broker here."""
        return None

    async def _close_broker(self) -> None:
        self._broker_done = True
        if self._broker is not None:
            await self._broker.close()

    async def _lifecycle(self, timeout: float) -> Any:
        """The lifecycle stub the plugin implements (current name, then legacy), or None."""
        if not self._lifecycle_probed:
            await self._lifecycle_call("GetInfo", timeout)
        return self._lifecycle_stub

    async def _lifecycle_call(self, method: str, timeout: float) -> Any:
        """``method``'s answer from the lifecycle service the plugin serves; None if none.

        The first call is also the probe for which of the two names it serves: one
        round trip where a probe and then the call would be two (at every start).
        """
        if self._lifecycle_probed:
            stub = self._lifecycle_stub
            if stub is None:
                return None
            return await getattr(stub, method)(empty_pb2.Empty(), timeout=timeout)
        for make in _LIFECYCLE_STUBS:
            stub = make(self.channel)
            try:
                resp = await getattr(stub, method)(empty_pb2.Empty(), timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if _is_missing(exc):
                    continue
                raise
            self._lifecycle_stub, self._lifecycle_probed = stub, True
            return resp
        self._lifecycle_probed = True
        return None

    async def lifecycle_service(self, timeout: float = 5.0) -> str | None:
        """The full name of the lifecycle service the plugin answers, if any."""
        stub = await self._lifecycle(timeout)
        if stub is None:
            return None
        index = [type(make(self.channel)) for make in _LIFECYCLE_STUBS].index(type(stub))
        return _LIFECYCLE_SERVICES[index]

    async def get_info(self, timeout: float = 5.0) -> PluginInfoResponse | None:
        resp = await self._lifecycle_call("GetInfo", timeout)
        if resp is None:
            return None
        return PluginInfoResponse(
            pluginID=resp.plugin_id,
            version=resp.version,
            sdkProtocolVersion=resp.sdk_protocol_version,
        )

    async def detect_capabilities(self, timeout: float = 5.0) -> list[str] | None:
        """The plugin's own list of capabilities, or None if it serves no lifecycle."""
        resp = await self._lifecycle_call("GetCapabilities", timeout)
        return None if resp is None else list(resp.capabilities)

    async def healthy(self, timeout: float = 5.0) -> bool:
        """go-plugin's Ping, then the lifecycle HealthCheck, then process liveness."""
        if self.exited:
            return False
        try:
            # A hot, tiny call: one stub per channel, one request built once for all.
            channel = self.channel
            if self._health is None or self._health[0] is not channel:
                stub: Any = health_pb2_grpc.HealthStub(channel)
                self._health = (channel, stub)
            resp: Any = await self._health[1].Check(_HEALTH_REQUEST, timeout=timeout)
            return bool(resp.status == _SERVING)
        except grpc.aio.AioRpcError as exc:
            if not _is_missing(exc):
                return False
        try:
            answer = await self._lifecycle_call("HealthCheck", timeout)
            if answer is not None:
                return bool(answer.status == lifecycle_pb2.SERVING_STATUS_SERVING)
        except grpc.aio.AioRpcError:
            return False
        return not self.exited

    def _send_shutdown(self, timeout: float) -> asyncio.Future[bool]:
        """Ask the plugin to stop itself (go-plugin's GRPCController/Shutdown), sent now.

        The future ends True when the plugin took the request, False when it refused it
        or did not answer within ``timeout``; nobody needs to wait for it.
        """
        if self._channel is None:
            refused: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            refused.set_result(False)
            return refused
        stub: Any = grpc_controller_pb2_grpc.GRPCControllerStub(self._channel)  # type: ignore[no-untyped-call]
        # The call is made here, so the request leaves in the loop's next turn.
        return asyncio.ensure_future(_shutdown_taken(stub.Shutdown(_SHUTDOWN, timeout=timeout)))

    async def _close_channel(self) -> None:
        await self._close_broker()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            # Without a grace period close() cancels the calls and returns: it never waits.
            with contextlib.suppress(Exception):
                await channel.close()


async def _shutdown_taken(call: Any) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        # The server may close the connection while answering: that is success.
        return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    except Exception:  # the channel was closed under it: the stop is past caring
        return False
    return True
