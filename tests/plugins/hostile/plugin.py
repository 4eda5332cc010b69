"""A plugin that behaves as an attacker would, for the sandbox tests.

Before serving it tries each attack and writes one line per attempt on stderr:
``hostile: <name>: blocked (<why>)`` or ``hostile: <name>: SUCCEEDED (<what>)``.
The targets come from the environment the test sets (``extra_env``):

  ssh           read $HOME/.ssh/id_rsa
  host_environ  read /proc/$HOSTILE_HOST_PID/environ
  other_plugin  read $HOSTILE_OTHER_FILE (a file of another plugin)
  write         create a file in its own plugin directory and in $HOSTILE_WRITE_DIR
  connect       connect to 127.0.0.1:$HOSTILE_PORT
  exec          run /bin/sh (another program than its own)
  fork          start $HOSTILE_FORKS (10000) processes

and, as a control that the plugin did run, ``hostile: data: ok`` once it wrote
to its own data directory ($PLUGHOST_DATA_DIR). With ``HOSTILE_OOM_MB`` it then
allocates that much memory while serving.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from plughost.sdk import PluginServer, serve


def report(name: str, attempt: Callable[[], str]) -> None:
    try:
        what = attempt()
    except Exception as exc:  # every failure is the expected outcome
        print(f"hostile: {name}: blocked ({type(exc).__name__}: {exc})", file=sys.stderr)
    else:
        print(f"hostile: {name}: SUCCEEDED ({what})", file=sys.stderr)
    sys.stderr.flush()


def read(path: str) -> str:
    return f"read {len(Path(path).read_bytes())} bytes of {path}"


def write() -> str:
    written = []
    for directory in (Path.cwd(), Path(os.environ["HOSTILE_WRITE_DIR"])):
        with contextlib.suppress(OSError):
            (directory / "hostile-was-here").write_text("x")
            written.append(str(directory))
    if not written:
        raise PermissionError("no directory outside the data directory was writable")
    return "wrote in " + ", ".join(written)


def connect() -> str:
    with socket.create_connection(("127.0.0.1", int(os.environ["HOSTILE_PORT"])), timeout=2):
        return "connected"


def run_program() -> str:
    done = subprocess.run(["/bin/sh", "-c", "echo started"], capture_output=True, timeout=10)
    if b"started" not in done.stdout:
        raise OSError(f"/bin/sh exited {done.returncode}: {done.stderr.decode().strip()}")
    return "ran /bin/sh"


def fork() -> str:
    wanted = int(os.environ.get("HOSTILE_FORKS", "10000"))
    children: list[int] = []
    try:
        for _ in range(wanted):
            pid = os.fork()
            if pid == 0:
                signal.pause()
                os._exit(0)
            children.append(pid)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} after {len(children)} processes") from None
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        for pid in children:
            os.waitpid(pid, 0)
    return f"started {len(children)} processes"


def data() -> None:
    (Path(os.environ["PLUGHOST_DATA_DIR"]) / "mine").write_text("ok")
    print("hostile: data: ok", file=sys.stderr)


def hog(megabytes: int) -> None:
    time.sleep(0.2)
    print(f"hostile: allocating {megabytes} MiB", file=sys.stderr, flush=True)
    held = [bytearray(b"\x01") * (1 << 20) for _ in range(megabytes)]
    print(f"hostile: holding {len(held)} MiB", file=sys.stderr, flush=True)


def main() -> None:
    report("ssh", lambda: read(os.path.expanduser("~/.ssh/id_rsa")))
    report("host_environ", lambda: read(f"/proc/{os.environ['HOSTILE_HOST_PID']}/environ"))
    report("other_plugin", lambda: read(os.environ["HOSTILE_OTHER_FILE"]))
    report("write", write)
    report("connect", connect)
    report("exec", run_program)
    report("fork", fork)
    data()
    if os.environ.get("HOSTILE_OOM_MB"):
        threading.Thread(target=hog, args=(int(os.environ["HOSTILE_OOM_MB"]),)).start()
    serve(PluginServer())


if __name__ == "__main__":
    main()
