"""The HTTP API: the certificate flow end to end, and every endpoint against every role."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from cloud_bridge.api.app import create_app
from cloud_bridge.platform import Platform
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.keys import KeyRing, SigningKey, kid_of
from wire.lease_request import Release
from wire.tokens import Certificate, verify
from wire.x509 import gateway_csr

ROLES = ("anonymous", "admin", "auditor", "factory_admin", "technician", "customer", "buyer")
_unique = itertools.count(1)


def pid(n: int | None = None) -> str:
    """A fresh 8-character PID."""
    return f"p{n if n is not None else next(_unique):07d}"


@dataclass
class World:
    """Two factories, a brand and the platform's staff, each with an API key; one approved certificate."""

    client: httpx.AsyncClient
    app: FastAPI
    keys: dict[str, str] = field(default_factory=dict)
    org: dict[str, int] = field(default_factory=dict)
    cert_no: str = ""
    cert_pid: str = ""
    new_pid: str = ""
    gateway: SigningKey = field(default_factory=SigningKey.generate)
    lease_id: str = ""

    def h(self, role: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]} if role in self.keys else {}

    async def call(self, role: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.client.request(method, "/v1" + path, json=body, headers=self.h(role))

    async def ok(self, role: str, method: str, path: str, body: Any = None) -> Any:
        r = await self.call(role, method, path, body)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    async def account(self, org: str, role: str, as_role: str = "admin") -> str:
        made = await self.ok(as_role, "POST", "/accounts", {"org_id": self.org[org], "name": role, "role": role})
        return str(made["api_key"])

    async def product(self, role: str = "factory_admin", stage: str = "trial", **fields: Any) -> str:
        """A new product of the role's organisation in `stage`; its PID as the platform issued it."""
        body = {"name": "lamp", "model_no": f"m{next(_unique)}"} | fields
        p = str((await self.ok(role, "POST", "/products", body))["pid"])
        for later in ("trial", "mass")[: ("development", "trial", "mass").index(stage)]:
            await self.ok(role, "POST", f"/products/{p}/stage", {"stage": later})
        return p

    async def application(self, original: str | None = None, new: str | None = None) -> str:
        body = {"original_pid": original or await self.product(), "new_pid": new or self.new_pid, "quantity": 10,
                "reason": "stock"}  # fmt: skip
        return str((await self.ok("factory_admin", "POST", "/certificates", body))["cert_no"])

    async def approved(self) -> str:
        cert_no = await self.application()
        await self.ok("auditor", "POST", f"/certificates/{cert_no}/audit", {"approve": True})
        return cert_no


@pytest.fixture(name="world")
async def fixture_world(platform: Platform) -> AsyncIterator[World]:
    admin_key = await platform.bootstrap_admin()
    assert admin_key is not None
    assert await platform.bootstrap_admin() is None  # only on an empty platform
    app = create_app(platform)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        w = World(c, app, keys={"admin": admin_key})
        for name, kind in (("factory", "factory"), ("brand", "brand"), ("rival", "factory")):
            w.org[name] = (await w.ok("admin", "POST", "/orgs", {"name": name, "kind": kind}))["id"]
        w.org["platform"] = (await w.ok("admin", "GET", "/me"))["org_id"]
        w.keys["auditor"] = await w.account("platform", "auditor")
        w.keys["factory_admin"] = await w.account("factory", "factory_admin")
        w.keys["technician"] = await w.account("factory", "technician", as_role="factory_admin")
        w.keys["buyer"] = await w.account("factory", "buyer", as_role="factory_admin")
        w.keys["customer"] = await w.account("brand", "customer")
        w.keys["rival"] = await w.account("rival", "factory_admin")
        w.new_pid = await w.product(stage="development", name="lamp, new badge")
        w.cert_no = await w.approved()
        w.cert_pid = (await w.ok("admin", "GET", f"/certificates/{w.cert_no}"))["original_pid"]
        lease = await w.ok(
            "technician", "POST", f"/certificates/{w.cert_no}/leases",
            {"gateway_key": w.gateway.public.raw.hex(), "slots": 3},
        )  # fmt: skip
        w.lease_id = lease["lease_id"]
        yield w


async def test_certificate_flow_as_the_seed_describes(world: World, platform: Platform) -> None:
    w = world
    dev = await w.product(stage="development")
    refused = await w.call("factory_admin", "POST", "/certificates",
                           {"original_pid": dev, "new_pid": w.new_pid, "quantity": 5, "reason": "r"})  # fmt: skip
    assert refused.status_code == 409
    assert "trial or mass production" in refused.json()["detail"]
    cert_no = await w.application()
    listed = {c["cert_no"]: c for c in await w.ok("factory_admin", "GET", "/certificates")}
    assert listed[cert_no]["status"] == "pending"
    assert listed[cert_no]["applicant"] == "factory_admin"
    assert (listed[cert_no]["replaced"], listed[cert_no]["quantity"]) == (0, 10)
    rejected = await w.call("auditor", "POST", f"/certificates/{cert_no}/audit", {"approve": False})
    assert rejected.status_code == 422
    assert rejected.json()["field"] == "comment"
    done = await w.ok("auditor", "POST", f"/certificates/{cert_no}/audit", {"approve": True, "comment": "fine"})
    cert = verify(base64.b64decode(done["token"]), Certificate, KeyRing([platform.issuer.public]))
    assert (cert.cert_no, cert.original_pid, cert.quantity) == (cert_no, done["original_pid"], 10)
    assert (await w.call("auditor", "POST", f"/certificates/{cert_no}/audit", {"approve": True})).status_code == 409
    # The brand owned neither product when the certificate was applied for, so it reads nothing.
    assert await w.ok("customer", "GET", "/certificates") == []
    assert await w.ok("rival", "GET", "/certificates") == []
    assert (await w.call("rival", "GET", f"/certificates/{cert_no}")).status_code == 404
    await w.ok("auditor", "POST", f"/certificates/{cert_no}/revoke", {"comment": "recalled"})
    refused_lease = await w.call("technician", "POST", f"/certificates/{cert_no}/leases",
                                 {"gateway_key": w.gateway.public.raw.hex(), "slots": 1})  # fmt: skip
    assert refused_lease.status_code == 409


async def test_counts_come_from_verified_records(world: World, platform: Platform) -> None:
    j = Journal(world.gateway, old_pid=world.cert_pid, new_pid=world.new_pid)
    j.confirm(world.lease_id, 0, "SN0001")
    j.confirm(world.lease_id, 1, "SN0002")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    cert = await world.ok("factory_admin", "GET", f"/certificates/{world.cert_no}")
    assert (cert["replaced"], cert["quantity"]) == (2, 10)
    gws = await world.ok("technician", "GET", "/gateways")
    assert [(g["gw"], g["acked_seq"]) for g in gws] == [(j.gw, 4)]


async def test_bad_input_gets_a_clear_4xx_and_changes_nothing(world: World) -> None:
    w = world
    before = await w.ok("admin", "GET", "/certificates")
    cases = [
        (await w.client.post("/v1/certificates", content=b"{not json", headers=w.h("factory_admin"))).status_code,
        (await w.call("factory_admin", "POST", "/certificates", {"original_pid": "NOPE"})).status_code,
        (await w.call("factory_admin", "POST", "/certificates", {
            "original_pid": OLD_PID, "new_pid": NEW_PID, "quantity": 1, "reason": "r", "extra": 1})).status_code,
        (await w.client.post("/v1/certificates", content=b"x" * 70_000, headers=w.h("factory_admin"))).status_code,
        (await w.call("anonymous", "GET", "/certificates")).status_code,
        (await w.call("technician", "POST", f"/leases/{w.lease_id}/release", {"release": "!!"})).status_code,
        (await w.call("technician", "POST", f"/leases/{w.lease_id}/release",
                      {"release": base64.b64encode(b"\x00" * 40).decode()})).status_code,
        (await w.call("anonymous", "POST", "/activations", {
            "sn": "SN0001", "pid": NEW_PID, "receipt": base64.b64encode(b"\xd2\x84").decode()})).status_code,
    ]  # fmt: skip
    assert cases == [422, 422, 422, 413, 401, 422, 422, 422]
    assert await w.ok("admin", "GET", "/certificates") == before


async def test_release_over_http_returns_unused_slots(world: World, platform: Platform) -> None:
    j = Journal(world.gateway, old_pid=world.cert_pid, new_pid=world.new_pid)
    j.confirm(world.lease_id, 0, "SN0001")
    close = j.close(world.lease_id, 3)

    def body(key: SigningKey = world.gateway) -> dict[str, str]:
        token = j.request(Release, at=platform.now(), key=key, lease_id=world.lease_id, seq=close.seq)
        return {"release": base64.b64encode(token).decode()}

    early = await world.ok("technician", "POST", f"/leases/{world.lease_id}/release", body())
    assert early["code"] == "pending"
    await platform.ingest(j.batch(), topic_gw=j.gw)
    done = await world.ok("technician", "POST", f"/leases/{world.lease_id}/release", body())
    assert (done["code"], done["returned"]) == ("ok", 2)
    r = await world.call("technician", "POST", f"/leases/{world.lease_id}/release", body(SigningKey.generate()))
    assert r.status_code == 422
    leased = await world.ok("technician", "GET", f"/certificates/{world.cert_no}/leases")
    assert [x["state"] for x in leased] == ["closed"]
    again = await world.ok("technician", "POST", f"/certificates/{world.cert_no}/leases",
                           {"gateway_key": world.gateway.public.raw.hex(), "slots": 10})  # fmt: skip
    assert (again["slot_lo"], again["slot_hi"]) == (1, 10)  # slot 0 stays spent; 1 and 2 came back


# ---- the endpoint x role matrix -------------------------------------------------------------------------------

Setup = Callable[[World], Awaitable[tuple[str, Any]]]


def fixed(path: str, body: Any = None) -> Setup:
    async def setup(w: World) -> tuple[str, Any]:
        return path.format(cert=w.cert_no, lease=w.lease_id, gw=w.gateway.kid.hex()), body

    return setup


async def _new_org(w: World) -> tuple[str, Any]:
    return "/orgs", {"name": f"org{next(_unique)}", "kind": "factory"}


async def _new_technician(w: World) -> tuple[str, Any]:
    return "/accounts", {"org_id": w.org["factory"], "name": "t", "role": "technician"}


async def _new_product(w: World) -> tuple[str, Any]:
    return "/products", {"name": "lamp", "model_no": f"m{next(_unique)}", "org_id": w.org["factory"]}


async def _product_path(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='mass')}", None


async def _links_path(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='mass')}/oem-links", None


async def _stage(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='development')}/stage", {"stage": "trial"}


async def _edit(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='development')}", {"name": "renamed"}


async def _delete(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='development')}", None


async def _oem_link(w: World) -> tuple[str, Any]:
    return f"/products/{await w.product(stage='mass')}/oem-links", {"valid_days": 1}


async def _redeem(w: World) -> tuple[str, Any]:
    made = await w.ok("factory_admin", "POST", f"/products/{await w.product(stage='mass')}/oem-links", {})
    return "/oem-links/redeem", {"token": made["token"], "name": "brand lamp", "model_no": f"b{next(_unique)}"}


async def _apply(w: World) -> tuple[str, Any]:
    return "/certificates", {"original_pid": await w.product(), "new_pid": w.new_pid, "quantity": 2, "reason": "r"}


async def _audit(w: World) -> tuple[str, Any]:
    return f"/certificates/{await w.application()}/audit", {"approve": True}


async def _revoke(w: World) -> tuple[str, Any]:
    return f"/certificates/{await w.approved()}/revoke", {"comment": "recalled"}


async def _lease(w: World) -> tuple[str, Any]:
    return f"/certificates/{w.cert_no}/leases", {"gateway_key": w.gateway.public.raw.hex(), "slots": 1}


async def _release(w: World) -> tuple[str, Any]:
    token = Journal(w.gateway).request(Release, at=int(time.time()), lease_id=w.lease_id, seq=1)
    return f"/leases/{w.lease_id}/release", {"release": base64.b64encode(token).decode()}


async def _register(w: World) -> tuple[str, Any]:
    key = SigningKey.generate().public.raw.hex()
    return "/gateways", {"public_key": key, "name": "line 2", "org_id": w.org["factory"]}  # admins name it


async def _revoke_gateway(w: World) -> tuple[str, Any]:
    key = SigningKey.generate().public.raw.hex()
    await w.ok("factory_admin", "POST", "/gateways", {"public_key": key})
    return f"/gateways/{kid_of(bytes.fromhex(key)).hex()}/revoke", None


async def _write_off(w: World) -> tuple[str, Any]:
    lease = await w.ok("factory_admin", "POST", f"/certificates/{await w.approved()}/leases",
                       {"gateway_key": SigningKey.generate().public.raw.hex(), "slots": 1})  # fmt: skip
    return f"/leases/{lease['lease_id']}/write-off", {"reason": "the gateway never came back"}


async def _enrol(w: World) -> tuple[str, Any]:
    made = await w.ok("factory_admin", "POST", "/enrolment-tokens", {"valid_s": 600})
    return "/enrol", {"token": made["token"], "csr": gateway_csr(SigningKey.generate()).decode()}


async def _activation(w: World) -> tuple[str, Any]:
    return "/activations", {"sn": "SN0001", "pid": NEW_PID, "receipt": base64.b64encode(b"junk").decode()}


STAFF = {"admin", "auditor"}
FACTORY = {"factory_admin", "technician"}
EVERYONE = set(ROLES) - {"anonymous"}


# -- the purchase module (docs/orders.md): orders made through the API, walked to the state each step needs ------

CANCEL = {"reason": "wrong"}
ORDER_FORM = {"kind": "bulk", "quantity": 2, "model_no": "M", "material_no": "MAT"}


async def _purchase_ready(w: World) -> None:
    """The factory certified; the platform's business and project managers exist (they are no role of the matrix)."""
    if "bm" in w.keys:
        return
    await w.ok("admin", "POST", "/orders/certifications", {"org_id": w.org["factory"]})
    for name in ("business_manager", "project_manager"):
        made = await w.ok("admin", "POST", "/accounts", {"org_id": w.org["platform"], "name": name, "role": name})
        w.keys[{"business_manager": "bm", "project_manager": "pm"}[name]] = made["api_key"]


async def _orderable(w: World) -> tuple[str, dict[str, Any]]:
    """A new mass-production product the factory's buyer holds a grant for, and an order form for it."""
    await _purchase_ready(w)
    pid = await w.product(stage="mass")
    buyer = (await w.ok("buyer", "GET", "/me"))["account_id"]
    await w.ok("factory_admin", "POST", "/orders/grants", {"account_id": buyer, "pid": pid, "kind": "buyer"})
    return pid, ORDER_FORM | {"pid": pid, "po_no": f"PO{next(_unique)}"}


ORDER_WALK: list[tuple[str, str, Any]] = [
    ("bm", "confirm-price", {"price_cents": 100, "currency": "EUR"}),
    ("pm", "confirm-software", {"software_version": "1.0"}),
    ("bm", "contract", {"contract_no": "C1"}),
    ("bm", "payments", {"amount_cents": 100, "method": "offline", "reference": "bank"}),
    ("pm", "start-production", None),
    ("pm", "shipment", {"batches": ["B1"], "carrier": "DHL", "tracking_no": "T1"}),
    ("factory_admin", "certificate", None),
    ("pm", "publish-test-data", None),
    ("bm", "invoice", {"invoice_no": "I1"}),
]


async def _order_before(w: World, step: str) -> tuple[str, str]:
    """An order walked up to (not through) `step` (all the way for any other name); its number and product."""
    pid, form = await _orderable(w)
    order_no = str((await w.ok("buyer", "POST", "/orders", form))["order_no"])
    for who, name, given in ORDER_WALK:
        if name == step:
            break
        body = {"cert_no": await w.application(new=pid)} if name == "certificate" else given
        await w.ok(who, "POST", f"/orders/{order_no}/{name}", body)
    return order_no, pid


def _order_step(step: str, body: Any = None, *, before: str | None = None) -> Setup:
    """The step on an order in the state where the step is possible, so a refusal is about the role alone."""

    async def setup(w: World) -> tuple[str, Any]:
        order_no, pid = await _order_before(w, before or step)
        if step == "certificate":
            body_now = {"cert_no": await w.application(new=pid)}  # a certificate applied for with this order
            return f"/orders/{order_no}/certificate", body_now
        return f"/orders/{order_no}/{step}", body

    return setup


def _order_path(suffix: str = "", before: str = "certificate") -> Setup:
    async def setup(w: World) -> tuple[str, Any]:
        order_no, _ = await _order_before(w, before)
        return f"/orders/{order_no}{suffix}", None

    return setup


async def _certify(w: World) -> tuple[str, Any]:
    org = await w.ok("admin", "POST", "/orgs", {"name": f"o{next(_unique)}", "kind": "factory"})
    return "/orders/certifications", {"org_id": org["id"]}


async def _uncertify(w: World) -> tuple[str, Any]:
    path, body = await _certify(w)
    await w.ok("admin", "POST", path, body)
    return f"/orders/certifications/{body['org_id']}", None


async def _grant(w: World) -> tuple[str, Any]:
    await _purchase_ready(w)
    buyer = (await w.ok("buyer", "GET", "/me"))["account_id"]
    return "/orders/grants", {"account_id": buyer, "pid": await w.product(stage="mass"), "kind": "buyer"}


async def _ungrant(w: World) -> tuple[str, Any]:
    pid, _ = await _orderable(w)
    return f"/orders/grants/{(await w.ok('buyer', 'GET', '/me'))['account_id']}/{pid}/buyer", None


async def _order_form(w: World) -> tuple[str, Any]:
    _, form = await _orderable(w)
    return "/orders", form


async def _order_check(w: World) -> tuple[str, Any]:
    _, form = await _orderable(w)
    return "/orders/check", form


ORDERING_ORG = STAFF | {"factory_admin", "technician", "buyer"}  # platform staff and the ordering factory's accounts

MATRIX: list[tuple[str, str, Setup, set[str]]] = [
    ("GET", "/health", fixed("/health"), set(ROLES)),
    ("POST", "/activations", _activation, set(ROLES)),
    ("GET", "/me", fixed("/me"), EVERYONE),
    ("POST", "/orgs", _new_org, {"admin"}),
    ("GET", "/orgs", fixed("/orgs"), EVERYONE),
    ("POST", "/accounts", _new_technician, {"admin", "factory_admin"}),
    ("GET", "/accounts", fixed("/accounts"), {"admin", "factory_admin", "customer"}),
    ("POST", "/products", _new_product, {"admin", "factory_admin", "customer"}),
    ("GET", "/products", fixed("/products"), EVERYONE),
    ("POST", "/products/{pid}/stage", _stage, {"admin", "factory_admin"}),
    # The factory's product: its own accounts see it, the brand and the rival do not (404).
    ("GET", "/products/{pid}", _product_path, STAFF | FACTORY | {"buyer"}),
    ("PATCH", "/products/{pid}", _edit, {"admin", "factory_admin"}),
    ("DELETE", "/products/{pid}", _delete, {"admin", "factory_admin"}),
    # Links are the factory's decision alone: not even a platform admin makes one for it.
    ("POST", "/products/{pid}/oem-links", _oem_link, {"factory_admin"}),
    ("GET", "/products/{pid}/oem-links", _links_path, STAFF | {"factory_admin"}),
    ("POST", "/oem-links/redeem", _redeem, {"customer"}),
    ("POST", "/certificates", _apply, {"factory_admin"}),
    ("GET", "/certificates", fixed("/certificates"), STAFF | FACTORY | {"customer"}),
    # A customer may read certificates, but only those naming a product its brand owned when they were applied for;
    # until OEM links exist a factory's certificate names only the factory's products, so the brand gets 404.
    ("GET", "/certificates/{cert_no}", fixed("/certificates/{cert}"), STAFF | FACTORY),
    ("POST", "/certificates/{cert_no}/audit", _audit, {"auditor"}),
    ("POST", "/certificates/{cert_no}/revoke", _revoke, STAFF),
    ("POST", "/certificates/{cert_no}/leases", _lease, {"admin"} | FACTORY),
    ("GET", "/certificates/{cert_no}/leases", fixed("/certificates/{cert}/leases"), STAFF | FACTORY),
    ("POST", "/leases/{lease_id}/release", _release, {"admin"} | FACTORY),
    ("POST", "/gateways", _register, {"admin"} | FACTORY),
    ("GET", "/gateways", fixed("/gateways"), STAFF | FACTORY),
    # An admin names the factory (422 without it, which still shows the role passed); the token is enrol's credential.
    ("POST", "/enrolment-tokens", fixed("/enrolment-tokens", {"valid_s": 600}), {"admin", "factory_admin"}),
    ("POST", "/enrol", _enrol, set(ROLES)),
    ("POST", "/gateways/{gw}/revoke", _revoke_gateway, STAFF | {"factory_admin"}),
    ("GET", "/anomalies", fixed("/anomalies"), STAFF | {"factory_admin"}),
    ("POST", "/leases/{lease_id}/write-off", _write_off, STAFF),
    ("POST", "/gateways/{gw}/reinstate", fixed("/gateways/{gw}/reinstate", {"reason": "checked"}), {"admin"}),
    ("GET", "/gateways/{gw}/history", fixed("/gateways/{gw}/history"), STAFF | {"factory_admin"}),
    ("GET", "/gateways/{gw}/keys", fixed("/gateways/{gw}/keys"), STAFF | {"factory_admin"}),
    # Perform replacement: the factory's own people scan its goods; platform staff do not (this app has no broker,
    # so the allowed roles get 409 after every check passed).
    ("POST", "/gateways/{gw}/scans", fixed("/gateways/{gw}/scans", {"sn": "SN-00001"}), FACTORY),
    ("GET", "/gateways/{gw}/scans", fixed("/gateways/{gw}/scans"), FACTORY),
    # The purchase module: the platform's business and project managers take most steps (none of them is a role
    # here, so every role of the matrix is refused them); the ordering factory's buyer orders, cancels, completes.
    ("GET", "/orders/certifications", fixed("/orders/certifications"), EVERYONE),
    ("POST", "/orders/certifications", _certify, {"admin"}),
    ("DELETE", "/orders/certifications/{org_id}", _uncertify, {"admin"}),
    ("GET", "/orders/grants", fixed("/orders/grants"), EVERYONE),
    ("POST", "/orders/grants", _grant, {"factory_admin"}),
    ("DELETE", "/orders/grants/{account_id}/{pid}/{kind}", _ungrant, {"factory_admin"}),
    ("GET", "/orders/products", fixed("/orders/products"), EVERYONE),
    ("POST", "/orders/check", _order_check, {"buyer"}),
    ("POST", "/orders", _order_form, {"buyer"}),
    ("GET", "/orders", fixed("/orders"), EVERYONE),
    ("GET", "/orders/{order_no}", _order_path(), ORDERING_ORG),
    ("POST", "/orders/{order_no}/confirm-price", _order_step("confirm-price", ORDER_WALK[0][2]), set()),
    ("POST", "/orders/{order_no}/confirm-software", _order_step("confirm-software", ORDER_WALK[1][2]), set()),
    ("POST", "/orders/{order_no}/contract", _order_step("contract", ORDER_WALK[2][2]), set()),
    ("POST", "/orders/{order_no}/payments", _order_step("payments", ORDER_WALK[3][2]), set()),
    ("POST", "/orders/{order_no}/start-production", _order_step("start-production"), set()),
    ("POST", "/orders/{order_no}/shipment", _order_step("shipment", ORDER_WALK[5][2]), set()),
    ("POST", "/orders/{order_no}/certificate", _order_step("certificate"), {"factory_admin"}),
    ("POST", "/orders/{order_no}/publish-test-data", _order_step("publish-test-data"), set()),
    ("POST", "/orders/{order_no}/invoice", _order_step("invoice", ORDER_WALK[8][2]), set()),
    ("POST", "/orders/{order_no}/complete", _order_path("/complete", before="end"), {"buyer"}),
    ("POST", "/orders/{order_no}/cancel", _order_step("cancel", CANCEL, before="confirm-price"), {"buyer"}),
    ("GET", "/orders/{order_no}/test-data", _order_path("/test-data", before="invoice"), ORDERING_ORG),
    ("GET", "/orders/{order_no}/test-data.csv", _order_path("/test-data.csv", before="invoice"), ORDERING_ORG),
]


async def test_every_endpoint_checks_every_role(world: World) -> None:
    paths = world.app.openapi()["paths"]
    routes = {(m.upper(), p.removeprefix("/v1")) for p, ops in paths.items() for m in ops}
    assert routes == {(m, p) for m, p, _, _ in MATRIX}, "every endpoint must be in the matrix"
    wrong: list[str] = []
    for method, template, setup, allowed in MATRIX:
        for role in ROLES:
            path, body = await setup(world)
            status = (await world.call(role, method, path, body)).status_code
            if role == "anonymous" and role not in allowed:
                good = status == 401
            elif role in allowed:
                good = status not in (401, 403, 404) and status < 500
            else:
                good = status in (403, 404)
            if not good:
                wrong.append(f"{method} {template} as {role}: {status}")
    assert wrong == []
