"""Two fixes to the Typer the CLI runs on, installed once by ``_common``.

- **Plain values without pydantic.** Typer (0.29) coerces every command-line
  value through a pydantic ``TypeAdapter``: importing pydantic and building the
  adapters costs ``plughost list --root R`` ~90 ms, more than half of what the
  command needs. The CLI's parameters are all ``str``, ``Path``, ``bool``,
  ``int`` and ``float`` (with ``min``/``max``), which are coerced here with the same checks
  (Typer's own path checks, click's messages); anything else (a parser, a
  choice, a file, a list, ``clamp``) still goes through Typer's adapter.
- **Flags without a type.** Typer prints ``<bool>`` in the help's type column
  for every flag (``--json``, ``--help``, ``--install-completion`` ...), as if
  it took a value. A flag now shows no type, and an argument named by its
  metavar (``ID``, ``DIR``) no ``<str>``/``<path>`` beside it, so the help
  speaks one style: upper-case metavars.

Both replace a method of a private Typer class, so both check that what they
replace is there: with another Typer the CLI keeps working as Typer does (only
slower, and with ``<bool>`` back), and the tests that import-check ``list``
and read ``--help`` say so.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["install"]

_installed = False


def install() -> None:
    """Install both fixes (once); a no-op for a Typer without the classes they patch."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from typer import core
        from typer._coercion import RuntimeParam
        from typer._param_types import coerce_cli_path
    except ImportError:  # pragma: no cover - another Typer
        return
    _install_plain_coercion(core, RuntimeParam, coerce_cli_path)
    _install_type_display(core)


def _install_plain_coercion(core: Any, runtime_param: type, coerce_cli_path: Any) -> None:
    parameter = getattr(core, "_TyperParameter", None)
    original = getattr(parameter, "get_runtime_param", None)
    if parameter is None or original is None:  # pragma: no cover - another Typer
        return

    @dataclass(frozen=True)
    class PlainRuntimeParam(runtime_param):  # type: ignore[misc]
        """``str``, ``Path``, ``int`` or ``float`` from the command line, as Typer checks them."""

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.annotation
            if kind is str:
                return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            if kind is Path:
                path = value if isinstance(value, Path) else Path(value)
                return coerce_cli_path(
                    path, self.parameter_info, path_type=Path, param=param, ctx=ctx
                )
            if kind is bool:
                return _boolean(value, param, ctx)
            return _number(kind, value, self.parameter_info, param, ctx)

    @functools.wraps(original)
    def get_runtime_param(self: Any) -> Any:
        if getattr(self, "_runtime_param", None) is None:
            descriptor = getattr(self, "type_descriptor", None)
            if descriptor is not None and _plain(descriptor):
                self._runtime_param = PlainRuntimeParam(
                    parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
                )
        return original(self)

    parameter.get_runtime_param = get_runtime_param


def _plain(descriptor: Any) -> bool:
    """Whether a parameter is one this module coerces (else Typer's adapter does)."""
    info = descriptor.parameter_info
    kind = descriptor.annotation
    if getattr(info, "parser", None) is not None or descriptor.file_annotation is not None:
        return False
    if kind is str:
        return not descriptor.is_choice
    if kind is Path:
        return getattr(info, "path_type", None) is None
    return kind in (bool, int, float) and not getattr(info, "clamp", False)


_BOOLEANS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True}
_BOOLEANS.update({"0": False, "false": False, "f": False, "no": False, "n": False, "off": False})


def _boolean(value: Any, param: Any, ctx: Any) -> bool:
    """A flag's value (a bool already), or a boolean word from the environment (click's)."""
    if isinstance(value, bool):
        return value
    found = _BOOLEANS.get(str(value).strip().lower())
    if found is None:
        from typer._click.exceptions import BadParameter

        raise BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)
    return found


def _number(kind: type, value: Any, info: Any, param: Any, ctx: Any) -> Any:
    from typer._click.exceptions import BadParameter

    name = "integer" if kind is int else "float"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadParameter(f"{value!r} is not a valid {name}.", ctx=ctx, param=param)
    try:
        number = kind(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise BadParameter(f"{value!r} is not a valid {name}.", ctx=ctx, param=param) from None
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if (low is not None and number < low) or (high is not None and number > high):
        from typer._display import describe_number_range

        span = describe_number_range(low, high)
        raise BadParameter(f"{value} is not in the range {span}.", ctx=ctx, param=param)
    return number


def _install_type_display(core: Any) -> None:
    for name, no_type in (("TyperOption", _is_flag), ("TyperArgument", _has_metavar)):
        cls = getattr(core, name, None)
        original = getattr(cls, "display_type_rich", None)
        if cls is None or original is None:  # pragma: no cover - another Typer
            continue
        cls.display_type_rich = _without_type(original, no_type)


def _is_flag(param: Any) -> bool:
    """A flag takes no value: no ``<bool>``."""
    return bool(getattr(param, "is_flag", False)) and not getattr(param, "count", False)


def _has_metavar(param: Any) -> bool:
    """An argument named by its metavar (``ID``, ``DIR``): the name says what it takes."""
    return getattr(param, "metavar", None) is not None


def _without_type(original: Any, no_type: Any) -> Any:
    @functools.wraps(original)
    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if no_type(self):
            return None
        result: str | None = original(self, ctx)
        return result

    return display_type_rich
