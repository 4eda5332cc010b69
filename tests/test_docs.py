"""The docs/ pages exist, say what the code does, and nothing points elsewhere.

The settings and the phase table are generated from the code by scripts in
``scripts/``; these tests fail when a page is stale, naming the script to run.
The hand-written pages are checked for completeness where the code has a list
(every plugin.yaml key, every event, every error type), and every link between
the README and the pages must land on a file and a heading that exist.
"""

from __future__ import annotations

import importlib.util
import re
import types
from pathlib import Path

import pytest
from pydantic import BaseModel

import plughost.packages.signing  # its error classes join the family
import plughost.store  # noqa: F401  (so does StateFileCorrupt)
from plughost import errors
from plughost.events import ALL_EVENTS
from plughost.metadata import PluginMeta

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = ("concepts", "plugin-yaml", "lifecycle", "protocol", "configuration", "publishing")


def _script(name: str) -> types.ModuleType:
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", PAGES)
def test_every_page_exists(page: str) -> None:
    text = (DOCS / f"{page}.md").read_text()
    assert text.startswith("# ") and len(text) > 1000


@pytest.mark.parametrize(
    ("script", "page"),
    [("gen_config_docs", "configuration"), ("gen_lifecycle_docs", "lifecycle")],
)
def test_generated_pages_are_current(script: str, page: str) -> None:
    text = (DOCS / f"{page}.md").read_text()
    assert _script(script).render_page(text) == text, (
        f"docs/{page}.md is stale: run .venv/bin/python scripts/{script}.py"
    )


def test_the_lifecycle_page_has_every_allowed_move() -> None:
    from plughost.phases import ALLOWED_TRANSITIONS

    text = (DOCS / "lifecycle.md").read_text()
    for source, targets in ALLOWED_TRANSITIONS.items():
        for target in targets:
            assert f"    {source.value} --> {target.value}\n" in text


def test_the_configuration_page_has_every_setting() -> None:
    from plughost.settings import Settings

    text = (DOCS / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"| `{name}` |" in text, name


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        key = prefix + name
        keys.append(key)
        annotation = field.annotation
        inner = getattr(annotation, "__args__", (annotation,))
        for candidate in (annotation, *inner):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                listed = getattr(annotation, "__origin__", None) is list
                keys += _keys(candidate, f"{key}[]." if listed else f"{key}.")
    return keys


def test_the_plugin_yaml_page_has_every_key() -> None:
    text = (DOCS / "plugin-yaml.md").read_text()
    keys = _keys(PluginMeta)
    assert {"id", "author.email", "maintainers[].name", "theme.colors.tertiary"} <= set(keys)
    for key in keys:
        assert f"| `{key}` |" in text, f"docs/plugin-yaml.md does not describe {key}"


def _import_every_module() -> None:
    """Error classes live beside their concept: load them all, whatever ran before."""
    import importlib
    import pkgutil

    import plughost

    for module in pkgutil.walk_packages(plughost.__path__, "plughost."):
        if not any(part in module.name for part in ("._proto", ".examples", "__main__")):
            importlib.import_module(module.name)


def test_the_concepts_page_has_every_event_and_error_type() -> None:
    _import_every_module()
    text = (DOCS / "concepts.md").read_text()
    for name in ALL_EVENTS:
        assert f"`{name}`" in text, f"docs/concepts.md does not list event {name}"

    def family(cls: type[errors.PlughostError]) -> list[type[errors.PlughostError]]:
        return [cls, *(c for sub in cls.__subclasses__() for c in family(sub))]

    for cls in family(errors.PlughostError)[1:]:
        assert f"| `{cls.type}` | {cls.status} |" in text, f"error type {cls.type}"


# -- references ---------------------------------------------------------------------


_DANGLING = re.compile("DESIGN" + r" section|DESIGN\.md|PROTOCOL\.md|DESIGN §")
_TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".go", ".sh", ".txt", ".html", ".js"}


def _texts() -> list[Path]:
    files = [REPO / "README.md"]
    for top in ("docs", "src", "tests"):
        for path in (REPO / top).rglob("*"):
            parts = set(path.parts)
            if (
                path.is_file()
                and path.suffix in _TEXT_SUFFIXES
                and "__pycache__" not in parts
                and not any(p.endswith(".egg-info") for p in parts)
                and path != Path(__file__).resolve()
            ):
                files.append(path)
    return files


def test_nothing_refers_to_design_notes_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in _texts()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if _DANGLING.search(line)
    ]
    assert found == [], "link to the docs/ pages instead:\n" + "\n".join(found)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def test_links_between_the_readme_and_the_pages_land() -> None:
    sources = [REPO / "README.md", *(DOCS / f"{page}.md" for page in PAGES)]
    checked = 0
    for source in sources:
        text = re.sub(r"```.*?```", "", source.read_text(), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file, _, anchor = target.partition("#")
            path = (source.parent / file).resolve() if file else source
            assert path.exists(), f"{source.name}: link to missing {target}"
            if anchor and path.suffix == ".md":
                assert anchor in _anchors(path), f"{source.name}: no heading for {target}"
            checked += 1
    assert checked >= 10


def test_every_test_security_md_names_exists() -> None:
    """SECURITY.md's tables name the test behind each defence; a renamed or deleted test
    would leave a claim without proof."""
    text = (REPO / "SECURITY.md").read_text()
    named: list[tuple[str, str]] = []
    current = ""
    for cell in re.findall(r"`(tests/[\w/]+\.py)((?:::\w+)?)`|`::(\w+)`", text):
        path, test, continued = cell
        if path:
            current = path
            if test:
                named.append((current, test[2:]))
        elif continued:
            named.append((current, continued))
    assert len(named) > 20
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^(async )?def {name}\(", (REPO / path).read_text(), re.M)
    ]
    assert not missing, missing
