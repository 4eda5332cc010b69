"""The registry with its packages in an S3-compatible object store (SeaweedFS's ``weed``,
a server process of its own): published packages land in the bucket, a download's
302 points at a pre-signed URL of the store, which checks the signature, and a
pre-signed upload URL takes a PUT.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from services import S3Store
from test_registry_server import make_package

from plughost.packages.signing import TrustedKey, verify_manifest
from plughost.registry.index import RegistryIndex, publish
from plughost.registry.models import current_platform
from plughost.registry.server import create_app, running_server
from plughost.registry.storage import S3Storage

pytestmark = pytest.mark.timeout(120)
PLATFORM = current_platform()


def test_packages_are_stored_and_served_by_the_object_store(
    tmp_path: Path, s3_env: S3Store
) -> None:
    bucket = s3_env.bucket()
    storage = f"s3://{bucket}/market"
    root = tmp_path / "reg"
    package = make_package(tmp_path, "cloud", "1.0.0")
    result = publish(root, package, platform=PLATFORM, storage=storage)
    assert result.path == f"{storage}/packages/cloud/1.0.0/{PLATFORM}.tar.gz"
    assert not (root / "packages").exists()  # nothing kept on the server's disk

    with running_server(create_app(root, storage=storage)) as url:
        download = httpx.get(f"{url}/v1/plugins/cloud/download/1.0.0/{PLATFORM}")
        version = httpx.get(f"{url}/v1/plugins/cloud/versions/1.0.0").json()["data"]
        via_server = httpx.get(
            version["artifacts"][PLATFORM]["download_url"], follow_redirects=True
        )
    location = download.headers["location"]
    assert download.status_code == 302
    assert location.startswith(f"{s3_env.endpoint}/{bucket}/market/packages/cloud/1.0.0/")
    assert "X-Amz-Signature=" in location
    fetched = httpx.get(location)
    assert fetched.status_code == 200
    assert fetched.content == package.read_bytes()
    artifact = version["artifacts"][PLATFORM]
    assert artifact["checksum"] == hashlib.sha256(fetched.content).hexdigest()
    public = (root / "registry.pub").read_text().strip()
    verify_manifest(artifact["manifest"], [TrustedKey(key_id=result.key_id, public_key_hex=public)])
    # The server's own artifact URL hands over to the store too.
    assert via_server.status_code == 200 and via_server.content == package.read_bytes()
    # The store checks signatures: a tampered pre-signed URL is refused.
    forged = location.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert httpx.get(forged).status_code == 403


def test_presigned_upload_url_takes_a_put(tmp_path: Path, s3_env: S3Store) -> None:
    storage = S3Storage(s3_env.bucket(), "uploads")

    async def flow() -> tuple[str, bool, bytes]:
        url = await storage.upload_url("packages/up/1.0.0/any.tar.gz")
        async with httpx.AsyncClient() as client:
            answer = await client.put(url, content=b"package bytes")
            assert answer.status_code == 200, answer.text
        exists = await storage.exists("packages/up/1.0.0/any.tar.gz")
        return url, exists, await storage.read("packages/up/1.0.0/any.tar.gz")

    url, exists, data = asyncio.run(flow())
    assert url.startswith(s3_env.endpoint) and "X-Amz-Signature=" in url
    assert exists and data == b"package bytes"


def test_a_package_missing_from_the_bucket_is_a_404(tmp_path: Path, s3_env: S3Store) -> None:
    storage = f"s3://{s3_env.bucket()}"
    root = tmp_path / "reg"
    publish(root, make_package(tmp_path, "gone", "1.0.0"), storage=storage)
    index = RegistryIndex(root, storage=storage)
    asyncio.run(index.catalog.storage.delete("packages/gone/1.0.0/any.tar.gz"))
    with running_server(create_app(root, storage=storage)) as url:
        response = httpx.get(f"{url}/v1/plugins/gone/download/1.0.0/any")
    assert response.status_code == 404
    assert "missing from the registry" in response.json()["message"]
