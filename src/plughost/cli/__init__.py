"""The ``plughost`` command line: run the host, manage plugins, use the marketplace.

Every command that reads or changes a root talks to the host's local service
when a ``plughost run`` holds that root (its socket answers ``/v1/health``),
and otherwise acts on the root directly (a one-shot PluginManager that starts
no plugin). Every PlughostError is printed as title, detail and suggestions
(``--json``: ``{"error": {...}}``) with exit status 1.

Heavy modules (the manager, FastAPI, the registry) are imported by the
commands that need them, so ``plughost list`` starts fast.

One module per concept: ``_common`` (the app, options, errors), ``_hosts``
(the session: the running host or the root itself), ``_render`` (how things
look), and the commands in ``_run``, ``_plugins``, ``_market``, ``_tools`` and
``_omniview``.
They are imported in this order because ``plughost --help`` lists the
commands in the order they were registered.
"""

from __future__ import annotations

import sys

# isort: off
# Importing them registers the commands, in the order --help lists them.
from . import _run, _plugins, _market, _tools, _omniview  # noqa: F401

# isort: on
from ._common import app, command_app, setup_logging

app.command("settings")(_omniview.settings)  # top level: plughost settings ID [KEY [VALUE]]

__all__ = ["app", "main"]


def main() -> None:
    setup_logging()
    try:
        # One name in usage lines and for shell completion (_PLUGHOST_COMPLETE), however started.
        command_app(sys.argv[1:])(prog_name="plughost")
    finally:
        _exit_quickly()


def _exit_quickly() -> None:
    """The command is done: leave out the interpreter's last collection of the heap.

    Collecting every object at exit costs ``plughost list`` ~25 ms and ``plughost run``
    (the manager's, grpc's and FastAPI's objects) ~0.2 s after its plugins stopped.
    Frozen, they are left to the operating system; output is flushed, and atexit
    handlers and ``weakref.finalize`` callbacks run as usual.
    """
    import gc

    gc.freeze()


if __name__ == "__main__":
    main()
