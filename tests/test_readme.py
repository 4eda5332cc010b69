"""Every snippet of the README's "Using it as a library" guide runs, and prints what it says.

A snippet is a ```python block preceded by ``<!-- readme-test: NAME -->``. It runs
as its own program in a directory holding ``root/plugins/hello`` (the bundled
example), with the example's generated stubs importable. Each ``# prints: X``
comment is a line the program must print, in that order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_plugins import EXAMPLES, REPO

SNIPPET = re.compile(r"<!-- readme-test: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.S)
PRINTS = re.compile(r"# prints: (.*)$", re.M)


def _snippets() -> dict[str, str]:
    found = {m["name"]: m["code"] for m in SNIPPET.finditer((REPO / "README.md").read_text())}
    assert found, "the README's library guide has no tested snippets"
    return found


SNIPPETS = _snippets()


# Snippets that need a plugin beyond hello: the Go plugin they talk to.
GO_PLUGINS = {"broker": "gobidir"}


def test_the_guide_has_the_snippets_it_promises() -> None:
    assert {"call", "restarts", "controllers", "events", "broker"} <= set(SNIPPETS)


@pytest.fixture(scope="module")
def go_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gobuild import go_plugins

    return go_plugins(tmp_path_factory)


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippet_runs_and_prints_what_it_says(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code = SNIPPETS[name]
    shutil.copytree(
        EXAMPLES / "hello",
        tmp_path / "root" / "plugins" / "hello",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    if name in GO_PLUGINS:
        built: Path = request.getfixturevalue("go_build")
        shutil.copytree(built / GO_PLUGINS[name], tmp_path / "root" / "plugins" / GO_PLUGINS[name])
    program = tmp_path / f"{name}.py"
    program.write_text(code)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES / "hello"), str(REPO / "src")]),
    }
    done = subprocess.run(
        [sys.executable, str(program)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"snippet {name!r} failed:\n{done.stderr[-3000:]}"
    expected = [line.strip() for line in PRINTS.findall(code)]
    printed = [line.strip() for line in done.stdout.splitlines()]
    assert printed == expected, f"snippet {name!r} printed {printed}, README says {expected}"
