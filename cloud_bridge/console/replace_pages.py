"""*Perform replacement*: pick a gateway, scan or type SNs; each goes to it as a command the platform signs, and
the gateway's answer shows beside it (the page polls the rows)."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from cloud_bridge.api import routes, scan_routes
from cloud_bridge.console.auth import LoginRequiredError, checked_form, platform_of, session_of
from cloud_bridge.console.rendering import (
    ConsolePage,
    NavItem,
    form_dict,
    page_router,
    path_id,
    refusal_of,
    refused,
    render,
    see_other,
    status_of,
    templates,
)
from cloud_bridge.errors import CloudError
from cloud_bridge.logins import Session
from cloud_bridge.replacement import MAY_SCAN
from wire.ids import GW_ID

router = page_router()
TITLE = "Perform replacement"


@router.get("/replace")
async def replace_choose(request: Request) -> Response:
    """Pick the gateway the SNs go to."""
    session = await session_of(request)
    try:
        session.actor.require(*MAY_SCAN)
        rows = [g for g in await routes.list_gateways(session.actor, platform_of(request)) if not g.revoked]
    except CloudError as exc:
        return refused(request, session, exc, TITLE)
    return render(request, "replace_choose.html", session, gateways=rows, cert=request.query_params.get("cert", ""))


async def _replace(request: Request, session: Session, gw: str, *, status: int = 200, **context: Any) -> Response:
    platform, relay = platform_of(request), scan_routes.relay_of(request)
    try:
        results = await scan_routes.scan_results(path_id(GW_ID, gw, "gw"), session.actor, platform, relay)
    except CloudError as exc:
        return refused(request, session, exc, TITLE)
    return render(request, "replace.html", session, status=status, gw=gw, results=results, **context)


@router.get("/replace/{gw}")
async def replace_page(request: Request, gw: str) -> Response:
    """Scan or type SNs; each goes to the gateway as a signed command, its result shows beside it."""
    return await _replace(request, await session_of(request), gw)


@router.post("/replace/{gw}")
async def replace_scan(request: Request, gw: str) -> Response:
    """Send one SN: POST /v1/gateways/{gw}/scans's function."""
    session = await session_of(request)
    values = form_dict(await checked_form(request, session))
    platform, relay = platform_of(request), scan_routes.relay_of(request)
    sn = values.get("sn", "")
    try:
        body = scan_routes.ScanIn.model_validate({"sn": sn})
        await scan_routes.send_scan(path_id(GW_ID, gw, "gw"), body, session.actor, platform, relay)
    except ValidationError as exc:
        return await _replace(request, session, gw, status=422, error=refusal_of(exc), sn=sn)
    except CloudError as exc:
        return await _replace(request, session, gw, status=status_of(exc), error=str(exc), sn=sn)
    return see_other(f"/replace/{gw}")


def _row_message(message: str, status: int) -> HTMLResponse:
    # The message can name what the request carried (a malformed gateway id): escaped like every template value.
    return HTMLResponse(f'<tr class="error"><td colspan="5">{escape(message)}</td></tr>', status_code=status)


@router.get("/replace/{gw}/results")
async def replace_results(request: Request, gw: str) -> Response:
    """The results rows alone, which the page polls."""
    try:
        session = await session_of(request)
        results = await scan_routes.scan_results(
            path_id(GW_ID, gw, "gw"), session.actor, platform_of(request), scan_routes.relay_of(request)
        )
    except LoginRequiredError as exc:
        return _row_message(exc.message, 401)
    except CloudError as exc:
        return _row_message(str(exc), status_of(exc))
    return templates.TemplateResponse(request, "replace_rows.html", {"results": results})


PAGE = ConsolePage(router, (NavItem(TITLE, "/replace", frozenset(MAY_SCAN)),))
