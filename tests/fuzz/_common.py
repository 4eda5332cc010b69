"""What every fuzz target shares: instrumentation, the atheris entry point and a
fallback mutator, so that each target runs the same way with or without atheris.

A target module defines ``test_one_input(data: bytes) -> None`` (raises only on a
real bug) and ``SEEDS`` (a few interesting inputs), imports the code under test
inside ``instrumented(__name__, ...)`` and ends with ``main(test_one_input, SEEDS)``.

* ``python tests/fuzz/fuzz_X.py -atheris_runs=N [corpus_dir ...]`` fuzzes with
  atheris (libFuzzer flags pass through; without a corpus directory the seeds are
  written to a temporary one). Without atheris installed the same command runs
  the fallback: the seeds, then N seeded random mutations of them.
* ``tests/fuzz/test_fuzz_targets.py`` calls ``smoke(...)`` under pytest, no atheris.
"""

from __future__ import annotations

import contextlib
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # the smoke tests and the fallback fuzzer do not need it
    atheris = None

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:  # run as a script: make tests/ helpers (hostile.py) importable
    sys.path.insert(0, str(TESTS))

Target = Callable[[bytes], None]

_INTERESTING = [
    b"",
    b"\x00",
    b"\xff",
    b"\n",
    b"|",
    b"{",
    b"[",
    b":",
    b'"',
    b"&a",
    b"*a",
    b"\\u",
    b"9" * 40,
    b"-1",
    b"\x1f\x8b",
]


def instrumented(module_name: str, *packages: str) -> AbstractContextManager[Any]:
    """Instrument imports of ``packages`` for coverage feedback, when fuzzing for real.

    Only when the target runs as a script under atheris; under pytest (or when the
    package was already imported) this is a no-op.
    """
    if module_name != "__main__" or atheris is None:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=list(packages) or ["plughost"])


def mutate(data: bytes, rng: random.Random, seeds: Sequence[bytes]) -> bytes:
    """One to four random edits of ``data``: flips, inserts, deletes, splices, repeats."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif op == 2 and buf:  # delete a run
            del buf[pos : pos + rng.randint(1, 16)]
        elif op == 3:  # insert a token parsers care about
            buf[pos:pos] = rng.choice(_INTERESTING)
        elif op == 4 and seeds:  # splice in part of another seed
            other = rng.choice(seeds)
            a = rng.randint(0, len(other))
            buf[pos:pos] = other[a : a + rng.randint(1, 64)]
        elif op == 5:  # truncate
            del buf[pos:]
        elif op == 6 and buf:  # repeat a slice (nesting, long fields)
            a = rng.randrange(len(buf))
            chunk = bytes(buf[a : a + rng.randint(1, 8)])
            buf[pos:pos] = chunk * rng.randint(2, 64)
    return bytes(buf)


def inputs(seeds: Sequence[bytes], runs: int, seed: int = 0) -> Iterator[bytes]:
    """The seeds, then ``runs`` mutations of them (the same for a given ``seed``)."""
    yield from seeds
    rng = random.Random(seed)
    pool = list(seeds) or [b""]
    for _ in range(runs):
        data = mutate(rng.choice(pool), rng, pool)
        if rng.random() < 0.3:  # mutations of mutations reach deeper
            data = mutate(data, rng, pool)
        yield data


def smoke(target: Target, seeds: Sequence[bytes], runs: int = 200, seed: int = 0) -> int:
    """Run ``target`` over the seeds and ``runs`` mutations; return how many ran."""
    count = 0
    for data in inputs(seeds, runs, seed):
        try:
            target(data)
        except BaseException as exc:
            exc.add_note(f"fuzz input: {data[:2000]!r}")
            raise
        count += 1
    return count


def _option(argv: Sequence[str], name: str, default: int) -> int:
    for arg in argv:
        if arg.startswith(f"-{name}="):
            return int(arg.split("=", 1)[1])
    return default


def main(target: Target, seeds: Sequence[bytes]) -> None:
    """Entry point of a target script: atheris when installed, else the fallback."""
    argv = list(sys.argv)
    if atheris is None:
        runs = _option(argv, "atheris_runs", _option(argv, "runs", 10_000))
        seed = _option(argv, "seed", 0)
        print(f"atheris is not installed: running the fallback mutator ({runs} runs)")
        done = smoke(target, seeds, runs, seed)
        print(f"done: {done} inputs, no failure")
        return
    if not any(not arg.startswith("-") for arg in argv[1:]):
        # No corpus directory given: use a per-target one in the temp directory,
        # seeded on first use, which libFuzzer then grows from run to run.
        corpus = Path(tempfile.gettempdir()) / "plughost-fuzz-corpus" / Path(argv[0]).stem
        corpus.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(seeds):
            (corpus / f"seed-{i:03d}").write_bytes(data)
        argv.append(str(corpus))
        print(f"corpus: {corpus}")
    atheris.Setup(argv, target)
    atheris.Fuzz()
