"""The one way tests wait for something to become true: poll it, with a deadline.

``wait_until`` (blocking) and ``async_wait_until`` (awaitable) call ``predicate``
every ``interval`` seconds until it returns something truthy, and return that
value. After ``timeout`` seconds they raise AssertionError naming ``message``
(a string, or a callable evaluated only then, so it can describe the state at
that moment) and the predicate's last value. The predicate is always checked
once more after the deadline, so a slow machine never fails a condition that
did become true. An exception raised by the predicate propagates at once.

Tests never sleep in the hope that something happened: they wait for it here,
or on an event.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

Message = str | Callable[[], object]

DEFAULT_TIMEOUT = 10.0
DEFAULT_INTERVAL = 0.01


def _timed_out(predicate: object, timeout: float, message: Message, last: object) -> AssertionError:
    what = message() if callable(message) else message
    what = what or getattr(predicate, "__qualname__", repr(predicate))
    return AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {last!r}")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    message: Message = "",
) -> T:
    """Block until ``predicate()`` is truthy and return its value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last_check = time.monotonic() >= deadline
        value = predicate()
        if value:
            return value
        if last_check:
            raise _timed_out(predicate, timeout, message, value)
        time.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))


async def async_wait_until(
    predicate: Callable[[], T] | Callable[[], Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    message: Message = "",
) -> T:
    """Await until ``predicate()`` (sync, or async and awaited) is truthy and return its
    value; fail after ``timeout``. Sleeps between checks let the event loop run."""
    deadline = time.monotonic() + timeout
    while True:
        last_check = time.monotonic() >= deadline
        value: Any = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[no-any-return]
        if last_check:
            raise _timed_out(predicate, timeout, message, value)
        await asyncio.sleep(min(interval, max(deadline - time.monotonic(), 0.0)))
