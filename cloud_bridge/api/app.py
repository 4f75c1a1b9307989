"""The FastAPI application: authentication by API key, errors as problems, a body size limit, the routers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud_bridge.api import routes
from cloud_bridge.api.deps import API_KEY_HEADER
from cloud_bridge.api.validation import validation_problem
from cloud_bridge.errors import (
    AuthenticationError,
    CloudError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from cloud_bridge.platform import Platform
from cloud_bridge.scan_relay import ScanRelay

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
STATUS_OF: list[tuple[type[CloudError], int]] = [
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (InvalidRequestError, 422),
]


async def _cloud_error(_request: Request, exc: Exception) -> JSONResponse:
    status = next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 400)
    body: dict[str, Any] = {"detail": str(exc)}
    if isinstance(exc, InvalidRequestError):
        body["field"] = exc.field
    headers = {"WWW-Authenticate": API_KEY_HEADER} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _integrity_error(_request: Request, exc: Exception) -> JSONResponse:
    # A race the checks before the write did not catch (two requests creating the same thing): the database refused.
    log.info("request refused by a database constraint: %s", exc)
    return JSONResponse({"detail": "the request conflicts with stored data; reload and try again"}, status_code=409)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they declare their length."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLargeError
            return message

        try:
            await self.app(scope, counting, send)
        except _TooLargeError:
            await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        body = b'{"detail":"request body is over the 65536-byte limit"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLargeError(Exception):
    pass


def create_app(platform: Platform, scan_relay: ScanRelay | None = None) -> FastAPI:
    """The HTTP API and the web console (/console) for one platform; `scan_relay` sends the console's scans."""
    app = FastAPI(
        title="rebadge platform",
        version="1",
        description="Replacement certificates, leases, gateways, anomalies and activation. "
        f"Authenticate with the {API_KEY_HEADER} header.",
    )
    app.state.platform = platform
    app.state.scan_relay = scan_relay
    app.add_exception_handler(CloudError, _cloud_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(RequestValidationError, validation_problem)
    app.add_middleware(BodyLimit)
    for router in routes.ROUTERS:
        app.include_router(router, prefix="/v1")
    from cloud_bridge.console.site import install_console  # noqa: PLC0415 - the console renders the API's errors

    install_console(app)
    try:
        from cloud_bridge.api.metrics import install_metrics  # noqa: PLC0415 - the optional metrics extra
    except ImportError:
        log.info("no /metrics: prometheus-client is not installed (pip install 'rebadge[metrics]')")
    else:
        install_metrics(app, "/v1", routes.ROUTERS)
    return app
