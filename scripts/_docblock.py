"""The generated blocks of docs/ pages: how the gen_*_docs.py scripts write and check them."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

_BEGIN = "<!-- BEGIN GENERATED: {name} (scripts/{script}; do not edit by hand) -->"
_END = "<!-- END GENERATED: {name} -->"


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


def main(
    page: Path, render_page: Callable[[str], str], script: str, doc: str, argv: list[str] | None
) -> int:
    """Rewrite ``page``'s generated part, or with ``--check`` exit 1 when it is stale."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    current = page.read_text()
    wanted = render_page(current)
    if args.check:
        if wanted != current:
            print(f"{page} is stale: run scripts/{script}", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        page.write_text(wanted)
        print(f"wrote {page}")
    return 0
