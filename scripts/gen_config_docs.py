"""Write the settings reference of docs/configuration.md from plughost.settings.

    .venv/bin/python scripts/gen_config_docs.py          # rewrite the page's generated part
    .venv/bin/python scripts/gen_config_docs.py --check  # exit 1 if the page is stale

Only the text between the page's BEGIN/END GENERATED markers is written; the
prose around it is the page's own. tests/test_docs.py fails when the page and
the model disagree, so a new setting cannot go undocumented.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from plughost.settings import Settings, TrustedKeySetting

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BLOCK = "settings"
_BEGIN = "<!-- BEGIN GENERATED: {name} (scripts/{script}; do not edit by hand) -->"
_END = "<!-- END GENERATED: {name} -->"
_NESTED: dict[type[BaseModel], str] = {TrustedKeySetting: "trusted key"}


def _type(annotation: Any) -> str:
    """A reader's name for a field's type: ``float``, ``list[int]``, ``"unix" | "tcp"``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "none"
    if isinstance(annotation, type) and annotation in _NESTED:
        return _NESTED[annotation]
    if isinstance(annotation, type):
        return annotation.__name__
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is list:
        return f"list[{_type(args[0])}]"
    if origin is dict:
        return f"table[{_type(args[0])}, {_type(args[1])}]"
    return str(annotation)


def _default(field: FieldInfo) -> str:
    """The default as it would be written in plughost.toml."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f"`{json.dumps(value)}`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{json.dumps(value)}`"
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    words = []
    for item in field.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attribute, None)
            if bound is not None:
                words.append(f"{sign} {bound}")
    return f" ({', '.join(words)})" if words else ""


def _cell(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("|", "\\|").strip()


def _table(model: type[BaseModel]) -> list[str]:
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or "").strip()
        lines.append(
            f"| `{name}` | {_type(field.annotation)} | {_default(field)} "
            f"| {_cell(description)}{_bounds(field)} |"
        )
    return lines


def render_block() -> str:
    """The generated part of the page (without its markers)."""
    lines = [*_table(Settings), "", "Each entry of `trusted_keys` is a table:", ""]
    lines += _table(TrustedKeySetting)
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
            print(f"{PAGE} is stale: run scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        PAGE.write_text(wanted)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
