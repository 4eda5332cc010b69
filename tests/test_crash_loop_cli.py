"""A crash loop as `plughost run` tells it: one line per crash, then what to do.

Real host process, the bundled crasher example (dies 0.2 s after it starts).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from cli_helpers import EXAMPLES, Host, new_root
from waiting import wait_until

TOML = """\
start_timeout = 20.0
stop_grace = 2.0
kill_grace = 1.0
backoff_initial = 0.2
backoff_max = 5.0
stable_time = 5.0
recovery_attempts = 3

[extra_env]
CRASHER_AFTER_MS = "200"
"""


def test_plughost_run_prints_every_crash_and_how_to_go_on(tmp_path: Path) -> None:
    root = new_root(tmp_path / "root", TOML)
    shutil.copytree(EXAMPLES / "crasher", root / "plugins" / "crasher")
    host = Host(root, "--no-examples")
    try:
        wait_until(
            lambda: "gave up recovering" in host.output,
            timeout=60,
            message=lambda: f"the host to give up:\n{host.output}",
        )
    finally:
        output = host.stop()
    crashes = [line for line in output.splitlines() if "crasher crashed" in line]
    assert len(crashes) == 4, output  # attempts 1, 2 and 3, then the crash that ends it
    assert "exited unexpectedly" not in output, "one line per crash, not a log line beside it"
    for n, line in enumerate(crashes[:3], start=1):
        assert f"attempt {n} of 3, next try in" in line, line
        assert "(exit 3)" in line and "simulated fatal error" in line, line
    waits = [float(m) for m in re.findall(r"next try in ([\d.]+) s", output)]
    assert waits == sorted(waits) and len(set(waits)) == 3, f"backoff must grow: {waits}"
    assert "next try" not in crashes[3]
    assert "recovered" not in output, "never stable, never called recovered"
    assert "plughost logs crasher" in output and "plughost retry crasher" in output
    assert "last log lines:" in output
