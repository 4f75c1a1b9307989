"""The purchase module through its store functions: who may order, the state machine, repeats, test data."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from cloud_bridge import accounts, buyers, oem, order_test_data, orders, products
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.buyers import GrantKind
from cloud_bridge.errors import CloudError, ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from cloud_bridge.order_states import OrderAction, OrderState
from cloud_bridge.orders import NotYourStepError, OrderKind, OrderRefusedError, PayMethod, RepeatedOrderError
from cloud_bridge.platform import Platform
from cloud_bridge.products import Stage
from cloud_bridge.store.schema import order_events
from tests.orders_support import (
    DEV_PID,
    FACTORY,
    MASS_PID,
    OLD_PID,
    RIVAL_PID,
    TRIAL_PID,
    Shop,
    draft,
    make_shop,
)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.records import RecordKind
from wire.tokens import Grant, sign


@pytest.fixture(name="shop")
async def fixture_shop(platform: Platform) -> Shop:
    return await make_shop(platform)


async def _to_shipped(shop: Shop, order_no: str, *, deposit: int = 400, method: PayMethod = PayMethod.OFFLINE) -> None:
    a, now = shop.actors, shop.platform.now()
    await shop.run(orders.confirm_price, a["bm"], order_no, 1000, "EUR", now)
    await shop.run(orders.confirm_software, a["pm"], order_no, "fw 2.1.0", now)
    await shop.run(orders.sign_contract, a["bm"], order_no, "C-77", now)
    await shop.run(orders.pay, a["bm"], order_no, deposit, method, "bank ref 1", now)
    await shop.run(orders.start_production, a["pm"], order_no, now)
    await shop.run(orders.ship, a["pm"], order_no, ["B1", "B2"], "DHL", "JD0001", now)


async def test_a_bulk_order_from_intention_to_completed(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft(invoice_title="F1 Ltd", invoice_tax_no="TAX-9"))
    row = await shop.run(orders.get, a["buyer"], order_no)
    assert (row.state, row.kind, row.stage, row.quantity) == ("intention", "bulk", "mass", 10)
    assert await shop.run(orders.my_actions, a["buyer"], row) == [OrderAction.CANCEL]
    await shop.run(orders.confirm_price, a["bm"], order_no, 1000, "EUR", now)
    row = await shop.run(orders.confirm_software, a["pm"], order_no, "fw 2.1.0", now)
    assert row.state == OrderState.CONFIRMED  # both confirmations: confirmed
    await shop.run(orders.sign_contract, a["bm"], order_no, "C-77", now)
    row = await shop.run(orders.pay, a["bm"], order_no, 400, PayMethod.ONLINE, "psp 123", now)
    assert (row.state, row.paid_cents, row.pay_method) == ("paid", 400, "online")
    await shop.run(orders.start_production, a["pm"], order_no, now)
    row = await shop.run(orders.ship, a["pm"], order_no, ["B1", "B2"], "DHL", "JD0001", now)
    assert (row.ship_batches, row.carrier, row.tracking_no) == ("B1,B2", "DHL", "JD0001")
    cert, _ = await shop.platform.issue_certificate(factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=5)
    await shop.run(orders.link_certificate, a["f_admin"], order_no, cert.cert_no, now)
    with pytest.raises(OrderRefusedError, match="400 of 1000 cents are paid"):
        await shop.run(orders.invoice, a["bm"], order_no, "INV-1", now)
    await shop.run(orders.pay, a["bm"], order_no, 600, PayMethod.ONLINE, "psp 124", now)
    with pytest.raises(OrderRefusedError, match="not published yet"):
        await shop.run(orders.invoice, a["bm"], order_no, "INV-1", now)
    await shop.run(orders.publish_test_data, a["pm"], order_no, now)
    await shop.run(orders.invoice, a["bm"], order_no, "INV-1", now)
    row = await shop.run(orders.complete, a["buyer"], order_no, now)
    assert (row.state, row.invoice_no, row.invoice_title, row.cert_no) == ("completed", "INV-1", "F1 Ltd", cert.cert_no)
    steps = [(e.action, e.to_state, e.role) for e in await shop.run(orders.history, a["buyer"], order_no)]
    assert steps[0] == ("submit", "intention", "buyer")
    assert steps[-1] == ("complete", "completed", "buyer")
    assert [s for s in steps if s[0] == "pay"] == [
        ("pay", "paid", "business_manager"),
        ("pay", "shipped", "business_manager"),
    ]
    assert await shop.run(orders.my_actions, a["buyer"], row) == []


async def test_every_refusal_names_the_state_what_is_allowed_and_who(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    with pytest.raises(OrderRefusedError) as refused:
        await shop.run(orders.ship, a["pm"], order_no, ["B1"], "DHL", "T1", now)
    message = str(refused.value)
    assert "is intention" in message
    assert "confirm_price (business_manager)" in message
    assert "confirm_software (project_manager)" in message
    assert "cancel (business_manager or orderer)" in message
    assert refused.value.state == OrderState.INTENTION
    with pytest.raises(NotYourStepError) as not_mine:
        await shop.run(orders.confirm_price, a["buyer"], order_no, 1000, "EUR", now)
    assert "confirm_price is taken by the business_manager, not by buyer (buyer)" in str(not_mine.value)
    assert "allowed now: confirm_price (business_manager)" in str(not_mine.value)
    with pytest.raises(NotYourStepError):  # the project manager's step is not the business manager's
        await shop.run(orders.confirm_software, a["bm"], order_no, "fw", now)
    with pytest.raises(NotYourStepError):  # platform admins run no order steps
        await shop.run(orders.confirm_price, a["admin"], order_no, 1000, "EUR", now)
    with pytest.raises(InvalidRequestError) as bad:  # bad arguments name the state too
        await shop.run(orders.confirm_price, a["bm"], order_no, 0, "EUR", now)
    assert bad.value.field == "price_cents"
    assert f"order {order_no} is intention, allowed now: confirm_price (business_manager)" in str(bad.value)
    await shop.run(orders.confirm_price, a["bm"], order_no, 1000, "EUR", now)
    with pytest.raises(OrderRefusedError, match="the price is confirmed already"):
        await shop.run(orders.confirm_price, a["bm"], order_no, 1, "EUR", now)
    assert (await shop.run(orders.get, a["bm"], order_no)).price_cents == 1000  # the refused step changed nothing


async def test_payment_is_online_or_offline_never_both(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    await _to_shipped(shop, order_no, deposit=300, method=PayMethod.OFFLINE)
    with pytest.raises(OrderRefusedError, match="never both: record the balance as offline"):
        await shop.run(orders.pay, a["bm"], order_no, 700, PayMethod.ONLINE, "psp", now)
    with pytest.raises(InvalidRequestError, match="exactly the balance, 700") as wrong:
        await shop.run(orders.pay, a["bm"], order_no, 600, PayMethod.OFFLINE, "bank", now)
    assert wrong.value.field == "amount_cents"
    row = await shop.run(orders.pay, a["bm"], order_no, 700, PayMethod.OFFLINE, "bank", now)
    assert (row.paid_cents, row.pay_method, row.state) == (1000, "offline", "shipped")
    with pytest.raises(OrderRefusedError, match="paid in full"):
        await shop.run(orders.pay, a["bm"], order_no, 1, PayMethod.OFFLINE, "bank", now)


async def test_a_buyer_cannot_record_its_own_payment(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    for step, who in ((orders.confirm_price, "bm"), (orders.confirm_software, "pm"), (orders.sign_contract, "bm")):
        args = {"confirm_price": (1000, "EUR"), "confirm_software": ("fw",), "sign_contract": ("C1",)}[step.__name__]
        await shop.run(step, a[who], order_no, *args, now)
    with pytest.raises(NotYourStepError, match="pay is taken by the business_manager"):
        await shop.run(orders.pay, a["buyer"], order_no, 1000, PayMethod.ONLINE, "self-made", now)
    assert (await shop.run(orders.get, a["buyer"], order_no)).paid_cents == 0


async def test_who_may_order_what(shop: Shop) -> None:
    # R&D staff order development samples; a buyer may not; and each phase has its quantity limit.
    dev_sample = draft(DEV_PID, OrderKind.RND_PRODUCT, 100)
    assert (await shop.run(orders.check, shop.actors["rnd"], dev_sample)).max_quantity == 100
    await shop.submit("rnd", dev_sample)
    with pytest.raises(PermissionDeniedError, match="R&D staff only"):
        await shop.submit("buyer", draft(DEV_PID, OrderKind.DEBUG_MODULE, 5))
    with pytest.raises(InvalidRequestError, match="1 to 100 units") as too_many:
        await shop.submit("rnd", draft(DEV_PID, OrderKind.DEBUG_MODULE, 101))
    assert too_many.value.field == "quantity"
    with pytest.raises(ConflictError, match="in development; orders there are of kind: rnd_product, debug_module"):
        await shop.submit("rnd", draft(DEV_PID, OrderKind.BULK, 5))
    await shop.submit("buyer", draft(TRIAL_PID, quantity=1000))
    with pytest.raises(InvalidRequestError, match="in trial holds 1 to 1000"):
        await shop.submit("buyer", draft(TRIAL_PID, quantity=1001, po_no="PO-2"))
    with pytest.raises(ConflictError, match="orders there are of kind: bulk, value_added"):
        await shop.submit("buyer", draft(MASS_PID, OrderKind.RND_PRODUCT, 5))
    await shop.submit("buyer", draft(MASS_PID, quantity=1_000_000))
    with pytest.raises(InvalidRequestError, match="service") as no_service:
        await shop.submit("buyer", draft(MASS_PID, OrderKind.VALUE_ADDED, 5, po_no="PO-3"))
    assert no_service.value.field == "service"
    await shop.submit("buyer", draft(MASS_PID, OrderKind.VALUE_ADDED, 5, po_no="PO-3", service="custom labels"))


async def test_not_a_buyer_and_not_certified_are_refused(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    with pytest.raises(PermissionDeniedError, match="is not a buyer of product mas00001"):
        await shop.submit("plain_buyer", draft())
    with pytest.raises(PermissionDeniedError, match="does not order"):
        await shop.submit("bm", draft())
    with pytest.raises(NotFoundError):  # another factory's product: not revealed, not orderable
        await shop.submit("buyer", draft(RIVAL_PID))
    with pytest.raises(NotFoundError):  # nor grantable
        await shop.grant("f_admin", "buyer", RIVAL_PID, GrantKind.BUYER)
    with pytest.raises(InvalidRequestError, match="accounts of role buyer"):
        await shop.grant("f_admin", "rnd", MASS_PID, GrantKind.BUYER)
    with pytest.raises(NotFoundError):  # an admin grants only its own organisation's accounts
        await shop.grant("r_admin", "buyer", RIVAL_PID, GrantKind.BUYER)
    with pytest.raises(PermissionDeniedError):  # a buyer grants nothing
        await shop.grant("buyer", "plain_buyer", MASS_PID, GrantKind.BUYER)
    with pytest.raises(PermissionDeniedError):  # only a platform admin certifies
        await shop.run(buyers.certify, a["bm"], shop.org[FACTORY], "", now)
    await shop.run(buyers.withdraw_certification, a["admin"], shop.org[FACTORY])
    with pytest.raises(ConflictError, match="enterprise certification"):
        await shop.submit("buyer", draft())
    await shop.run(buyers.certify, a["admin"], shop.org[FACTORY], "again", now)
    await shop.submit("buyer", draft())
    plain = a["plain_buyer"].account_id
    assert plain is not None
    await shop.grant("f_admin", "plain_buyer", MASS_PID, GrantKind.BUYER)
    await shop.run(buyers.revoke_grant, a["f_admin"], plain, MASS_PID, GrantKind.BUYER)
    with pytest.raises(PermissionDeniedError, match="is not a buyer"):  # a revoked grant orders nothing
        await shop.submit("plain_buyer", draft(po_no="PO-9"))
    with pytest.raises(NotFoundError):  # another organisation's admin cannot revoke our grants
        await shop.run(buyers.revoke_grant, a["r_admin"], a["buyer"].account_id, MASS_PID, GrantKind.BUYER)


async def test_other_organisations_neither_see_nor_move_an_order(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    for who in ("r_admin", "r_buyer"):
        with pytest.raises(NotFoundError):
            await shop.run(orders.get, a[who], order_no)
        with pytest.raises(NotFoundError):
            await shop.run(orders.cancel, a[who], order_no, "not mine", now)
        assert await shop.run(orders.list_visible, a[who]) == []
    assert [r.order_no for r in await shop.run(orders.list_visible, a["bm"])] == [order_no]
    with pytest.raises(NotYourStepError):  # an account of the organisation without a grant is no orderer
        await shop.run(orders.cancel, a["plain_buyer"], order_no, "mine?", now)
    row = await shop.run(orders.cancel, a["buyer"], order_no, "wrong quantity", now)
    assert row.state == "cancelled"


async def test_cancel_only_before_production(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    await _to_shipped(shop, order_no)
    with pytest.raises(OrderRefusedError, match="cancel is not possible in state shipped"):
        await shop.run(orders.cancel, a["bm"], order_no, "too late", now)


async def test_a_repeated_order_is_warned_about_before_submission(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    first = await shop.submit("buyer", draft(batch_no="B-1"))
    checked = await shop.run(orders.check, a["buyer"], draft(batch_no="B-2"))  # the batch is not part of it
    assert checked.repeats == (first,)
    with pytest.raises(RepeatedOrderError, match=f"repeats order\\(s\\) {first}") as repeated:
        await shop.submit("buyer", draft())
    assert repeated.value.repeats == (first,)
    assert len(await shop.run(orders.list_visible, a["buyer"])) == 1  # the warning stored nothing
    second = await shop.submit("buyer", draft(), confirm_repeat=True)
    assert (await shop.run(orders.check, a["buyer"], draft())).repeats == (first, second)
    assert (await shop.run(orders.check, a["buyer"], draft(material_no="MAT-2"))).repeats == ()
    for number in (first, second):
        await shop.run(orders.cancel, a["buyer"], number, "replaced", now)
    assert (await shop.run(orders.check, a["buyer"], draft())).repeats == ()  # cancelled orders are replaced
    await shop.submit("buyer", draft())
    # The product's configuration is part of it: after the stage changed, the same numbers are a new order.
    await shop.run(products.set_stage, a["f_admin"], TRIAL_PID, Stage.MASS, now)
    await shop.submit("buyer", draft(TRIAL_PID))
    assert (await shop.run(orders.check, a["buyer"], draft(TRIAL_PID))).repeats != ()


async def test_the_snapshot_is_frozen_at_submission(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft(TRIAL_PID))
    await shop.run(products.set_stage, a["f_admin"], TRIAL_PID, Stage.MASS, now)
    row = await shop.run(orders.get, a["buyer"], order_no)
    snapshot = json.loads(row.snapshot)
    assert (snapshot["pid"], snapshot["stage"], row.stage) == (TRIAL_PID, "trial", "trial")
    assert "updated_at" not in snapshot


async def test_two_racing_payments_count_once(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft())
    await shop.run(orders.confirm_price, a["bm"], order_no, 1000, "EUR", now)
    await shop.run(orders.confirm_software, a["pm"], order_no, "fw", now)
    await shop.run(orders.sign_contract, a["bm"], order_no, "C1", now)
    results = await asyncio.gather(
        *(shop.run(orders.pay, a["bm"], order_no, 1000, PayMethod.OFFLINE, f"ref {i}", now) for i in range(2)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, CloudError) for r in results if isinstance(r, BaseException))
    row = await shop.run(orders.get, a["bm"], order_no)
    assert row.paid_cents == 1000
    async with shop.platform.engine.connect() as conn:
        pays = (await conn.execute(select(order_events).where(order_events.c.action == "pay"))).all()
    assert len(pays) == 1


async def _confirm_units(platform: Platform, cert_no: str, sns: list[str], journal: Journal) -> str:
    lease, _, _ = await platform.issue_lease(cert_no, journal.key.public, len(sns) + 1)
    for i, sn in enumerate(sns):
        for kind in (RecordKind.RESERVED, RecordKind.CONFIRMED):
            journal.add(lease.lease_id, lease.slot_lo + i, sn, kind, new_pid=MASS_PID)
    journal.add(lease.lease_id, lease.slot_lo + len(sns), "SNRESERVED", RecordKind.RESERVED, new_pid=MASS_PID)
    result = await platform.ingest(journal.batch(), topic_gw=journal.gw)
    assert result.anomalies == (), result.anomalies
    return lease.lease_id


def _rows(text: str) -> list[dict[str, Any]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_test_data_lists_exactly_the_certificate_s_confirmed_units(shop: Shop) -> None:
    a, now, p = shop.actors, shop.platform.now(), shop.platform
    order_no = await shop.submit("buyer", draft())
    ours, _ = await p.issue_certificate(factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=5)
    other, _ = await p.issue_certificate(factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=5)
    journal = Journal(old_pid=OLD_PID)
    lease_id = await _confirm_units(p, ours.cert_no, ["SNA001", "SNA002", "SNA003"], journal)
    receipt = sign(Grant(lease_id=lease_id, slot=1, sn="SNA002", new_pid=MASS_PID, iat=now), journal.key)
    assert (await p.activate("SNA002", MASS_PID, receipt)).accepted
    await _confirm_units(p, other.cert_no, ["SNB001", "SNB002"], Journal(old_pid=OLD_PID))
    # Another gateway's key holder reports a unit on our lease's free slot: an anomaly, never a unit of the order.
    intruder = Journal(old_pid=OLD_PID)
    await p.register_gateway(intruder.key.public)
    for kind in (RecordKind.RESERVED, RecordKind.CONFIRMED):
        intruder.add(lease_id, 3, "SNFAKE1", kind, new_pid=MASS_PID)
    assert (await p.ingest(intruder.batch(), topic_gw=intruder.gw)).anomalies != ()
    await _to_shipped(shop, order_no)
    with pytest.raises(OrderRefusedError, match="downloadable once the project manager published it"):
        await shop.run(order_test_data.units, a["buyer"], order_no)
    rival, _ = await p.issue_certificate(factory="rival", original_pid="rold0001", new_pid=RIVAL_PID, quantity=1)
    with pytest.raises(NotFoundError):  # the rival's certificate is not ours to link
        await shop.run(orders.link_certificate, a["f_admin"], order_no, rival.cert_no, now)
    with pytest.raises(NotYourStepError):  # a buyer does not pick the certificate
        await shop.run(orders.link_certificate, a["buyer"], order_no, ours.cert_no, now)
    await shop.run(orders.link_certificate, a["f_admin"], order_no, ours.cert_no, now)
    await shop.run(orders.publish_test_data, a["pm"], order_no, now)
    _, units = await shop.run(order_test_data.units, a["buyer"], order_no)
    rows = _rows(order_test_data.to_csv(units))
    assert [r["sn"] for r in rows] == ["SNA001", "SNA002", "SNA003"]
    assert {(r["old_pid"], r["new_pid"], r["gateway"]) for r in rows} == {(OLD_PID, MASS_PID, journal.gw)}
    assert [int(r["slot"]) for r in rows] == [0, 1, 2]
    assert rows[0]["rebadged_at"] == "2027-01-15T08:00:01Z"  # the confirmed record's own time (gateway clock)
    assert [r["activated_at"] != "" for r in rows] == [False, True, False]
    assert datetime.fromisoformat(rows[1]["activated_at"]).timestamp() >= now  # the platform's clock
    assert list(rows[0]) == list(order_test_data.COLUMNS)
    _, staff_view = await shop.run(order_test_data.units, a["pm"], order_no)
    assert staff_view == units
    for who in ("r_admin", "r_buyer"):
        with pytest.raises(NotFoundError):
            await shop.run(order_test_data.units, a[who], order_no)
    second = await shop.submit("buyer", draft(po_no="PO-2"))
    with pytest.raises(ConflictError, match=f"linked to order {order_no} already"):
        await _link_after_contract(shop, second, ours.cert_no)


async def _link_after_contract(shop: Shop, order_no: str, cert_no: str) -> None:
    await shop.run(orders.link_certificate, shop.actors["f_admin"], order_no, cert_no, shop.platform.now())


async def test_only_mass_production_bulk_orders_carry_test_data(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    order_no = await shop.submit("buyer", draft(TRIAL_PID))
    with pytest.raises(OrderRefusedError, match="bulk orders placed in mass production; this is a bulk order placed"):
        await shop.run(orders.link_certificate, a["f_admin"], order_no, "RC000001", now)
    mass = await shop.submit("buyer", draft(MASS_PID))
    cert, _ = await shop.platform.issue_certificate(factory=FACTORY, original_pid=MASS_PID, new_pid=OLD_PID, quantity=1)
    with pytest.raises(InvalidRequestError, match="rebadges goods to old00001") as wrong:
        await shop.run(orders.link_certificate, a["f_admin"], mass, cert.cert_no, now)
    assert wrong.value.field == "cert_no"


async def test_a_factory_orders_a_customer_s_product_it_manages(shop: Shop) -> None:
    a, now = shop.actors, shop.platform.now()
    shop.org["brand"] = await shop.run(accounts.create_org, SYSTEM, "brand", OrgKind.BRAND, now)
    customer = await shop.account("brand", "customer", Role.CUSTOMER)
    await shop.account("brand", "brand_buyer", Role.BUYER)
    await shop.run(buyers.certify, a["admin"], shop.org["brand"], "checked", now)
    token, _ = await shop.run(oem.create_link, a["f_admin"], MASS_PID, now)
    copy = await shop.run(oem.redeem, customer, token, oem.Redemption(name="brand lamp", model_no="BR-1"), now)
    # The managing factory's admin grants its own buyer; the brand's admin grants the brand's.
    await shop.grant("f_admin", "buyer", copy, GrantKind.BUYER)
    await shop.grant("customer", "brand_buyer", copy, GrantKind.BUYER)
    with pytest.raises(NotFoundError):
        await shop.grant("r_admin", "r_buyer", copy, GrantKind.BUYER)
    ours = await shop.submit("buyer", draft(copy))
    theirs = await shop.submit("brand_buyer", draft(copy))  # another organisation: not a repeat of ours
    row = await shop.run(orders.get, a["buyer"], ours)
    assert (row.org_id, json.loads(row.snapshot)["model_no"]) == (shop.org[FACTORY], "BR-1")
    with pytest.raises(NotFoundError):  # each organisation reads its own orders only
        await shop.run(orders.get, a["buyer"], theirs)
    with pytest.raises(NotFoundError):
        await shop.submit("r_buyer", draft(copy))
