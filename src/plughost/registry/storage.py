"""Where a registry keeps its packages: a local directory (the default) or an
S3-compatible object store (``s3://bucket/prefix``).

Keys are made by the catalog (``packages/<id>/<version>/<platform>.tar.gz``
and the signature files next to it), never taken from a request. The object
store is reached with boto3, configured as any AWS tool is: ``AWS_ENDPOINT_URL``
(or ``AWS_ENDPOINT_URL_S3``) for a store other than Amazon's,
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``
(``us-east-1`` when unset), or a profile. boto3 blocks, so each call runs in a
worker thread, off the event loop.

With S3 the server never carries a package: a download's 302 points at a
pre-signed URL of the object, and uploads get pre-signed PUT URLs.
"""

from __future__ import annotations

import asyncio
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, cast
from urllib.parse import urlsplit

from ..atomic import fsync_dir
from ..errors import ValidationError
from ..store import atomic_replace

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "DEFAULT_URL_SECONDS",
    "LocalStorage",
    "S3Storage",
    "Storage",
    "open_storage",
]

DEFAULT_URL_SECONDS = 900
_KEY_PART = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_@-]*")


async def _iterate(opener: Callable[[], BinaryIO], size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    source = await asyncio.to_thread(opener)
    try:
        while chunk := await asyncio.to_thread(source.read, size):
            yield chunk
    finally:
        await asyncio.to_thread(source.close)


def _check_key(key: str) -> str:
    """Keys are ours, but a slip must never reach outside the storage."""
    parts = PurePosixPath(key).parts
    if not parts or any(not _KEY_PART.fullmatch(p) or ".." in p for p in parts):
        raise ValidationError(f"invalid storage key {key!r}")
    return key


class Storage(ABC):
    """Package bytes by key."""

    @abstractmethod
    async def put_file(self, key: str, source: Path) -> None:
        """Store the file ``source`` as ``key`` (replacing what was there)."""

    @abstractmethod
    async def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    async def read(self, key: str) -> bytes: ...

    async def copy_to(self, key: str, target: Path, limit: int) -> None:
        """Write ``key`` to the file ``target``, refusing it past ``limit`` bytes while
        reading: what a publisher PUT to a pre-signed URL of an object store had no size
        limit on the way in, so it must not be read whole into memory."""
        with target.open("wb") as out:
            size = 0
            async for chunk in self._chunks(key):
                size += len(chunk)
                if size > limit:
                    raise ValidationError(
                        f"{key} is larger than {limit} bytes",
                        title="Package too large",
                        suggestions=[f"upload a package of at most {limit} bytes"],
                    )
                await asyncio.to_thread(out.write, chunk)

    def _chunks(self, key: str) -> AsyncIterator[bytes]:
        """``key``'s bytes, a piece at a time (from a blocking file-like object)."""
        return _iterate(lambda: self._open(key))

    @abstractmethod
    def _open(self, key: str) -> BinaryIO:
        """``key`` opened for reading (blocking: called in a thread)."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens when it is not there)."""

    @abstractmethod
    def location(self, key: str) -> Path | str:
        """Where ``key`` lives, for people: a file path, or an ``s3://`` URL."""

    def local_path(self, key: str) -> Path | None:
        """The file of ``key`` when the server can send it itself (else None)."""
        return None

    async def download_url(self, key: str, filename: str) -> str | None:
        """A URL clients fetch ``key`` from directly (None: the server sends it)."""
        return None

    async def upload_url(self, key: str, content_type: str = "application/gzip") -> str | None:
        """A pre-signed URL to PUT ``key`` to directly (None: upload through the server)."""
        return None


class LocalStorage(Storage):
    """A directory: ``<root>/<key>``, written atomically."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def location(self, key: str) -> Path:
        return self.path(key)

    def local_path(self, key: str) -> Path:
        return self.path(key)

    async def put_file(self, key: str, source: Path) -> None:
        await asyncio.to_thread(self._put_file, self.path(key), source)

    def _put_file(self, target: Path, source: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.parent == self.root:
            os.replace(source, target)  # a copy staged inside the registry: just move it
            fsync_dir(target.parent)
            return

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(1024 * 1024):
                    out.write(chunk)

        atomic_replace(target, write, 0o644)

    async def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)

        def write() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_replace(target, lambda tmp: tmp.write_bytes(data), 0o644)

        await asyncio.to_thread(write)

    async def read(self, key: str) -> bytes:
        return await asyncio.to_thread(self.path(key).read_bytes)

    def _open(self, key: str) -> BinaryIO:
        return self.path(key).open("rb")

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path(key).is_file)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)


def _s3_client() -> S3Client:
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Path-style addressing: self-hosted stores on an IP or localhost have no bucket DNS.
    config = Config(signature_version="s3v4", s3={"addressing_style": "path"}, region_name=region)
    return boto3.session.Session().client("s3", config=config)


class S3Storage(Storage):
    """An S3 bucket (any S3-compatible store), keys under ``prefix``."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: S3Client | None = client

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = _s3_client()
        return self._client

    def object_key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    async def put_file(self, key: str, source: Path) -> None:
        await asyncio.to_thread(
            self.client.upload_file,
            str(source),
            self.bucket,
            self.object_key(key),
            ExtraArgs={"ContentType": "application/gzip"},
        )

    async def put_bytes(self, key: str, data: bytes) -> None:
        await asyncio.to_thread(
            self.client.put_object, Bucket=self.bucket, Key=self.object_key(key), Body=data
        )

    async def read(self, key: str) -> bytes:
        def get() -> bytes:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            return answer["Body"].read()

        return await asyncio.to_thread(get)

    def _open(self, key: str) -> BinaryIO:
        answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        return cast(BinaryIO, answer["Body"])

    async def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            await asyncio.to_thread(
                self.client.head_object, Bucket=self.bucket, Key=self.object_key(key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(
            self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key)
        )

    async def download_url(self, key: str, filename: str) -> str:
        return await asyncio.to_thread(
            self.client.generate_presigned_url,
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.object_key(key),
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=DEFAULT_URL_SECONDS,
        )

    async def upload_url(self, key: str, content_type: str = "application/gzip") -> str:
        return await asyncio.to_thread(
            self.client.generate_presigned_url,
            "put_object",
            Params={"Bucket": self.bucket, "Key": self.object_key(key)},
            ExpiresIn=DEFAULT_URL_SECONDS,
        )


def open_storage(spec: str | None, directory: str | Path) -> Storage:
    """The storage ``spec`` names: ``s3://bucket/prefix``, a directory, or (None or '')
    the registry ``directory`` itself."""
    if not spec:
        return LocalStorage(directory)
    if spec.startswith("s3://"):
        parts = urlsplit(spec)
        if not parts.netloc:
            raise ValidationError(
                f"no bucket in storage URL {spec!r}",
                title="Invalid storage",
                suggestions=["write it as s3://BUCKET or s3://BUCKET/PREFIX"],
            )
        return S3Storage(parts.netloc, parts.path)
    if "://" in spec and not spec.startswith("file://"):
        raise ValidationError(
            f"unsupported storage {spec!r}",
            title="Invalid storage",
            suggestions=["use s3://BUCKET/PREFIX, or a directory (the default: the registry's)"],
        )
    return LocalStorage(Path(spec.removeprefix("file://")).expanduser())
