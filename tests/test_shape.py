"""The house's shape (README "Layout"): no import circles, no reach-ins into host/ privates.

Every module's imports are read with ``ast`` (imports inside functions and under
TYPE_CHECKING count too: a circle there is still two rooms that must change
together). A private member (``_name``) defined by a class in ``host/`` may be
used only from inside ``host/``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import plughost

PACKAGE = Path(plughost.__file__).resolve().parent
SKIPPED = ("_proto", "examples")

# Foundation modules come first; each later layer may import only earlier ones.
LAYERS: list[tuple[str, ...]] = [
    (
        "errors",
        "phases",
        "lifecycle",
        "metadata",
        "events",
        "paths",
        "settings",
        "records",
        "store",
        "lock",
        "pids",
        "fsutil",
        "validate",
        "reconcile",
        "logs",
        "tasks",
        "atomic",
        "textcap",
        "coalesce",
        "hardening",
        "rootcheck",
    ),
    ("process",),
    ("packages",),
    ("registry",),
    ("host",),
    ("dev",),
    ("omniview",),
    ("service",),
    ("cli",),
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if any(p in SKIPPED for p in parts):
            continue
        name = ".".join(("plughost", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module or ""]).strip(".")
            else:
                module = node.module or ""
            targets = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        yield from (t for t in targets if t in MODULES and t not in (name, "plughost"))


GRAPH = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def _circles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def _layer(name: str) -> int | None:
    parts = name.split(".")
    if len(parts) < 2:
        return None
    for rank, members in enumerate(LAYERS):
        if parts[1] in members:
            return rank
    return None


def _host_privates() -> set[str]:
    """Private attribute and method names that classes in host/ define."""
    names: set[str] = set()
    for name, path in MODULES.items():
        if not name.startswith("plughost.host."):
            continue
        for cls in ast.walk(ast.parse(path.read_text())):
            if not isinstance(cls, ast.ClassDef):
                continue
            for node in ast.walk(cls):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    names.add(node.name)
                elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                    names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_there_is_no_import_circle() -> None:
    assert _circles() == []


# The facade creates the dev servers on first use, for the seed's install_in_dev_mode
# (lazily, inside the two methods that need them); nothing else reaches down.
DOWNWARD_ALLOWED = {
    ("plughost.host.manager", "plughost.dev.watch"),
    ("plughost.host.manager", "plughost.dev.install"),
}


def test_layers_import_only_layers_above_them() -> None:
    wrong = []
    for name, targets in GRAPH.items():
        mine = _layer(name)
        for target in targets:
            theirs = _layer(target)
            downward = mine is not None and theirs is not None and theirs > mine
            if downward and (name, target) not in DOWNWARD_ALLOWED:
                wrong.append(f"{name} imports {target}")
    assert sorted(wrong) == []


# What host objects are called where they are used (``manager._x``, ``slot._y`` ...).
HOST_OBJECT = re.compile(r"_?(manager|mgr|pm|slot|locked|table|restarter|installer|health)s?")


def _reach_ins(tree: ast.AST, privates: set[str]) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr in privates):
            continue
        owner = node.value
        label = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if HOST_OBJECT.fullmatch(label):
            yield node.lineno, f"{label}.{node.attr}"


def test_nothing_outside_host_touches_a_private_member_of_a_host_class() -> None:
    privates = _host_privates()
    assert {"_lock", "_backend", "_slots"} <= privates, "the scan must see the host's privates"
    found = []
    for name, path in MODULES.items():
        if not name.startswith("plughost.host."):
            tree = ast.parse(path.read_text())
            found += [
                f"{path.relative_to(PACKAGE)}:{n} {what}" for n, what in _reach_ins(tree, privates)
            ]
    assert found == []


def test_the_checks_can_fail() -> None:
    """Fed a made-up circle and a made-up reach-in, the checks report them."""
    saved = dict(GRAPH)
    try:
        GRAPH["plughost.errors"] = {"plughost.host.manager"}
        GRAPH["plughost.host.manager"] = GRAPH["plughost.host.manager"] | {"plughost.errors"}
        assert any({"plughost.errors", "plughost.host.manager"} <= set(c) for c in _circles())
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
    tree = ast.parse("async def f(table):\n    async with table.get('x')._lock:\n        pass\n")
    assert [what for _, what in _reach_ins(tree, _host_privates())] == []  # a call, not a name
    tree = ast.parse("def f(slot, manager):\n    return slot._backend, manager.table._slots\n")
    assert [w for _, w in _reach_ins(tree, _host_privates())] == ["slot._backend", "table._slots"]
