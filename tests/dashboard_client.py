"""Signing in to a real dashboard without a browser, the way its page does."""

from __future__ import annotations

import httpx

from plughost.service.dashboard.serve import SESSION_FRAGMENT, SESSION_HEADER


def page_token(location: str) -> str:
    """The session token a sign-in redirect hands to the page in its fragment."""
    _, found, token = location.partition(f"#{SESSION_FRAGMENT}=")
    assert found and token, f"no session token in the sign-in redirect to {location!r}"
    return token


async def sign_in(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    """Follow the one-time link with ``client`` (its jar keeps the cookie) and return
    the header the page sends with every request."""
    signed = await client.get(url)
    assert signed.status_code == 303, signed.text
    return {SESSION_HEADER: page_token(signed.headers["location"])}
