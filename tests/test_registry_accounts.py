"""The registry's accounts over HTTP: login, me, API tokens, the device flow, publishers
and can-i, posted reviews, and the sign-in rate limit, on a live server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_accounts_helpers import PASSWORD, Live, live_registry
from test_registry_server import make_package

from plughost.registry.index import publish
from plughost.registry.service_api import RateLimiter

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("registry")
    src = tmp_path_factory.mktemp("src")
    publish(root, make_package(src, "demo", "1.0.0"))
    yield from live_registry(root)


def test_login_and_me(live: Live) -> None:
    me = live.data("GET", "/v1/auth/me", "dev")
    assert me["email"] == "dev@example.invalid" and me["username"] == "dev"
    assert me["role"] == "user" and isinstance(me["id"], int) and me["last_login"]
    assert set(me) >= {"first_name", "last_name", "avatar", "email_verified", "created_at"}
    wrong = live.call(
        "POST", "/v1/auth/login", json={"email": "dev@example.invalid", "password": "nope!!!!"}
    )
    assert wrong.status_code == 401 and wrong.json()["success"] is False
    unknown = live.call(
        "POST", "/v1/auth/login", json={"email": "who@example.invalid", "password": PASSWORD}
    )
    assert unknown.status_code == 401
    assert live.call("GET", "/v1/auth/me").status_code == 401
    bad = live.call("GET", "/v1/auth/me", headers={"Authorization": "Bearer phs_forged"})
    assert bad.status_code == 401


def test_tokens_and_passwords_are_stored_hashed(live: Live) -> None:
    db = sqlite3.connect(live.root / "index.db")
    try:
        stored = {row[0] for row in db.execute("SELECT hash FROM tokens")}
        hashes = [row[0] for row in db.execute("SELECT password_hash FROM users")]
    finally:
        db.close()
    assert not set(live.tokens.values()) & stored
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)


def test_api_token_for_ci_by_header(live: Live) -> None:
    made = live.data("POST", "/v1/auth/tokens", "dev", json={"name": "ci"})
    assert made["token"].startswith("phk_")
    me = live.call("GET", "/v1/auth/me", headers={"X-API-Key": made["token"]})
    assert me.status_code == 200 and me.json()["data"]["email"] == "dev@example.invalid"


def test_logout_revokes_the_token(live: Live) -> None:
    token = live.data(
        "POST", "/v1/auth/login", json={"email": "dev@example.invalid", "password": PASSWORD}
    )["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert live.call("POST", "/v1/auth/logout", headers=headers).status_code == 200
    assert live.call("GET", "/v1/auth/me", headers=headers).status_code == 401


def _poll(live: Live, device_code: str) -> tuple[int, dict[str, object]]:
    answer = live.call(
        "POST",
        "/v1/auth/device/token",
        json={
            "device_code": device_code,
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        },
    )
    return answer.status_code, answer.json()


def test_device_flow(live: Live) -> None:
    started = live.data("POST", "/v1/auth/device/authorize")
    assert started["verification_uri"] == live.url + "/device"
    assert started["expires_in"] == 600 and started["interval"] >= 1
    assert len(started["user_code"]) == 9 and started["user_code"][4] == "-"
    assert _poll(live, started["device_code"]) == (
        400,
        {"error": "authorization_pending", "error_description": "not approved yet"},
    )
    # Approving needs a signed-in user; the code is accepted in any case and spacing.
    code = started["user_code"].lower().replace("-", " ")
    assert live.call("POST", "/v1/auth/device/approve", json={"user_code": code}).status_code == 401
    live.data("POST", "/v1/auth/device/approve", "dev", json={"user_code": code})
    status, answer = _poll(live, started["device_code"])
    assert status == 200 and answer["success"] is True
    token = answer["data"]["access_token"]  # type: ignore[index]
    assert answer["data"]["token_type"] == "Bearer"  # type: ignore[index]
    me = live.call("GET", "/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["data"]["email"] == "dev@example.invalid"
    assert _poll(live, started["device_code"])[1]["error"] == "invalid_grant"  # once only
    assert _poll(live, "made-up")[1]["error"] == "invalid_grant"


def test_device_flow_denied(live: Live) -> None:
    started = live.data("POST", "/v1/auth/device/authorize")
    live.data(
        "POST",
        "/v1/auth/device/approve",
        "dev",
        json={"user_code": started["user_code"], "approve": False},
    )
    assert _poll(live, started["device_code"])[1]["error"] == "access_denied"
    again = live.call(
        "POST", "/v1/auth/device/approve", "dev", json={"user_code": started["user_code"]}
    )
    assert again.status_code == 404


def test_publishers_and_can_i(live: Live) -> None:
    acme = live.data("GET", "/v1/publishers/acme")
    assert acme["slug"] == "acme" and acme["name"] == "Acme Tools" and acme["id"]
    assert live.call("GET", "/v1/publishers/nobody").status_code == 404
    owner = live.data("GET", "/v1/publishers/acme/can-i", "dev")
    assert owner == {
        "publisher_id": acme["id"],
        "slug": "acme",
        "member": True,
        "role": "owner",
        "can_publish": True,
        "can_manage_plugins": True,
        "can_manage_members": True,
    }
    outsider = live.data("GET", "/v1/publishers/acme/can-i", "outsider")
    assert outsider["member"] is False and outsider["can_publish"] is False
    admin = live.data("GET", "/v1/publishers/acme/can-i", "admin")
    assert admin["member"] is False and admin["can_publish"] is True
    assert live.call("GET", "/v1/publishers/acme/can-i").status_code == 401
    listed = live.call("GET", "/v1/publishers/acme/plugins").json()
    assert listed["data"] == [] and listed["pagination"]["total"] == 0


def test_reviews_one_per_user_rated_1_to_5(live: Live) -> None:
    body = {"rating": 5, "title": "great", "body": "does it"}
    assert live.call("POST", "/v1/plugins/demo/reviews", json=body).status_code == 401
    review = live.data("POST", "/v1/plugins/demo/reviews", "outsider", json=body)
    me = live.data("GET", "/v1/auth/me", "outsider")
    assert review["user_id"] == me["id"] and review["rating"] == 5
    again = live.call("POST", "/v1/plugins/demo/reviews", "outsider", json=body)
    assert again.status_code == 409 and "already" in again.json()["message"]
    bad = live.call("POST", "/v1/plugins/demo/reviews", "dev", json={"rating": 6})
    assert bad.status_code == 400
    assert live.call("POST", "/v1/plugins/nope/reviews", "dev", json=body).status_code == 404
    listed = live.data("GET", "/v1/plugins/demo/reviews")
    assert [r["title"] for r in listed] == ["great"]
    assert live.data("GET", "/v1/plugins/demo")["review_count"] == 1


def test_sign_ins_are_rate_limited_per_address(live: Live) -> None:
    saved = live.app.state.login_limit
    live.app.state.login_limit = RateLimiter(2)
    try:
        wrong = {"email": "dev@example.invalid", "password": "wrong-password"}
        codes = [live.call("POST", "/v1/auth/login", json=wrong).status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        limited = live.call("POST", "/v1/auth/device/authorize")
        assert limited.status_code == 429 and "try again in" in limited.text
    finally:
        live.app.state.login_limit = saved


def test_the_page_is_served_with_a_strict_policy(live: Live) -> None:
    answer = live.call("GET", "/dashboard")
    assert answer.status_code == 200 and "Approve a command-line sign-in" in answer.text
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert live.call("GET", "/device").status_code == 200


def test_accounts_survive_in_the_directory(live: Live, tmp_path: Path) -> None:
    from plughost.registry.accounts import administer

    async def count(accounts: object) -> int:
        from sqlalchemy import func, select

        from plughost.registry.accounts import USERS, Accounts

        assert isinstance(accounts, Accounts)
        async with accounts.catalog.engine().connect() as db:
            return int((await db.execute(select(func.count()).select_from(USERS))).scalar_one())

    assert administer(live.root, count) == 3
