"""The console's session cookie, its CSRF check, and the login throttle."""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from cloud_bridge import logins
from cloud_bridge.errors import AuthenticationError, PermissionDeniedError
from cloud_bridge.logins import Session
from cloud_bridge.platform import Platform

COOKIE = "rebadge_session"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf"
CSRF_REFUSED = "this form's CSRF token is missing or wrong (an old page, or another site's form); reload and try again"
# Before there is a session, the login form's token is a cookie of its own, posted back in the form.
LOGIN_COOKIE = "rebadge_login"
LOGIN_COOKIE_VALID_S = 3600
LOGIN_TOKEN_BYTES = 32
LOGIN_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # token_urlsafe(32)
# Failed logins per user name within the window before that name is refused for the rest of it.
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_S = 300.0
MAX_NAME_CHARS = 128  # a user name is an account name (accounts.create_account: at most 128)
MAX_NAMES_TRACKED = 10_000  # user names with recent failures kept; the oldest is forgotten first


class LoginRequiredError(Exception):
    """No live session: the page answers with the login form."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def platform_of(request: Request) -> Platform:
    """The platform the app serves."""
    platform: Platform = request.app.state.platform
    return platform


async def session_of(request: Request) -> Session:
    """The request's live session, or LoginRequiredError."""
    platform = platform_of(request)
    try:
        return await platform.run(logins.session_of, request.cookies.get(COOKIE), platform.now())
    except AuthenticationError as exc:
        raise LoginRequiredError(str(exc)) from exc


async def checked_form(request: Request, session: Session) -> FormData:
    """The POSTed form, once its CSRF token is the session's; PermissionDeniedError otherwise."""
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise PermissionDeniedError(CSRF_REFUSED)
    return form


def login_token(request: Request) -> str:
    """The login form's CSRF token: the browser's own login cookie when it has a well-formed one, else a new one."""
    held = request.cookies.get(LOGIN_COOKIE, "")
    return held if LOGIN_TOKEN.fullmatch(held) else secrets.token_urlsafe(LOGIN_TOKEN_BYTES)


def set_login_cookie(request: Request, response: Any, token: str) -> None:
    """The login form's token as a cookie (double submit): another site's form can post neither it nor the field."""
    response.set_cookie(
        LOGIN_COOKIE, token, max_age=LOGIN_COOKIE_VALID_S, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def check_login_form(request: Request, form: FormData) -> None:
    """PermissionDeniedError unless the login form carries the token its login cookie holds."""
    sent, held = form.get(CSRF_FIELD), request.cookies.get(LOGIN_COOKIE)
    if not isinstance(sent, str) or not held or not hmac.compare_digest(sent.encode(), held.encode()):
        raise PermissionDeniedError(CSRF_REFUSED)


def set_cookie(request: Request, response: Any, token: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure over TLS, for the console's paths only."""
    response.set_cookie(
        COOKIE, token, max_age=logins.SESSION_VALID_S, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip


def clear_cookie(response: Any) -> None:
    """Drop the session cookie in the browser (the row is deleted by logout)."""
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")


def throttle_of(request: Request) -> LoginThrottle:
    """The app's login throttle."""
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


class LoginThrottle:
    """Refuses a user name after `MAX_FAILED_LOGINS` failures within the window (one serving process's memory)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def check(self, name: str) -> None:
        """AuthenticationError while `name` is throttled."""
        if name[:MAX_NAME_CHARS] not in self._failures:
            return
        failures = self._recent(name)
        if len(failures) >= MAX_FAILED_LOGINS:
            wait = FAILED_LOGIN_WINDOW_S - (self._clock() - failures[0])
            raise AuthenticationError(
                f"too many failed logins for this user name; wait {wait:.0f} s and try again, "
                "or ask your administrator to set a new password"
            )

    def failed(self, name: str) -> None:
        """Count one failed login of `name`."""
        self._recent(name).append(self._clock())
        while len(self._failures) > MAX_NAMES_TRACKED:  # a flood of made-up names cannot fill the memory
            del self._failures[next(iter(self._failures))]

    def succeeded(self, name: str) -> None:
        """Forget the failures of `name`."""
        self._failures.pop(name[:MAX_NAME_CHARS], None)

    def _recent(self, name: str) -> deque[float]:
        failures = self._failures.setdefault(name[:MAX_NAME_CHARS], deque())
        while failures and self._clock() - failures[0] > FAILED_LOGIN_WINDOW_S:
            failures.popleft()
        return failures
