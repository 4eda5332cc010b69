"""The registry's accounts: users, tokens, publishers and their members, the device flow.

Passwords are hashed with argon2id (``argon2-cffi``). Tokens are random
(256 bits) and stored only as their SHA-256, so a copy of the database signs
no one in; a fast hash is enough for secrets with that much entropy. Session
tokens (from a login or the device flow) expire; API tokens (for CI) do not
unless asked to. Every server on the database sees every token, so a load
balancer may send a client to any of them.

The device flow (RFC 8628) lets a command line sign in through a browser:
the command line gets a device code and shows a short user code, a signed-in
browser approves that user code, and the command line's next poll receives
a session token, once.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    Boolean,
    Index,
    Integer,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Mapped, mapped_column

from ..errors import PlughostError, ValidationError
from .catalog import Catalog
from .db import Base

__all__ = [
    "ROLES",
    "USER_ROLES",
    "Accounts",
    "AlreadyExistsError",
    "AuthenticationError",
    "DeviceAuthorization",
    "DeviceFlowError",
    "NotFoundError",
    "PermissionDeniedError",
    "Publisher",
    "PublisherAccess",
    "RateLimitedError",
    "Signed",
    "User",
    "administer",
    "parse_time",
    "stamp",
]

SESSION_TTL = timedelta(days=30)
DEVICE_TTL = timedelta(minutes=10)
DEVICE_INTERVAL = 2  # seconds between polls the command line is told to keep
USER_ROLES = ("user", "reviewer", "admin")  # registry-wide: reviewers approve submissions
ROLES = ("owner", "admin", "developer", "viewer")  # within a publisher
_CAN_PUBLISH = {"owner", "admin", "developer"}
_CAN_MANAGE_PLUGINS = {"owner", "admin"}
_CAN_MANAGE_MEMBERS = {"owner"}
_SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels (no words), no look-alikes
_HASHER = PasswordHasher()
T = TypeVar("T")
# Verified against when the email is unknown, so that both cases take as long.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


class AuthenticationError(PlughostError):
    type = "unauthenticated"
    status = 401
    default_title = "Not signed in"


class PermissionDeniedError(PlughostError):
    type = "forbidden"
    status = 403
    default_title = "Not allowed"


class NotFoundError(PlughostError):
    type = "not_found"
    status = 404
    default_title = "Not found"


class AlreadyExistsError(PlughostError):
    type = "already_exists"
    status = 409
    default_title = "Already exists"


class RateLimitedError(PlughostError):
    type = "rate_limited"
    status = 429
    default_title = "Too many requests"


class DeviceFlowError(PlughostError):
    """An RFC 8628 answer to a token poll (``code``: authorization_pending, ...)."""

    type = "device_flow"
    status = 400
    default_title = "Device sign-in not complete"

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


# -- tables --------------------------------------------------------------------------


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    first_name: Mapped[str] = mapped_column(Text, default="")
    last_name: Mapped[str] = mapped_column(Text, default="")
    avatar: Mapped[str] = mapped_column(Text, default="")
    role: Mapped[str] = mapped_column(String(16), default="user")
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[str] = mapped_column(String(32))
    last_login: Mapped[str | None] = mapped_column(String(32), nullable=True)


class TokenRow(Base):
    __tablename__ = "tokens"
    __table_args__ = (Index("tokens_by_user", "user_id"),)

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex
    user_id: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # session | api
    name: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str | None] = mapped_column(String(32), nullable=True)


class PublisherRow(Base):
    __tablename__ = "publishers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    website: Mapped[str] = mapped_column(Text, default="")
    logo: Mapped[str] = mapped_column(Text, default="")
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[str] = mapped_column(String(32))


class MemberRow(Base):
    __tablename__ = "publisher_members"

    publisher_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[str] = mapped_column(String(32))


class DeviceCodeRow(Base):
    __tablename__ = "device_codes"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # of the device code
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | denied | used
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str] = mapped_column(String(32))


USERS: Table = Base.metadata.tables["users"]
TOKENS: Table = Base.metadata.tables["tokens"]
PUBLISHERS: Table = Base.metadata.tables["publishers"]
MEMBERS: Table = Base.metadata.tables["publisher_members"]
DEVICE_CODES: Table = Base.metadata.tables["device_codes"]


# -- wire types ------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(_Wire):
    id: int
    username: str
    email: str
    first_name: str = ""
    last_name: str = ""
    avatar: str = ""
    role: str = "user"
    email_verified: bool = False
    created_at: datetime | None = None
    last_login: datetime | None = None


class Publisher(_Wire):
    id: str
    name: str
    slug: str
    description: str = ""
    website: str = ""
    logo: str = ""
    verified: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


class PublisherAccess(_Wire):
    publisher_id: str
    slug: str
    member: bool
    role: str
    can_publish: bool
    can_manage_plugins: bool
    can_manage_members: bool


class DeviceAuthorization(_Wire):
    device_code: str
    user_code: str
    verification_uri: str
    expires_in: int
    interval: int


@dataclass(frozen=True)
class Signed:
    """Who a request's token belongs to."""

    user_id: int
    role: str
    token_kind: str
    token_hash: str

    @property
    def reviewer(self) -> bool:
        return self.role in ("reviewer", "admin")


# -- helpers ---------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """RFC 3339 UTC text, as every time in the registry's database is stored."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def validate_slug(slug: str) -> str:
    if not _SLUG_RE.fullmatch(slug):
        raise ValidationError(
            f"invalid publisher slug {slug!r}",
            title="Invalid slug",
            suggestions=["use 1 to 64 lower-case letters, digits and inner dashes: 'acme-tools'"],
        )
    return slug


def _user_code() -> str:
    letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
    return f"{letters[:4]}-{letters[4:]}"


def _normal_user_code(text: str) -> str:
    letters = re.sub(r"[^A-Z]", "", text.upper())
    return f"{letters[:4]}-{letters[4:]}" if len(letters) == 8 else text


def _user(row: Any) -> User:
    return User(
        id=row.id,
        username=row.username,
        email=row.email,
        first_name=row.first_name,
        last_name=row.last_name,
        avatar=row.avatar,
        role=row.role,
        email_verified=row.email_verified,
        created_at=parse_time(row.created_at),
        last_login=parse_time(row.last_login),
    )


def _publisher(row: Any) -> Publisher:
    return Publisher(
        id=row.id,
        name=row.name,
        slug=row.slug,
        description=row.description,
        website=row.website,
        logo=row.logo,
        verified=row.verified,
        created_at=parse_time(row.created_at),
        updated_at=parse_time(row.updated_at),
    )


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


class Accounts:
    """Users, tokens, publishers and device codes in a catalog's database."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def _now(self) -> datetime:
        return self.catalog.clock()

    # -- users -------------------------------------------------------------------------

    async def create_user(
        self, email: str, password: str, *, username: str = "", role: str = "user"
    ) -> User:
        email = email.strip().lower()
        if not _EMAIL_RE.fullmatch(email):
            raise ValidationError(
                f"invalid email address {email!r}", suggestions=["give NAME@DOMAIN"]
            )
        if len(password) < 8:
            raise ValidationError(
                "the password is too short", suggestions=["use at least 8 characters"]
            )
        if role not in USER_ROLES:
            raise ValidationError(
                f"unknown role {role!r}", suggestions=[f"use one of {', '.join(USER_ROLES)}"]
            )
        username = username or email.split("@")[0]
        hashed = await asyncio.to_thread(_HASHER.hash, password)
        try:
            async with self.catalog.engine().begin() as db:
                result = await db.execute(
                    USERS.insert()
                    .values(
                        email=email,
                        username=username,
                        password_hash=hashed,
                        role=role,
                        created_at=stamp(self._now()),
                    )
                    .returning(USERS)
                )
                return _user(result.one())
        except IntegrityError:
            raise AlreadyExistsError(
                f"a user with email {email!r} or username {username!r} exists",
                suggestions=["sign in with that account, or choose another email/username"],
            ) from None

    async def user(self, user_id: int) -> User:
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(select(USERS).where(USERS.c.id == user_id))).first()
        if row is None:
            raise NotFoundError(f"no user {user_id}")
        return _user(row)

    async def user_by_email(self, email: str) -> User:
        query = select(USERS).where(USERS.c.email == email.strip().lower())
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(query)).first()
        if row is None:
            raise NotFoundError(
                f"no user with email {email!r}",
                suggestions=["create it: plughost registry user add DIR EMAIL"],
            )
        return _user(row)

    async def login(self, email: str, password: str) -> tuple[str, int]:
        """A new session token and the user's id, for the right email and password."""
        query = select(USERS.c.id, USERS.c.password_hash).where(
            USERS.c.email == email.strip().lower()
        )
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(query)).first()
        good = await asyncio.to_thread(_verify, row.password_hash if row else _DUMMY_HASH, password)
        if row is None or not good:
            raise AuthenticationError(
                "wrong email or password", suggestions=["check both, then sign in again"]
            )
        async with self.catalog.engine().begin() as db:
            await db.execute(
                update(USERS).where(USERS.c.id == row.id).values(last_login=stamp(self._now()))
            )
            token = await self._issue(db, row.id, "session", "login", SESSION_TTL)
        return token, int(row.id)

    # -- tokens ------------------------------------------------------------------------

    async def _issue(
        self, db: AsyncConnection, user_id: int, kind: str, name: str, ttl: timedelta | None
    ) -> str:
        prefix = "phs_" if kind == "session" else "phk_"
        token = prefix + secrets.token_urlsafe(32)
        now = self._now()
        await db.execute(
            TOKENS.insert().values(
                hash=token_hash(token),
                user_id=user_id,
                kind=kind,
                name=name,
                created_at=stamp(now),
                expires_at=stamp(now + ttl) if ttl else None,
            )
        )
        return token

    async def create_api_token(
        self, user_id: int, name: str = "", ttl: timedelta | None = None
    ) -> str:
        """A token for CI (``X-API-Key`` or ``Authorization: Bearer``)."""
        async with self.catalog.engine().begin() as db:
            return await self._issue(db, user_id, "api", name, ttl)

    async def authenticate(self, token: str) -> Signed:
        query = (
            select(TOKENS.c.user_id, TOKENS.c.kind, TOKENS.c.expires_at, USERS.c.role)
            .select_from(TOKENS.join(USERS, USERS.c.id == TOKENS.c.user_id))
            .where(TOKENS.c.hash == token_hash(token))
        )
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(query)).first()
        if row is None or (row.expires_at and row.expires_at <= stamp(self._now())):
            raise AuthenticationError(
                "the token is unknown or has expired",
                suggestions=["sign in again: plughost login"],
            )
        return Signed(int(row.user_id), str(row.role), str(row.kind), token_hash(token))

    async def revoke(self, token_hash_: str) -> None:
        async with self.catalog.engine().begin() as db:
            await db.execute(TOKENS.delete().where(TOKENS.c.hash == token_hash_))

    # -- publishers --------------------------------------------------------------------

    async def create_publisher(
        self, slug: str, name: str, *, owner_id: int, description: str = "", website: str = ""
    ) -> Publisher:
        slug = validate_slug(slug)
        now = stamp(self._now())
        publisher_id = str(uuid.uuid4())
        try:
            async with self.catalog.engine().begin() as db:
                result = await db.execute(
                    PUBLISHERS.insert()
                    .values(
                        id=publisher_id,
                        slug=slug,
                        name=name or slug,
                        description=description,
                        website=website,
                        created_at=now,
                        updated_at=now,
                    )
                    .returning(PUBLISHERS)
                )
                row = result.one()
                await db.execute(
                    MEMBERS.insert().values(
                        publisher_id=publisher_id, user_id=owner_id, role="owner", created_at=now
                    )
                )
        except IntegrityError:
            raise AlreadyExistsError(
                f"publisher {slug!r} exists", suggestions=["choose another slug"]
            ) from None
        return _publisher(row)

    async def publisher(self, slug: str) -> Publisher:
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(select(PUBLISHERS).where(PUBLISHERS.c.slug == slug))).first()
        if row is None:
            raise NotFoundError(
                f"no publisher {slug!r}",
                suggestions=["an administrator creates it: plughost registry publisher add"],
            )
        return _publisher(row)

    async def publisher_by_id(self, publisher_id: str) -> Publisher:
        query = select(PUBLISHERS).where(PUBLISHERS.c.id == publisher_id)
        async with self.catalog.engine().connect() as db:
            row = (await db.execute(query)).first()
        if row is None:
            raise NotFoundError(f"no publisher with id {publisher_id!r}")
        return _publisher(row)

    async def set_member(self, slug: str, user_id: int, role: str) -> None:
        if role not in ROLES:
            raise ValidationError(
                f"unknown publisher role {role!r}", suggestions=[f"use one of {', '.join(ROLES)}"]
            )
        publisher = await self.publisher(slug)
        await self.user(user_id)
        now = stamp(self._now())
        async with self.catalog.engine().begin() as db:
            changed = await db.execute(
                update(MEMBERS)
                .where(MEMBERS.c.publisher_id == publisher.id, MEMBERS.c.user_id == user_id)
                .values(role=role)
            )
            if changed.rowcount == 0:
                await db.execute(
                    MEMBERS.insert().values(
                        publisher_id=publisher.id, user_id=user_id, role=role, created_at=now
                    )
                )

    async def access(self, slug: str, signed: Signed) -> PublisherAccess:
        """What the signed-in user may do for the publisher (registry admins: everything)."""
        publisher = await self.publisher(slug)
        query = select(MEMBERS.c.role).where(
            MEMBERS.c.publisher_id == publisher.id, MEMBERS.c.user_id == signed.user_id
        )
        async with self.catalog.engine().connect() as db:
            role = (await db.execute(query)).scalar_one_or_none()
        effective = "owner" if signed.role == "admin" else (role or "")
        return PublisherAccess(
            publisher_id=publisher.id,
            slug=publisher.slug,
            member=role is not None,
            role=role or "",
            can_publish=effective in _CAN_PUBLISH,
            can_manage_plugins=effective in _CAN_MANAGE_PLUGINS,
            can_manage_members=effective in _CAN_MANAGE_MEMBERS,
        )

    async def require(self, slug: str, signed: Signed, *, publish: bool = False) -> Publisher:
        """The publisher, if the user is a member (and may publish, with ``publish``)."""
        access = await self.access(slug, signed)
        allowed = access.can_publish if publish else (access.member or signed.role == "admin")
        if not (allowed or (not publish and signed.reviewer)):
            raise PermissionDeniedError(
                f"you may not {'publish for' if publish else 'see'} publisher {slug!r}",
                suggestions=[f"ask an owner of {slug!r} to add you as a developer"],
            )
        return await self.publisher(slug)

    # -- device flow -------------------------------------------------------------------

    async def start_device(self, verification_uri: str) -> DeviceAuthorization:
        device_code = secrets.token_urlsafe(32)
        now = self._now()
        async with self.catalog.engine().begin() as db:
            for _ in range(5):  # a clash of user codes is rare; try another
                user_code = _user_code()
                clash = await db.execute(
                    select(DEVICE_CODES.c.hash).where(DEVICE_CODES.c.user_code == user_code)
                )
                if clash.first() is None:
                    break
            await db.execute(DEVICE_CODES.delete().where(DEVICE_CODES.c.expires_at < stamp(now)))
            await db.execute(
                DEVICE_CODES.insert().values(
                    hash=token_hash(device_code),
                    user_code=user_code,
                    status="pending",
                    created_at=stamp(now),
                    expires_at=stamp(now + DEVICE_TTL),
                )
            )
        return DeviceAuthorization(
            device_code=device_code,
            user_code=user_code,
            verification_uri=verification_uri,
            expires_in=int(DEVICE_TTL.total_seconds()),
            interval=DEVICE_INTERVAL,
        )

    async def decide_device(self, user_code: str, signed: Signed, *, approve: bool) -> None:
        """A signed-in browser approves (or denies) the command line showing ``user_code``."""
        code = _normal_user_code(user_code)
        async with self.catalog.engine().begin() as db:
            changed = await db.execute(
                update(DEVICE_CODES)
                .where(
                    DEVICE_CODES.c.user_code == code,
                    DEVICE_CODES.c.status == "pending",
                    DEVICE_CODES.c.expires_at > stamp(self._now()),
                )
                .values(status="approved" if approve else "denied", user_id=signed.user_id)
            )
        if changed.rowcount == 0:
            raise NotFoundError(
                f"no pending sign-in with code {code!r}",
                suggestions=["check the code the command line shows; it is valid 10 minutes"],
            )

    async def exchange_device(self, device_code: str) -> tuple[str, int]:
        """The session token for an approved device code (once), else a DeviceFlowError."""
        key = token_hash(device_code)
        async with self.catalog.engine().begin() as db:
            row = (await db.execute(select(DEVICE_CODES).where(DEVICE_CODES.c.hash == key))).first()
            if row is None:
                raise DeviceFlowError("invalid_grant", "unknown device code")
            if row.expires_at <= stamp(self._now()):
                raise DeviceFlowError("expired_token", "the device code has expired")
            if row.status == "pending":
                raise DeviceFlowError("authorization_pending", "not approved yet")
            if row.status == "denied":
                raise DeviceFlowError("access_denied", "the sign-in was denied")
            taken = await db.execute(
                update(DEVICE_CODES)
                .where(DEVICE_CODES.c.hash == key, DEVICE_CODES.c.status == "approved")
                .values(status="used")
            )
            if taken.rowcount == 0:  # used already (here or by another server)
                raise DeviceFlowError("invalid_grant", "the device code was used already")
            assert row.user_id is not None
            token = await self._issue(db, row.user_id, "session", "device", SESSION_TTL)
        return token, int(row.user_id)


def administer(
    directory: str | Path,
    action: Callable[[Accounts], Awaitable[T]],
    *,
    database: str | None = None,
) -> T:
    """Run ``action`` on a registry's accounts from blocking code (the command line: a
    registry's first users and publishers are made there, by whoever runs its servers)."""

    async def run() -> T:
        catalog = Catalog(directory, database=database, pooled=False)
        await catalog.open()
        try:
            return await action(Accounts(catalog))
        finally:
            await catalog.close()

    return asyncio.run(run())
