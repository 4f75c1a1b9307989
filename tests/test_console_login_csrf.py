"""The login form is a form like the others: another site cannot post it (login CSRF), nor spend the throttle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cloud_bridge import accounts, logins
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.api.app import create_app
from cloud_bridge.console.auth import COOKIE, CSRF_FIELD, LOGIN_COOKIE, MAX_FAILED_LOGINS
from cloud_bridge.platform import Platform
from tests.console_login import form_token, log_in

NAME, PASSWORD = "tina-technician", "a long enough password"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    platform = await Platform.open(tmp_path / "cloud")
    try:
        org = await platform.run(accounts.create_org, SYSTEM, "factory", OrgKind.FACTORY, 0)
        account_id, _ = await platform.run(accounts.create_account, SYSTEM, org, NAME, Role.TECHNICIAN, 0)
        await platform.run(logins.set_password, SYSTEM, account_id, PASSWORD)
        yield create_app(platform)
    finally:
        await platform.close()


def browser(app: FastAPI, cookies: dict[str, str] | None = None) -> httpx.AsyncClient:
    """One browser: its own cookie jar."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test", cookies=cookies)


def _form(token: str | None) -> dict[str, str]:
    return {"username": NAME, "password": PASSWORD} | ({} if token is None else {CSRF_FIELD: token})


async def test_a_login_without_the_forms_token_is_refused_and_counts_no_failure(app: FastAPI) -> None:
    async with browser(app) as ours, browser(app) as elsewhere:
        page = await ours.get("/console/login")
        token = form_token(page.text)
        assert ours.cookies[LOGIN_COOKIE] == token
        tries = [
            (ours, None),  # our cookie, no field: another site's form posted in our browser
            (elsewhere, token),  # the right field copied, but not our browser's cookie
            (ours, "x" * len(token)),  # a made-up field
        ]
        for _ in range(MAX_FAILED_LOGINS):
            for client, sent in tries:
                answer = await client.post("/console/login", data=_form(sent))
                assert answer.status_code == 403
                assert "CSRF token is missing or wrong" in answer.text
                assert COOKIE not in answer.cookies
        answer = await log_in(ours, NAME, PASSWORD)  # none of those counted towards the lockout
        assert answer.status_code == 303
        assert answer.cookies.get(COOKIE)
        assert LOGIN_COOKIE not in ours.cookies  # spent with the login


async def test_the_login_cookie_is_kept_across_failures_and_replaced_when_malformed(app: FastAPI) -> None:
    async with browser(app) as client:
        first = form_token((await client.get("/console/login")).text)
        wrong = await client.post("/console/login", data=_form(first) | {"password": "wrong"})
        assert wrong.status_code == 401
        assert form_token(wrong.text) == first  # the form shown again posts with the same cookie
    async with browser(app, {LOGIN_COOKIE: "<script>"}) as client:
        fresh = form_token((await client.get("/console/login")).text)
        assert fresh != "<script>"
        assert len(fresh) == 43
