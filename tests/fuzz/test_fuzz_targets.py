"""Smoke run of the atheris targets without atheris, so CI exercises them.

Each target's ``test_one_input`` runs over its seeds (which include every input
that once found a bug) and a fixed set of seeded random mutations of them. The
real fuzzing is ``python tests/fuzz/fuzz_X.py -atheris_runs=N`` (README.md).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from _common import inputs, mutate, smoke  # noqa: E402

# target: mutations per run (the archive target extracts into a fresh directory per input)
TARGETS = {"handshake": 2000, "metadata": 300, "devinfo": 300, "archive": 60}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_its_seeds_and_mutations(name: str) -> None:
    module = importlib.import_module(f"fuzz_{name}")
    assert module.SEEDS, "a target needs seeds"
    ran = smoke(module.test_one_input, module.SEEDS, runs=TARGETS[name], seed=2024)
    assert ran == len(module.SEEDS) + TARGETS[name]


def test_targets_are_scripts() -> None:
    for name in TARGETS:
        text = (HERE / f"fuzz_{name}.py").read_text()
        assert 'if __name__ == "__main__":\n    main(test_one_input, SEEDS)' in text


def test_mutations_are_reproducible() -> None:
    seeds = [b"1|1|unix|/s|grpc|", b"id: x\nversion: 1\n"]
    assert list(inputs(seeds, 50, seed=7)) == list(inputs(seeds, 50, seed=7))
    assert list(inputs(seeds, 50, seed=7)) != list(inputs(seeds, 50, seed=8))
    import random

    rng = random.Random(0)
    assert all(isinstance(mutate(b"", rng, seeds), bytes) for _ in range(100))


def test_a_failing_input_is_reported() -> None:
    def target(data: bytes) -> None:
        if b"boom" in data:
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom") as info:
        smoke(target, [b"ok", b"boom"], runs=0)
    assert any("fuzz input: b'boom'" in note for note in info.value.__notes__)
