"""Write the phase table of docs/lifecycle.md from plughost.phases.

    .venv/bin/python scripts/gen_lifecycle_docs.py          # rewrite the page's generated part
    .venv/bin/python scripts/gen_lifecycle_docs.py --check  # exit 1 if the page is stale

The table and the diagram come from ``ALLOWED_TRANSITIONS``, ``TERMINAL_PHASES``
and ``ACTIVE_PHASES``; only the text between the page's BEGIN/END GENERATED
markers is written. tests/test_docs.py fails when the page and the code disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plughost.phases import ACTIVE_PHASES, ALLOWED_TRANSITIONS, TERMINAL_PHASES, Phase

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _docblock is beside it
import _docblock

PAGE = Path(__file__).resolve().parents[1] / "docs" / "lifecycle.md"
BLOCK = "phases"


def _names(phases: frozenset[Phase]) -> str:
    ordered = [phase for phase in Phase if phase in phases]
    return ", ".join(phase.value for phase in ordered) or "(none)"


def render_block() -> str:
    """The generated part of the page (without its markers)."""
    lines = ["| from | allowed moves to | resting | process alive |", "|---|---|---|---|"]
    for phase in Phase:
        lines.append(
            f"| {phase.value} | {_names(ALLOWED_TRANSITIONS.get(phase, frozenset()))} "
            f"| {'yes' if phase in TERMINAL_PHASES else ''} "
            f"| {'yes' if phase in ACTIVE_PHASES else ''} |"
        )
    moves = sum(len(targets) for targets in ALLOWED_TRANSITIONS.values())
    lines += [
        "",
        f"{len(Phase)} phases, {moves} allowed moves. Resting phases: "
        f"{_names(TERMINAL_PHASES)}. A process is alive in: {_names(ACTIVE_PHASES)}.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        f"    [*] --> {Phase.UNINSTALLED.value}",
    ]
    for phase in Phase:
        for target in Phase:
            if target in ALLOWED_TRANSITIONS.get(phase, frozenset()):
                lines.append(f"    {phase.value} --> {target.value}")
    lines.append("```")
    return "\n".join(lines)


def render_page(text: str) -> str:
    return _docblock.replace_block(text, BLOCK, render_block(), Path(__file__).name)


def main(argv: list[str] | None = None) -> int:
    return _docblock.main(PAGE, render_page, Path(__file__).name, __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
