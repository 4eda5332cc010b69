"""The slowstart example: handshakes only after SLOWSTART_MS milliseconds."""

from __future__ import annotations

import os
import time

from plughost.sdk import PluginServer, serve


def main() -> None:
    time.sleep(int(os.environ.get("SLOWSTART_MS", "2000")) / 1000)
    serve(PluginServer())


if __name__ == "__main__":
    main()
