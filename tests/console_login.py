"""Logging in to the web console without a browser: the form's CSRF token first, as a browser gets it."""

from __future__ import annotations

import re

import httpx

from cloud_bridge.console.auth import CSRF_FIELD

_TOKEN = re.compile(rf'name="{CSRF_FIELD}" value="([^"]+)"')


def form_token(html: str) -> str:
    """The CSRF token a console page's form carries."""
    match = _TOKEN.search(html)
    assert match is not None, "the page has no form with a CSRF token"
    return match.group(1)


async def log_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    """GET the login form (its cookie lands in the client), then POST it with its token."""
    page = await client.get("/console/login")
    form = {"username": name, "password": password, CSRF_FIELD: form_token(page.text)}
    return await client.post("/console/login", data=form)
