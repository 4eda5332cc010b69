"""Real servers for the registry's tests: a throw-away PostgreSQL cluster (Debian's
``postgresql``) and an S3-compatible object store (SeaweedFS's ``weed``) as its own process.

``scripts/install_services.sh`` installs both (scripts/test.sh runs it). Without
them the tests skip on a developer's machine saying so, and fail in CI
(tests/toolchains.py's policy). PostgreSQL refuses to run as root, so as root
the cluster is made and run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from toolchains import unavailable
from waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
WEED = REPO / ".cache" / "services" / "bin" / "weed"
INSTALL = "run: bash scripts/install_services.sh"
S3_ACCESS_KEY = "plughost"
S3_SECRET_KEY = "plughost-test-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- PostgreSQL ---------------------------------------------------------------------------
def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    return found[-1].parent if found else None


def require_postgres() -> Path:
    found = postgres_bin()
    if found is None:
        unavailable("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)", INSTALL)
    return found


@dataclass
class Postgres:
    """A running cluster; :meth:`database` makes a fresh database in it."""

    bin: Path
    port: int
    user: str = "plughost"

    def database(self) -> str:
        """A new empty database's asyncpg URL."""
        name = f"registry_{uuid.uuid4().hex[:12]}"
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
             name],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{name}"


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Postgres]:
    """initdb + pg_ctl start on 127.0.0.1 at a free port, in a temporary directory."""
    bin_dir = require_postgres()
    top = Path(tempfile.mkdtemp(prefix="plughost-pg-"))
    top.chmod(0o755)  # the postgres user must reach it
    data, log = top / "data", top / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(top, "postgres")
    port = free_port()
    try:
        subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "plughost",
                          "--auth=trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        # A throw-away cluster (deleted below): no fsync, no waiting for commits to reach
        # the disk, no full-page writes. Crash safety buys nothing here and costs the
        # tests and the registry benchmark CPU and time.
        options = (
            f"-p {port} -k {top} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                          str(log), "-w", "-t", "60", "start"]),
            check=True, capture_output=True, timeout=90,
        )  # fmt: skip
        yield Postgres(bin_dir, port)
    finally:
        subprocess.run(
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                          "stop"]),
            capture_output=True, timeout=60,
        )  # fmt: skip
        shutil.rmtree(top, ignore_errors=True)


# -- S3 (SeaweedFS) -----------------------------------------------------------------------
def require_weed() -> Path:
    if not os.access(WEED, os.X_OK):
        unavailable(f"SeaweedFS's weed is not built ({WEED.relative_to(REPO)})", INSTALL)
    return WEED


@dataclass
class S3Store:
    """A running object store: its endpoint and the environment boto3 reads."""

    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def bucket(self) -> str:
        """A new empty bucket's name."""
        import boto3

        name = f"registry-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name


@contextlib.contextmanager
def s3_server() -> Iterator[S3Store]:
    """``weed server -s3`` (master, volume, filer, S3 gateway) in a temporary directory,
    with one identity, so requests and pre-signed URLs are signature-checked."""
    weed = require_weed()
    top = Path(tempfile.mkdtemp(prefix="plughost-s3-"))
    config = top / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "plughost",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # weed also listens on each port + 10000 (gRPC): pick ports whose pair is free too.
    ports = []
    while len(ports) < 4:
        port = free_port()
        if port + 10000 < 65536 and port not in ports:
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            ports.append(port)
    master, volume, filer, s3 = ports
    (top / "data").mkdir()
    log = open(top / "weed.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [str(weed), "server", f"-dir={top / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
         f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
         "-s3", f"-s3.port={s3}", f"-s3.config={config}", "-volume.max=20",
         "-master.volumeSizeLimitMB=64"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{s3}"
    store = S3Store(endpoint)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited: {(top / 'weed.log').read_text()[-2000:]}")
            try:
                store.bucket()
            except Exception:
                return False
            return True

        wait_until(ready, timeout=60, interval=0.25, message="weed's S3 gateway to answer")
        yield store
    finally:
        # A throw-away store: weed's graceful stop takes ~20 s, and nothing needs keeping.
        process.kill()
        process.wait(timeout=20)
        log.close()
        shutil.rmtree(top, ignore_errors=True)


# -- fixtures: import them into a test module to use them ----------------------------------
@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A throw-away PostgreSQL cluster for the module's tests."""
    with postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the default SQLite file in the directory; else a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    cluster: Postgres = request.getfixturevalue("postgres")
    return cluster.database()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Store]:
    """A throw-away S3-compatible store (SeaweedFS) for the module's tests."""
    with s3_server() as store:
        yield store


@pytest.fixture
def s3_env(s3: S3Store, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """The store's endpoint and credentials where boto3 looks: the environment."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3
