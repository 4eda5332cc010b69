"""Submissions over HTTP on a live server: create, upload through the pre-signed URLs,
submit, validation, review, publishing signed with the registry's key, withdrawal, the
audit log, and who may do what."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_accounts_helpers import PASSWORD, Live, live_registry
from test_registry_server import go_client, make_package  # noqa: F401  (a fixture)

from plughost.packages.signing import verify_checksum_signature
from plughost.registry.models import current_platform
from plughost.registry.service_api import RateLimiter

pytestmark = pytest.mark.timeout(120)
PLATFORM = current_platform()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from live_registry(tmp_path_factory.mktemp("registry"))


def submit_package(
    live: Live, package: Path, plugin_id: str, version: str, arch: str = PLATFORM
) -> dict[str, Any]:
    """create -> upload-urls -> PUT -> submit, as dev of acme; the submitted submission."""
    made = live.data(
        "POST",
        "/v1/publishers/acme/submissions",
        "dev",
        json={"plugin_id": plugin_id, "version": version, "changelog": "first"},
    )
    assert made["status"] == "draft" and made["submitted_by_id"] > 0
    assert made["artifact_s3_prefix"] == f"submissions/{made['id']}/"
    urls = live.data(
        "POST", f"/v1/submissions/{made['id']}/upload-urls", "dev", json={"architectures": [arch]}
    )["urls"]
    assert set(urls) == {arch} and urls[arch].startswith(live.url + "/v1/submissions/")
    put = httpx.put(urls[arch], content=package.read_bytes(), timeout=30)  # no token: signed URL
    assert put.status_code == 200, put.text
    submitted: dict[str, Any] = live.data("POST", f"/v1/submissions/{made['id']}/submit", "dev")
    return submitted


def test_submit_review_approve_publishes_signed(live: Live, tmp_path: Path) -> None:
    package = make_package(tmp_path, "subdemo", "1.0.0")
    sub = submit_package(live, package, "subdemo", "1.0.0")
    assert sub["status"] == "pending_review", sub["validation_result"]
    assert sub["submitted_at"] and sub["validation_started_at"]
    assert '"ok": true' in sub["validation_result"] and "subdemo" in sub["metadata_json"]
    # Only reviewers approve; the publisher's member cannot.
    assert live.call("POST", f"/v1/submissions/{sub['id']}/approve", "dev").status_code == 403
    queue = live.data("GET", "/v1/submissions?status=pending_review", "admin")
    assert sub["id"] in [s["id"] for s in queue]
    done = live.data(
        "POST", f"/v1/submissions/{sub['id']}/approve", "admin", json={"notes": "looks good"}
    )
    assert done["status"] == "published" and done["reviewer_notes"] == "looks good"
    assert done["reviewer_id"] == live.data("GET", "/v1/auth/me", "admin")["id"]
    # Published: listed under the publisher, signed with the registry's key.
    acme = live.data("GET", "/v1/publishers/acme")
    plugin = live.data("GET", "/v1/plugins/subdemo")
    assert plugin["publisher_id"] == acme["id"] and plugin["publisher_name"] == "Acme Tools"
    assert [p["id"] for p in live.data("GET", "/v1/publishers/acme/plugins")] == ["subdemo"]
    artifact = live.data("GET", "/v1/plugins/subdemo/versions/1.0.0")["artifacts"][PLATFORM]
    assert artifact["checksum"] == hashlib.sha256(package.read_bytes()).hexdigest()
    public_key = (live.root / "registry.pub").read_text().strip()
    verify_checksum_signature(artifact["checksum"], artifact["signature"], public_key)
    assert live.data("GET", "/v1/plugins/subdemo/versions/1.0.0")["changelog"] == "first"
    # Every step is in the audit log, in order.
    history = live.data("GET", f"/v1/submissions/{sub['id']}/history", "dev")
    assert [h["action"] for h in history] == [
        "submission.created",
        "submission.upload_urls",
        "submission.submitted",
        "submission.validated",
        "submission.approved",
        "submission.published",
    ]
    # Published is final: no withdrawal.
    late = live.call("POST", f"/v1/submissions/{sub['id']}/withdraw", "dev")
    assert late.status_code == 409 and "published" in late.json()["message"]


def test_validation_failure_then_withdraw(live: Live, tmp_path: Path) -> None:
    package = make_package(tmp_path, "mismatch", "2.0.0")  # says 2.0.0, submitted as 1.0.0
    sub = submit_package(live, package, "mismatch", "1.0.0")
    assert sub["status"] == "validation_failed"
    assert "mismatch 2.0.0" in sub["validation_result"]
    assert live.call("POST", f"/v1/submissions/{sub['id']}/approve", "admin").status_code == 409
    gone = live.data("POST", f"/v1/submissions/{sub['id']}/withdraw", "dev")
    assert gone["status"] == "withdrawn"
    assert live.call("GET", "/v1/plugins/mismatch").status_code == 404


def test_garbage_upload_fails_validation(live: Live, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a gzip at all" * 10)
    sub = submit_package(live, junk, "junk", "1.0.0")
    assert sub["status"] == "validation_failed" and '"ok": false' in sub["validation_result"]


def test_reject_with_notes_and_list(live: Live, tmp_path: Path) -> None:
    sub = submit_package(live, make_package(tmp_path, "rejectme", "0.1.0"), "rejectme", "0.1.0")
    done = live.data(
        "POST", f"/v1/submissions/{sub['id']}/reject", "admin", json={"notes": "needs a readme"}
    )
    assert done["status"] == "rejected" and done["reviewer_notes"] == "needs a readme"
    listed = live.call("GET", "/v1/publishers/acme/submissions?status=rejected", "dev").json()
    assert [s["id"] for s in listed["data"]] == [sub["id"]]
    assert listed["pagination"]["total"] == 1
    assert live.data("GET", f"/v1/submissions/{sub['id']}", "dev")["status"] == "rejected"


def test_withdraw_a_draft_and_submit_without_upload(live: Live) -> None:
    made = live.data(
        "POST",
        "/v1/publishers/acme/submissions",
        "dev",
        json={"plugin_id": "empty", "version": "1.0.0"},
    )
    empty = live.call("POST", f"/v1/submissions/{made['id']}/submit", "dev")
    assert empty.status_code == 400 and "no package" in empty.json()["message"]
    assert live.data("POST", f"/v1/submissions/{made['id']}/withdraw", "dev")["status"] == (
        "withdrawn"
    )


def test_who_may_do_what(live: Live, tmp_path: Path) -> None:
    body = {"plugin_id": "theirs", "version": "1.0.0"}
    outsider = live.call("POST", "/v1/publishers/acme/submissions", "outsider", json=body)
    assert outsider.status_code == 403
    assert live.call("POST", "/v1/publishers/acme/submissions", json=body).status_code == 401
    assert live.call("GET", "/v1/publishers/acme/submissions", "outsider").status_code == 403
    assert live.call("GET", "/v1/submissions", "dev").status_code == 403
    # A plugin published through acme cannot be submitted by another publisher.
    sub = submit_package(live, make_package(tmp_path, "owned", "1.0.0"), "owned", "1.0.0")
    live.data("POST", f"/v1/submissions/{sub['id']}/approve", "admin")
    hijack = live.call(
        "POST",
        "/v1/publishers/other/submissions",
        "outsider",
        json={"plugin_id": "owned", "version": "9.9.9"},
    )
    assert hijack.status_code == 403 and "another publisher" in hijack.json()["message"]
    assert live.call("GET", f"/v1/submissions/{sub['id']}", "outsider").status_code == 403


def test_upload_urls_are_signed_and_limited(live: Live, tmp_path: Path) -> None:
    made, urls = live.new_submission("signedurl", "1.0.0", ["any"])
    url = urls["any"]
    forged = url.replace("signature=", "signature=0")
    assert httpx.put(forged, content=b"x", timeout=30).status_code == 403
    other_arch = url.replace("/artifacts/any", "/artifacts/linux_arm64")
    assert httpx.put(other_arch, content=b"x", timeout=30).status_code == 403
    bad_arch = live.call(
        "POST",
        f"/v1/submissions/{made['id']}/upload-urls",
        "dev",
        json={"architectures": ["../x"]},
    )
    assert bad_arch.status_code == 400
    saved = live.app.state.upload_limit
    live.app.state.upload_limit = RateLimiter(1)
    try:
        assert httpx.put(url, content=b"x", timeout=30).status_code == 200
        assert httpx.put(url, content=b"x", timeout=30).status_code == 429
    finally:
        live.app.state.upload_limit = saved


@pytest.mark.interop
def test_go_client_every_signed_in_call(
    live: Live,
    go_client: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    first = submit_package(live, make_package(tmp_path, "gofirst", "1.0.0"), "gofirst", "1.0.0")
    live.data("POST", f"/v1/submissions/{first['id']}/approve", "admin")
    package = make_package(tmp_path, "godemo", "1.0.0")
    args = ["-service", "-url", live.url, "-email", "dev@example.invalid", "-password", PASSWORD,
            "-publisher", "acme", "-plugin", "godemo", "-version", "1.0.0",
            "-package", str(package)]  # fmt: skip
    result = subprocess.run([str(go_client), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["me"]["email"] == "dev@example.invalid"
    assert data["device"]["token_type"] == "Bearer"
    assert data["access"]["role"] == "owner" and data["access"]["can_publish"] is True
    assert data["publisher"]["slug"] == "acme"
    assert data["submitted_status"] == "pending_review"
    assert data["submission"]["plugin_id"] == "godemo"
    assert data["withdrawn_status"] == "withdrawn"
    listed = {s["version"]: s["status"] for s in data["submissions"]["items"]
              if s["plugin_id"] == "godemo"}  # fmt: skip
    assert listed == {"1.0.0": "pending_review", "1.0.0-withdrawn": "withdrawn"}
    assert "gofirst" in [p["id"] for p in data["publisher_plugins"]["items"]]
    assert data["review"]["rating"] == 4 and data["review"]["user_id"] == data["me"]["id"]
    assert data["download_stats"]["total_count"] >= 1
