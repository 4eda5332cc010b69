"""PluginClient: how the application calls a plugin, through reloads, crashes and updates.

A ``PluginClient`` names a plugin, not a process. Each call finds the plugin's
current process: while an operation is in progress (reload, update, rollback,
a crash recovery) the call waits for it to settle, bounded by the call's own
deadline; when the plugin is stopped, disabled, Failed or uninstalled, the call
fails at once. Either way the caller sees a typed ``PluginUnavailableError``
naming the phase, never grpc's closed-channel errors.

A call whose process went away under it (``UNAVAILABLE``, or cancelled by the
channel closing) is sent once more to the process that replaces it; pass
``retry=False`` to a call to get the error instead (for calls that must not run
twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from ..errors import PluginNotFoundError, PluginUnavailableError
from ..phases import ACTIVE_PHASES, Phase
from ..process.backend import PluginBackend
from ..process.broker import GRPCBroker
from ..process.introspect import list_services
from ..records import PluginInfo
from .slot import PluginSlot

__all__ = ["DEFAULT_WAIT", "ClientTable", "PluginClient"]

StubT = TypeVar("StubT")

DEFAULT_WAIT = 30.0
"""Seconds a call without a deadline waits for a restarting plugin to be Running again."""

# A live process in these phases takes calls (Starting and Stopping: the lifecycle hooks
# of the operation under way talk to it).
_USABLE = ACTIVE_PHASES | {Phase.STARTING, Phase.STOPPING}
# Phases in which the plugin is on its way back by itself: a call waits.
_COMING_BACK = frozenset({Phase.VALIDATING, Phase.STARTING, Phase.RECOVERING, Phase.INSTALLING})


class ClientTable(Protocol):
    """What a client needs of the plugin table."""

    def get(self, plugin_id: str) -> PluginSlot: ...

    def find(self, plugin_id: str) -> PluginSlot | None: ...

    async def wait_change(self, plugin_id: str, timeout: float) -> None: ...


_GONE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def _lost(exc: BaseException) -> bool:
    """Did this error end a call because its process or channel went, not the caller?

    grpc.aio ends a call whose channel is closed under it (the process is stopping
    or being replaced) with ``asyncio.CancelledError``, though nobody cancelled the
    caller: that is told apart from a real cancellation of the caller's task.
    """
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is not None and task.cancelling() == 0
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in _GONE_CODES


_EXIT_SEEN_WITHIN = 1.0  # seconds: a dead process's exit reaches the host well within this


class PluginClient:
    """Calls one plugin. Get it with ``manager.client(plugin_id)``; cheap to keep."""

    def __init__(self, table: ClientTable, plugin_id: str, wait: float = DEFAULT_WAIT) -> None:
        self._table = table
        self.plugin_id = plugin_id
        self.wait = wait
        """How long a call without a deadline waits for the plugin to come back."""
        self._stubs: dict[Any, tuple[PluginBackend, Any]] = {}

    # -- state -----------------------------------------------------------------------
    @property
    def info(self) -> PluginInfo:
        """The plugin's current info (raises PluginUnavailableError once uninstalled)."""
        return self._slot_or_gone().info()

    def _slot_or_gone(self) -> PluginSlot:
        try:
            return self._table.get(self.plugin_id)
        except PluginNotFoundError:
            raise PluginUnavailableError(
                f"plugin {self.plugin_id!r} is not installed",
                phase=Phase.UNINSTALLED.value,
                plugin_id=self.plugin_id,
                suggestions=["install it, then call again"],
            ) from None

    async def wait_running(self, timeout: float | None = None) -> PluginInfo:
        """Wait until the plugin is Running (or Degraded) with a live process."""
        await self._backend(_deadline(timeout, self.wait))
        return self.info

    async def _backend(self, deadline: float) -> PluginBackend:
        """The live backend, waiting while the plugin is on its way back."""
        while True:
            slot = self._slot_or_gone()
            backend = slot.backend
            if slot.phase in _USABLE and backend is not None and not backend.exited:
                return backend
            if not slot._lock.locked() and not self._coming_back(slot):
                raise self._unavailable(slot, "")
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._unavailable(slot, "it did not come back in time; ")
            await self._table.wait_change(self.plugin_id, left)

    def _coming_back(self, slot: PluginSlot) -> bool:
        if slot.phase in _COMING_BACK:
            return True
        # Running with a dead process: the restarter is about to take it.
        return bool(slot.phase in ACTIVE_PHASES and slot.record.enabled)

    def _unavailable(self, slot: PluginSlot, why: str) -> PluginUnavailableError:
        record, phase = slot.record, slot.phase
        state = phase.value if record.enabled else f"{phase.value}, disabled"
        hint = {
            Phase.FAILED: f"see why with 'plughost logs {self.plugin_id}', then retry it",
            Phase.BUILD_FAILED: "fix the build errors; dev mode rebuilds on save",
        }.get(phase, f"start it with 'plughost enable {self.plugin_id}' or load_plugin()")
        detail = f"plugin {self.plugin_id!r} is not running ({state}): {why}"
        if record.last_error:
            detail += f"last error: {record.last_error.splitlines()[0][:300]}"
        return PluginUnavailableError(
            detail.rstrip(": ").rstrip("; "),
            phase=phase.value,
            plugin_id=self.plugin_id,
            suggestions=[hint],
        )

    # -- calling -----------------------------------------------------------------------
    async def channel(self, timeout: float | None = None) -> grpc.aio.Channel:
        """The current process's channel (valid until the plugin restarts)."""
        backend = await self._backend(_deadline(timeout, self.wait))
        return backend.channel

    def stub(self, stub_class: Callable[[grpc.aio.Channel], StubT]) -> StubT:
        """A client of one of the plugin's services that follows the plugin across restarts.

        Use it like the generated stub: ``await client.stub(GreeterStub).Greet(req,
        timeout=5)``; streaming methods return async iterators.
        """
        return _FollowingStub(self, stub_class)  # type: ignore[return-value]

    def _current_stub(self, backend: PluginBackend, stub_class: Any) -> Any:
        cached = self._stubs.get(stub_class)
        if cached is not None and cached[0] is backend:
            return cached[1]
        stub = stub_class(backend.channel)
        self._stubs[stub_class] = (backend, stub)
        return stub

    def _gone(self, backend: PluginBackend) -> bool:
        """True when ``backend`` is no longer the plugin's live process."""
        slot = self._table.find(self.plugin_id)
        return slot is None or slot.backend is not backend or backend.exited

    async def _went_away(self, backend: PluginBackend, deadline: float) -> bool:
        """After UNAVAILABLE: did the process go? Its exit may take a moment to be seen."""
        settle = min(time.monotonic() + _EXIT_SEEN_WITHIN, deadline)
        while not self._gone(backend):
            left = settle - time.monotonic()
            if left <= 0:
                return False
            await self._table.wait_change(self.plugin_id, left)
        return True

    async def call_unary(
        self,
        stub_class: Any,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        retry: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One unary call (``stub(...).Method(...)`` ends here)."""
        deadline = _deadline(timeout, self.wait)
        attempts = 2 if retry else 1
        while True:
            backend = await self._backend(deadline)
            call = getattr(self._current_stub(backend, stub_class), method)
            try:
                return await call(request, timeout=_left(timeout, deadline), **kwargs)
            except grpc.aio.UsageError:
                if not self._gone(backend):
                    raise
                # The channel closed before the call went out: send it to the new process.
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                if not _lost(exc):
                    raise
                if not await self._went_away(backend, deadline):
                    if isinstance(exc, grpc.aio.AioRpcError):
                        raise
                    raise self._unavailable(self._slot_or_gone(), "its channel closed; ") from None
                attempts -= 1
                if attempts <= 0:
                    slot = self._slot_or_gone()
                    raise self._unavailable(
                        slot, "its process went away during the call; "
                    ) from None

    async def call_stream(
        self,
        stub_class: Any,
        method: str,
        request: Any,
        *,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """A server-streaming (or bidirectional, with an iterator) call; never resent."""
        deadline = _deadline(timeout, self.wait)
        backend = await self._backend(deadline)
        call = getattr(self._current_stub(backend, stub_class), method)
        try:
            async for message in call(request, timeout=_left(timeout, deadline), **kwargs):
                yield message
        except grpc.aio.UsageError:
            raise self._unavailable(self._slot_or_gone(), "its channel closed; ") from None
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            if not _lost(exc):
                raise
            if await self._went_away(backend, deadline):
                slot = self._slot_or_gone()
                raise self._unavailable(slot, "its process went away during the call; ") from None
            if isinstance(exc, grpc.aio.AioRpcError):
                raise
            raise self._unavailable(self._slot_or_gone(), "its channel closed; ") from None

    async def services(self, timeout: float = 5.0) -> list[str]:
        """What the plugin serves: gRPC server reflection, else what the host knows it has."""
        backend = await self._backend(_deadline(timeout, self.wait))
        return await list_services(backend, timeout)

    @property
    def broker(self) -> _FollowingBroker:
        """go-plugin's GRPCBroker of the current process (``dial(id)``, ``serve(adders)``)."""
        return _FollowingBroker(self)


class _FollowingStub:
    """Looks like a generated stub; each method call goes to the plugin's current process."""

    def __init__(self, client: PluginClient, stub_class: Any) -> None:
        self._client = client
        self._stub_class = stub_class

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("_"):
            raise AttributeError(method)
        client, stub_class = self._client, self._stub_class
        kind = _method_kind(stub_class, method)
        if kind != "stream":
            once = kind == "stream_unary"  # a request iterator can be consumed only once

            def unary(request: Any, **kwargs: Any) -> Any:
                if once:
                    kwargs["retry"] = False
                return client.call_unary(stub_class, method, request, **kwargs)

            self.__dict__[method] = unary  # found directly next time; calls still follow
            return unary

        def streaming(request: Any, **kwargs: Any) -> AsyncIterator[Any]:
            return client.call_stream(stub_class, method, request, **kwargs)

        self.__dict__[method] = streaming
        return streaming


class _FollowingBroker:
    def __init__(self, client: PluginClient) -> None:
        self._client = client

    async def _current(self, timeout: float | None) -> GRPCBroker:
        backend = await self._client._backend(_deadline(timeout, self._client.wait))
        return backend.broker

    async def dial(self, service_id: int, timeout: float = 5.0) -> grpc.aio.Channel:
        """A channel to a service the plugin started with go-plugin's ``broker.AcceptAndServe``."""
        broker = await self._current(timeout)
        return await broker.dial(service_id, timeout)

    async def serve(self, servicer_adders: Sequence[Callable[[grpc.aio.Server], None]]) -> int:
        """Serve the host's own services to the plugin; pass the id to it in a call."""
        broker = await self._current(None)
        return await broker.serve(servicer_adders)


_KINDS: dict[tuple[Any, str], str] = {}


def _method_kind(stub_class: Any, method: str) -> str:
    """How a generated stub calls ``method``: read once from a stub on a recording channel."""
    key = (stub_class, method)
    if key not in _KINDS:
        probe = stub_class(_ProbeChannel())
        _KINDS[key] = getattr(probe, method)
    return _KINDS[key]


class _ProbeChannel:
    """Records which kind of multicallable a generated stub asks for, per method."""

    def unary_unary(self, *_: Any, **__: Any) -> str:
        return "unary"

    def unary_stream(self, *_: Any, **__: Any) -> str:
        return "stream"

    def stream_unary(self, *_: Any, **__: Any) -> str:
        return "stream_unary"

    def stream_stream(self, *_: Any, **__: Any) -> str:
        return "stream"


def _deadline(timeout: float | None, default: float) -> float:
    return time.monotonic() + (default if timeout is None else timeout)


def _left(timeout: float | None, deadline: float) -> float | None:
    """What is left of the caller's own deadline (None: the caller set none)."""
    if timeout is None:
        return None
    return max(deadline - time.monotonic(), 0.001)
