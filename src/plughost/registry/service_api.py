"""The marketplace's multi-user routes: sign-in, publishers, submissions, reviews.

Mounted by :func:`.server.create_app` next to the read routes, with the same
envelopes and the original client's paths and JSON names. A request is signed
in by ``Authorization: Bearer TOKEN`` or ``X-API-Key: TOKEN`` (how the original
client sends a JWT or a publisher's API key); there are no cookies, so no
page of another site can act for a signed-in browser.

Sign-ins and uploads are rate limited per client address and per token, in
each server's memory: behind a load balancer each server grants its share.
"""

from __future__ import annotations

import collections
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError

from ..errors import ValidationError
from .accounts import (
    Accounts,
    AlreadyExistsError,
    AuthenticationError,
    DeviceFlowError,
    RateLimitedError,
    Signed,
)
from .catalog import DEFAULT_PER_PAGE, Catalog, Page
from .pages import DASHBOARD_HTML
from .submissions import MAX_UPLOAD_BYTES, Submissions

__all__ = ["RateLimiter", "install"]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class RateLimiter:
    """At most ``limit`` events per key in any ``window`` seconds (a sliding window)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, collections.deque[float]] = {}

    def hit(self, *keys: str) -> None:
        now = time.monotonic()
        for key in keys:
            events = self._events.setdefault(key, collections.deque())
            while events and events[0] <= now - self.window:
                events.popleft()
            if len(events) >= self.limit:
                retry = max(1, round(events[0] + self.window - now))
                raise RateLimitedError(
                    f"too many requests from {key.split(':', 1)[0]}: at most {self.limit} "
                    f"in {self.window:g} s; try again in {retry} s",
                    suggestions=[f"wait {retry} s"],
                )
        for key in keys:
            self._events[key].append(now)
        if len(self._events) > 100_000:  # forget idle keys rather than grow without end
            idle = [k for k, v in self._events.items() if not v or v[-1] <= now - self.window]
            for key in idle:
                del self._events[key]


class LoginInput(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class DeviceTokenInput(BaseModel):
    device_code: str = Field("", max_length=200)
    grant_type: str = ""


class DeviceDecision(BaseModel):
    user_code: str = Field(max_length=32)
    approve: bool = True


class TokenInput(BaseModel):
    name: str = Field("", max_length=200)


class SubmissionInput(BaseModel):
    plugin_id: str
    version: str
    changelog: str = Field("", max_length=64 * 1024)


class UploadURLInput(BaseModel):
    architectures: list[str] = Field(default_factory=list, max_length=32)


class NotesInput(BaseModel):
    notes: str = Field("", max_length=64 * 1024)


class ReviewInput(BaseModel):
    rating: int
    title: str = Field("", max_length=200)
    body: str = Field("", max_length=16 * 1024)


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _token(request: Request) -> str | None:
    key = request.headers.get("x-api-key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def install(
    app: FastAPI,
    catalog: Catalog,
    base: Callable[[Request], str],
    ok: Callable[..., JSONResponse],
    ok_page: Callable[[Page], JSONResponse],
) -> None:
    """Add the routes to ``app`` (the server's envelope helpers ``ok`` and ``ok_page``)."""
    accounts = Accounts(catalog)
    submissions = Submissions(catalog, accounts)
    app.state.accounts = accounts
    app.state.submissions = submissions
    # Replaceable (tests lower them): sign-ins per address; uploads per address and token.
    app.state.login_limit = RateLimiter(30)
    app.state.upload_limit = RateLimiter(60)

    async def signed_in(request: Request) -> Signed:
        token = _token(request)
        if token is None:
            raise AuthenticationError(
                "this call needs a signed-in user",
                suggestions=["send Authorization: Bearer TOKEN (plughost login) or X-API-Key"],
            )
        return await accounts.authenticate(token)

    def upload_limited(request: Request, signed: Signed | None = None) -> None:
        keys = [f"{_address(request)}:upload"]
        if signed is not None:
            keys.append(f"token {signed.token_hash[:12]}:upload")
        app.state.upload_limit.hit(*keys)

    # -- accounts --------------------------------------------------------------------

    @app.post("/v1/auth/login")
    async def login(request: Request, body: LoginInput) -> JSONResponse:
        app.state.login_limit.hit(f"{_address(request)}:login")
        token, user_id = await accounts.login(body.email, body.password)
        return ok({"token": token, "user_id": user_id, "success": True}, "signed in")

    @app.get("/v1/auth/me")
    async def me(request: Request) -> JSONResponse:
        signed = await signed_in(request)
        return ok(await accounts.user(signed.user_id))

    @app.post("/v1/auth/logout")
    async def logout(request: Request) -> JSONResponse:
        signed = await signed_in(request)
        await accounts.revoke(signed.token_hash)
        return ok(None, "signed out")

    @app.post("/v1/auth/tokens")
    async def create_token(
        request: Request, body: Annotated[TokenInput | None, Body()] = None
    ) -> JSONResponse:
        signed = await signed_in(request)
        token = await accounts.create_api_token(signed.user_id, (body or TokenInput()).name)
        return ok({"token": token, "user_id": signed.user_id}, "API token created")

    @app.post("/v1/auth/device/authorize")
    async def device_authorize(request: Request) -> JSONResponse:
        app.state.login_limit.hit(f"{_address(request)}:login")
        return ok(await accounts.start_device(base(request) + "/device"))

    @app.post("/v1/auth/device/token")
    async def device_token(body: DeviceTokenInput) -> JSONResponse:
        # RFC 8628 errors are bare {error, error_description}: the original client reads
        # them so; success is an envelope.
        try:
            if body.grant_type != DEVICE_GRANT:
                raise DeviceFlowError(
                    "unsupported_grant_type", f"grant_type must be {DEVICE_GRANT}"
                )
            token, _ = await accounts.exchange_device(body.device_code)
        except DeviceFlowError as exc:
            return JSONResponse(
                {"error": exc.code, "error_description": exc.detail}, status_code=400
            )
        return ok({"access_token": token, "token_type": "Bearer", "expires_in": 30 * 86400})

    @app.post("/v1/auth/device/approve")
    async def device_approve(request: Request, body: DeviceDecision) -> JSONResponse:
        signed = await signed_in(request)
        await accounts.decide_device(body.user_code, signed, approve=body.approve)
        return ok(None, "approved" if body.approve else "denied")

    # -- publishers ------------------------------------------------------------------

    @app.get("/v1/publishers/{slug}")
    async def get_publisher(slug: str) -> JSONResponse:
        return ok(await accounts.publisher(slug))

    @app.get("/v1/publishers/{slug}/can-i")
    async def can_i(slug: str, request: Request) -> JSONResponse:
        return ok(await accounts.access(slug, await signed_in(request)))

    @app.get("/v1/publishers/{slug}/plugins")
    async def publisher_plugins(
        slug: str, request: Request, page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> JSONResponse:
        page, per_page = max(1, page), min(max(1, per_page), 100)
        ids, total = await submissions.plugin_ids(slug, page, per_page)
        plugins = [await catalog.get_plugin(i, base_url=base(request)) for i in ids]
        return ok_page(Page(plugins, page, per_page, total))

    # -- submissions -----------------------------------------------------------------

    @app.post("/v1/publishers/{slug}/submissions")
    async def create_submission(slug: str, request: Request, body: SubmissionInput) -> JSONResponse:
        signed = await signed_in(request)
        made = await submissions.create(slug, signed, body.plugin_id, body.version, body.changelog)
        return ok(made, "submission created")

    @app.get("/v1/publishers/{slug}/submissions")
    async def publisher_submissions(
        slug: str,
        request: Request,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        status: str = "",
    ) -> JSONResponse:
        publisher = await accounts.require(slug, await signed_in(request))
        return ok_page(
            await submissions.listing(
                publisher_id=publisher.id, status=status, page=page, per_page=per_page
            )
        )

    @app.get("/v1/submissions")
    async def review_queue(
        request: Request, status: str = "", page: int = 1, per_page: int = DEFAULT_PER_PAGE
    ) -> JSONResponse:
        signed = await signed_in(request)
        if not signed.reviewer:
            from .accounts import PermissionDeniedError

            raise PermissionDeniedError(
                "only the registry's reviewers see every submission",
                suggestions=["list a publisher's: GET /v1/publishers/SLUG/submissions"],
            )
        return ok_page(await submissions.listing(status=status, page=page, per_page=per_page))

    @app.get("/v1/submissions/{submission_id}")
    async def get_submission(submission_id: str, request: Request) -> JSONResponse:
        return ok(await submissions.get(submission_id, await signed_in(request)))

    @app.get("/v1/submissions/{submission_id}/history")
    async def submission_history(submission_id: str, request: Request) -> JSONResponse:
        await submissions.get(submission_id, await signed_in(request))
        return ok(await submissions.history(submission_id))

    @app.post("/v1/submissions/{submission_id}/upload-urls")
    async def upload_urls(
        submission_id: str, request: Request, body: UploadURLInput
    ) -> JSONResponse:
        signed = await signed_in(request)
        upload_limited(request, signed)
        urls = await submissions.upload_urls(
            submission_id, signed, body.architectures, base(request)
        )
        return ok({"urls": urls})

    @app.put("/v1/submissions/{submission_id}/artifacts/{arch}")
    async def upload(
        submission_id: str, arch: str, request: Request, expires: int = 0, signature: str = ""
    ) -> JSONResponse:
        submissions.check_upload(submission_id, arch, expires, signature)
        upload_limited(request)
        with tempfile.TemporaryDirectory(prefix="plughost-upload-") as tmp:
            path = Path(tmp) / "package.tar.gz"
            size = 0
            with path.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_UPLOAD_BYTES:
                        raise ValidationError(
                            f"the upload is larger than {MAX_UPLOAD_BYTES} bytes",
                            title="Package too large",
                        )
                    out.write(chunk)
            await submissions.store_upload(submission_id, arch, path)
        return ok({"size": size}, "uploaded")

    def transition(
        action: Callable[[str, Signed], Awaitable[Any]],
    ) -> Callable[[str, Request], Awaitable[JSONResponse]]:
        async def handler(submission_id: str, request: Request) -> JSONResponse:
            return ok(await action(submission_id, await signed_in(request)))

        return handler

    app.post("/v1/submissions/{submission_id}/submit")(transition(submissions.submit))
    app.post("/v1/submissions/{submission_id}/withdraw")(transition(submissions.withdraw))

    @app.post("/v1/submissions/{submission_id}/approve")
    async def approve(
        submission_id: str, request: Request, body: Annotated[NotesInput | None, Body()] = None
    ) -> JSONResponse:
        signed = await signed_in(request)
        notes = (body or NotesInput()).notes
        return ok(await submissions.approve(submission_id, signed, notes), "published")

    @app.post("/v1/submissions/{submission_id}/reject")
    async def reject(
        submission_id: str, request: Request, body: Annotated[NotesInput | None, Body()] = None
    ) -> JSONResponse:
        signed = await signed_in(request)
        notes = (body or NotesInput()).notes
        return ok(await submissions.reject(submission_id, signed, notes), "rejected")

    # -- reviews -----------------------------------------------------------------------

    @app.post("/v1/plugins/{plugin_id}/reviews")
    async def create_review(plugin_id: str, request: Request, body: ReviewInput) -> JSONResponse:
        signed = await signed_in(request)
        try:
            review = await catalog.add_review(
                plugin_id, rating=body.rating, title=body.title, body=body.body,
                user_id=signed.user_id,
            )  # fmt: skip
        except IntegrityError:
            raise AlreadyExistsError(
                f"you have reviewed {plugin_id} already",
                suggestions=["one review per user and plugin"],
            ) from None
        return ok(review, "review created")

    # -- the page ----------------------------------------------------------------------

    @app.get("/dashboard", include_in_schema=False)
    @app.get("/device", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(
            DASHBOARD_HTML,
            headers={
                "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline';"
                " style-src 'unsafe-inline'; frame-ancestors 'none'",
                "X-Frame-Options": "DENY",
                "Cache-Control": "no-store",
            },
        )
