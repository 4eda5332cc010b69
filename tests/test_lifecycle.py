"""PluginStateMachine: the table enforced, forced moves, history, observers, concurrency."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import threading
from collections import Counter
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from plughost.errors import InvalidTransitionError, PlughostError, ValidationError
from plughost.lifecycle import HISTORY_LIMIT, PluginStateMachine, Transition
from plughost.phases import ALLOWED_TRANSITIONS, Phase

P = Phase


def test_initial_phase_and_empty_history() -> None:
    assert PluginStateMachine("p").phase is P.UNINSTALLED
    machine = PluginStateMachine("p", P.STOPPED)
    assert machine.phase is P.STOPPED
    assert machine.history() == []


def test_allowed_move_is_recorded() -> None:
    machine = PluginStateMachine("alpha")
    transition = machine.transition_to(P.INSTALLING, "package unpacked")
    assert machine.phase is P.INSTALLING
    assert transition.plugin_id == "alpha"
    assert (transition.from_phase, transition.to_phase) == (P.UNINSTALLED, P.INSTALLING)
    assert transition.reason == "package unpacked"
    assert transition.timestamp.tzinfo is not None
    assert machine.history() == [transition]


def test_refused_move_raises_a_typed_error_and_changes_nothing() -> None:
    machine = PluginStateMachine("alpha", P.INSTALLED)
    seen: list[Transition] = []
    machine.add_observer(seen.append)
    with pytest.raises(InvalidTransitionError) as info:
        machine.transition_to(P.RUNNING, "skip the checks")
    err = info.value
    assert isinstance(err, ValidationError)
    assert isinstance(err, PlughostError)
    assert err.type == "invalid_transition"
    assert err.status == 409
    assert err.plugin_id == "alpha"
    assert "Installed" in err.detail
    assert "Running" in err.detail
    # The suggestion lists where the plugin may go instead.
    for allowed in ALLOWED_TRANSITIONS[P.INSTALLED]:
        assert allowed.value in err.suggestions[0]
    assert machine.phase is P.INSTALLED
    assert machine.history() == []
    assert seen == []


def test_force_phase_ignores_the_table_and_says_so() -> None:
    machine = PluginStateMachine("alpha", P.UNINSTALLED)
    transition = machine.force_phase(P.RUNNING, "adopted a live process")
    assert machine.phase is P.RUNNING
    assert transition.reason == "force: adopted a live process"
    assert machine.history()[-1].reason == "force: adopted a live process"
    assert (transition.from_phase, transition.to_phase) == (P.UNINSTALLED, P.RUNNING)


def _walk(machine: PluginStateMachine, count: int) -> list[Transition]:
    """Make ``count`` allowed moves, always choosing the first allowed target."""
    done = []
    for i in range(count):
        target = sorted(ALLOWED_TRANSITIONS[machine.phase])[0]
        done.append(machine.transition_to(target, f"step {i}"))
    return done


def test_history_keeps_the_last_fifty() -> None:
    assert HISTORY_LIMIT == 50
    machine = PluginStateMachine("alpha")
    done = _walk(machine, 137)
    history = machine.history()
    assert len(history) == 50
    assert history == done[-50:]
    assert history[0].reason == "step 87"
    # The history is a copy, not a view.
    history.clear()
    assert len(machine.history()) == 50


def test_observers_see_every_transition_in_order() -> None:
    machine = PluginStateMachine("alpha")
    first: list[Transition] = []
    second: list[Transition] = []
    machine.add_observer(first.append)
    remove_second = machine.add_observer(second.append)
    done = _walk(machine, 10)
    done.append(machine.force_phase(P.FAILED, "test"))
    assert first == done
    assert second == done
    remove_second()
    remove_second()  # removing twice is harmless
    more = _walk(machine, 3)
    assert first == done + more
    assert second == done


def test_failing_observer_is_logged_and_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    machine = PluginStateMachine("alpha")
    seen: list[Transition] = []

    def broken(_: Transition) -> None:
        raise RuntimeError("observer bug")

    machine.add_observer(broken)
    machine.add_observer(seen.append)
    with caplog.at_level(logging.ERROR, logger="plughost.lifecycle"):
        transition = machine.transition_to(P.INSTALLING)
    assert machine.phase is P.INSTALLING
    assert seen == [transition]
    assert "observer bug" in caplog.text
    assert "alpha" in caplog.text


def test_observer_may_read_and_move_the_machine() -> None:
    """Observers run outside the lock: re-entering the machine must not deadlock."""
    machine = PluginStateMachine("alpha", P.RUNNING)
    phases_seen: list[Phase] = []

    def observer(t: Transition) -> None:
        phases_seen.append(machine.phase)
        assert machine.history()[-1] == t
        if t.to_phase is P.STOPPING:
            machine.transition_to(P.STOPPED, "stopped by observer")

    machine.add_observer(observer)
    machine.transition_to(P.STOPPING, "stop")
    assert machine.phase is P.STOPPED
    assert [(t.from_phase, t.to_phase) for t in machine.history()] == [
        (P.RUNNING, P.STOPPING),
        (P.STOPPING, P.STOPPED),
    ]
    assert phases_seen == [P.STOPPING, P.STOPPED]


def test_transition_to_dict_is_the_state_change_payload() -> None:
    machine = PluginStateMachine("alpha")
    data = machine.transition_to(P.INSTALLING, "why").to_dict()
    assert set(data) == {"pluginID", "from", "to", "reason", "timestamp"}
    assert data["pluginID"] == "alpha"
    assert (data["from"], data["to"], data["reason"]) == ("Uninstalled", "Installing", "why")
    json.dumps(data)


# --------------------------------------------------------------------------
# Random walks checked against the table.

phases = st.sampled_from(list(Phase))
reasons = st.text(max_size=12)


class StateMachineAgainstTable(RuleBasedStateMachine):
    """Drives PluginStateMachine with random moves; a model tracks what must be true."""

    observers = Bundle("observers")

    @initialize(start=phases)
    def start(self, start: Phase) -> None:
        self.machine = PluginStateMachine("fuzz", start)
        self.model_phase = start
        self.model_history: list[tuple[Phase, Phase, str]] = []
        # observer key -> (what it received, what it should have received)
        self.received: dict[int, list[tuple[Phase, Phase, str]]] = {}
        self.expected: dict[int, list[tuple[Phase, Phase, str]]] = {}
        self.removers: dict[int, object] = {}
        self.next_key = 0

    def _expect(self, move: tuple[Phase, Phase, str]) -> None:
        self.model_phase = move[1]
        self.model_history.append(move)
        for key in self.removers:
            self.expected[key].append(move)

    @rule(to=phases, reason=reasons)
    def move(self, to: Phase, reason: str) -> None:
        before = self.machine.phase
        assert before is self.model_phase
        if to in ALLOWED_TRANSITIONS[before]:
            transition = self.machine.transition_to(to, reason)
            assert (transition.from_phase, transition.to_phase) == (before, to)
            assert transition.reason == reason
            self._expect((before, to, reason))
        else:
            with pytest.raises(InvalidTransitionError):
                self.machine.transition_to(to, reason)
            assert self.machine.phase is before

    @rule(to=phases, reason=reasons)
    def force(self, to: Phase, reason: str) -> None:
        before = self.machine.phase
        transition = self.machine.force_phase(to, reason)
        assert (transition.from_phase, transition.to_phase) == (before, to)
        assert transition.reason == f"force: {reason}"
        self._expect((before, to, f"force: {reason}"))

    @rule(target=observers)
    def add_observer(self) -> int:
        key = self.next_key
        self.next_key += 1
        got: list[tuple[Phase, Phase, str]] = []
        self.received[key] = got
        self.expected[key] = []
        self.removers[key] = self.machine.add_observer(
            lambda t: got.append((t.from_phase, t.to_phase, t.reason))
        )
        return key

    @rule(key=consumes(observers))
    def remove_observer(self, key: int) -> None:
        remover = self.removers.pop(key)
        assert callable(remover)
        remover()

    @invariant()
    def phase_matches_model(self) -> None:
        assert self.machine.phase is self.model_phase

    @invariant()
    def history_is_the_last_fifty_moves(self) -> None:
        got = [(t.from_phase, t.to_phase, t.reason) for t in self.machine.history()]
        assert got == self.model_history[-HISTORY_LIMIT:]

    @invariant()
    def observers_saw_every_move_while_registered(self) -> None:
        assert self.received == self.expected


StateMachineAgainstTable.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestStateMachineAgainstTable = StateMachineAgainstTable.TestCase


# --------------------------------------------------------------------------
# Concurrency: many drivers, one machine.


def _check_consistent(
    machine: PluginStateMachine,
    start: Phase,
    moves: Iterable[Transition],
    observed: list[Transition],
) -> None:
    """Every accepted move must chain: flow into each phase minus flow out of it is
    +1 for the final phase, -1 for the start, 0 elsewhere. Two drivers that both
    moved away from the same phase (a lost update) break this."""
    moves = list(moves)
    flow: Counter[Phase] = Counter()
    for t in moves:
        flow[t.to_phase] += 1
        flow[t.from_phase] -= 1
        if not t.reason.startswith("force: "):
            assert t.to_phase in ALLOWED_TRANSITIONS[t.from_phase]
    expected: Counter[Phase] = Counter()
    expected[machine.phase] += 1
    expected[start] -= 1
    assert {k: v for k, v in flow.items() if v} == {k: v for k, v in expected.items() if v}
    # Observers were called once per accepted move, with the same objects.
    assert Counter(id(t) for t in observed) == Counter(id(t) for t in moves)
    history = machine.history()
    assert len(history) == min(len(moves), HISTORY_LIMIT)
    for older, newer in itertools.pairwise(history):
        assert older.to_phase is newer.from_phase
    assert history[-1].to_phase is machine.phase


def _drive(machine: PluginStateMachine, rng: random.Random, attempts: int) -> list[Transition]:
    accepted = []
    for _ in range(attempts):
        target = rng.choice(list(Phase))
        if rng.random() < 0.05:
            accepted.append(machine.force_phase(target, "chaos"))
            continue
        try:
            accepted.append(machine.transition_to(target, "thread"))
        except InvalidTransitionError:
            pass
    return accepted


def test_safe_when_driven_from_many_threads() -> None:
    machine = PluginStateMachine("threads", P.INSTALLED)
    observed: list[Transition] = []
    machine.add_observer(observed.append)
    barrier = threading.Barrier(8)
    results: list[list[Transition]] = []
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            barrier.wait()
            results.append(_drive(machine, random.Random(seed), 3000))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert errors == []
    accepted = [t for chunk in results for t in chunk]
    assert len(accepted) > 1000  # enough moves to make a race likely
    _check_consistent(machine, P.INSTALLED, accepted, observed)


async def test_safe_when_driven_from_asyncio_tasks_and_threads_at_once() -> None:
    machine = PluginStateMachine("tasks", P.INSTALLED)
    observed: list[Transition] = []
    machine.add_observer(observed.append)

    async def task(seed: int) -> list[Transition]:
        rng = random.Random(seed)
        accepted = []
        for _ in range(300):
            accepted.extend(_drive(machine, rng, 5))
            await asyncio.sleep(0)
        return accepted

    chunks = await asyncio.gather(
        *(task(seed) for seed in range(10)),
        *(asyncio.to_thread(_drive, machine, random.Random(100 + s), 3000) for s in range(2)),
    )
    accepted = [t for chunk in chunks for t in chunk]
    assert len(accepted) > 1000
    _check_consistent(machine, P.INSTALLED, accepted, observed)
