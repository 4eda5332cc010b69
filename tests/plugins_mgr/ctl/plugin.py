"""A test plugin whose behaviour the test drives through files in its directory.

- ``sick``: health checks answer NOT_SERVING while the file exists;
- ``hang``: health checks block while the file exists (a hung plugin);
- ``crash``: the plugin removes the file (a one-shot trigger), logs an error
  line with a secret in it and exits with status 7.

The plugin id comes from the host (PLUGHOST_PLUGIN_ID), so one copy can be
installed under any id. At start it logs a line with a secret in it, so tests
can check that crash reports redact it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from plughost.sdk import PluginServer, serve

HERE = Path(__file__).resolve().parent


def health() -> bool:
    while (HERE / "hang").exists():
        time.sleep(0.02)
    return not (HERE / "sick").exists()


def watch_for_crash() -> None:
    while not (HERE / "crash").exists():
        time.sleep(0.02)
    (HERE / "crash").unlink()
    sys.stderr.write("[ERROR] ctl: lost the database, login was password=hunter2\n")
    sys.stderr.flush()
    os._exit(7)


def main() -> None:
    sys.stderr.write("[INFO] ctl: connecting with password=hunter2 token=s3cr3tvalue\n")
    sys.stderr.flush()
    threading.Thread(target=watch_for_crash, daemon=True).start()
    plugin_id = os.environ.get("PLUGHOST_PLUGIN_ID", "ctl")
    serve(PluginServer(id=plugin_id, version="1.0.0", capabilities=["exec"], health=health))


if __name__ == "__main__":
    main()
