"""Drive ``plughost`` as a subprocess: one-shot commands and a background ``plughost run``.

Every command runs with a clean environment (no PLUGHOST_* of the developer's
shell), a wide terminal (so tables are not cut) and, unless a test gives one,
the root as ``--root``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
PLUGHOST = [sys.executable, "-m", "plughost"]
EXAMPLES = REPO / "src" / "plughost" / "examples"

# Quick plugin timings for the roots the tests create (written before the first run).
FAST_TOML = """\
start_timeout = 20.0
stop_grace = 2.0
kill_grace = 1.0
backoff_initial = 0.05
backoff_max = 0.2

[extra_env]
SLOWSTART_MS = "200"
"""


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PLUGHOST_", "OMNIVIEW", "PLUGIN_", "MAGIC_COOKIE"))
    }
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "GOFLAGS": "-buildvcs=false"})
    env.update(extra)
    return env


@dataclasses.dataclass
class Result:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    def ok(self) -> Result:
        assert self.returncode == 0, f"{' '.join(self.args)} -> {self.returncode}\n{self.out}"
        return self


def cli(
    *args: str | os.PathLike[str],
    root: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    cwd: Path | None = None,
    timeout: float = 90.0,
) -> Result:
    argv = [str(a) for a in args]
    if root is not None:
        argv += ["--root", str(root)]
    proc = subprocess.run(
        [*PLUGHOST, *argv],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else clean_env(),
        input=input if input is not None else "",
        cwd=cwd,
        timeout=timeout,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def new_root(path: Path, toml: str = FAST_TOML) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "plughost.toml").write_text(toml)
    return path


def socket_of(root: Path) -> Path:
    return root / "run" / "plughost.sock"


class Host:
    """A ``plughost run --root ROOT`` in the background, until ``stop()``."""

    def __init__(self, root: Path, *extra: str, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.log = root.parent / f"{root.name}-run-{time.monotonic_ns()}.log"
        self._out = open(self.log, "w")  # noqa: SIM115 (closed by stop)
        self.proc = subprocess.Popen(
            [*PLUGHOST, "run", "--root", str(root), *extra],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else clean_env(),
            start_new_session=True,
        )
        self.wait_ready()

    @property
    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the service answers and the host printed its table (examples installed)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"plughost run exited {self.proc.returncode}:\n{self.output}")
            return socket_of(self.root).exists() and "Ctrl-C stops the host" in self.output

        wait_until(
            ready,
            timeout=timeout,
            interval=0.05,
            message=lambda: f"plughost run to get ready:\n{self.output}",
        )

    def api(self) -> httpx.Client:
        transport = httpx.HTTPTransport(uds=str(socket_of(self.root)))
        return httpx.Client(transport=transport, base_url="http://plughost", timeout=30)

    def plugin_pids(self) -> dict[str, int]:
        with self.api() as client:
            return {p["id"]: p["pid"] for p in client.get("/v1/plugins").json() if p["pid"]}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> str:
        """Signal the host, wait for it, return its output; the process must exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                message = f"plughost run did not stop on {sig}:\n{self.output}"
                raise AssertionError(message) from None
        self._out.close()
        output = self.output
        assert self.proc.returncode == 0, f"plughost run exited {self.proc.returncode}:\n{output}"
        return output

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._out.close()


def root_processes(root: Path) -> list[psutil.Process]:
    """Every live process whose command line runs something inside ``<root>/plugins``."""
    needle = str(root / "plugins") + os.sep
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE and needle in "\0".join(proc.cmdline()):
                found.append(proc)
    return found


def assert_nothing_running(root: Path, pids: Sequence[int] = ()) -> None:
    def left_running() -> tuple[list[int], list[psutil.Process]]:
        alive = [p for p in pids if psutil.pid_exists(p) and _not_zombie(p)]
        return alive, root_processes(root)

    wait_until(
        lambda: left_running() == ([], []),
        timeout=5.0,
        interval=0.05,
        message=lambda: (
            "nothing left running; left running (pids, processes): " + repr(left_running())
        ),
    )
    assert not socket_of(root).exists(), "the service socket was left behind"


def _not_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def example_package(tmp: Path, example: str, version: str | None = None) -> Path:
    """Pack a copy of a bundled example (optionally as another version); the package path."""
    source = tmp / f"{example}-{version or 'src'}"
    shutil.copytree(EXAMPLES / example, source, ignore=shutil.ignore_patterns("__pycache__"))
    if version:
        meta = source / "plugin.yaml"
        meta.write_text(re.sub(r"(?m)^version: .*$", f"version: {version}", meta.read_text()))
    out = tmp / f"{example}-{version or 'orig'}.tar.gz"
    cli("pack", source, "-o", out).ok()
    return out
