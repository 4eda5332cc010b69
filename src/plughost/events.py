"""Event names, payloads and the bus that carries them to subscribers.

The names are exactly the original plugin manager's, so a UI written for it
understands ours. The bus never lets a subscriber hold up the publisher: sync
callbacks run on their own delivery thread behind a bounded queue, async
subscribers read from a bounded asyncio queue, and whatever does not fit is
dropped and counted (``EventBus.dropped``). The subscriber side is generic
(``Fanout[T]``, ``AsyncStream[T]``) so other live feeds, such as the plugin
logs, reuse it instead of growing their own subscription class.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import fnmatch
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .textcap import cap, cap_json

__all__ = [
    "ALL_EVENTS",
    "EVENT_CRASH",
    "EVENT_CRASH_RECOVERY_FAILED",
    "EVENT_DEPRECATED_PROTOCOL",
    "EVENT_DEVSERVER_ERROR",
    "EVENT_DEVSERVER_LOG",
    "EVENT_DEVSERVER_STATUS",
    "EVENT_DEV_INSTALL_COMPLETE",
    "EVENT_DEV_INSTALL_ERROR",
    "EVENT_DEV_INSTALL_START",
    "EVENT_FAILED_RETRY",
    "EVENT_INIT_COMPLETE",
    "EVENT_INSTALL_ERROR",
    "EVENT_INSTALL_FINISHED",
    "EVENT_INSTALL_STARTED",
    "EVENT_PROCESS_LOG",
    "EVENT_RECOVERED",
    "EVENT_RELOAD_COMPLETE",
    "EVENT_RELOAD_ERROR",
    "EVENT_RELOAD_START",
    "EVENT_ROLLED_BACK",
    "EVENT_STATE_CHANGE",
    "EVENT_STATE_WRITE_ERROR",
    "EVENT_UPDATE_COMPLETE",
    "EVENT_UPDATE_ERROR",
    "EVENT_UPDATE_HELD",
    "EVENT_UPDATE_STARTED",
    "AsyncStream",
    "AsyncSubscription",
    "CallbackSubscription",
    "Event",
    "EventBus",
    "EventSubscription",
    "Fanout",
    "StateChangePayload",
]

log = logging.getLogger(__name__)

EVENT_STATE_CHANGE = "plugin/state_change"
EVENT_INSTALL_STARTED = "plugin/install_started"
EVENT_INSTALL_FINISHED = "plugin/install_finished"
EVENT_INSTALL_ERROR = "plugin/install_error"
EVENT_DEV_INSTALL_START = "plugin/dev_install_start"
EVENT_DEV_INSTALL_ERROR = "plugin/dev_install_error"
EVENT_DEV_INSTALL_COMPLETE = "plugin/dev_install_complete"
EVENT_RELOAD_START = "plugin/dev_reload_start"
EVENT_RELOAD_ERROR = "plugin/dev_reload_error"
EVENT_RELOAD_COMPLETE = "plugin/dev_reload_complete"
EVENT_UPDATE_STARTED = "plugin/update_started"
EVENT_UPDATE_ERROR = "plugin/update_error"
EVENT_UPDATE_COMPLETE = "plugin/update_complete"
EVENT_INIT_COMPLETE = "plugin/init_complete"
EVENT_CRASH = "plugin/crash"
EVENT_CRASH_RECOVERY_FAILED = "plugin/crash_recovery_failed"
EVENT_RECOVERED = "plugin/recovered"
EVENT_STATE_WRITE_ERROR = "plugin/state_write_error"
EVENT_DEPRECATED_PROTOCOL = "plugin/deprecated_protocol"
EVENT_PROCESS_LOG = "plugin/process/log"
EVENT_DEVSERVER_STATUS = "plugin/devserver/status"
EVENT_DEVSERVER_LOG = "plugin/devserver/log"
EVENT_DEVSERVER_ERROR = "plugin/devserver/error"
# plughost's own, beyond the original's names:
EVENT_ROLLED_BACK = "plugin/rolled_back"
EVENT_FAILED_RETRY = "plugin/failed_retry"
EVENT_UPDATE_HELD = "plugin/update_held"

ALL_EVENTS: frozenset[str] = frozenset(
    value for name, value in dict(globals()).items() if name.startswith("EVENT_")
)


class StateChangePayload(BaseModel):
    """Payload of ``plugin/state_change``; serialises with the original's keys."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    plugin_id: str = Field(alias="pluginID")
    from_phase: str = Field(alias="from")
    to_phase: str = Field(alias="to")
    reason: str = ""
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One published event. ``payload`` is always JSON-serialisable.

    Its name and every string of its payload are capped when it is made
    (:mod:`plughost.textcap`): one event reaches every subscriber, the terminal
    and the dashboard, and none of them should pay for a plugin's huge field.
    """

    name: str
    payload: dict[str, Any]
    seq: int
    timestamp: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", cap(self.name))
        object.__setattr__(self, "payload", cap_json(dict(self.payload)))

    @property
    def plugin_id(self) -> str | None:
        value = self.payload.get("pluginID")
        return value if isinstance(value, str) else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seq": self.seq,
            "timestamp": self.timestamp.isoformat(),
            "payload": self.payload,
        }


Payload = BaseModel | Mapping[str, Any] | None


def _as_dict(payload: Payload) -> dict[str, Any]:
    if payload is None:
        return {}
    if isinstance(payload, BaseModel):
        return payload.model_dump(by_alias=True, mode="json")
    return dict(payload)


_T = TypeVar("_T")


class EventSubscription(abc.ABC, Generic[_T]):
    """A subscriber's handle: its pattern, its drop counter, and ``close()``."""

    def __init__(self, bus: Fanout[_T], pattern: str, maxsize: int) -> None:
        self._bus = bus
        self.pattern = pattern
        self.maxsize = maxsize
        self.dropped = 0
        self.closed = False

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)

    @abc.abstractmethod
    def offer(self, item: _T) -> None:
        """Hand ``item`` over without blocking; count it as dropped if there is no room."""

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus._remove(self)


class CallbackSubscription(EventSubscription[Event]):
    """Delivers to a sync callback on its own thread, so a slow one blocks nobody."""

    def __init__(
        self, bus: EventBus, pattern: str, maxsize: int, callback: Callable[[Event], Any]
    ) -> None:
        super().__init__(bus, pattern, maxsize)
        self._callback = callback
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize)
        self._thread = threading.Thread(
            target=self._deliver, name=f"plughost-events-{pattern}", daemon=True
        )
        self._thread.start()

    def offer(self, item: Event) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            self._bus._count_drop()

    def _deliver(self) -> None:
        while (event := self._queue.get()) is not None:
            try:
                self._callback(event)
            except Exception:
                log.exception("event subscriber for %r failed on %s", self.pattern, event.name)
            finally:
                self._queue.task_done()
        self._queue.task_done()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued event has been delivered (for tests and shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        while True:
            try:
                self._queue.put_nowait(None)
                break
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self._queue.task_done()
                except queue.Empty:
                    pass


class AsyncStream(EventSubscription[_T], AsyncIterator[_T]):
    """An async iterator over matching items, fed from any thread.

    Bounded: what does not fit is dropped and counted. ``close()`` (from any
    thread) ends the iteration once what is queued has been read.
    """

    def __init__(self, bus: Fanout[_T], pattern: str, maxsize: int) -> None:
        super().__init__(bus, pattern, maxsize)
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[_T | None] = asyncio.Queue(maxsize)

    def offer(self, item: _T) -> None:
        if self.closed:
            return
        if self._loop.is_closed():  # nobody is listening any more
            self.close()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._put(item)
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._put, item)

    def _put(self, item: _T | None) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            if item is not None:  # a full queue needs no end marker: __anext__ sees `closed`
                self.dropped += 1
                self._bus._count_drop()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> _T:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def next(self, timeout: float) -> _T:
        """The next item, or TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._put, None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


AsyncSubscription = AsyncStream[Event]
"""What ``EventBus.stream()`` returns: an async iterator of ``Event``."""


class Fanout(Generic[_T]):
    """Hands each item to every subscriber whose pattern matches its name, blocking none.

    Safe from threads and tasks. ``EventBus`` is the fan-out of ``Event``; the
    plugin logs keep a private one of log entries.
    """

    def __init__(self, default_maxsize: int = 1000) -> None:
        self.default_maxsize = default_maxsize
        self._subs: list[EventSubscription[_T]] = []
        self._lock = threading.Lock()
        self.dropped = 0

    def deliver(self, name: str, item: _T) -> None:
        """Offer ``item`` to every subscriber matching ``name``, without waiting for any."""
        with self._lock:
            subs = [s for s in self._subs if s.matches(name)]
        for sub in subs:
            sub.offer(item)

    def stream(self, pattern: str = "*", *, maxsize: int | None = None) -> AsyncStream[_T]:
        """An async iterator of matching items; must be created inside a running loop."""
        sub = AsyncStream(self, pattern, maxsize or self.default_maxsize)
        self._add(sub)
        return sub

    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subs)

    def close(self) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.close()

    def _add(self, sub: EventSubscription[_T]) -> None:
        with self._lock:
            self._subs.append(sub)

    def _remove(self, sub: EventSubscription[_T]) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def _count_drop(self) -> None:
        with self._lock:
            self.dropped += 1


class EventBus(Fanout[Event]):
    """Publish/subscribe for plughost events, safe from threads and tasks."""

    def __init__(self, default_maxsize: int = 1000) -> None:
        super().__init__(default_maxsize)
        self._seq = itertools.count(1)
        self.published = 0

    def publish(self, name: str, payload: Payload = None) -> Event:
        """Deliver ``name`` to every matching subscriber without waiting for any."""
        event = Event(name, _as_dict(payload), next(self._seq), datetime.now(UTC))
        with self._lock:
            self.published += 1
        self.deliver(name, event)
        return event

    def subscribe(
        self, pattern: str, callback: Callable[[Event], Any], *, maxsize: int | None = None
    ) -> CallbackSubscription:
        """Call ``callback(event)`` for events whose name matches ``pattern`` (``*`` wildcards)."""
        sub = CallbackSubscription(self, pattern, maxsize or self.default_maxsize, callback)
        self._add(sub)
        return sub
