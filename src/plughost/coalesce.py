"""One run of a piece of work shared by every caller that came before it began.

State writes, PID-file saves and the registry's generation reads are asked for by
many callers at once (50 plugins starting, 64 requests arriving). Each caller needs
a run that *began after it asked* (its change must be in the write; no number read
before its request may answer it), but not a run of its own: callers that arrive
while a run is under way all share the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

__all__ = ["NextRun"]

T = TypeVar("T")


class NextRun(Generic[T]):
    """``await run()``: the result of ``work()`` begun after the call; runs never overlap."""

    def __init__(self, work: Callable[[], Awaitable[T]]) -> None:
        self._work = work
        self._lock = asyncio.Lock()
        self._next: asyncio.Future[T] | None = None  # the run the next callers share

    async def __call__(self) -> T:
        if self._next is None:
            run = asyncio.ensure_future(self._run())
            run.add_done_callback(_seen)  # its callers may all be gone
            self._next = run
        return await asyncio.shield(self._next)

    async def _run(self) -> T:
        async with self._lock:
            self._next = None  # from here on, callers need a newer run
            return await self._work()


def _seen(run: asyncio.Future[Any]) -> None:
    if not run.cancelled():
        run.exception()
