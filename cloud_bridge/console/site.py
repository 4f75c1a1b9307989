"""The console on the platform's app: its page modules, static files, security headers and the login redirect.

A new page is a module with a `PAGE` (`rendering.ConsolePage`: its router and navigation items) listed in `PAGES`;
the navigation follows this order.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_bridge.console import (
    certificate_pages,
    gateway_pages,
    login_pages,
    order_pages,
    product_pages,
    replace_pages,
)
from cloud_bridge.console.auth import LoginRequiredError, LoginThrottle, clear_cookie
from cloud_bridge.console.rendering import HERE, PREFIX, ConsolePage

PAGES: tuple[ConsolePage, ...] = (
    login_pages.PAGE,
    certificate_pages.PAGE,
    replace_pages.PAGE,
    gateway_pages.PAGE,
    product_pages.PAGE,
    order_pages.PAGE,
)
PAGE_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """The console's pages refuse framing, inline scripts and caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in PAGE_SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequiredError)
    response = login_pages.login_form(request, status=401, error=exc.message)
    clear_cookie(response)
    return response


def install_console(app: FastAPI, pages: tuple[ConsolePage, ...] = PAGES) -> None:
    """Mount the console's pages under /console on the platform's app."""
    app.state.login_throttle = LoginThrottle()
    app.state.console_nav = tuple(item for page in pages for item in page.nav)
    for page in pages:
        app.include_router(page.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
    app.add_exception_handler(LoginRequiredError, _login_required)
    app.add_middleware(SecurityHeaders)
