"""The purchase module over HTTP: /v1/orders from grant to CSV, refusals as problems, nothing of others revealed."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cloud_bridge.api.app import create_app
from cloud_bridge.platform import Platform
from tests.orders_support import DEV_PID, FACTORY, MASS_PID, OLD_PID, RIVAL_PID, TRIAL_PID, Shop, make_shop
from tests.test_cloud_helpers import Journal
from wire.records import RecordKind

FORM = {"pid": MASS_PID, "kind": "bulk", "quantity": 3, "po_no": "PO-7", "model_no": "M-7", "material_no": "MAT-7"}


class Client:
    """The API, called as one of the shop's accounts."""

    def __init__(self, http: httpx.AsyncClient, shop: Shop) -> None:
        self.http = http
        self.shop = shop

    async def call(self, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, "/v1" + path, json=body, headers={"X-API-Key": self.shop.keys[who]})

    async def ok(self, who: str, method: str, path: str, body: Any = None) -> Any:
        r = await self.call(who, method, path, body)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json() if r.content and r.headers["content-type"].startswith("application/json") else r.text


@pytest.fixture(name="api")
async def fixture_api(tmp_path: Any) -> AsyncIterator[Client]:
    platform = await Platform.open(tmp_path / "cloud")
    try:
        shop = await make_shop(platform)
        transport = httpx.ASGITransport(app=create_app(platform))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            yield Client(http, shop)
    finally:
        await platform.close()


async def test_an_order_over_http_from_grant_to_its_csv(api: Client) -> None:
    shop = api.shop
    plain = shop.actors["plain_buyer"].account_id
    grant = {"account_id": plain, "pid": MASS_PID, "kind": "buyer"}
    assert (await api.ok("f_admin", "POST", "/orders/grants", grant))["granted_by"] == "f_admin"
    assert [g["pid"] for g in await api.ok("plain_buyer", "GET", "/orders/grants")] == [MASS_PID]
    checked = await api.ok("plain_buyer", "POST", "/orders/check", FORM)
    assert checked == {"stage": "mass", "max_quantity": 10_000_000, "repeats": []}
    made = await api.ok("plain_buyer", "POST", "/orders", FORM)
    order_no = made["order_no"]
    assert (made["state"], made["my_actions"], made["snapshot"]["pid"]) == ("intention", ["cancel"], MASS_PID)
    assert (await api.ok("plain_buyer", "POST", "/orders/check", FORM))["repeats"] == [order_no]
    repeated = await api.call("plain_buyer", "POST", "/orders", FORM)
    assert repeated.status_code == 409
    assert order_no in repeated.json()["detail"]
    assert (await api.ok("plain_buyer", "POST", "/orders", FORM | {"confirm_repeat": True}))["state"] == "intention"
    base = f"/orders/{order_no}"
    early = await api.call("pm", "POST", f"{base}/shipment", {"batches": ["B1"], "carrier": "UPS", "tracking_no": "1"})
    assert early.status_code == 409
    assert "is intention" in early.json()["detail"]
    assert "confirm_price (business_manager)" in early.json()["detail"]
    await api.ok("bm", "POST", f"{base}/confirm-price", {"price_cents": 900, "currency": "EUR"})
    await api.ok("pm", "POST", f"{base}/confirm-software", {"software_version": "2.1.0"})
    await api.ok("bm", "POST", f"{base}/contract", {"contract_no": "C-1"})
    mine = await api.call("plain_buyer", "POST", f"{base}/payments",
                          {"amount_cents": 900, "method": "online", "reference": "r"})  # fmt: skip
    assert mine.status_code == 403
    assert "pay is taken by the business_manager" in mine.json()["detail"]
    await api.ok("bm", "POST", f"{base}/payments", {"amount_cents": 900, "method": "offline", "reference": "bank 1"})
    await api.ok("pm", "POST", f"{base}/start-production")
    await api.ok("pm", "POST", f"{base}/shipment", {"batches": ["B1"], "carrier": "UPS", "tracking_no": "1Z"})
    cert, _ = await shop.platform.issue_certificate(factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=3)
    journal = Journal(old_pid=OLD_PID)
    lease, _, _ = await shop.platform.issue_lease(cert.cert_no, journal.key.public, 3)
    for slot, sn in enumerate(["SNX001", "SNX002"]):
        for kind in (RecordKind.RESERVED, RecordKind.CONFIRMED):
            journal.add(lease.lease_id, slot, sn, kind, new_pid=MASS_PID)
    await shop.platform.ingest(journal.batch(), topic_gw=journal.gw)
    await api.ok("f_admin", "POST", f"{base}/certificate", {"cert_no": cert.cert_no})
    closed = await api.call("plain_buyer", "GET", f"{base}/test-data.csv")
    assert closed.status_code == 409
    await api.ok("pm", "POST", f"{base}/publish-test-data")
    text = await api.ok("plain_buyer", "GET", f"{base}/test-data.csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["sn"], r["old_pid"], r["new_pid"], r["slot"]) for r in rows] == [
        ("SNX001", OLD_PID, MASS_PID, "0"), ("SNX002", OLD_PID, MASS_PID, "1"),
    ]  # fmt: skip
    units = await api.ok("bm", "GET", f"{base}/test-data")
    assert [u["sn"] for u in units] == ["SNX001", "SNX002"]
    for who in ("r_admin", "r_buyer"):
        assert (await api.call(who, "GET", f"{base}/test-data.csv")).status_code == 404
        assert (await api.call(who, "GET", base)).status_code == 404
    await api.ok("bm", "POST", f"{base}/invoice", {"invoice_no": "INV-1"})
    done = await api.ok("plain_buyer", "POST", f"{base}/complete")
    assert done["state"] == "completed"
    assert [e["action"] for e in done["history"]][-3:] == ["publish_test_data", "invoice", "complete"]


async def test_certification_and_grants_over_http(api: Client) -> None:
    org = api.shop.org[FACTORY]
    assert (await api.call("bm", "POST", "/orders/certifications", {"org_id": org})).status_code == 403
    assert (await api.call("admin", "DELETE", f"/orders/certifications/{org}")).status_code == 204
    uncertified = await api.call("buyer", "POST", "/orders", FORM)
    assert uncertified.status_code == 409
    assert "enterprise certification" in uncertified.json()["detail"]
    again = await api.ok("admin", "POST", "/orders/certifications", {"org_id": org, "note": "renewed"})
    assert again["note"] == "renewed"
    assert [c["org_id"] for c in await api.ok("buyer", "GET", "/orders/certifications")] == [org]
    rival = {"account_id": api.shop.actors["buyer"].account_id, "pid": RIVAL_PID, "kind": "buyer"}
    assert (await api.call("f_admin", "POST", "/orders/grants", rival)).status_code == 404
    buyer_id = api.shop.actors["buyer"].account_id
    assert (await api.call("r_admin", "DELETE", f"/orders/grants/{buyer_id}/{MASS_PID}/buyer")).status_code == 404
    assert (await api.call("f_admin", "DELETE", f"/orders/grants/{buyer_id}/{MASS_PID}/buyer")).status_code == 204
    refused = await api.call("buyer", "POST", "/orders", FORM)
    assert refused.status_code == 403
    assert "is not a buyer of product" in refused.json()["detail"]
    bad = await api.call("rnd", "POST", "/orders", FORM | {"quantity": 0})
    assert (bad.status_code, bad.json()["field"]) == (422, "quantity")


async def test_the_order_form_offers_what_each_account_may_order(api: Client) -> None:
    offered = {p["pid"]: p for p in await api.ok("rnd", "GET", "/orders/products")}
    assert sorted(offered) == sorted([DEV_PID, TRIAL_PID, MASS_PID])
    assert (offered[DEV_PID]["kinds"], offered[DEV_PID]["max_quantity"]) == (["rnd_product", "debug_module"], 100)
    assert (offered[TRIAL_PID]["kinds"], offered[TRIAL_PID]["max_quantity"]) == (["bulk", "value_added"], 1000)
    buyer = {p["pid"] for p in await api.ok("buyer", "GET", "/orders/products")}
    assert buyer == {TRIAL_PID, MASS_PID}  # a buyer grant offers nothing of a product in development
    assert await api.ok("plain_buyer", "GET", "/orders/products") == []
    assert await api.ok("bm", "GET", "/orders/products") == []  # platform staff do not order
    assert [p["pid"] for p in await api.ok("r_buyer", "GET", "/orders/products")] == [RIVAL_PID]
