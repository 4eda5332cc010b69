"""The crasher example: serves, then dies with an error after CRASHER_AFTER_MS ms."""

from __future__ import annotations

import os
import sys
import threading

from plughost.sdk import PluginServer, serve


def crash() -> None:
    sys.stderr.write("[ERROR] crasher: simulated fatal error, exiting with status 3\n")
    sys.stderr.flush()
    os._exit(3)


def main() -> None:
    after_ms = int(os.environ.get("CRASHER_AFTER_MS", "500"))
    if after_ms >= 0:
        threading.Timer(after_ms / 1000, crash).start()
    serve(PluginServer())


if __name__ == "__main__":
    main()
