"""Orders of the purchase module: submission with its checks, the state machine's steps, and reading orders.

Every rule lives here; the API routes and the CLI only call these functions (docs/orders.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import buyers, products
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.buyers import GrantKind, is_order_staff
from cloud_bridge.certificates import MAX_QUANTITY
from cloud_bridge.errors import CloudError, ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from cloud_bridge.order_states import MANAGER_OF, STEPS, OrderAction, OrderState, Party, describe
from cloud_bridge.products import Stage
from cloud_bridge.store.schema import certificates, order_events, order_grants, orders
from cloud_bridge.store.schema import products as product_table

log = logging.getLogger(__name__)

ORDER_PREFIX = "OR"
MAX_PRICE_CENTS = 10**12
LIST_LIMIT = 1000


class OrderKind(StrEnum):
    """What is ordered; which kinds a product offers depends on its stage."""

    RND_PRODUCT = "rnd_product"  # development: R&D samples of the product
    DEBUG_MODULE = "debug_module"  # development: modules to debug with
    BULK = "bulk"  # trial or mass production
    VALUE_ADDED = "value_added"  # a value-added service, trial or mass production


class PayMethod(StrEnum):
    """How an order is paid: one method per order, never both."""

    ONLINE = "online"
    OFFLINE = "offline"  # bank transfer to the account the contract names


KINDS_OF_STAGE = {
    Stage.DEVELOPMENT: (OrderKind.RND_PRODUCT, OrderKind.DEBUG_MODULE),
    Stage.TRIAL: (OrderKind.BULK, OrderKind.VALUE_ADDED),
    Stage.MASS: (OrderKind.BULK, OrderKind.VALUE_ADDED),
}
MAX_UNITS = {Stage.DEVELOPMENT: 100, Stage.TRIAL: 1000, Stage.MASS: MAX_QUANTITY}
RND_ONLY = (OrderKind.RND_PRODUCT, OrderKind.DEBUG_MODULE)


class OrderRefusedError(ConflictError):
    """A step the order's state does not allow now; says the state and what is allowed, by whom."""

    def __init__(self, message: str, *, order_no: str, state: OrderState, allowed: list[OrderAction]) -> None:
        super().__init__(message)
        self.order_no = order_no
        self.state = state
        self.allowed = allowed


class NotYourStepError(PermissionDeniedError):
    """The step is possible now, but not for this account; says who may take it."""

    def __init__(self, message: str, *, order_no: str, state: OrderState, allowed: list[OrderAction]) -> None:
        super().__init__(message)
        self.order_no = order_no
        self.state = state
        self.allowed = allowed


class RepeatedOrderError(ConflictError):
    """The order repeats earlier ones (same product configuration, PO, model and material numbers)."""

    def __init__(self, message: str, *, repeats: tuple[str, ...]) -> None:
        super().__init__(message)
        self.repeats = repeats


@dataclass(frozen=True)
class Draft:
    """What a buyer fills in before submitting."""

    pid: str
    kind: OrderKind
    quantity: int
    po_no: str
    model_no: str
    material_no: str
    batch_no: str = ""
    service: str = ""
    delivery_address: str = ""
    invoice_title: str = ""
    invoice_tax_no: str = ""


@dataclass(frozen=True)
class Checked:
    """A draft that passed every rule: its frozen snapshot, fingerprint and earlier orders it repeats."""

    snapshot: str
    fingerprint: bytes
    stage: Stage
    max_quantity: int
    repeats: tuple[str, ...] = field(default=())


def _text(value: str, name: str, *, lo: int, hi: int, lines: bool = False) -> None:
    allowed = "\n" if lines else ""
    if not lo <= len(value) <= hi or any(ord(c) < 32 and c not in allowed for c in value):
        need = f"{lo} to {hi}" if lo else f"at most {hi}"
        raise InvalidRequestError(f"{name} {value!r} must be {need} characters, with no control characters", field=name)


def _check_fields(draft: Draft) -> None:
    for name, lo, hi in (("po_no", 1, 64), ("model_no", 1, 64), ("material_no", 1, 64), ("batch_no", 0, 64),
                         ("invoice_title", 0, 128), ("invoice_tax_no", 0, 64)):  # fmt: skip
        _text(getattr(draft, name), name, lo=lo, hi=hi)
    _text(draft.delivery_address, "delivery_address", lo=0, hi=1000, lines=True)
    if draft.kind == OrderKind.VALUE_ADDED:
        _text(draft.service, "service", lo=1, hi=128)
    elif draft.service:
        raise InvalidRequestError(
            f"service is only for value_added orders, not {draft.kind.value}; leave it empty", field="service"
        )


def snapshot_of(product: Row[Any]) -> str:
    """The product's configuration (as the products module defines it) as canonical JSON."""
    return json.dumps(products.configuration(product), sort_keys=True, separators=(",", ":"))


def fingerprint_of(snapshot: str, draft: Draft) -> bytes:
    """What makes two orders repeats of each other: the configuration and the PO, model and material numbers."""
    key = {"product": snapshot, "po_no": draft.po_no, "model_no": draft.model_no, "material_no": draft.material_no}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()


def _ordering_org(actor: Actor) -> int:
    if actor.org_id is None or is_order_staff(actor):
        raise PermissionDeniedError(
            f"role {actor.role.value} does not order; an account of the ordering organisation with a buyer or rnd "
            "grant for the product submits orders"
        )
    return actor.org_id


async def _check_buyer(conn: AsyncConnection, actor: Actor, draft: Draft, stage: Stage) -> None:
    assert actor.account_id is not None  # organisation accounts have ids
    held = await buyers.grants_of(conn, actor.account_id, draft.pid)
    if not held:
        raise PermissionDeniedError(
            f"account {actor.name} is not a buyer of product {draft.pid}: an admin of your organisation grants "
            "it the buyer (or rnd) role for this product (POST /v1/orders/grants)"
        )
    kinds = KINDS_OF_STAGE[stage]
    if draft.kind not in kinds:
        raise ConflictError(
            f"product {draft.pid} is in {stage.value}; orders there are of kind: {', '.join(k.value for k in kinds)}"
        )
    if draft.kind in RND_ONLY and GrantKind.RND not in held:
        raise PermissionDeniedError(
            f"{draft.kind.value} orders are for R&D staff only; account {actor.name} holds the buyer grant for "
            f"product {draft.pid}, not rnd (an admin of your organisation grants rnd)"
        )


async def check(conn: AsyncConnection, actor: Actor, draft: Draft) -> Checked:
    """Every rule of a submission, storing nothing: what `submit` would do, with the earlier orders it repeats."""
    org_id = _ordering_org(actor)
    _check_fields(draft)
    product = await buyers.orderable_product(conn, org_id, draft.pid)
    if not await buyers.is_certified(conn, org_id):
        raise ConflictError(
            "your organisation has not passed enterprise certification; a platform admin certifies it "
            "(POST /v1/orders/certifications) before it orders"
        )
    stage = Stage(product.stage)
    await _check_buyer(conn, actor, draft, stage)
    most = MAX_UNITS[stage]
    if not 1 <= draft.quantity <= most:
        raise InvalidRequestError(
            f"quantity {draft.quantity}: an order in {stage.value} holds 1 to {most} units", field="quantity"
        )
    snapshot = snapshot_of(product)
    fingerprint = fingerprint_of(snapshot, draft)
    earlier = select(orders.c.order_no).where(
        orders.c.org_id == org_id, orders.c.fingerprint == fingerprint, orders.c.state != OrderState.CANCELLED
    )
    repeats = tuple(str(r.order_no) for r in await conn.execute(earlier.order_by(orders.c.id)))
    return Checked(snapshot, fingerprint, stage, most, repeats)


async def submit(conn: AsyncConnection, actor: Actor, draft: Draft, now: int, *, confirm_repeat: bool = False) -> str:
    """Submit an order (state `intention`); a repeat of an earlier order needs `confirm_repeat`. Return its number."""
    checked = await check(conn, actor, draft)
    if checked.repeats and not confirm_repeat:
        raise RepeatedOrderError(
            f"this order repeats order(s) {', '.join(checked.repeats)}: the same product configuration, PO, model "
            "and material numbers; submit again with confirm_repeat if it is meant",
            repeats=checked.repeats,
        )
    result = await conn.execute(
        orders.insert()
        .values(
            org_id=actor.org_id,
            pid=draft.pid,
            kind=draft.kind.value,
            stage=checked.stage.value,
            quantity=draft.quantity,
            service=draft.service,
            snapshot=checked.snapshot,
            fingerprint=checked.fingerprint,
            po_no=draft.po_no,
            batch_no=draft.batch_no,
            model_no=draft.model_no,
            material_no=draft.material_no,
            delivery_address=draft.delivery_address,
            invoice_title=draft.invoice_title,
            invoice_tax_no=draft.invoice_tax_no,
            state=OrderState.INTENTION.value,
            revision=0,
            paid_cents=0,
            created_by=actor.account_id,
            created_at=now,
            updated_at=now,
        )
        .returning(orders.c.id)
    )
    order_id = int(result.scalar_one())
    order_no = f"{ORDER_PREFIX}{order_id:06d}"
    await conn.execute(update(orders).where(orders.c.id == order_id).values(order_no=order_no))
    detail = {"kind": draft.kind.value, "quantity": draft.quantity, "repeats": list(checked.repeats)}
    await _event(conn, order_id, "submit", OrderState.INTENTION, OrderState.INTENTION, actor, now, detail)
    log.info(
        "order %s: %s x %d of %s submitted by %s", order_no, draft.kind.value, draft.quantity, draft.pid, actor.name
    )
    return order_no


async def _event(
    conn: AsyncConnection,
    order_id: int,
    action: str,
    before: OrderState,
    after: OrderState,
    actor: Actor,
    now: int,
    detail: dict[str, Any],
) -> None:
    await conn.execute(
        order_events.insert().values(
            order_id=order_id,
            action=action,
            from_state=before.value,
            to_state=after.value,
            actor=actor.name,
            role=actor.role.value,
            detail=json.dumps(detail, sort_keys=True),
            at=now,
        )
    )


@dataclass(frozen=True)
class Orderable:
    """A product the account may order now, and what of it (what an order form offers)."""

    product: Row[Any]
    grants: frozenset[GrantKind]
    kinds: tuple[OrderKind, ...]
    max_quantity: int


async def orderable(conn: AsyncConnection, actor: Actor) -> list[Orderable]:
    """The products the actor holds a grant for and its organisation may order, with the kinds it may order."""
    if actor.account_id is None or actor.org_id is None or is_order_staff(actor):
        return []
    query = (
        select(product_table, order_grants.c.kind.label("grant_kind"))
        .join(order_grants, order_grants.c.pid == product_table.c.pid)
        .where(order_grants.c.account_id == actor.account_id)
        .order_by(product_table.c.pid)
    )
    held: dict[str, tuple[Row[Any], set[GrantKind]]] = {}
    for row in await conn.execute(query):
        held.setdefault(row.pid, (row, set()))[1].add(GrantKind(row.grant_kind))
    found = []
    for row, grants in held.values():
        if not buyers.may_order_for(actor.org_id, row):
            continue
        stage = Stage(row.stage)
        kinds = tuple(k for k in KINDS_OF_STAGE[stage] if k not in RND_ONLY or GrantKind.RND in grants)
        if kinds:
            found.append(Orderable(row, frozenset(grants), kinds, MAX_UNITS[stage]))
    return found


# -- reading ---------------------------------------------------------------------------------------------------


async def get(conn: AsyncConnection, actor: Actor, order_no: str, *, lock: bool = False) -> Row[Any]:
    """An order the actor may read: its organisation's, or any for order staff. Others answer NotFoundError."""
    query = select(orders).where(orders.c.order_no == order_no)
    row = (await conn.execute(query.with_for_update() if lock else query)).first()
    if row is None or not (is_order_staff(actor) or (actor.org_id is not None and row.org_id == actor.org_id)):
        raise NotFoundError(f"order {order_no!r} does not exist in your organisation", what="order", key=order_no)
    return row


async def list_visible(
    conn: AsyncConnection, actor: Actor, *, state: OrderState | None = None, limit: int = LIST_LIMIT
) -> list[Row[Any]]:
    """Orders the actor may read, newest first."""
    query = select(orders).order_by(orders.c.id.desc()).limit(limit)
    if not is_order_staff(actor):
        query = query.where(orders.c.org_id == actor.org_id)
    if state is not None:
        query = query.where(orders.c.state == state.value)
    return list((await conn.execute(query)).all())


async def history(conn: AsyncConnection, actor: Actor, order_no: str) -> list[Row[Any]]:
    """Every step of an order, oldest first."""
    row = await get(conn, actor, order_no)
    query = select(order_events).where(order_events.c.order_id == row.id).order_by(order_events.c.id)
    return list((await conn.execute(query)).all())


@dataclass(frozen=True)
class OrderView:
    """An order as its page shows it: the row, what the reader may do now, what anyone may, and its history."""

    row: Row[Any]
    mine: list[OrderAction]
    open: list[OrderAction]
    history: list[Row[Any]]


async def view(conn: AsyncConnection, actor: Actor, order_no: str) -> OrderView:
    """One order with the actions the actor may take now and its history."""
    row = await get(conn, actor, order_no)
    return OrderView(row, await my_actions(conn, actor, row), open_actions(row), await history(conn, actor, order_no))


# -- the state machine -----------------------------------------------------------------------------------------


def blocker(row: Row[Any], action: OrderAction) -> str | None:
    """Why `action` cannot happen to the order now, whoever asks; None when it can."""
    state = OrderState(row.state)
    if state not in STEPS[action].from_states:
        return f"{action.value} is not possible in state {state.value}"
    condition = CONDITIONS.get(action)
    return None if condition is None else condition(row)


def _priced(row: Row[Any]) -> str | None:
    return f"the price is confirmed already ({row.price_cents} cents {row.currency})" if row.price_cents else None


def _versioned(row: Row[Any]) -> str | None:
    version = row.software_version
    return None if version is None else f"the software version is confirmed already ({version})"


def _paid_up(row: Row[Any]) -> str | None:
    return "the order is paid in full" if row.paid_cents >= (row.price_cents or 0) else None


def _linkable(row: Row[Any]) -> str | None:
    if (row.kind, row.stage) != (OrderKind.BULK, Stage.MASS):
        return f"test data comes with bulk orders placed in mass production; this is a {row.kind} order placed in " + (
            f"{row.stage}"
        )
    return None if row.cert_no is None else f"certificate {row.cert_no} is linked already"


def _publishable(row: Row[Any]) -> str | None:
    if row.cert_no is None:
        return "no certificate is linked (the ordering organisation's factory admin links the one applied for it)"
    return None


def _invoiceable(row: Row[Any]) -> str | None:
    if row.paid_cents < (row.price_cents or 0):
        return f"{row.paid_cents} of {row.price_cents} cents are paid; the balance comes before the invoice"
    if row.cert_no is not None and row.state != OrderState.TEST_DATA:
        return f"the test data of certificate {row.cert_no} is not published yet"
    return None


# What else, beyond the state, an action needs from the order.
CONDITIONS: dict[OrderAction, Callable[[Row[Any]], str | None]] = {
    OrderAction.CONFIRM_PRICE: _priced,
    OrderAction.CONFIRM_SOFTWARE: _versioned,
    OrderAction.PAY: _paid_up,
    OrderAction.LINK_CERTIFICATE: _linkable,
    OrderAction.PUBLISH_TEST_DATA: _publishable,
    OrderAction.INVOICE: _invoiceable,
}


def open_actions(row: Row[Any]) -> list[OrderAction]:
    """The actions possible on the order now (by someone)."""
    return [a for a in OrderAction if blocker(row, a) is None]


async def parties_of(conn: AsyncConnection, actor: Actor, row: Row[Any]) -> set[Party]:
    """Which parties of the order the actor is."""
    parties: set[Party] = set()
    if actor.role in MANAGER_OF:
        parties.add(MANAGER_OF[actor.role])
    if actor.org_id is None or actor.org_id != row.org_id or is_order_staff(actor):
        return parties
    if actor.account_id is not None and await buyers.grants_of(conn, actor.account_id, row.pid):
        parties.add(Party.ORDERER)
    if actor.role == Role.FACTORY_ADMIN:
        parties.add(Party.ORG_ADMIN)
    return parties


async def my_actions(conn: AsyncConnection, actor: Actor, row: Row[Any]) -> list[OrderAction]:
    """The actions the actor may take on the order now (what a web page offers as buttons)."""
    mine = await parties_of(conn, actor, row)
    return [a for a in open_actions(row) if STEPS[a].parties & mine]


@asynccontextmanager
async def _stepping(conn: AsyncConnection, actor: Actor, order_no: str, action: OrderAction) -> AsyncIterator[Row[Any]]:
    """The order, once the step may start; a later refusal (bad arguments, a race) also names the state."""
    row = await _begin(conn, actor, order_no, action)
    try:
        yield row
    except (OrderRefusedError, NotYourStepError):
        raise
    except CloudError as exc:
        exc.args = (f"{exc}; order {row.order_no} is {row.state}, allowed now: {describe(open_actions(row))}",)
        raise


def _refusal(row: Row[Any], why: str) -> str:
    return f"order {row.order_no} is {row.state}: {why}; allowed now: {describe(open_actions(row))}"


async def _begin(conn: AsyncConnection, actor: Actor, order_no: str, action: OrderAction) -> Row[Any]:
    """The order, locked, once the action is possible now and the actor is a party allowed to take it."""
    row = await get(conn, actor, order_no, lock=True)
    allowed = open_actions(row)
    why = blocker(row, action)
    if why is not None:
        raise OrderRefusedError(_refusal(row, why), order_no=order_no, state=OrderState(row.state), allowed=allowed)
    if not STEPS[action].parties & await parties_of(conn, actor, row):
        who = " or ".join(sorted(p.value for p in STEPS[action].parties))
        raise NotYourStepError(
            _refusal(row, f"{action.value} is taken by the {who}, not by {actor.name} ({actor.role.value})"),
            order_no=order_no,
            state=OrderState(row.state),
            allowed=allowed,
        )
    return row


async def _move(
    conn: AsyncConnection,
    row: Row[Any],
    action: OrderAction,
    actor: Actor,
    now: int,
    values: dict[str, Any],
    *,
    to: OrderState | None = None,
    detail: dict[str, Any] | None = None,
) -> Row[Any]:
    """Apply a step: the new values and state, if the order did not change since it was read; then its event."""
    before = OrderState(row.state)
    after = to or STEPS[action].to_state or before
    done = await conn.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.revision == row.revision)
        .values(**values, state=after.value, revision=row.revision + 1, updated_at=now)
    )
    if done.rowcount != 1:
        raise ConflictError(f"order {row.order_no} changed while this step was made; reload it and try again")
    await _event(conn, row.id, action.value, before, after, actor, now, values | (detail or {}))
    log.info("order %s: %s by %s (%s -> %s)", row.order_no, action.value, actor.name, before.value, after.value)
    return (await conn.execute(select(orders).where(orders.c.id == row.id))).one()


def _confirmed_after(row: Row[Any], other_done: bool) -> OrderState:
    return OrderState.CONFIRMED if other_done else OrderState(row.state)


async def confirm_price(
    conn: AsyncConnection, actor: Actor, order_no: str, price_cents: int, currency: str, now: int
) -> Row[Any]:
    """The business manager confirms the order's total price (with the software version: `confirmed`)."""
    async with _stepping(conn, actor, order_no, OrderAction.CONFIRM_PRICE) as row:
        if not 1 <= price_cents <= MAX_PRICE_CENTS:
            raise InvalidRequestError(
                f"price_cents {price_cents} must lie between 1 and {MAX_PRICE_CENTS}", field="price_cents"
            )
        if len(currency) != 3 or not currency.isascii() or not currency.isupper():
            raise InvalidRequestError(f"currency {currency!r} must be an ISO 4217 code such as EUR", field="currency")
        to = _confirmed_after(row, row.software_version is not None)
        values = {"price_cents": price_cents, "currency": currency}
        return await _move(conn, row, OrderAction.CONFIRM_PRICE, actor, now, values, to=to)


async def confirm_software(conn: AsyncConnection, actor: Actor, order_no: str, version: str, now: int) -> Row[Any]:
    """The project manager confirms the software version the modules carry (with the price: `confirmed`)."""
    async with _stepping(conn, actor, order_no, OrderAction.CONFIRM_SOFTWARE) as row:
        _text(version, "software_version", lo=1, hi=64)
        to = _confirmed_after(row, row.price_cents is not None)
        return await _move(conn, row, OrderAction.CONFIRM_SOFTWARE, actor, now, {"software_version": version}, to=to)


async def sign_contract(conn: AsyncConnection, actor: Actor, order_no: str, contract_no: str, now: int) -> Row[Any]:
    """The business manager records the contract signed with the ordering organisation."""
    async with _stepping(conn, actor, order_no, OrderAction.SIGN_CONTRACT) as row:
        _text(contract_no, "contract_no", lo=1, hi=64)
        return await _move(conn, row, OrderAction.SIGN_CONTRACT, actor, now, {"contract_no": contract_no})


async def pay(
    conn: AsyncConnection, actor: Actor, order_no: str, amount_cents: int, method: PayMethod, reference: str, now: int
) -> Row[Any]:
    """The business manager records a payment received: a deposit or the full price, then the balance; one method."""
    async with _stepping(conn, actor, order_no, OrderAction.PAY) as row:
        _text(reference, "reference", lo=1, hi=128)
        if row.pay_method is not None and row.pay_method != method:
            raise OrderRefusedError(
                _refusal(
                    row,
                    f"it was paid {row.pay_method} already and one order is paid online or offline, never "
                    f"both: record the balance as {row.pay_method}",
                ),
                order_no=order_no,
                state=OrderState(row.state),
                allowed=open_actions(row),
            )
        owed = int(row.price_cents) - int(row.paid_cents)
        first = row.paid_cents == 0
        if not 1 <= amount_cents <= owed or (not first and amount_cents != owed):
            need = f"1 to {owed} (a deposit, or the full price)" if first else f"exactly the balance, {owed}"
            raise InvalidRequestError(f"amount_cents {amount_cents}: this payment must be {need}", field="amount_cents")
        values = {"paid_cents": int(row.paid_cents) + amount_cents, "pay_method": method.value}
        to = OrderState.PAID if first else None
        detail = {"amount_cents": amount_cents, "reference": reference}
        return await _move(conn, row, OrderAction.PAY, actor, now, values, to=to, detail=detail)


async def start_production(conn: AsyncConnection, actor: Actor, order_no: str, now: int) -> Row[Any]:
    """The project manager starts production (a deposit or more received); no cancelling after this."""
    async with _stepping(conn, actor, order_no, OrderAction.START_PRODUCTION) as row:
        return await _move(conn, row, OrderAction.START_PRODUCTION, actor, now, {})


async def ship(
    conn: AsyncConnection, actor: Actor, order_no: str, batches: list[str], carrier: str, tracking_no: str, now: int
) -> Row[Any]:
    """The project manager records the shipment: the batch numbers and the logistics."""
    async with _stepping(conn, actor, order_no, OrderAction.SHIP) as row:
        if not 1 <= len(batches) <= 50:
            raise InvalidRequestError(f"batches: give 1 to 50 batch numbers, not {len(batches)}", field="batches")
        for batch in batches:
            _text(batch, "batches", lo=1, hi=64)
            if "," in batch:
                raise InvalidRequestError(f"batch number {batch!r} must not contain a comma", field="batches")
        _text(carrier, "carrier", lo=1, hi=64)
        _text(tracking_no, "tracking_no", lo=1, hi=64)
        values = {"ship_batches": ",".join(batches), "carrier": carrier, "tracking_no": tracking_no}
        return await _move(conn, row, OrderAction.SHIP, actor, now, values)


async def link_certificate(conn: AsyncConnection, actor: Actor, order_no: str, cert_no: str, now: int) -> Row[Any]:
    """The ordering organisation's factory admin names the replacement certificate it applied for with the order:
    the order's test data lists that certificate's confirmed units, and only them."""
    async with _stepping(conn, actor, order_no, OrderAction.LINK_CERTIFICATE) as row:
        cert = (await conn.execute(select(certificates).where(certificates.c.cert_no == cert_no))).first()
        if cert is None or cert.org_id != row.org_id:  # the same answer whether another organisation holds it or not
            raise NotFoundError(
                f"certificate {cert_no!r} is not one your organisation applied for", what="certificate", key=cert_no
            )
        if cert.new_pid != row.pid:
            raise InvalidRequestError(
                f"certificate {cert_no} rebadges goods to {cert.new_pid}, not to this order's product {row.pid}",
                field="cert_no",
            )
        if cert.status == "rejected":
            raise ConflictError(f"certificate {cert_no} was rejected; link the certificate that was approved")
        taken = (await conn.execute(select(orders.c.order_no).where(orders.c.cert_no == cert_no))).first()
        if taken is not None:
            raise ConflictError(f"certificate {cert_no} is linked to order {taken.order_no} already; one order each")
        return await _move(conn, row, OrderAction.LINK_CERTIFICATE, actor, now, {"cert_no": cert_no})


async def publish_test_data(conn: AsyncConnection, actor: Actor, order_no: str, now: int) -> Row[Any]:
    """The project manager opens the order's test data (its certificate's confirmed units) for download."""
    async with _stepping(conn, actor, order_no, OrderAction.PUBLISH_TEST_DATA) as row:
        return await _move(conn, row, OrderAction.PUBLISH_TEST_DATA, actor, now, {})


async def invoice(conn: AsyncConnection, actor: Actor, order_no: str, invoice_no: str, now: int) -> Row[Any]:
    """The business manager issues the invoice (to the order's invoice title, if any) once fully paid."""
    async with _stepping(conn, actor, order_no, OrderAction.INVOICE) as row:
        _text(invoice_no, "invoice_no", lo=1, hi=64)
        return await _move(conn, row, OrderAction.INVOICE, actor, now, {"invoice_no": invoice_no})


async def complete(conn: AsyncConnection, actor: Actor, order_no: str, now: int) -> Row[Any]:
    """The ordering side confirms the goods and the invoice arrived: the order is completed."""
    async with _stepping(conn, actor, order_no, OrderAction.COMPLETE) as row:
        return await _move(conn, row, OrderAction.COMPLETE, actor, now, {})


async def cancel(conn: AsyncConnection, actor: Actor, order_no: str, reason: str, now: int) -> Row[Any]:
    """The ordering side or the business manager cancels an order before production (refunds are settled offline)."""
    async with _stepping(conn, actor, order_no, OrderAction.CANCEL) as row:
        _text(reason, "reason", lo=1, hi=1000)
        return await _move(conn, row, OrderAction.CANCEL, actor, now, {}, detail={"reason": reason})
