"""Write the settings reference of docs/configuration.md from plughost.settings.

    .venv/bin/python scripts/gen_config_docs.py          # rewrite the page's generated part
    .venv/bin/python scripts/gen_config_docs.py --check  # exit 1 if the page is stale

Only the text between the page's BEGIN/END GENERATED markers is written; the
prose around it is the page's own. tests/test_docs.py fails when the page and
the model disagree, so a new setting cannot go undocumented.
"""

from __future__ import annotations

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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _docblock is beside it
import _docblock

PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
BLOCK = "settings"
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


def render_page(text: str) -> str:
    return _docblock.replace_block(text, BLOCK, render_block(), Path(__file__).name)


def main(argv: list[str] | None = None) -> int:
    return _docblock.main(PAGE, render_page, Path(__file__).name, __doc__ or "", argv)


if __name__ == "__main__":
    raise SystemExit(main())
