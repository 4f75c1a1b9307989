"""Logging in and out, and the home page listing what the role may use."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from cloud_bridge import logins
from cloud_bridge.console.auth import (
    COOKIE,
    checked_form,
    clear_cookie,
    platform_of,
    session_of,
    set_cookie,
    throttle_of,
)
from cloud_bridge.console.rendering import ConsolePage, nav_of, page_router, render, see_other
from cloud_bridge.errors import AuthenticationError

router = page_router()


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return render(request, "login.html", None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the user name and password; a session cookie on success."""
    platform, throttle = platform_of(request), throttle_of(request)
    form = await request.form()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    try:
        throttle.check(name)
    except AuthenticationError as exc:  # not counted again: the lockout runs from the failures themselves
        return render(request, "login.html", None, status=429, error=str(exc), username=name)
    try:
        token, _ = await platform.run(logins.log_in, name, password, platform.now())
    except AuthenticationError as exc:
        throttle.failed(name)
        return render(request, "login.html", None, status=401, error=str(exc), username=name)
    throttle.succeeded(name)
    response = see_other("/")
    set_cookie(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (its row is deleted, so the cookie is worth nothing after)."""
    session = await session_of(request)
    await checked_form(request, session)
    platform = platform_of(request)
    await platform.run(logins.log_out, request.cookies.get(COOKIE))
    response = render(request, "login.html", None, notice="you are logged out")
    clear_cookie(response)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The pages the role may use."""
    session = await session_of(request)
    return render(request, "home.html", session, pages=nav_of(request, session))


PAGE = ConsolePage(router)
