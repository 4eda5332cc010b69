"""Caps on text that reaches the host from outside, applied where that text is stored.

A path posted to the API, a marketplace's error message or a plugin's output
can be any size, and whatever holds it pays for its size again and again:
problem JSON, the event feed, the terminal (whose line wrapping alone is
quadratic in a line's length). So an error's detail, an event's fields and the
like keep at most ``LIMIT`` bytes, ending in a note of how much was cut, so a
reader still sees that there was more.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

__all__ = ["ITEMS", "LIMIT", "cap", "cap_json", "cut_note"]

LIMIT = 4096
"""Bytes (UTF-8) kept of one message, detail or field."""

ITEMS = 256
"""Entries kept of one list or mapping."""

_NOTE_ROOM = 32  # the longest note: "…[cut 999,999,999,999 bytes]" is 30 bytes
_STEP = 1 << 20


def cut_note(cut: int | None) -> str:
    """The note ending a cut text: ``…[cut 2,999,812 bytes]`` (``…[cut]``: not known how much)."""
    return "…[cut]" if cut is None else f"…[cut {cut:,} bytes]"


def _size(text: str) -> int:
    """UTF-8 bytes of ``text``, without encoding a huge string all at once."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[i : i + _STEP].encode("utf-8", "surrogatepass"))
        for i in range(0, len(text), _STEP)
    )


def cap(text: str, limit: int = LIMIT) -> str:
    """``text`` when it fits in ``limit`` UTF-8 bytes, else its start and a :func:`cut_note`.

    The result never exceeds ``limit`` bytes (``limit`` of at least 32).
    """
    if len(text) * 4 <= limit:  # fits, whatever its characters
        return text
    size = _size(text)
    if size <= limit:
        return text
    room = max(limit - _NOTE_ROOM, 0)
    head = text[:room]
    while (over := _size(head) - room) > 0:  # wide characters: drop a few more
        head = head[: len(head) - max(1, over // 4)]
    return head + cut_note(size - _size(head))


def cap_json(value: Any, limit: int = LIMIT, items: int = ITEMS) -> Any:
    """A copy of JSON-like ``value`` whose every string is :func:`cap`-ped and whose lists and
    mappings keep at most ``items`` entries (a list ends with a note string, a mapping with
    the key ``"…"``, saying how many were left out). Other values are kept as they are."""
    if isinstance(value, str):
        return cap(value, limit)
    if isinstance(value, Mapping):
        capped = {
            (cap(k, limit) if isinstance(k, str) else k): cap_json(v, limit, items)
            for k, v in itertools.islice(value.items(), items)
        }
        if len(value) > items:
            capped["…"] = f"[cut {len(value) - items:,} entries]"
        return capped
    if isinstance(value, list | tuple):
        kept = [cap_json(v, limit, items) for v in value[:items]]
        if len(value) > items:
            kept.append(f"…[cut {len(value) - items:,} items]")
        return kept
    return value
