"""The purchase module's endpoints under /v1/orders: thin calls of cloud_bridge.buyers, .orders, .order_test_data."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import Field

from cloud_bridge import buyers, order_test_data, orders
from cloud_bridge.accounts import Actor
from cloud_bridge.api.deps import ActorDep, PlatformDep
from cloud_bridge.api.models import Body, Out, Problem
from cloud_bridge.buyers import GrantKind
from cloud_bridge.certificates import MAX_QUANTITY
from cloud_bridge.order_states import OrderAction, OrderState
from cloud_bridge.orders import MAX_PRICE_CENTS, Draft, OrderKind, PayMethod
from cloud_bridge.platform import Platform
from wire.ids import CertNo, Pid

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 422)}
ORDER_NO_PATTERN = r"^OR[0-9]{6,10}$"
OrderNoPath = Annotated[str, Path(pattern=ORDER_NO_PATTERN, description="An order number, e.g. OR000001.")]
OrgIdPath = Annotated[int, Path(ge=1, le=2**31 - 1)]
CSV_MEDIA_TYPE = "text/csv"

purchase = APIRouter(prefix="/orders", tags=["orders"], responses=ERRORS)


# -- bodies ------------------------------------------------------------------------------------------------------


class CertificationIn(Body):
    org_id: int = Field(ge=1, le=2**31 - 1)
    note: str = Field(default="", max_length=1000, description="What was checked.")


class CertificationOut(Out):
    org_id: int
    certified_by: str
    note: str
    certified_at: int


class GrantIn(Body):
    account_id: int = Field(ge=1, le=2**31 - 1)
    pid: Pid
    kind: GrantKind = Field(description="buyer: bulk orders and services; rnd (R&D staff): development orders too.")


class GrantOut(Out):
    account_id: int
    org_id: int
    pid: str
    kind: GrantKind
    granted_by: str
    granted_at: int


class DraftIn(Body):
    pid: Pid
    kind: OrderKind
    quantity: int = Field(ge=1, le=MAX_QUANTITY, description="At most 100 in development, 1000 in trial.")
    po_no: str = Field(min_length=1, max_length=64)
    model_no: str = Field(min_length=1, max_length=64)
    material_no: str = Field(min_length=1, max_length=64)
    batch_no: str = Field(default="", max_length=64)
    service: str = Field(default="", max_length=128, description="value_added orders only: which service.")
    delivery_address: str = Field(default="", max_length=1000)
    invoice_title: str = Field(default="", max_length=128, description="Empty: no invoice title.")
    invoice_tax_no: str = Field(default="", max_length=64)

    def draft(self) -> Draft:
        """The store's form."""
        return Draft(**self.model_dump(exclude={"confirm_repeat"}))


class SubmitIn(DraftIn):
    confirm_repeat: bool = Field(
        default=False, description="Submit even though the order repeats earlier ones (POST /v1/orders/check)."
    )


class OrderableOut(Out):
    """A product you may order, and what of it."""

    pid: str
    name: str
    org_id: int = Field(description="The owner: yours, or a customer's whose product your organisation manages.")
    stage: str
    grants: list[GrantKind]
    kinds: list[OrderKind]
    max_quantity: int


class CheckOut(Out):
    """What a submission of the form would do; it stored nothing."""

    stage: str
    max_quantity: int
    repeats: list[str] = Field(description="Earlier orders with the same configuration, PO, model, material numbers.")


class OrderOut(Out):
    order_no: str
    org_id: int
    pid: str
    kind: OrderKind
    stage: str
    quantity: int
    service: str
    po_no: str
    batch_no: str
    model_no: str
    material_no: str
    delivery_address: str
    invoice_title: str
    invoice_tax_no: str
    state: OrderState
    price_cents: int | None
    currency: str | None
    software_version: str | None
    contract_no: str | None
    pay_method: PayMethod | None
    paid_cents: int
    ship_batches: list[str]
    carrier: str | None
    tracking_no: str | None
    invoice_no: str | None
    cert_no: str | None
    snapshot: dict[str, Any] = Field(description="The product's configuration when the order was submitted.")
    created_at: int
    updated_at: int


class EventOut(Out):
    action: str
    from_state: str
    to_state: str
    actor: str
    role: str
    detail: dict[str, Any]
    at: int


class OrderDetail(OrderOut):
    my_actions: list[OrderAction] = Field(description="What the caller may do now.")
    open_actions: list[OrderAction] = Field(description="What anyone may do now.")
    history: list[EventOut]


class PriceIn(Body):
    price_cents: int = Field(ge=1, le=MAX_PRICE_CENTS, description="The order's total price, in cents.")
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class SoftwareIn(Body):
    software_version: str = Field(min_length=1, max_length=64)


class ContractIn(Body):
    contract_no: str = Field(min_length=1, max_length=64)


class PaymentIn(Body):
    amount_cents: int = Field(ge=1, le=MAX_PRICE_CENTS, description="A deposit or the full price; then the balance.")
    method: PayMethod
    reference: str = Field(min_length=1, max_length=128, description="The bank's or payment provider's reference.")


class ShipmentIn(Body):
    batches: list[str] = Field(min_length=1, max_length=50, description="Batch numbers shipped.")
    carrier: str = Field(min_length=1, max_length=64)
    tracking_no: str = Field(min_length=1, max_length=64)


class LinkIn(Body):
    cert_no: CertNo = Field(description="The replacement certificate your organisation applied for with this order.")


class InvoiceIn(Body):
    invoice_no: str = Field(min_length=1, max_length=64)


class CancelIn(Body):
    reason: str = Field(min_length=1, max_length=1000)


class UnitOut(Out):
    sn: str
    old_pid: str
    new_pid: str
    gateway: str
    lease_id: str
    slot: int
    seq: int
    rebadged_at: str = Field(description="ISO 8601, UTC: the time in the gateway's confirmed record.")
    activated_at: str | None = Field(description="ISO 8601, UTC: when the device activated in the field.")


# -- who may order -----------------------------------------------------------------------------------------------


@purchase.get("/certifications")
async def list_certifications(actor: ActorDep, platform: PlatformDep) -> list[CertificationOut]:
    """Certified organisations: all for platform staff, otherwise your own."""
    rows = await platform.run(buyers.certifications, actor)
    return [CertificationOut.model_validate(dict(r._mapping)) for r in rows]


@purchase.post("/certifications", status_code=201)
async def certify(body: CertificationIn, actor: ActorDep, platform: PlatformDep) -> CertificationOut:
    """A platform admin records an organisation's enterprise certification: it may order from now on."""
    await platform.run(buyers.certify, actor, body.org_id, body.note, platform.now())
    return next(c for c in await list_certifications(actor, platform) if c.org_id == body.org_id)


@purchase.delete("/certifications/{org_id}", status_code=204)
async def withdraw_certification(org_id: OrgIdPath, actor: ActorDep, platform: PlatformDep) -> Response:
    """A platform admin withdraws it: no new orders (open ones go on)."""
    await platform.run(buyers.withdraw_certification, actor, org_id)
    return Response(status_code=204)


@purchase.get("/grants")
async def list_grants(actor: ActorDep, platform: PlatformDep) -> list[GrantOut]:
    """Buyer and R&D grants: your organisation's (admins), your own (others), all (platform staff)."""
    return [GrantOut.model_validate(dict(r._mapping)) for r in await platform.run(buyers.list_grants, actor)]


@purchase.post("/grants", status_code=201)
async def grant(body: GrantIn, actor: ActorDep, platform: PlatformDep) -> GrantOut:
    """An admin of your organisation lets one of its accounts order one product it may order."""
    await platform.run(buyers.grant, actor, body.account_id, body.pid, body.kind, platform.now())
    rows = await platform.run(buyers.list_grants, actor)
    found = next(r for r in rows if (r.account_id, r.pid, r.kind) == (body.account_id, body.pid, body.kind))
    return GrantOut.model_validate(dict(found._mapping))


@purchase.delete("/grants/{account_id}/{pid}/{kind}", status_code=204)
async def revoke_grant(
    account_id: OrgIdPath, pid: Annotated[Pid, Path()], kind: GrantKind, actor: ActorDep, platform: PlatformDep
) -> Response:
    """An admin of your organisation takes a grant back."""
    await platform.run(buyers.revoke_grant, actor, account_id, pid, kind)
    return Response(status_code=204)


# -- orders ------------------------------------------------------------------------------------------------------


def _order(row: Any) -> dict[str, Any]:
    fields = dict(row._mapping)
    fields["ship_batches"] = fields["ship_batches"].split(",") if fields["ship_batches"] else []
    fields["snapshot"] = json.loads(fields["snapshot"])
    return fields


async def _detail(platform: Platform, actor: Actor, order_no: str) -> OrderDetail:
    seen = await platform.run(orders.view, actor, order_no)
    events = [EventOut.model_validate(dict(e._mapping) | {"detail": json.loads(e.detail)}) for e in seen.history]
    return OrderDetail.model_validate(
        _order(seen.row) | {"my_actions": seen.mine, "open_actions": seen.open, "history": events}
    )


@purchase.get("/products")
async def orderable(actor: ActorDep, platform: PlatformDep) -> list[OrderableOut]:
    """The products you hold a grant for and may order now, with the kinds and the most units of each."""
    found = await platform.run(orders.orderable, actor)
    return [
        OrderableOut(
            pid=o.product.pid,
            name=o.product.name,
            org_id=o.product.org_id,
            stage=o.product.stage,
            grants=sorted(o.grants),
            kinds=list(o.kinds),
            max_quantity=o.max_quantity,
        )
        for o in found
    ]


@purchase.post("/check")
async def check(body: DraftIn, actor: ActorDep, platform: PlatformDep) -> CheckOut:
    """Run every rule of a submission and store nothing: the limits, and the earlier orders this one repeats."""
    checked = await platform.run(orders.check, actor, body.draft())
    return CheckOut(stage=checked.stage.value, max_quantity=checked.max_quantity, repeats=list(checked.repeats))


@purchase.post("", status_code=201)
async def submit(body: SubmitIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """Submit an order (state intention). A repeat of an earlier order is refused (409) unless confirm_repeat."""
    order_no = await platform.run(
        orders.submit, actor, body.draft(), platform.now(), confirm_repeat=body.confirm_repeat
    )
    return await _detail(platform, actor, order_no)


@purchase.get("")
async def list_orders(
    actor: ActorDep,
    platform: PlatformDep,
    state: OrderState | None = None,
    limit: Annotated[int, Query(ge=1, le=orders.LIST_LIMIT)] = 100,
) -> list[OrderOut]:
    """Your organisation's orders (platform staff: all), newest first."""
    rows = await platform.run(orders.list_visible, actor, state=state, limit=limit)
    return [OrderOut.model_validate(_order(r)) for r in rows]


@purchase.get("/{order_no}")
async def order(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """One order, what you may do with it now, and its history."""
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/confirm-price")
async def confirm_price(order_no: OrderNoPath, body: PriceIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The business manager confirms the total price."""
    await platform.run(orders.confirm_price, actor, order_no, body.price_cents, body.currency, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/confirm-software")
async def confirm_software(
    order_no: OrderNoPath, body: SoftwareIn, actor: ActorDep, platform: PlatformDep
) -> OrderDetail:
    """The project manager confirms the software version."""
    await platform.run(orders.confirm_software, actor, order_no, body.software_version, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/contract")
async def sign_contract(order_no: OrderNoPath, body: ContractIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The business manager records the signed contract."""
    await platform.run(orders.sign_contract, actor, order_no, body.contract_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/payments")
async def pay(order_no: OrderNoPath, body: PaymentIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The business manager records a payment received: a deposit or the full price, then the balance; one method."""
    await platform.run(orders.pay, actor, order_no, body.amount_cents, body.method, body.reference, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/start-production")
async def start_production(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The project manager starts production."""
    await platform.run(orders.start_production, actor, order_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/shipment")
async def ship(order_no: OrderNoPath, body: ShipmentIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The project manager records batch numbers and logistics."""
    await platform.run(orders.ship, actor, order_no, body.batches, body.carrier, body.tracking_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/certificate")
async def link_certificate(order_no: OrderNoPath, body: LinkIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """Your factory admin names the certificate applied for with this order: its units are the test data."""
    await platform.run(orders.link_certificate, actor, order_no, body.cert_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/publish-test-data")
async def publish_test_data(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The project manager opens the test data for download."""
    await platform.run(orders.publish_test_data, actor, order_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/invoice")
async def invoice(order_no: OrderNoPath, body: InvoiceIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """The business manager issues the invoice once the order is paid in full."""
    await platform.run(orders.invoice, actor, order_no, body.invoice_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/complete")
async def complete(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """Your buyer confirms goods and invoice arrived."""
    await platform.run(orders.complete, actor, order_no, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.post("/{order_no}/cancel")
async def cancel(order_no: OrderNoPath, body: CancelIn, actor: ActorDep, platform: PlatformDep) -> OrderDetail:
    """Your buyer or the business manager cancels before production."""
    await platform.run(orders.cancel, actor, order_no, body.reason, platform.now())
    return await _detail(platform, actor, order_no)


@purchase.get("/{order_no}/test-data")
async def test_data(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> list[UnitOut]:
    """The units of the order's certificate its ledger confirmed, one each (the ordering organisation, staff)."""
    _, units = await platform.run(order_test_data.units, actor, order_no)
    return [UnitOut.model_validate(u, from_attributes=True) for u in units]


@purchase.get(
    "/{order_no}/test-data.csv",
    response_class=Response,
    responses={200: {"content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "CSV"}},
)
async def test_data_csv(order_no: OrderNoPath, actor: ActorDep, platform: PlatformDep) -> Response:
    """The same units as CSV, with a header line."""
    _, units = await platform.run(order_test_data.units, actor, order_no)
    disposition = f'attachment; filename="{order_no}-test-data.csv"'
    return Response(
        order_test_data.to_csv(units), media_type=CSV_MEDIA_TYPE, headers={"Content-Disposition": disposition}
    )
