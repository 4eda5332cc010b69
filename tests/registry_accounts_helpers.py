"""A live registry server with users and a publisher, for the account and submission tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from plughost.registry.accounts import Accounts, administer
from plughost.registry.server import create_app, running_server

PASSWORD = "correct horse battery"


@dataclass
class Live:
    url: str
    root: Path
    app: FastAPI
    tokens: dict[str, str]  # who -> session token

    def call(self, method: str, path: str, who: str | None = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def data(self, method: str, path: str, who: str | None = None, **kw: Any) -> Any:
        answer = self.call(method, path, who, **kw)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["success"] is True
        return body["data"]

    def new_submission(
        self, plugin_id: str, version: str, arches: list[str], **fields: Any
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """As dev of acme: a new submission and its upload URL per architecture."""
        made: dict[str, Any] = self.data(
            "POST",
            "/v1/publishers/acme/submissions",
            "dev",
            json={"plugin_id": plugin_id, "version": version, **fields},
        )
        urls: dict[str, str] = self.data(
            "POST",
            f"/v1/submissions/{made['id']}/upload-urls",
            "dev",
            json={"architectures": arches},
        )["urls"]
        return made, urls


def populate(root: Path, database: str | None = None) -> None:
    """admin (registry admin), dev (owner of publisher acme), outsider, and publisher other."""

    async def make(accounts: Accounts) -> None:
        admin = await accounts.create_user("admin@example.invalid", PASSWORD, role="admin")
        dev = await accounts.create_user("dev@example.invalid", PASSWORD)
        out = await accounts.create_user("outsider@example.invalid", PASSWORD)
        await accounts.create_publisher("acme", "Acme Tools", owner_id=dev.id)
        await accounts.create_publisher("other", "Other Org", owner_id=out.id)
        del admin

    administer(root, make, database=database)


def live_registry(
    root: Path, *, database: str | None = None, storage: str | None = None
) -> Iterator[Live]:
    populate(root, database)
    app = create_app(root, database=database, storage=storage)
    with running_server(app) as url:
        live = Live(url, root, app, {})
        for who in ("admin", "dev", "outsider"):
            answer = live.data(
                "POST",
                "/v1/auth/login",
                json={"email": f"{who}@example.invalid", "password": PASSWORD},
            )
            live.tokens[who] = answer["token"]
        yield live
