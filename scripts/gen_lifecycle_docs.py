"""Write the phase table of docs/lifecycle.md from plughost.phases.

    .venv/bin/python scripts/gen_lifecycle_docs.py          # rewrite the page's generated part
    .venv/bin/python scripts/gen_lifecycle_docs.py --check  # exit 1 if the page is stale

The table and the diagram come from ``ALLOWED_TRANSITIONS``, ``TERMINAL_PHASES``
and ``ACTIVE_PHASES``; only the text between the page's BEGIN/END GENERATED
markers is written. tests/test_docs.py fails when the page and the code disagree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from plughost.phases import ACTIVE_PHASES, ALLOWED_TRANSITIONS, TERMINAL_PHASES, Phase

PAGE = Path(__file__).resolve().parents[1] / "docs" / "lifecycle.md"
BLOCK = "phases"
_BEGIN = "<!-- BEGIN GENERATED: {name} (scripts/{script}; do not edit by hand) -->"
_END = "<!-- END GENERATED: {name} -->"


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


def replace_block(text: str, name: str, body: str, script: str) -> str:
    """``text`` with the block between the markers called ``name`` set to ``body``."""
    begin = _BEGIN.format(name=name, script=script)
    end = _END.format(name=name)
    pattern = re.compile(
        re.escape(begin.split(" (")[0]) + r"[^\n]*\n.*?" + re.escape(end), re.DOTALL
    )
    if not pattern.search(text):
        raise SystemExit(f"no '{begin}' ... '{end}' block in the page")
    return pattern.sub(lambda _: f"{begin}\n\n{body}\n\n{end}", text, count=1)


def render_page(text: str) -> str:
    return replace_block(text, BLOCK, render_block(), Path(__file__).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    current = PAGE.read_text()
    wanted = render_page(current)
    if args.check:
        if wanted != current:
            print(f"{PAGE} is stale: run scripts/gen_lifecycle_docs.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        PAGE.write_text(wanted)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
