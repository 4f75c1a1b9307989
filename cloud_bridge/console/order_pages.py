"""The console's order pages: place an order (with the repeat warning before it is stored), follow it through its
states with the steps the reader may take, and download its test data. Each action calls the API's route function
with its body model, so a page and the API share one code path."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError

from cloud_bridge.accounts import Actor, Role
from cloud_bridge.api import order_routes
from cloud_bridge.api.order_routes import (
    ORDER_NO_PATTERN,
    CancelIn,
    ContractIn,
    DraftIn,
    InvoiceIn,
    LinkIn,
    OrderDetail,
    PaymentIn,
    PriceIn,
    ShipmentIn,
    SoftwareIn,
    SubmitIn,
)
from cloud_bridge.console.auth import checked_form, platform_of, session_of
from cloud_bridge.console.rendering import (
    ConsolePage,
    NavItem,
    form_dict,
    page_router,
    refusal_of,
    refused,
    render,
    see_other,
    status_of,
)
from cloud_bridge.errors import CloudError, InvalidRequestError
from cloud_bridge.logins import Session
from cloud_bridge.order_states import STEPS, TEST_DATA_OPEN, OrderAction
from cloud_bridge.orders import OrderKind, PayMethod
from cloud_bridge.platform import Platform

router = page_router()

ORDERS_SHOWN = 100
DRAFT_FIELDS = tuple(DraftIn.model_fields)
JSON_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class Input:
    """One input of a step's form."""

    name: str
    label: str
    choices: tuple[str, ...] = ()  # a select instead of a text box


Route = Callable[[str, Any, Actor, Platform], Awaitable[OrderDetail]]


@dataclass(frozen=True)
class StepForm:
    """How the order page offers one step: its button, its inputs, the body model and the API's route function."""

    label: str
    inputs: tuple[Input, ...]
    body: type[BaseModel] | None
    route: Route


def _no_body(route: Callable[[str, Actor, Platform], Awaitable[OrderDetail]]) -> Route:
    async def call(order_no: str, _body: Any, actor: Actor, platform: Platform) -> OrderDetail:
        return await route(order_no, actor, platform)

    return call


A, R = OrderAction, order_routes
STEP_FORMS: dict[OrderAction, StepForm] = {
    A.CONFIRM_PRICE: StepForm(
        "Confirm price",
        (Input("price_cents", "total price (cents)"), Input("currency", "currency")),
        PriceIn,
        R.confirm_price,
    ),
    A.CONFIRM_SOFTWARE: StepForm(
        "Confirm software version", (Input("software_version", "software version"),), SoftwareIn, R.confirm_software
    ),
    A.SIGN_CONTRACT: StepForm(
        "Record contract", (Input("contract_no", "contract number"),), ContractIn, R.sign_contract
    ),
    A.PAY: StepForm(
        "Record payment",
        (
            Input("amount_cents", "amount (cents)"),
            Input("method", "method", tuple(PayMethod)),
            Input("reference", "reference"),
        ),
        PaymentIn,
        R.pay,
    ),
    A.START_PRODUCTION: StepForm("Start production", (), None, _no_body(R.start_production)),
    A.SHIP: StepForm(
        "Record shipment",
        (
            Input("batches", "batch numbers (comma separated)"),
            Input("carrier", "carrier"),
            Input("tracking_no", "tracking number"),
        ),
        ShipmentIn,
        R.ship,
    ),
    A.LINK_CERTIFICATE: StepForm(
        "Link certificate", (Input("cert_no", "certificate number"),), LinkIn, R.link_certificate
    ),
    A.PUBLISH_TEST_DATA: StepForm("Publish test data", (), None, _no_body(R.publish_test_data)),
    A.INVOICE: StepForm("Record invoice", (Input("invoice_no", "invoice number"),), InvoiceIn, R.invoice),
    A.COMPLETE: StepForm("Complete (goods and invoice arrived)", (), None, _no_body(R.complete)),
    A.CANCEL: StepForm("Cancel order", (Input("reason", "reason"),), CancelIn, R.cancel),
}


def checked_order_no(order_no: str) -> str:
    """An order number checked as the API's path type checks it."""
    if re.fullmatch(ORDER_NO_PATTERN, order_no) is None:
        raise InvalidRequestError(f"order number {order_no!r} is not one: it looks like OR000001", field="order_no")
    return order_no


def step_body(step: StepForm, values: Mapping[str, str]) -> BaseModel | None:
    """The step's body model from its form (batch numbers typed comma separated); ValidationError names the field."""
    if step.body is None:
        return None
    data: dict[str, Any] = {i.name: values.get(i.name, "") for i in step.inputs}
    if "batches" in data:
        data["batches"] = [b.strip() for b in data["batches"].split(",") if b.strip()]
    return step.body.model_validate(data)


# -- list and place ---------------------------------------------------------------------------------------------


@router.get("/orders")
async def orders_page(request: Request) -> Response:
    """The orders the reader may read, newest first, and what it may order."""
    session = await session_of(request)
    platform = platform_of(request)
    try:
        rows = await order_routes.list_orders(session.actor, platform, state=None, limit=ORDERS_SHOWN)
        orderable = await order_routes.orderable(session.actor, platform)
    except CloudError as exc:
        return refused(request, session, exc, "Orders")
    return render(request, "orders.html", session, orders=rows, may_order=bool(orderable))


async def _place_page(
    request: Request, session: Session, *, status: int = 200, values: Mapping[str, str] | None = None, **context: Any
) -> Response:
    try:
        orderable = await order_routes.orderable(session.actor, platform_of(request))
    except CloudError as exc:
        return refused(request, session, exc, "Place an order")
    shown = {"quantity": "1"} | {"pid": request.query_params.get("pid", "")} | dict(values or {})
    return render(
        request, "order_new.html", session, status=status, orderable=orderable, kinds=list(OrderKind), values=shown,
        **context,
    )  # fmt: skip


@router.get("/orders/new")
async def place_page(request: Request) -> Response:
    """The order form: the products the reader may order (its own, or a customer's it manages) and their kinds."""
    return await _place_page(request, await session_of(request))


@router.post("/orders/new")
async def place(request: Request) -> Response:
    """Check the order (POST /v1/orders/check's function); warn of a repeat; then submit (POST /v1/orders's)."""
    session = await session_of(request)
    # A browser sends a textarea's line breaks as CRLF (HTML's form encoding); the address keeps them as LF.
    values = {k: v.replace("\r\n", "\n") for k, v in form_dict(await checked_form(request, session)).items()}
    platform, confirmed = platform_of(request), values.get("confirm_repeat") == "1"
    draft = {k: values.get(k, "") for k in DRAFT_FIELDS}
    try:
        if not confirmed:
            checked = await order_routes.check(DraftIn.model_validate(draft), session.actor, platform)
            if checked.repeats:
                return await _place_page(request, session, values=values, repeats=checked.repeats)
        body = SubmitIn.model_validate(draft | {"confirm_repeat": confirmed})
        made = await order_routes.submit(body, session.actor, platform)
    except ValidationError as exc:
        return await _place_page(request, session, status=422, values=values, error=refusal_of(exc))
    except CloudError as exc:
        return await _place_page(request, session, status=status_of(exc), values=values, error=str(exc))
    return see_other(f"/orders/{made.order_no}")


# -- one order --------------------------------------------------------------------------------------------------


async def _order_page(
    request: Request, session: Session, order_no: str, *, status: int = 200, **context: Any
) -> Response:
    try:
        seen = await order_routes.order(checked_order_no(order_no), session.actor, platform_of(request))
    except CloudError as exc:
        return refused(request, session, exc, "Order")
    waiting = [(a, " or ".join(sorted(p.value for p in STEPS[a].parties))) for a in seen.open_actions]
    return render(
        request, "order.html", session, status=status, o=seen, steps=[(a, STEP_FORMS[a]) for a in seen.my_actions],
        waiting=waiting, test_data_open=seen.state in TEST_DATA_OPEN,
        snapshot=json.dumps(seen.snapshot, indent=2, sort_keys=True), **context,
    )  # fmt: skip


@router.get("/orders/{order_no}")
async def order_page(request: Request, order_no: str) -> Response:
    """The order, the steps the reader may take now, who the other open steps wait for, and its history."""
    return await _order_page(request, await session_of(request), order_no)


@router.post("/orders/{order_no}/steps/{action}")
async def order_step(request: Request, order_no: str, action: str) -> Response:
    """Take one step: the API's route function of that step with its body model."""
    session = await session_of(request)
    values = form_dict(await checked_form(request, session))
    try:
        step = STEP_FORMS[OrderAction(action)]
    except ValueError:
        known = ", ".join(a.value for a in OrderAction)
        return await _order_page(request, session, order_no, status=404, error=f"no step {action!r}; steps: {known}")
    try:
        body = step_body(step, values)
        await step.route(checked_order_no(order_no), body, session.actor, platform_of(request))
    except ValidationError as exc:
        return await _order_page(request, session, order_no, status=422, error=refusal_of(exc), values=values)
    except CloudError as exc:
        return await _order_page(request, session, order_no, status=status_of(exc), error=str(exc), values=values)
    return see_other(f"/orders/{order_no}")


@router.get("/orders/{order_no}/test-data.{fmt}")
async def order_test_data(request: Request, order_no: str, fmt: str) -> Response:
    """The test data as a download: GET /v1/orders/{no}/test-data.csv's function, or /test-data's as JSON."""
    session = await session_of(request)
    platform = platform_of(request)
    try:
        order_no = checked_order_no(order_no)
        if fmt == "csv":
            return await order_routes.test_data_csv(order_no, session.actor, platform)
        if fmt != "json":
            raise InvalidRequestError(f"test data comes as csv or json, not {fmt!r}", field="format")
        units = await order_routes.test_data(order_no, session.actor, platform)
    except CloudError as exc:
        return await _order_page(request, session, order_no, status=status_of(exc), error=str(exc))
    body = json.dumps([u.model_dump(mode="json") for u in units], indent=2)
    disposition = f'attachment; filename="{order_no}-test-data.json"'
    return Response(body, media_type=JSON_MEDIA_TYPE, headers={"Content-Disposition": disposition})


# Every role reads orders: the ordering organisation's accounts its own, the platform's staff all of them.
PAGE = ConsolePage(router, (NavItem("Orders", "/orders", frozenset(Role)),))
