"""The original client's every call on both deployments: the SQLite default with packages
in the registry's directory, and PostgreSQL with packages in an S3-compatible object
store (real servers, tests/services.py). The Go client signs in, runs the device flow,
submits through the returned upload URLs, reviews, records downloads and reads; what it
sees is the same on both once ids, times and addresses are taken out. With S3 the
upload URLs and the download's 302 point at the store itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_accounts_helpers import PASSWORD, Live, live_registry
from services import Postgres, S3Store
from test_registry_server import go_client, make_package, run_go  # noqa: F401  (a fixture)

from plughost.packages.signing import (
    TrustedKey,
    generate_keypair,
    key_id_for,
    verify_checksum_signature,
    verify_manifest,
)
from plughost.registry import submissions
from plughost.registry.catalog import KEY_FILE
from plughost.registry.models import current_platform

pytestmark = pytest.mark.timeout(180)
PLATFORM = current_platform()
OTHER_PLATFORM = "linux_arm64" if PLATFORM != "linux_arm64" else "linux_amd64"
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def publish_through_submission(live: Live, package: Path, plugin_id: str, version: str,
                               arches: list[str]) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """As dev of acme: create, PUT to each upload URL (plain HTTP, as the original client
    does), submit; then approve as admin. The published submission and the URLs used."""
    made, urls = live.new_submission(plugin_id, version, arches, changelog="via submission")
    assert set(urls) == set(arches)
    for url in urls.values():
        # The object store's first write in a bucket grows a volume: seconds, not a hang.
        put = httpx.put(
            url,
            content=package.read_bytes(),
            headers={"Content-Type": "application/gzip"},
            timeout=30,
        )
        assert put.status_code == 200, put.text
    submitted = live.data("POST", f"/v1/submissions/{made['id']}/submit", "dev")
    assert submitted["status"] == "pending_review", submitted["validation_result"]
    done = live.data("POST", f"/v1/submissions/{made['id']}/approve", "admin")
    assert done["status"] == "published"
    return done, urls


def normalized(value: Any, url: str) -> Any:
    """``value`` with what differs by deployment replaced: the server's address, times,
    ids (numbered in order of appearance, so equal structure still compares), codes."""
    ids: dict[str, str] = {}

    def text(s: str) -> str:
        s = TIME.sub("TIME", s.replace(url, "SERVER"))
        return UUID.sub(lambda m: ids.setdefault(m.group(), f"ID{len(ids)}"), s)

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: "CODE" if k == "user_code" else walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return text(v) if isinstance(v, str) else v

    return walk(value)


def original_client(go_binary: Path, live: Live, package: Path, out: Path) -> dict[str, Any]:
    """Every call of the Go client against ``live``: ``service`` (signed in) and ``read``."""
    first, _ = publish_through_submission(live, package, "gofirst", "1.0.0", [PLATFORM])
    assert first["plugin_id"] == "gofirst"
    godemo = make_package(out.parent, "godemo", "1.0.0")
    args = ["-service", "-url", live.url, "-email", "dev@example.invalid", "-password", PASSWORD,
            "-publisher", "acme", "-plugin", "godemo", "-version", "1.0.0",
            "-package", str(godemo)]  # fmt: skip
    service = subprocess.run([str(go_binary), *args], capture_output=True, text=True, timeout=90)
    assert service.returncode == 0, service.stderr
    public_key = (live.root / "registry.pub").read_text().strip()
    read = run_go(go_binary, live.url, public_key, "gofirst", "1.0.0", out)
    assert read.returncode == 0, read.stderr  # checksum and signature verified by the client
    assert out.read_bytes() == package.read_bytes()
    return {"service": json.loads(service.stdout), "read": json.loads(read.stdout)}


@pytest.mark.interop
def test_original_client_alike_on_sqlite_and_on_postgresql_with_s3(
    tmp_path: Path,
    go_client: Path,  # noqa: F811
    postgres: Postgres,
    s3_env: S3Store,
) -> None:
    package = make_package(tmp_path, "gofirst", "1.0.0")
    key, _ = generate_keypair()  # one key for both, so signatures compare too
    seen: dict[str, Any] = {}
    bucket = s3_env.bucket()
    deployments = {
        "sqlite": {},
        "postgresql+s3": {"database": postgres.database(), "storage": f"s3://{bucket}/market"},
    }
    for name, options in deployments.items():
        root = tmp_path / name
        root.mkdir()
        (root / KEY_FILE).write_bytes(key)
        (root / KEY_FILE).chmod(0o600)
        work = tmp_path / f"{name}-out"
        work.mkdir()
        for live in live_registry(root, **options):
            result = original_client(go_client, live, package, work / "downloaded.tar.gz")
            location = result["read"]["download_url"]
            if name == "sqlite":
                assert location.startswith(f"{live.url}/v1/artifacts/gofirst/1.0.0/")
            else:
                assert location.startswith(f"{s3_env.endpoint}/{bucket}/market/packages/gofirst/")
                assert "X-Amz-Signature=" in location
            result["read"]["download_url"] = "LOCATION"
            result["read"]["downloaded"] = "OUT"
            seen[name] = normalized(result, live.url)

    service = seen["sqlite"]["service"]
    assert service["submitted_status"] == "pending_review"
    assert service["withdrawn_status"] == "withdrawn"
    assert service["review"]["rating"] == 4 and service["download_stats"]["total_count"] == 1
    assert seen["sqlite"]["read"]["plugin"]["id"] == "gofirst"
    assert seen["sqlite"] == seen["postgresql+s3"]


def test_s3_upload_urls_point_at_the_store_and_the_download_is_signed(
    tmp_path: Path, postgres: Postgres, s3_env: S3Store
) -> None:
    bucket = s3_env.bucket()
    storage = f"s3://{bucket}/market"
    package = make_package(tmp_path, "cloudsub", "1.0.0")
    root = tmp_path / "registry"
    for live in live_registry(root, database=postgres.database(), storage=storage):
        arches = [PLATFORM, OTHER_PLATFORM]
        done, urls = publish_through_submission(live, package, "cloudsub", "1.0.0", arches)
        for arch, url in urls.items():
            store_key = f"{bucket}/market/submissions/{done['id']}/{arch}.tar.gz"
            assert url.startswith(f"{s3_env.endpoint}/{store_key}?"), url
            assert "X-Amz-Signature=" in url
        # The store checks the signature of what was handed out.
        forged = urls[PLATFORM].replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert httpx.put(forged, content=b"junk", timeout=30).status_code == 403
        assert not (root / "submissions").exists()  # nothing went through the server's disk

        version = live.data("GET", "/v1/plugins/cloudsub/versions/1.0.0")
        assert set(version["artifacts"]) == set(arches)
        public_key = (root / "registry.pub").read_text().strip()
        for arch in arches:
            redirect = httpx.get(f"{live.url}/v1/plugins/cloudsub/download/1.0.0/{arch}")
            assert redirect.status_code == 302
            location = redirect.headers["location"]
            assert location.startswith(
                f"{s3_env.endpoint}/{bucket}/market/packages/cloudsub/1.0.0/{arch}.tar.gz?"
            )
            fetched = httpx.get(location)
            assert fetched.status_code == 200 and fetched.content == package.read_bytes()
            artifact = version["artifacts"][arch]
            assert artifact["checksum"] == hashlib.sha256(fetched.content).hexdigest()
            verify_checksum_signature(artifact["checksum"], artifact["signature"], public_key)
            trusted = TrustedKey(key_id=key_id_for(public_key), public_key_hex=public_key)
            manifest = verify_manifest(artifact["manifest"], [trusted])
            assert (manifest.id, manifest.version) == ("cloudsub", "1.0.0")
        history = live.data("GET", f"/v1/submissions/{done['id']}/history", "dev")
        actions = [h["action"] for h in history]
        assert actions[-2:] == ["submission.approved", "submission.published"]


def test_an_oversized_upload_to_the_store_fails_validation(
    tmp_path: Path, s3_env: S3Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-signed PUT to the store has no size limit: submitting enforces it, reading
    the object a piece at a time rather than whole."""
    monkeypatch.setattr(submissions, "MAX_UPLOAD_BYTES", 100)
    storage = f"s3://{s3_env.bucket()}/market"
    package = make_package(tmp_path, "toolarge", "1.0.0")
    assert package.stat().st_size > 100
    for live in live_registry(tmp_path / "registry", storage=storage):
        made, urls = live.new_submission("toolarge", "1.0.0", [PLATFORM])
        url = urls[PLATFORM]
        assert url.startswith(s3_env.endpoint)
        assert httpx.put(url, content=package.read_bytes(), timeout=30).status_code == 200
        done = live.data("POST", f"/v1/submissions/{made['id']}/submit", "dev")
        assert done["status"] == "validation_failed"
        result = json.loads(done["validation_result"])[PLATFORM]
        assert result["ok"] is False and "larger than 100 bytes" in result["error"]
