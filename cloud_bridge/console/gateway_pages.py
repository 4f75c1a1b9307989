"""Gateways and anomalies, as far as the role may see them."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from cloud_bridge.accounts import Role
from cloud_bridge.api import routes
from cloud_bridge.console.auth import platform_of, session_of
from cloud_bridge.console.rendering import ConsolePage, NavItem, page_router, refused, render
from cloud_bridge.errors import CloudError
from cloud_bridge.replacement import MAY_SCAN

router = page_router()
R = Role
ANOMALIES_SHOWN = 200


@router.get("/gateways")
async def gateways_page(request: Request) -> Response:
    """The organisation's gateways with the seq the platform acked."""
    session = await session_of(request)
    try:
        rows = await routes.list_gateways(session.actor, platform_of(request))
    except CloudError as exc:
        return refused(request, session, exc, "Gateways")
    return render(request, "gateways.html", session, gateways=rows, may_scan=session.actor.role in MAY_SCAN)


@router.get("/anomalies")
async def anomalies_page(request: Request) -> Response:
    """Anomalies, newest first."""
    session = await session_of(request)
    try:
        rows = await routes.list_anomalies(
            session.actor, platform_of(request), kind=None, gw=None, limit=ANOMALIES_SHOWN
        )
    except CloudError as exc:
        return refused(request, session, exc, "Anomalies")
    return render(request, "anomalies.html", session, anomalies=rows)


PAGE = ConsolePage(
    router,
    (
        NavItem("Gateways", "/gateways", frozenset({R.ADMIN, R.AUDITOR, R.FACTORY_ADMIN, R.TECHNICIAN})),
        NavItem("Anomalies", "/anomalies", frozenset({R.ADMIN, R.AUDITOR, R.FACTORY_ADMIN})),
    ),
)
