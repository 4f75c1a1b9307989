"""Non-disclosure, swept over every endpoint: an organisation asking about another's object (in the path or the body)
gets exactly the answer it gets for an id that does not exist, so no answer tells "exists elsewhere" from "no such
thing". The endpoints come from the app's own OpenAPI, so a new one is swept too."""

from __future__ import annotations

import base64
import re
import string
from typing import Any

from tests.orders_support import FACTORY, MASS_PID, OLD_PID, draft
from tests.test_cloud_helpers import Journal
from tests.test_orders_api import Client, fixture_api  # noqa: F401  (fixture)
from wire.keys import SigningKey
from wire.lease_request import Release

OUTSIDERS = ("r_admin", "r_buyer")  # the rival factory's admin and buyer
# Bodies that pass validation, so each request reaches the lookup it is about.
BODIES: dict[tuple[str, str], Any] = {
    ("patch", "/v1/products/{pid}"): {"name": "renamed"},
    ("post", "/v1/products/{pid}/stage"): {"stage": "trial"},
    ("post", "/v1/products/{pid}/oem-links"): {"valid_days": 1},
    ("post", "/v1/certificates/{cert_no}/audit"): {"approve": True},
    ("post", "/v1/certificates/{cert_no}/revoke"): {"comment": "no"},
    ("post", "/v1/leases/{lease_id}/write-off"): {"reason": "gone"},
    ("post", "/v1/gateways/{gw}/reinstate"): {"reason": "checked", "seq": 0},
    ("post", "/v1/orders/{order_no}/confirm-price"): {"price_cents": 100, "currency": "EUR"},
    ("post", "/v1/orders/{order_no}/confirm-software"): {"software_version": "1.0"},
    ("post", "/v1/orders/{order_no}/contract"): {"contract_no": "C-1"},
    ("post", "/v1/orders/{order_no}/payments"): {"amount_cents": 1, "method": "online", "reference": "r"},
    ("post", "/v1/orders/{order_no}/shipment"): {"batches": ["B1"], "carrier": "UPS", "tracking_no": "1"},
    ("post", "/v1/orders/{order_no}/invoice"): {"invoice_no": "I-1"},
    ("post", "/v1/orders/{order_no}/cancel"): {"reason": "no"},
    ("post", "/v1/gateways/{gw}/scans"): {"sn": "SN0001"},
}


def unknown(real: str) -> str:
    """An id of the same shape that names nothing: its last character changed within its class."""
    for alphabet in (string.digits, "abcdef", string.ascii_lowercase, string.ascii_uppercase):
        if real[-1] in alphabet:
            return real[:-1] + alphabet[(alphabet.index(real[-1]) + 1) % len(alphabet)]
    raise AssertionError(real)


def answer(status: int, body: Any, ids: tuple[str, ...]) -> tuple[int, str]:
    """The answer with the id asked about written as <id>, so the two answers compare."""
    text = str(body)
    for value in ids:
        text = re.sub(rf"\b{re.escape(value)}\b", "<id>", text)
    return status, text


async def test_no_endpoint_tells_another_organisations_object_from_none(api: Client) -> None:
    shop, platform = api.shop, api.shop.platform
    order_no = await shop.submit("buyer", draft())
    cert, _ = await platform.issue_certificate(factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=3)
    journal = Journal(old_pid=OLD_PID)
    lease, _, _ = await platform.issue_lease(cert.cert_no, journal.key.public, 3)
    buyer = shop.actors["buyer"].account_id
    ids = {
        "pid": MASS_PID, "cert_no": cert.cert_no, "lease_id": lease.lease_id, "gw": journal.gw,
        "order_no": order_no, "org_id": str(shop.org[FACTORY]), "account_id": str(buyer), "kind": "buyer",
    }  # fmt: skip
    spec = (await api.http.get("/openapi.json")).json()
    swept = 0
    for path, operations in spec["paths"].items():
        params = re.findall(r"{(\w+)}", path)
        if not params:
            continue
        for method in operations:
            for who in OUTSIDERS:
                answers = []
                for pick in (lambda v: v, unknown):
                    values = {p: ids[p] if p == "kind" else pick(ids[p]) for p in params}
                    body = BODIES.get((method, path))
                    if path.endswith("/certificate"):
                        body = {"cert_no": cert.cert_no}
                    if path.endswith("/leases") and method == "post":
                        body = {"gateway_key": SigningKey.generate().public.raw.hex(), "slots": 1}
                    if path.endswith("/release"):  # a release the lease's own gateway signed
                        release = journal.request(Release, at=platform.now(), lease_id=values["lease_id"], seq=1)
                        body = {"release": base64.b64encode(release).decode()}
                    r = await api.call(who, method.upper(), path.removeprefix("/v1").format(**values), body)
                    answers.append(answer(r.status_code, r.text, tuple(str(v) for v in values.values())))
                assert answers[0] == answers[1], (method, path, who)
                assert answers[0][0] in (403, 404), (method, path, who, answers[0])
                swept += 1
    assert swept >= 2 * 30
    # Ids in bodies: another organisation's product, account and certificate read as unknown ones.
    rival_order = await shop.submit("r_buyer", draft(pid="riv00001"))
    in_bodies: list[tuple[str, str, dict[str, Any], str]] = [
        ("r_buyer", "/orders", {"pid": MASS_PID, "kind": "bulk", "quantity": 1, "po_no": "P", "model_no": "M",
                                "material_no": "X"}, MASS_PID),
        ("r_buyer", "/orders/check", {"pid": MASS_PID, "kind": "bulk", "quantity": 1, "po_no": "P", "model_no": "M",
                                      "material_no": "X"}, MASS_PID),
        ("r_admin", "/orders/grants", {"account_id": buyer, "pid": "riv00001", "kind": "buyer"}, str(buyer)),
        ("r_admin", "/orders/grants", {"account_id": shop.actors["r_buyer"].account_id, "pid": MASS_PID,
                                       "kind": "buyer"}, MASS_PID),
        ("r_admin", "/certificates", {"original_pid": OLD_PID, "new_pid": "riv00001", "quantity": 1, "reason": "r",
                                      "protocols": ["ble"]}, OLD_PID),
        ("r_admin", "/certificates", {"original_pid": "riv00001", "new_pid": MASS_PID, "quantity": 1, "reason": "r",
                                      "protocols": ["ble"]}, MASS_PID),
        ("r_admin", f"/orders/{rival_order}/certificate", {"cert_no": cert.cert_no}, cert.cert_no),
    ]  # fmt: skip
    for who, path, body, real in in_bodies:
        got = []
        for value in (real, unknown(real)):
            swapped = None if body is None else {k: (type(v)(value) if str(v) == real else v) for k, v in body.items()}
            r = await api.call(who, "POST", path.replace(real, value), swapped)
            got.append(answer(r.status_code, r.text, (value,)))
        assert got[0] == got[1], (path, body)
