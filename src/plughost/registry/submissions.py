"""Submissions: how a publisher's member gets a version into the registry, through review.

    draft --upload-urls, PUT--> draft --submit--> validating --> pending_review
    pending_review --approve--> published      (signed with the registry's key)
    pending_review --reject---> rejected       (with the reviewer's notes)
    validating ----checks fail--> validation_failed
    draft | validating | pending_review | validation_failed --withdraw--> withdrawn

Packages are uploaded per architecture (a ``GOOS_GOARCH`` platform or
``any``) to ``submissions/<id>/<arch>.tar.gz`` in the registry's storage,
through pre-signed URLs: the object store's own with S3, else the server's
``PUT /v1/submissions/<id>/artifacts/<arch>`` carrying an expiry and an HMAC
keyed from the registry's signing key, so that any server of the registry
accepts what another signed. Validation runs the package checks of
``plughost install`` (gzip and tar limits, plugin.yaml, the id, the version
and the platform of the machine code) without extracting anything; approval
publishes through :meth:`.catalog.Catalog.publish`, which signs. Each step
writes an audit-log row in the same transaction as the change.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Index, Integer, String, Table, Text, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from ..errors import InvalidTransitionError, PlughostError, ValidationError
from .accounts import (
    Accounts,
    NotFoundError,
    PermissionDeniedError,
    Signed,
    parse_time,
    stamp,
)
from .catalog import PLUGINS, Catalog, Page, validate_platform, validate_version
from .db import Base

__all__ = [
    "MAX_UPLOAD_BYTES",
    "Submission",
    "Submissions",
]

MAX_UPLOAD_BYTES = 512 * 1024 * 1024
UPLOAD_URL_TTL = 3600  # seconds a pre-signed upload URL stays valid
WITHDRAWABLE = ("draft", "validating", "pending_review", "validation_failed")


class SubmissionRow(Base):
    __tablename__ = "submissions"
    __table_args__ = (Index("submissions_by_publisher", "publisher_id", "created_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    publisher_id: Mapped[str] = mapped_column(String(36))
    plugin_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    artifact_prefix: Mapped[str] = mapped_column(Text)
    architectures: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    metadata_json: Mapped[str] = mapped_column(Text, default="")
    validation_result: Mapped[str] = mapped_column(Text, default="")
    submitted_by_id: Mapped[int] = mapped_column(Integer)
    reviewer_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reviewer_notes: Mapped[str] = mapped_column(Text, default="")
    changelog: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    validation_started_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    reviewed_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class AuditRow(Base):
    """Who did what to which submission (or account), when: one row per step."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("audit_by_subject", "subject", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="{}")  # JSON object


SUBMISSIONS: Table = Base.metadata.tables["submissions"]
AUDIT: Table = Base.metadata.tables["audit_log"]


class Submission(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    publisher_id: str
    plugin_id: str
    version: str
    status: str
    artifact_s3_prefix: str
    metadata_json: str = ""
    validation_result: str = ""
    submitted_by_id: int
    reviewer_id: int | None = None
    reviewer_notes: str = ""
    changelog: str = ""
    submitted_at: datetime | None = None
    validation_started_at: datetime | None = None
    reviewed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _submission(row: Any) -> Submission:
    return Submission(
        id=row.id,
        publisher_id=row.publisher_id,
        plugin_id=row.plugin_id,
        version=row.version,
        status=row.status,
        artifact_s3_prefix=row.artifact_prefix,
        metadata_json=row.metadata_json,
        validation_result=row.validation_result,
        submitted_by_id=row.submitted_by_id,
        reviewer_id=row.reviewer_id,
        reviewer_notes=row.reviewer_notes,
        changelog=row.changelog,
        submitted_at=parse_time(row.submitted_at),
        validation_started_at=parse_time(row.validation_started_at),
        reviewed_at=parse_time(row.reviewed_at),
        created_at=parse_time(row.created_at),
        updated_at=parse_time(row.updated_at),
    )


async def audit(
    db: AsyncConnection, at: str, actor_id: int, action: str, subject: str, **detail: Any
) -> None:
    await db.execute(
        AUDIT.insert().values(
            at=at, actor_id=actor_id, action=action, subject=subject, detail=json.dumps(detail)
        )
    )


def _check_package(path: Path, plugin_id: str, version: str, arch: str) -> dict[str, Any]:
    """The install-time checks of one uploaded package, extracting nothing; its metadata."""
    from ..packages import archive
    from ..packages.platforms import ANY_PLATFORM, detect_platform

    meta = archive.inspect_package(path)
    if (meta.id, meta.version) != (plugin_id, version):
        raise ValidationError(
            f"{arch}: the package is {meta.id} {meta.version}, the submission {plugin_id} "
            f"{version}",
            title="Package does not match the submission",
            suggestions=["upload the package built for this id and version"],
        )
    detected = detect_platform(path)
    if detected != ANY_PLATFORM and detected != arch:
        raise ValidationError(
            f"{arch}: the package holds {detected} machine code",
            title="Wrong platform",
            suggestions=[f"upload it as {detected}, or build bin/plugin for {arch}"],
        )
    return meta.model_dump(mode="json", include={"id", "version", "name", "description"})


class Submissions:
    """The submission workflow over a catalog (its database, storage and signing key)."""

    def __init__(self, catalog: Catalog, accounts: Accounts) -> None:
        self.catalog = catalog
        self.accounts = accounts
        self._upload_key: bytes | None = None

    def _now(self) -> str:
        return stamp(self.catalog.clock())

    # -- pre-signed uploads to the server itself ------------------------------------------

    def upload_key(self) -> bytes:
        """The HMAC key of upload URLs: derived from the registry's signing key, so every
        server of the registry (they share that key) accepts every other's URLs."""
        if self._upload_key is None:
            key, _, _ = self.catalog.signing_key()
            self._upload_key = hashlib.sha256(
                b"plughost upload url\0" + key.private_bytes_raw()
            ).digest()
        return self._upload_key

    def _mac(self, submission_id: str, arch: str, expires: int) -> str:
        message = f"{submission_id}\0{arch}\0{expires}".encode()
        return hmac.new(self.upload_key(), message, hashlib.sha256).hexdigest()

    def sign_upload(self, submission_id: str, arch: str) -> str:
        """The query string of a server upload URL: ``expires=...&signature=...``."""
        expires = int(time.time()) + UPLOAD_URL_TTL
        return f"expires={expires}&signature={self._mac(submission_id, arch, expires)}"

    def check_upload(self, submission_id: str, arch: str, expires: int, signature: str) -> None:
        good = hmac.compare_digest(self._mac(submission_id, arch, expires), signature)
        if not good or expires < time.time():
            raise PermissionDeniedError(
                "the upload URL is not valid (expired, or not signed by this registry)",
                suggestions=["ask for new ones: POST /v1/submissions/ID/upload-urls"],
            )

    # -- reading -----------------------------------------------------------------------

    async def _row(self, db: AsyncConnection, submission_id: str) -> Any:
        query = select(SUBMISSIONS).where(SUBMISSIONS.c.id == submission_id)
        row = (await db.execute(query)).first()
        if row is None:
            raise NotFoundError(f"no submission {submission_id!r}")
        return row

    async def get(self, submission_id: str, signed: Signed) -> Submission:
        async with self.catalog.engine().connect() as db:
            row = await self._row(db, submission_id)
        await self._may_see(row, signed)
        return _submission(row)

    async def _may_see(self, row: Any, signed: Signed) -> None:
        publisher = await self.accounts.publisher_by_id(row.publisher_id)
        await self.accounts.require(publisher.slug, signed)

    async def listing(
        self,
        *,
        publisher_id: str | None = None,
        status: str = "",
        page: int = 1,
        per_page: int = 20,
    ) -> Page:
        """Submissions, newest first: a publisher's, or every publisher's (for reviewers)."""
        page, per_page = max(1, page), min(max(1, per_page), 100)
        where = []
        if publisher_id is not None:
            where.append(SUBMISSIONS.c.publisher_id == publisher_id)
        if status:
            where.append(SUBMISSIONS.c.status == status)
        counted = select(func.count()).select_from(SUBMISSIONS).where(*where)
        listed = (
            select(SUBMISSIONS)
            .where(*where)
            .order_by(SUBMISSIONS.c.created_at.desc(), SUBMISSIONS.c.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.catalog.engine().connect() as db:
            total = int((await db.execute(counted)).scalar_one())
            rows = (await db.execute(listed)).all()
        return Page([_submission(r) for r in rows], page, per_page, total)

    async def history(self, submission_id: str) -> list[dict[str, Any]]:
        query = (
            select(AUDIT)
            .where(AUDIT.c.subject == f"submission:{submission_id}")
            .order_by(AUDIT.c.seq)
        )
        async with self.catalog.engine().connect() as db:
            rows = (await db.execute(query)).all()
        return [
            {
                "at": r.at,
                "actor_id": r.actor_id,
                "action": r.action,
                "detail": json.loads(r.detail),
            }
            for r in rows
        ]

    # -- the workflow --------------------------------------------------------------------

    async def create(
        self, slug: str, signed: Signed, plugin_id: str, version: str, changelog: str = ""
    ) -> Submission:
        from ..metadata import validate_plugin_id

        publisher = await self.accounts.require(slug, signed, publish=True)
        validate_plugin_id(plugin_id)
        validate_version(version)
        owner = await self._plugin_owner(plugin_id)
        if owner is not None and owner not in (publisher.id, publisher.slug):
            raise PermissionDeniedError(
                f"plugin {plugin_id!r} belongs to another publisher",
                suggestions=["submit it under the publisher that published it first"],
            )
        submission_id = str(uuid.uuid4())
        now = self._now()
        async with self.catalog.engine().begin() as db:
            await db.execute(
                SUBMISSIONS.insert().values(
                    id=submission_id,
                    publisher_id=publisher.id,
                    plugin_id=plugin_id,
                    version=version,
                    status="draft",
                    artifact_prefix=f"submissions/{submission_id}/",
                    submitted_by_id=signed.user_id,
                    changelog=changelog,
                    created_at=now,
                    updated_at=now,
                )
            )
            await audit(
                db,
                now,
                signed.user_id,
                "submission.created",
                f"submission:{submission_id}",
                publisher=slug,
                plugin_id=plugin_id,
                version=version,
            )
            row = await self._row(db, submission_id)
        return _submission(row)

    async def _plugin_owner(self, plugin_id: str) -> str | None:
        query = select(PLUGINS.c.publisher_id).where(PLUGINS.c.id == plugin_id)
        async with self.catalog.engine().connect() as db:
            found = (await db.execute(query)).scalar_one_or_none()
        return None if found is None else str(found)

    async def _editable(self, submission_id: str, signed: Signed) -> Any:
        async with self.catalog.engine().connect() as db:
            row = await self._row(db, submission_id)
        publisher = await self.accounts.publisher_by_id(row.publisher_id)
        await self.accounts.require(publisher.slug, signed, publish=True)
        return row

    async def upload_urls(
        self, submission_id: str, signed: Signed, architectures: list[str], base_url: str
    ) -> dict[str, str]:
        """One pre-signed PUT URL per architecture (the object store's, else this server's)."""
        row = await self._editable(submission_id, signed)
        if row.status != "draft":
            raise InvalidTransitionError(
                f"submission {submission_id} is {row.status}: uploads are for drafts",
                suggestions=["create a new submission for a new upload"],
            )
        if not architectures:
            raise ValidationError(
                "no architectures given", suggestions=['send {"architectures": ["linux_amd64"]}']
            )
        arches = sorted({validate_platform(a) for a in architectures})
        urls: dict[str, str] = {}
        for arch in arches:
            key = f"{row.artifact_prefix}{arch}.tar.gz"
            url = await self.catalog.storage.upload_url(key)
            if url is None:
                query = self.sign_upload(submission_id, arch)
                url = f"{base_url}/v1/submissions/{submission_id}/artifacts/{arch}?{query}"
            urls[arch] = url
        now = self._now()
        async with self.catalog.engine().begin() as db:
            await db.execute(
                update(SUBMISSIONS)
                .where(SUBMISSIONS.c.id == submission_id)
                .values(architectures=json.dumps(arches), updated_at=now)
            )
            await audit(
                db,
                now,
                signed.user_id,
                "submission.upload_urls",
                f"submission:{submission_id}",
                architectures=arches,
            )
        return urls

    async def store_upload(self, submission_id: str, arch: str, source: Path) -> None:
        """Keep a package PUT to a server upload URL (whose signature was checked)."""
        async with self.catalog.engine().connect() as db:
            row = await self._row(db, submission_id)
        if row.status != "draft" or arch not in json.loads(row.architectures):
            raise InvalidTransitionError(
                f"submission {submission_id} takes no upload for {arch} now ({row.status})",
                suggestions=["ask for upload URLs again while the submission is a draft"],
            )
        await self.catalog.storage.put_file(f"{row.artifact_prefix}{arch}.tar.gz", source)

    async def _transition(
        self,
        submission_id: str,
        signed: Signed,
        action: str,
        allowed: tuple[str, ...],
        values: dict[str, Any],
        **detail: Any,
    ) -> Submission:
        """Move from one of ``allowed`` to ``values['status']`` atomically (two servers
        acting on one submission: one wins, the other is told)."""
        now = self._now()
        async with self.catalog.engine().begin() as db:
            changed = await db.execute(
                update(SUBMISSIONS)
                .where(SUBMISSIONS.c.id == submission_id, SUBMISSIONS.c.status.in_(allowed))
                .values(updated_at=now, **values)
            )
            row = await self._row(db, submission_id)
            if changed.rowcount == 0:
                raise InvalidTransitionError(
                    f"submission {submission_id} is {row.status}: it cannot be {action} now",
                    suggestions=[
                        f"{action} applies to a submission that is {' or '.join(allowed)}"
                    ],
                )
            await audit(
                db, now, signed.user_id, f"submission.{action}", f"submission:{submission_id}",
                status=values["status"], **detail,
            )  # fmt: skip
        return _submission(row)

    async def _fetch(self, key: str, into: Path) -> Path:
        await self.catalog.storage.copy_to(key, into, MAX_UPLOAD_BYTES)
        return into

    async def submit(self, submission_id: str, signed: Signed) -> Submission:
        """Submit for review: validate every uploaded package now."""
        row = await self._editable(submission_id, signed)
        arches: list[str] = json.loads(row.architectures)
        missing = [a for a in arches if not await self.catalog.storage.exists(self._key(row, a))]
        if not arches or missing:
            raise ValidationError(
                f"submission {submission_id} has no package for {', '.join(missing) or 'any'}"
                " architecture",
                title="Nothing uploaded",
                suggestions=["PUT each package to its URL from upload-urls, then submit"],
            )
        now = self._now()
        await self._transition(
            submission_id,
            signed,
            "submitted",
            ("draft",),
            {"status": "validating", "submitted_at": now, "validation_started_at": now},
        )
        results: dict[str, Any] = {}
        metadata: dict[str, Any] = {}
        failed = False
        with tempfile.TemporaryDirectory(prefix="plughost-submission-") as tmp:
            for arch in arches:
                path = Path(tmp) / f"{arch}.tar.gz"
                try:
                    await self._fetch(self._key(row, arch), path)
                    metadata = await asyncio.to_thread(
                        _check_package, path, row.plugin_id, row.version, arch
                    )
                    results[arch] = {"ok": True}
                except PlughostError as exc:
                    failed = True
                    results[arch] = {"ok": False, "error": exc.detail, "title": exc.title}
        status = "validation_failed" if failed else "pending_review"
        return await self._transition(
            submission_id,
            signed,
            "validated",
            ("validating",),
            {
                "status": status,
                "validation_result": json.dumps(results, sort_keys=True),
                "metadata_json": json.dumps(metadata, sort_keys=True),
            },
            passed=not failed,
        )

    @staticmethod
    def _key(row: Any, arch: str) -> str:
        return f"{row.artifact_prefix}{arch}.tar.gz"

    async def withdraw(self, submission_id: str, signed: Signed) -> Submission:
        await self._editable(submission_id, signed)
        return await self._transition(
            submission_id, signed, "withdrawn", WITHDRAWABLE, {"status": "withdrawn"}
        )

    def _reviewer(self, signed: Signed) -> None:
        if not signed.reviewer:
            raise PermissionDeniedError(
                "only the registry's reviewers approve or reject submissions",
                suggestions=["an administrator gives the role: plughost registry user add --role"],
            )

    async def reject(self, submission_id: str, signed: Signed, notes: str) -> Submission:
        self._reviewer(signed)
        return await self._transition(
            submission_id,
            signed,
            "rejected",
            ("pending_review",),
            {
                "status": "rejected",
                "reviewer_id": signed.user_id,
                "reviewer_notes": notes,
                "reviewed_at": self._now(),
            },
        )

    async def approve(self, submission_id: str, signed: Signed, notes: str = "") -> Submission:
        """Approve and publish: every architecture signed with the registry's key."""
        self._reviewer(signed)
        await self._transition(
            submission_id,
            signed,
            "approved",
            ("pending_review",),
            {
                "status": "approved",
                "reviewer_id": signed.user_id,
                "reviewer_notes": notes,
                "reviewed_at": self._now(),
            },
        )
        async with self.catalog.engine().connect() as db:
            row = await self._row(db, submission_id)
        publisher = await self.accounts.publisher_by_id(row.publisher_id)
        published = []
        try:
            with tempfile.TemporaryDirectory(prefix="plughost-submission-") as tmp:
                for arch in json.loads(row.architectures):
                    path = await self._fetch(self._key(row, arch), Path(tmp) / f"{arch}.tar.gz")
                    result = await self.catalog.publish(
                        path, platform=arch, changelog=row.changelog
                    )
                    published.append({"platform": arch, "sha256": result.sha256})
            async with self.catalog.engine().begin() as db:
                await db.execute(
                    update(PLUGINS)
                    .where(PLUGINS.c.id == row.plugin_id)
                    .values(publisher_id=publisher.id, publisher_name=publisher.name)
                )
        except BaseException as exc:  # back to the queue, saying why
            await self._transition(
                submission_id,
                signed,
                "returned",
                ("approved",),
                {"status": "pending_review"},
                error=f"{type(exc).__name__}: {exc}",
            )
            raise
        return await self._transition(
            submission_id,
            signed,
            "published",
            ("approved",),
            {"status": "published"},
            artifacts=published,
        )

    async def plugin_ids(self, slug: str, page: int, per_page: int) -> tuple[list[str], int]:
        """One page of the ids of a publisher's plugins (by name), and how many there are.

        A plugin is the publisher's once one of its submissions was published; one
        published with ``registry publish`` names its author, whose slug may be the
        publisher's."""
        publisher = await self.accounts.publisher(slug)
        mine = or_(PLUGINS.c.publisher_id == publisher.id, PLUGINS.c.publisher_id == slug)
        counted = select(func.count()).select_from(PLUGINS).where(mine)
        listed = (
            select(PLUGINS.c.id)
            .where(mine)
            .order_by(func.lower(PLUGINS.c.name), PLUGINS.c.id)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.catalog.engine().connect() as db:
            total = int((await db.execute(counted)).scalar_one())
            ids = [str(i) for i in (await db.execute(listed)).scalars()]
        return ids, total
