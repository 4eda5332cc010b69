"""Field types shared by the request bodies of the local service and of the dashboard.

A path posted by a client is opened by the host, so every body that carries one
takes it as :data:`HostPath`: what cannot name a file (too long for the kernel,
or holding a NUL byte, which ``open`` refuses with a ValueError) is a 422 naming
the field, the same on every route, before any handler runs.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

__all__ = ["MAX_PATH", "HostPath"]

MAX_PATH = 4096  # Linux's PATH_MAX: a longer one cannot name a file


def _no_nul(value: str) -> str:
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL byte")
    return value


HostPath = Annotated[
    str,
    Field(max_length=MAX_PATH, description="a path on the host's disk"),
    AfterValidator(_no_nul),
]
