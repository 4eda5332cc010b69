"""The hanger example: alive but unresponsive after HANGER_AFTER_MS ms."""

from __future__ import annotations

import os
import threading
import time

from plughost.sdk import PluginServer, serve

STARTED = time.monotonic()
NEVER = threading.Event()


def health() -> bool:
    after_ms = int(os.environ.get("HANGER_AFTER_MS", "500"))
    if after_ms >= 0 and (time.monotonic() - STARTED) * 1000 >= after_ms:
        NEVER.wait()  # hang this health call forever, as a deadlocked plugin would
    return True


def main() -> None:
    serve(PluginServer(health=health))


if __name__ == "__main__":
    main()
