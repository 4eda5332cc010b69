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

# isort: off
# Importing them registers the commands, in the order --help lists them.
from . import _run, _plugins, _market, _tools, _omniview  # noqa: F401

# isort: on
from ._common import app, setup_logging

__all__ = ["app", "main"]


def main() -> None:
    setup_logging()
    app()


if __name__ == "__main__":
    main()
