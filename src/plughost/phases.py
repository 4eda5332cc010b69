"""Lifecycle phases and the table of allowed moves between them.

Kept free of plughost imports (like supervisor's ``states.py``) so that any
module can use it without import cycles.
"""

from __future__ import annotations

import enum

__all__ = ["ACTIVE_PHASES", "ALLOWED_TRANSITIONS", "TERMINAL_PHASES", "Phase"]


class Phase(enum.StrEnum):
    """Where a plugin is in its life. Values are the original's names."""

    UNINSTALLED = "Uninstalled"
    INSTALLING = "Installing"
    INSTALLED = "Installed"
    BUILDING = "Building"
    BUILD_FAILED = "BuildFailed"
    VALIDATING = "Validating"
    STARTING = "Starting"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    RECOVERING = "Recovering"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"
    UNINSTALLING = "Uninstalling"

    @property
    def is_terminal(self) -> bool:
        """A resting phase: nothing is in progress."""
        return self in TERMINAL_PHASES

    @property
    def is_active(self) -> bool:
        """A process should be alive in this phase."""
        return self in ACTIVE_PHASES


P = Phase

ALLOWED_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    # A package is being unpacked.
    P.UNINSTALLED: frozenset({P.INSTALLING}),
    P.INSTALLING: frozenset({P.INSTALLED, P.FAILED}),
    # On disk, not started: build (dev), validate (load), remove, or park.
    P.INSTALLED: frozenset({P.BUILDING, P.VALIDATING, P.UNINSTALLING, P.STOPPED}),
    P.BUILDING: frozenset({P.VALIDATING, P.BUILD_FAILED, P.FAILED}),
    P.BUILD_FAILED: frozenset({P.BUILDING, P.FAILED, P.UNINSTALLING}),
    # Validating may fall back to Installed when the load is called off.
    P.VALIDATING: frozenset({P.STARTING, P.FAILED, P.INSTALLED}),
    P.STARTING: frozenset({P.RUNNING, P.FAILED, P.DEGRADED}),
    # Running -> Validating is a reload.
    P.RUNNING: frozenset({P.STOPPING, P.DEGRADED, P.FAILED, P.RECOVERING, P.VALIDATING}),
    # Degraded -> Running: one good health check after a miss (hung is not crashed).
    P.DEGRADED: frozenset({P.RECOVERING, P.STOPPING, P.FAILED, P.RUNNING}),
    P.RECOVERING: frozenset({P.VALIDATING, P.FAILED}),
    P.STOPPING: frozenset({P.STOPPED, P.FAILED}),
    P.STOPPED: frozenset({P.VALIDATING, P.STARTING, P.UNINSTALLING, P.INSTALLED}),
    P.FAILED: frozenset({P.VALIDATING, P.BUILDING, P.UNINSTALLING, P.INSTALLED}),
    P.UNINSTALLING: frozenset({P.UNINSTALLED, P.FAILED}),
}

TERMINAL_PHASES: frozenset[Phase] = frozenset(
    {P.RUNNING, P.STOPPED, P.FAILED, P.BUILD_FAILED, P.UNINSTALLED}
)
ACTIVE_PHASES: frozenset[Phase] = frozenset({P.RUNNING, P.DEGRADED})
