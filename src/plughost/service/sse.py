"""Server-sent events: the framing the local API and the dashboard share."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["HEARTBEAT", "sse_stream"]

HEARTBEAT = 15.0
"""Seconds of silence after which a comment line keeps proxies and clients from timing out."""


async def sse_stream(
    events: AsyncIterator[tuple[str, Any]], closing: asyncio.Event | None = None
) -> AsyncIterator[bytes]:
    """Frame (name, data) pairs as server-sent events, with heartbeats, until ``events``
    ends or ``closing`` is set (the service is stopping)."""
    iterator = events.__aiter__()
    stop: asyncio.Future[Any] = asyncio.ensure_future((closing or asyncio.Event()).wait())
    pending: asyncio.Future[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(iterator.__anext__())
            done, _ = await asyncio.wait(
                {pending, stop}, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED
            )
            if pending in done:
                try:
                    name, data = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
            elif stop in done:
                return
            else:  # nothing for a while: keep proxies and clients from timing out
                yield b": heartbeat\n\n"
    finally:
        stop.cancel()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
