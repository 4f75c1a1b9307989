"""*Replacing products PID*: replaceable products, the credential management table, applying, and the audit."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError

from cloud_bridge.accounts import Role
from cloud_bridge.api import product_routes, routes
from cloud_bridge.api.models import ApplicationIn, AuditIn
from cloud_bridge.console.auth import checked_form, platform_of, session_of
from cloud_bridge.console.rendering import (
    ConsolePage,
    NavItem,
    acting,
    form_dict,
    page_router,
    path_id,
    refusal_of,
    refused,
    render,
    see_other,
    status_of,
)
from cloud_bridge.errors import CloudError
from cloud_bridge.logins import Session
from cloud_bridge.products import PRODUCING
from cloud_bridge.replacement import MAY_SCAN
from wire.ids import CERT_NO

router = page_router()
R = Role
MAY_SEE = frozenset({R.ADMIN, R.AUDITOR, R.FACTORY_ADMIN, R.TECHNICIAN, R.CUSTOMER})
APPLICATION_FIELDS = ("original_pid", "new_pid", "quantity", "reason")


async def _certificates(request: Request, session: Session, *, status: int = 200, **context: Any) -> Response:
    platform, actor = platform_of(request), session.actor
    tab = context.pop("tab", None) or request.query_params.get("tab", "credentials")
    try:
        rows = await routes.credential_list(actor, platform)
        replaceable = []
        if actor.role is Role.FACTORY_ADMIN:
            replaceable = [
                p for p in await product_routes.list_products(actor, platform)
                if p.stage in PRODUCING and p.org_id == actor.org_id
            ]  # fmt: skip
    except CloudError as exc:
        return refused(request, session, exc, "Certificates")
    return render(
        request, "certificates.html", session, status=status, certificates=rows, replaceable=replaceable, tab=tab,
        may_apply=actor.role is Role.FACTORY_ADMIN, may_audit=actor.role is Role.AUDITOR,
        may_scan=actor.role in MAY_SCAN, **context,
    )  # fmt: skip


@router.get("/certificates")
async def certificates_page(request: Request) -> Response:
    """Replaceable products and the credential management table."""
    return await _certificates(request, await session_of(request))


@router.get("/certificates/apply")
async def apply_page(request: Request) -> Response:
    """The application form, for one of the factory's products in production."""
    session = await session_of(request)
    try:
        session.actor.require(Role.FACTORY_ADMIN)
    except CloudError as exc:
        return refused(request, session, exc, "Apply for certificate")
    values = {"original_pid": request.query_params.get("original_pid", ""), "quantity": "", "new_pid": ""}
    return render(request, "apply.html", session, values=values, protocols=["wifi"])


@router.post("/certificates/apply")
async def apply(request: Request) -> Response:
    """Apply for a certificate: POST /v1/certificates's function with its body model."""
    session = await session_of(request)
    form = await checked_form(request, session)
    values = form_dict(form)
    protocols = [p for p in form.getlist("protocols") if isinstance(p, str)] or ["wifi"]

    async def act() -> Response:
        body = ApplicationIn.model_validate(
            {k: values.get(k, "") for k in APPLICATION_FIELDS}
            | {"protocols": protocols, "valid_days": values.get("valid_days") or 30}
        )
        out = await routes.apply(body, session.actor, platform_of(request))
        return see_other(f"/certificates?applied={out.cert_no}")

    result: Response = await acting(request, "apply.html", act, session, values=values, protocols=protocols)
    return result


@router.post("/certificates/{cert_no}/audit")
async def audit(request: Request, cert_no: str) -> Response:
    """Approve or reject with a comment: POST /v1/certificates/{no}/audit's function."""
    session = await session_of(request)
    values = form_dict(await checked_form(request, session))
    try:
        body = AuditIn.model_validate(
            {"approve": values.get("decision") == "approve", "comment": values.get("comment", "")}
        )
        await routes.audit(path_id(CERT_NO, cert_no, "cert_no"), body, session.actor, platform_of(request))
    except ValidationError as exc:
        return await _certificates(request, session, status=422, error=refusal_of(exc))
    except CloudError as exc:
        return await _certificates(request, session, status=status_of(exc), error=str(exc))
    return see_other("/certificates")


PAGE = ConsolePage(router, (NavItem("Certificates", "/certificates", MAY_SEE),))
