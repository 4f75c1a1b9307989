"""The console's product pages: the list, a product's configuration with its lifecycle buttons, the edit form with
its locks, OEM links and their redemption. Each action calls the API's route function with its body model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData

from cloud_bridge import accounts, oem, products
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.api import product_routes
from cloud_bridge.api.product_routes import OemLinkIn, ProductEdit, RedeemIn, StageIn
from cloud_bridge.console import login_pages
from cloud_bridge.console.auth import LoginRequiredError, checked_form, platform_of, session_of
from cloud_bridge.console.rendering import (
    PREFIX,
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
from cloud_bridge.errors import CloudError, InvalidRequestError
from cloud_bridge.logins import Session
from cloud_bridge.products import NEXT_STAGES, PART_OF_FIELD, STAGE_NAMES, FirmwareKind, Protocol, Service, Stage
from wire.ids import PID

router = page_router()
templates.env.globals["stage_names"] = STAGE_NAMES

STAGE_BUTTONS = {  # (from, to): what the button says
    (Stage.DEVELOPMENT, Stage.TRIAL): "Complete development",
    (Stage.TRIAL, Stage.DEVELOPMENT): "Back to development",
    (Stage.TRIAL, Stage.MASS): "Mass production",
}
TEXT_FIELDS = ("name", "model_no", "firmware_version", "panel", "module")
REDEEM_PATH = "/oem-links/redeem"


@dataclass(frozen=True)
class FieldLock:
    """One field of the edit form: whether its stage locks it and why (with the way back)."""

    name: str
    label: str
    reason: str | None


def _locks(stage: Stage) -> dict[str, FieldLock]:
    return {
        name: FieldLock(name, part.value, products.lock_reason(stage, part)) for name, part in PART_OF_FIELD.items()
    }


@dataclass(frozen=True)
class ProductFacts:
    """What a product's page shows besides the product: what the reader may do, and its OEM links."""

    product: product_routes.ProductOut
    may_change: bool
    link_refusal: str | None  # None: the reader may make an OEM link now
    links: list[product_routes.OemLinkOut]


async def _facts(conn: AsyncConnection, actor: Actor, pid: str) -> ProductFacts:
    row = await products.get(conn, actor, pid)
    owner_kind = (await accounts.get_org(conn, int(row.org_id))).kind
    owns = actor.role is Role.FACTORY_ADMIN and row.org_id == actor.org_id
    refusal = oem.link_refusal(row, owner_kind) if owns else "only the owning factory's admins make OEM links"
    links: list[Row[Any]] = []
    if owns or actor.platform_staff:
        links = await oem.links_of(conn, actor, pid)
    return ProductFacts(
        product_routes.product_out(row), products.may_change(actor, row), refusal,
        [product_routes.OemLinkOut.model_validate(dict(r._mapping)) for r in links],
    )  # fmt: skip


def _stage_buttons(facts: ProductFacts) -> list[tuple[str, str]]:
    if not facts.may_change:
        return []
    stage = facts.product.stage
    return [(to.value, label) for (frm, to), label in STAGE_BUTTONS.items() if frm is stage and to in NEXT_STAGES[frm]]


async def _product_page(request: Request, session: Session, pid: str, *, status: int = 200, **context: Any) -> Response:
    platform = platform_of(request)
    try:
        facts = await platform.run(_facts, session.actor, path_id(PID, pid, "pid"))
    except CloudError as exc:
        return refused(request, session, exc, "Product")
    return render(
        request, "product.html", session, status=status, p=facts.product, facts=facts,
        stage_buttons=_stage_buttons(facts), locks=_locks(facts.product.stage), **context,
    )  # fmt: skip


# -- list ------------------------------------------------------------------------------------------------------


@router.get("/products")
async def products_page(request: Request) -> Response:
    """The products the reader may see; `oem=1` shows only OEM products (the platform's firmware, and copies)."""
    session = await session_of(request)
    only_oem = request.query_params.get("oem") == "1"
    try:
        rows = await product_routes.list_products(session.actor, platform_of(request))
    except CloudError as exc:
        return refused(request, session, exc, "Products")
    if only_oem:
        rows = [p for p in rows if p.firmware is FirmwareKind.OEM]
    return render(request, "products.html", session, products=rows, only_oem=only_oem)


# -- one product: stage, OEM links -----------------------------------------------------------------------------


@router.get("/products/{pid}")
async def product_page(request: Request, pid: str) -> Response:
    """A product's configuration, its lifecycle buttons and its OEM links."""
    return await _product_page(request, await session_of(request), pid)


@router.post("/products/{pid}/stage")
async def product_stage(request: Request, pid: str) -> Response:
    """Move the product: POST /v1/products/{pid}/stage's function."""
    session = await session_of(request)
    values = form_dict(await checked_form(request, session))
    try:
        body = StageIn.model_validate({"stage": values.get("stage", "")})
        await product_routes.set_stage(path_id(PID, pid, "pid"), body, session.actor, platform_of(request))
    except ValidationError as exc:
        return await _product_page(request, session, pid, status=422, error=refusal_of(exc))
    except CloudError as exc:
        return await _product_page(request, session, pid, status=status_of(exc), error=str(exc))
    return see_other(f"/products/{pid}")


def redeem_url(request: Request, token: str) -> str:
    """The link a customer opens: the token rides in the fragment, which browsers never send to a server."""
    return f"{str(request.base_url).rstrip('/')}{PREFIX}{REDEEM_PATH}#{token}"


@router.post("/products/{pid}/oem-links")
async def product_oem_link(request: Request, pid: str) -> Response:
    """Make a one-time OEM link: POST /v1/products/{pid}/oem-links's function; the link is shown this once."""
    session = await session_of(request)
    values = form_dict(await checked_form(request, session))
    try:
        body = OemLinkIn.model_validate({"valid_days": values.get("valid_days") or OemLinkIn().valid_days})
        made = await product_routes.create_oem_link(path_id(PID, pid, "pid"), body, session.actor, platform_of(request))
    except ValidationError as exc:
        return await _product_page(request, session, pid, status=422, error=refusal_of(exc))
    except CloudError as exc:
        return await _product_page(request, session, pid, status=status_of(exc), error=str(exc))
    return await _product_page(
        request, session, pid, status=201, new_link=redeem_url(request, made.token), new_link_expires=made.expires_at
    )


# -- edit ------------------------------------------------------------------------------------------------------


def _edit_context(p: product_routes.ProductOut, typed: dict[str, Any] | None = None) -> dict[str, Any]:
    """The form's context: the stored values, and what was typed into the fields the stage leaves open."""
    locks = _locks(p.stage)
    shown = p.model_dump(mode="json") | {"data_points": json.dumps(p.model_dump(mode="json")["data_points"])}
    shown |= {k: v for k, v in (typed or {}).items() if k in locks and k != "services" and locks[k].reason is None}
    return {
        "p": p, "values": shown, "locks": locks, "protocols": list(Protocol),
        "firmwares": list(FirmwareKind), "services": list(Service), "text_fields": TEXT_FIELDS,
    }  # fmt: skip


def edit_body(form: FormData) -> ProductEdit:
    """The edit a submitted form asks for: only the fields it carries (a locked field is shown but not sent)."""
    values = form_dict(form)
    body: dict[str, Any] = {k: values[k] for k in (*TEXT_FIELDS, "protocol", "firmware") if k in values}
    if "data_points" in values:
        try:
            body["data_points"] = json.loads(values["data_points"] or "[]")
        except ValueError as exc:
            raise InvalidRequestError(
                f"data points are not valid JSON ({exc}); give a list such as "
                '[{"id": 1, "code": "switch", "type": "bool", "mode": "rw"}]',
                field="data_points",
            ) from exc
    if "services_shown" in values:  # an unticked box sends nothing, so the form says it showed them
        body["services"] = [s for s in form.getlist("services") if isinstance(s, str)]
    return ProductEdit.model_validate(body)


@router.get("/products/{pid}/edit")
async def product_edit_page(request: Request, pid: str) -> Response:
    """The edit form: each field its stage locks is shown locked, with the reason and the way back."""
    session = await session_of(request)
    try:
        found = await product_routes.get_product(path_id(PID, pid, "pid"), session.actor, platform_of(request))
    except CloudError as exc:
        return refused(request, session, exc, "Product")
    return render(request, "product_edit.html", session, **_edit_context(found))


@router.post("/products/{pid}/edit")
async def product_edit(request: Request, pid: str) -> Response:
    """Save the edit: PATCH /v1/products/{pid}'s function; a locked field is refused and nothing changes."""
    session = await session_of(request)
    form = await checked_form(request, session)
    platform = platform_of(request)
    try:
        pid = path_id(PID, pid, "pid")
        await product_routes.edit_product(pid, edit_body(form), session.actor, platform)
    except (ValidationError, CloudError) as exc:
        error, status = (refusal_of(exc), 422) if isinstance(exc, ValidationError) else (str(exc), status_of(exc))
        try:
            found = await product_routes.get_product(pid, session.actor, platform)
        except CloudError:
            return render(request, "refused.html", session, status=status, error=error, title="Product")
        context = _edit_context(found, form_dict(form))
        return render(request, "product_edit.html", session, status=status, error=error, **context)
    return see_other(f"/products/{pid}")


# -- redeeming an OEM link -------------------------------------------------------------------------------------


def _redeem_context(values: dict[str, str] | None = None, chosen: list[str] | None = None) -> dict[str, Any]:
    return {"values": values or {}, "services": list(Service), "chosen": chosen or []}


@router.get(REDEEM_PATH)
async def redeem_page(request: Request) -> Response:
    """Where a customer opens an OEM link and names the product it makes (the token comes from the fragment).

    Opened before logging in, it asks to log in first; its script keeps the token in the tab meanwhile (the login
    would lose the fragment), and the page, reached again from the navigation, takes it back."""
    try:
        session = await session_of(request)
    except LoginRequiredError as exc:
        return login_pages.login_form(request, "redeem.html", status=401, error=exc.message, login_first=True)
    return render(request, "redeem.html", session, **_redeem_context())


@router.post(REDEEM_PATH)
async def redeem(request: Request) -> Response:
    """Redeem the link: POST /v1/oem-links/redeem's function; the new product's page on success."""
    session = await session_of(request)
    form = await checked_form(request, session)
    values = form_dict(form)
    chosen = [s for s in form.getlist("services") if isinstance(s, str)]
    context = _redeem_context(values, chosen)
    try:
        body = RedeemIn.model_validate(
            {"token": values.get("token", "").strip(), "name": values.get("name", ""),
             "model_no": values.get("model_no", ""), "services": chosen or None}
        )  # fmt: skip
        made = await product_routes.redeem_oem_link(body, session.actor, platform_of(request))
    except ValidationError as exc:
        return render(request, "redeem.html", session, status=422, error=refusal_of(exc), **context)
    except CloudError as exc:
        return render(request, "redeem.html", session, status=status_of(exc), error=str(exc), **context)
    return see_other(f"/products/{made.pid}?redeemed=1")


# Business and project managers see no organisation's products, so the navigation leaves the page out for them.
PAGE = ConsolePage(
    router,
    (
        NavItem("Products", "/products", frozenset(Role) - {Role.BUSINESS_MANAGER, Role.PROJECT_MANAGER}),
        NavItem("Open an OEM link", REDEEM_PATH, frozenset({Role.CUSTOMER})),  # only a brand's customer redeems
    ),
)
