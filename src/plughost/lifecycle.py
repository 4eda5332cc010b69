"""Per-plugin state machine: the phase, its history and the checked moves."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import InvalidTransitionError
from .phases import ALLOWED_TRANSITIONS, Phase

__all__ = [
    "HISTORY_LIMIT",
    "PluginStateMachine",
    "Transition",
    "TransitionObserver",
    "can_transition",
]

log = logging.getLogger(__name__)

HISTORY_LIMIT = 50


@dataclasses.dataclass(frozen=True, slots=True)
class Transition:
    """One move of one plugin, as kept in its history."""

    plugin_id: str
    from_phase: Phase
    to_phase: Phase
    reason: str
    timestamp: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "pluginID": self.plugin_id,
            "from": self.from_phase.value,
            "to": self.to_phase.value,
            "reason": self.reason,
            "timestamp": self.timestamp.isoformat(),
        }


TransitionObserver = Callable[[Transition], None]


def can_transition(from_phase: Phase, to_phase: Phase) -> bool:
    return to_phase in ALLOWED_TRANSITIONS[from_phase]


class PluginStateMachine:
    """Holds one plugin's phase; every move is checked against the table.

    A ``threading.Lock`` guards the phase so gRPC callback threads and asyncio
    tasks can both drive it; observers run after the lock is released, so an
    observer may read the machine (or even move it) without deadlocking.
    """

    def __init__(self, plugin_id: str, initial: Phase = Phase.UNINSTALLED) -> None:
        self.plugin_id = plugin_id
        self._phase = initial
        self._lock = threading.Lock()
        self._history: deque[Transition] = deque(maxlen=HISTORY_LIMIT)
        self._observers: list[TransitionObserver] = []

    @property
    def phase(self) -> Phase:
        return self._phase

    def history(self) -> list[Transition]:
        """The last ``HISTORY_LIMIT`` transitions, oldest first."""
        with self._lock:
            return list(self._history)

    def add_observer(self, observer: TransitionObserver) -> Callable[[], None]:
        """Call ``observer`` on every transition; returns a function that removes it."""
        with self._lock:
            self._observers.append(observer)

        def remove() -> None:
            with self._lock:
                if observer in self._observers:
                    self._observers.remove(observer)

        return remove

    def transition_to(self, to_phase: Phase, reason: str = "") -> Transition:
        """Move to ``to_phase``; raises InvalidTransitionError if the table forbids it."""
        with self._lock:
            current = self._phase
            if not can_transition(current, to_phase):
                allowed = ", ".join(sorted(p.value for p in ALLOWED_TRANSITIONS[current]))
                raise InvalidTransitionError(
                    f"cannot move from {current.value} to {to_phase.value}",
                    suggestions=[f"from {current.value} the allowed phases are: {allowed}"],
                    plugin_id=self.plugin_id,
                )
            transition = self._record(current, to_phase, reason)
        self._notify(transition)
        return transition

    def force_phase(self, to_phase: Phase, reason: str) -> Transition:
        """Set the phase regardless of the table (recovery from inconsistent state)."""
        with self._lock:
            transition = self._record(self._phase, to_phase, f"force: {reason}")
        self._notify(transition)
        return transition

    def _record(self, from_phase: Phase, to_phase: Phase, reason: str) -> Transition:
        transition = Transition(self.plugin_id, from_phase, to_phase, reason, datetime.now(UTC))
        self._phase = to_phase
        self._history.append(transition)
        return transition

    def _notify(self, transition: Transition) -> None:
        with self._lock:
            observers = list(self._observers)
        for observer in observers:
            try:
                observer(transition)
            except Exception:
                log.exception("state observer failed for %s", self.plugin_id)
