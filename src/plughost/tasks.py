"""One owner for a host's background work: a single ``asyncio.TaskGroup``.

Restarter loops, recoveries, watchers, dev servers and slow retries are all
started here, so shutdown has one place to cancel and wait for them (trio's
nursery idea). A failing task is logged, never allowed to tear down its siblings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["TaskOwner"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TaskOwner:
    """Holds one TaskGroup open from ``open()`` to ``aclose()``."""

    def __init__(self, name: str = "plughost") -> None:
        self.name = name
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def is_open(self) -> bool:
        return self._group is not None

    async def open(self) -> None:
        """Open the group (idempotent)."""
        if self._runner is not None and not self._runner.done():
            return
        ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._runner = asyncio.create_task(self._body(ready), name=f"{self.name}:tasks")
        await ready.wait()

    async def _body(self, ready: asyncio.Event) -> None:
        assert self._closing is not None
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                ready.set()
                await self._closing.wait()
                for task in list(self._tasks):
                    task.cancel()
        finally:
            self._group = None
            ready.set()

    def spawn(
        self, coro: Coroutine[Any, Any, T], name: str | None = None
    ) -> asyncio.Task[T | None]:
        """Start ``coro`` in the group (or as a tracked task while the group is not open)."""
        guarded = _guard(coro)
        if self._group is not None:
            task = self._group.create_task(guarded, name=name)
        else:  # before open() or after aclose(): still owned, still cancelled on close
            task = asyncio.create_task(guarded, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # A task cancelled before its first step never starts ``coro``: close it quietly.
        task.add_done_callback(lambda _: coro.close())
        return task

    def tasks(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    async def aclose(self) -> None:
        """Cancel every task and wait for all of them to end."""
        stray = list(self._tasks) if self._group is None else []
        if self._closing is not None:
            self._closing.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        for task in stray:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _guard(coro: Coroutine[Any, Any, T]) -> T | None:
    """A failure is logged and ends only its own task (a TaskGroup would cancel all)."""
    try:
        return await coro
    except Exception:
        log.exception("background task failed")
        return None
