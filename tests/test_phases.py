"""Phases and the transition table of the design, plus Degraded -> Running.

docs/lifecycle.md shows the table generated from the code (tests/test_docs.py keeps it so).
"""

from __future__ import annotations

import pytest

from plughost.lifecycle import can_transition
from plughost.phases import ACTIVE_PHASES, ALLOWED_TRANSITIONS, TERMINAL_PHASES, Phase

# The design's table, copied as text so that a drift in either place shows up. The
# one change is "hung is not crashed": one good health check returns a
# Degraded plugin to Running (the issue wins over the design where they disagree).
DESIGN_TABLE = """
| Uninstalled | Installing |
| Installing | Installed, Failed |
| Installed | Building, Validating, Uninstalling, Stopped |
| Building | Validating, BuildFailed, Failed |
| BuildFailed | Building, Failed, Uninstalling |
| Validating | Starting, Failed, Installed |
| Starting | Running, Failed, Degraded |
| Running | Stopping, Degraded, Failed, Recovering, Validating |
| Degraded | Recovering, Stopping, Failed, Running |
| Recovering | Validating, Failed |
| Stopping | Stopped, Failed |
| Stopped | Validating, Starting, Uninstalling, Installed |
| Failed | Validating, Building, Uninstalling, Installed |
| Uninstalling | Uninstalled, Failed |
"""

DESIGN_PHASES = [
    *("Uninstalled", "Installing", "Installed", "Building", "BuildFailed", "Validating"),
    *("Starting", "Running", "Degraded", "Recovering", "Stopping", "Stopped", "Failed"),
    "Uninstalling",
]


def _design_table() -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    for line in DESIGN_TABLE.strip().splitlines():
        _, src, dsts, _ = (cell.strip() for cell in line.split("|"))
        table[src] = {d.strip() for d in dsts.split(",")}
    return table


def test_fourteen_phases_with_the_original_names() -> None:
    assert [p.value for p in Phase] == DESIGN_PHASES
    assert len(Phase) == 14
    for name in DESIGN_PHASES:
        assert Phase(name).value == name
        assert Phase(name) == name  # a StrEnum: usable wherever a string is expected


def test_transition_table_is_exactly_the_design() -> None:
    got = {src.value: {d.value for d in dsts} for src, dsts in ALLOWED_TRANSITIONS.items()}
    design = _design_table()
    extra = sorted((s, d) for s in got for d in got[s] - design.get(s, set()))
    missing = sorted((s, d) for s in design for d in design[s] - got.get(s, set()))
    assert (extra, missing) == ([], []), "ALLOWED_TRANSITIONS differs from the design's table"
    assert got == design
    assert set(ALLOWED_TRANSITIONS) == set(Phase)


@pytest.mark.parametrize("dst", list(Phase))
@pytest.mark.parametrize("src", list(Phase))
def test_can_transition_follows_the_table(src: Phase, dst: Phase) -> None:
    assert can_transition(src, dst) is (dst.value in _design_table()[src.value])


def test_no_phase_may_move_to_itself() -> None:
    for phase in Phase:
        assert not can_transition(phase, phase)


def test_terminal_and_active_phases() -> None:
    terminal = {"Running", "Stopped", "Failed", "BuildFailed", "Uninstalled"}
    active = {"Running", "Degraded"}
    assert {p.value for p in TERMINAL_PHASES} == terminal
    assert {p.value for p in ACTIVE_PHASES} == active
    for phase in Phase:
        assert phase.is_terminal is (phase.value in terminal)
        assert phase.is_active is (phase.value in active)


def test_every_phase_is_reachable_from_uninstalled() -> None:
    seen = {Phase.UNINSTALLED}
    frontier = [Phase.UNINSTALLED]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(Phase)
