"""Logging in and out, and the home page listing what the role may use."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from cloud_bridge import logins
from cloud_bridge.console.auth import (
    COOKIE,
    COOKIE_PATH,
    LOGIN_COOKIE,
    check_login_form,
    checked_form,
    clear_cookie,
    login_token,
    platform_of,
    session_of,
    set_cookie,
    set_login_cookie,
    throttle_of,
)
from cloud_bridge.console.rendering import ConsolePage, nav_of, page_router, render, see_other
from cloud_bridge.errors import AuthenticationError, PermissionDeniedError

router = page_router()


def login_form(request: Request, template: str = "login.html", *, status: int = 200, **context: Any) -> Response:
    """A page with the login form (the login page, or one asking to log in first), its CSRF token in a hidden field
    and in the login cookie."""
    token = login_token(request)
    response = render(request, template, None, status=status, login_csrf=token, **context)
    set_login_cookie(request, response, token)
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    """The login form."""
    return login_form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the form's token, then the user name and password; a session cookie on success."""
    platform, throttle = platform_of(request), throttle_of(request)
    form = await request.form()
    name, password = str(form.get("username", "")), str(form.get("password", ""))
    try:
        check_login_form(request, form)
    except PermissionDeniedError as exc:  # nothing is tried or counted: it may not be this user's browser at all
        return login_form(request, status=403, error=str(exc), username=name)
    try:
        throttle.check(name)
    except AuthenticationError as exc:  # not counted again: the lockout runs from the failures themselves
        return login_form(request, status=429, error=str(exc), username=name)
    try:
        token, _ = await platform.run(logins.log_in, name, password, platform.now())
    except AuthenticationError as exc:
        throttle.failed(name)
        return login_form(request, status=401, error=str(exc), username=name)
    throttle.succeeded(name)
    response = see_other("/")
    set_cookie(request, response, token)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session (its row is deleted, so the cookie is worth nothing after)."""
    session = await session_of(request)
    await checked_form(request, session)
    platform = platform_of(request)
    await platform.run(logins.log_out, request.cookies.get(COOKIE))
    response = login_form(request, notice="you are logged out")
    clear_cookie(response)
    return response


@router.get("/")
async def home(request: Request) -> Response:
    """The pages the role may use."""
    session = await session_of(request)
    return render(request, "home.html", session, pages=nav_of(request, session))


PAGE = ConsolePage(router)
