"""OEM links over the API: a factory's mass-production product copied to a customer, managed by the factory; every
refusal says why and changes nothing; the token is kept only as its hash."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from cloud_bridge import oem, products
from cloud_bridge.accounts import acting_as, key_hash
from cloud_bridge.errors import ConflictError
from cloud_bridge.platform import Platform
from cloud_bridge.products import Protocol, Spec
from cloud_bridge.store.schema import issued_pids, oem_links
from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.ids import PID_ALPHABET

POINTS = [{"id": 1, "code": "switch", "type": "bool", "mode": "rw"}, {"id": 2, "code": "bright", "type": "value",
                                                                      "mode": "rw"}]  # fmt: skip
CONFIG: dict[str, Any] = {"data_points": POINTS, "panel": "panel-7", "module": "WB3S", "firmware_version": "1.2.0",
          "services": ["ota", "voice_alexa", "voice_google"]}  # fmt: skip


async def _offer(w: World, **fields: Any) -> tuple[str, str]:
    """A factory product in mass production (oem firmware unless told) and a fresh link to it."""
    pid = await w.product(stage="mass", **(CONFIG | fields))
    made = await w.ok("factory_admin", "POST", f"/products/{pid}/oem-links", {"valid_days": 2})
    assert made["token"].startswith("rbo_")
    return pid, str(made["token"])


async def _state(w: World) -> Any:
    return await w.ok("admin", "GET", "/products"), await w.ok("factory_admin", "GET", "/certificates")


async def test_redeemed_link_makes_a_managed_copy_the_factory_may_certify(world: World) -> None:
    w = world
    source_pid, token = await _offer(w)
    body = {"token": token, "name": "brand lamp", "model_no": "BR-1", "services": ["ota", "voice_alexa"]}
    copy = await w.ok("customer", "POST", "/oem-links/redeem", body)
    source = await w.ok("factory_admin", "GET", f"/products/{source_pid}")
    assert copy["pid"] != source_pid
    assert len(copy["pid"]) == 16
    same = ("protocol", "firmware", "firmware_version", "data_points", "panel", "module", "stage")
    assert {k: copy[k] for k in same} == {k: source[k] for k in same}
    assert (copy["org_id"], copy["data_owner"]) == (w.org["brand"], w.org["brand"])
    assert (copy["managed_by"], copy["source_pid"]) == (w.org["factory"], source_pid)
    assert copy["services"] == ["ota", "voice_alexa"]  # only what the customer chose of the factory's
    # The factory sees and manages the copy; the rival does not even learn it exists.
    assert copy["pid"] in {p["pid"] for p in await w.ok("factory_admin", "GET", "/products")}
    assert (await w.call("rival", "GET", f"/products/{copy['pid']}")).status_code == 404
    links = await w.ok("factory_admin", "GET", f"/products/{source_pid}/oem-links")
    assert [(x["new_pid"], x["used_at"] is not None) for x in links] == [(copy["pid"], True)]
    assert "token" not in links[0]
    # A replacement certificate from the factory's own goods to the customer's product; the customer reads it.
    cert = await w.application(new=copy["pid"])
    assert cert in {c["cert_no"] for c in await w.ok("customer", "GET", "/certificates")}
    # Goods start from the factory's own products only: not from the customer's.
    r = await w.call("factory_admin", "POST", "/certificates", {"original_pid": copy["pid"], "new_pid": w.new_pid,
                                                                "quantity": 1, "reason": "r"})  # fmt: skip
    assert (r.status_code, r.json()["detail"]) == (
        404, f"original_pid {copy['pid']!r} is not a product of your organisation")  # fmt: skip
    # All services, when the customer chooses none.
    _, token2 = await _offer(w)
    every = await w.ok("customer", "POST", "/oem-links/redeem", {"token": token2, "name": "b", "model_no": "BR-2"})
    assert every["services"] == CONFIG["services"]


@pytest.mark.parametrize(
    ("who", "status", "words"),
    [
        ("factory_admin", 403, "made by your own organisation"),
        ("technician", 403, "made by your own organisation"),
        ("rival", 403, "only a customer account"),
        ("admin", 403, "only a customer account"),
    ],
)
async def test_a_link_is_redeemed_only_by_a_customer_of_another_organisation(
    world: World, who: str, status: int, words: str
) -> None:
    _, token = await _offer(world)
    before = await _state(world)
    r = await world.call(who, "POST", "/oem-links/redeem", {"token": token, "name": "x", "model_no": "x"})
    assert (r.status_code, words in r.json()["detail"]) == (status, True), r.text
    assert await _state(world) == before
    await world.ok("customer", "POST", "/oem-links/redeem", {"token": token, "name": "x", "model_no": "x"})


async def test_used_expired_and_unknown_links_are_refused_and_change_nothing(world: World, platform: Platform) -> None:
    w = world
    _, token = await _offer(w)
    await w.ok("customer", "POST", "/oem-links/redeem", {"token": token, "name": "x", "model_no": "x1"})
    before = await _state(w)
    again = await w.call("customer", "POST", "/oem-links/redeem", {"token": token, "name": "y", "model_no": "y1"})
    assert (again.status_code, "this OEM link was used on" in again.json()["detail"]) == (409, True)
    unknown = await w.call("customer", "POST", "/oem-links/redeem", {"token": "rbo_nope", "name": "y", "model_no": "y"})
    assert (unknown.status_code, unknown.json()["detail"]) == (404, oem.UNKNOWN)
    assert await _state(w) == before
    # Expired: the same function the route runs, at a time past the link's expiry.
    _, late = await _offer(w)
    customer = await platform.run(acting_as, "customer")
    async with platform.engine.connect() as conn:
        expires_at = (await conn.execute(select(oem_links.c.expires_at).where(
            oem_links.c.token_hash == key_hash(late)))).scalar_one()  # fmt: skip
    before = await _state(w)
    with pytest.raises(ConflictError, match="this OEM link expired on"):
        await platform.run(oem.redeem, customer, late, oem.Redemption("z", "z1"), expires_at)
    assert await _state(w) == before
    await platform.run(oem.redeem, customer, late, oem.Redemption("z", "z1"), expires_at - 1)  # just in time


async def test_a_link_needs_mass_production_and_oem_firmware(world: World) -> None:
    w = world
    trial = await w.product(stage="trial")
    mcu = await w.product(stage="mass", firmware="mcu")
    before = await _state(w)
    r1 = await w.call("factory_admin", "POST", f"/products/{trial}/oem-links", {})
    r2 = await w.call("factory_admin", "POST", f"/products/{mcu}/oem-links", {})
    assert (r1.status_code, r1.json()["detail"]) == (
        409, f"product {trial} is in trial production; an OEM link needs mass production")  # fmt: skip
    assert (r2.status_code, r2.json()["detail"]) == (
        409, f"product {mcu} runs mcu firmware; an OEM link needs the platform's own (oem) firmware")  # fmt: skip
    assert await _state(w) == before
    assert await w.ok("factory_admin", "GET", f"/products/{trial}/oem-links") == []


async def test_a_service_the_factory_did_not_enable_is_refused_and_the_link_stays_usable(world: World) -> None:
    _, token = await _offer(world)
    body = {"token": token, "name": "x", "model_no": "x", "services": ["voice_xiaodu"]}
    r = await world.call("customer", "POST", "/oem-links/redeem", body)
    assert r.status_code == 422
    assert r.json() == {
        "detail": "service voice_xiaodu is not enabled on the factory's product; choose among: ota, voice_alexa, "
        "voice_google",
        "field": "services",
    }
    await world.ok("customer", "POST", "/oem-links/redeem", body | {"services": ["voice_google"]})


async def test_the_platform_keeps_only_the_hash_of_a_link(world: World, platform: Platform) -> None:
    _, token = await _offer(world)
    async with platform.engine.connect() as conn:
        rows = [tuple(r) for r in (await conn.execute(select(oem_links))).all()]
    stored = repr(rows).encode()
    assert token.encode() not in stored
    assert any(key_hash(token) in r for r in rows)


async def test_a_deleted_products_pid_is_never_issued_again(world: World, platform: Platform) -> None:
    pid = await world.product(stage="development")
    assert (await world.call("factory_admin", "DELETE", f"/products/{pid}")).status_code == 204
    assert (await world.call("factory_admin", "GET", f"/products/{pid}")).status_code == 404
    async with platform.engine.connect() as conn:
        kept = (await conn.execute(select(issued_pids).where(issued_pids.c.pid == pid))).one()
    assert kept.deleted_at is not None
    spec = Spec(name="again", model_no="again", protocol=Protocol.WIFI)
    with pytest.raises(ConflictError, match="was issued before"):
        await platform.run(products.create_with_pid, pid, world.org["factory"], spec, platform.now())
    producing = await world.product(stage="trial")
    r = await world.call("factory_admin", "DELETE", f"/products/{producing}")
    assert (r.status_code, "only a product in development can be deleted" in r.json()["detail"]) == (409, True)


async def test_a_locked_field_is_refused_with_the_way_back(world: World) -> None:
    w = world
    pid = await w.product(stage="trial", **CONFIG)
    r = await w.call("factory_admin", "PATCH", f"/products/{pid}", {"data_points": POINTS[:1]})
    locked = "data points are locked in trial production; move the product back to development to change them"
    assert (r.status_code, r.json()["detail"]) == (409, f"product {pid}: {locked}")
    renamed = await w.ok("factory_admin", "PATCH", f"/products/{pid}", {"name": "still editable in trial"})
    assert renamed["data_points"] == POINTS
    await w.ok("factory_admin", "POST", f"/products/{pid}/stage", {"stage": "development"})
    changed = await w.ok("factory_admin", "PATCH", f"/products/{pid}", {"data_points": POINTS[:1]})
    assert changed["data_points"] == POINTS[:1]
    for stage in ("trial", "mass"):
        await w.ok("factory_admin", "POST", f"/products/{pid}/stage", {"stage": stage})
    r = await w.call("factory_admin", "PATCH", f"/products/{pid}", {"name": "x"})
    assert (r.status_code, r.json()["detail"]) == (409, f"product {pid}: name is locked in mass production, which is "
                                                         "final; create a new product to change it")  # fmt: skip


async def test_pid_length_follows_the_protocol(world: World) -> None:
    for protocol, length in (("wifi", 16), ("ble", 8), ("zigbee", 8)):
        made = await world.ok("factory_admin", "POST", "/products", {"name": "n", "model_no": f"len-{protocol}",
                                                                      "protocol": protocol})  # fmt: skip
        assert len(made["pid"]) == length
        assert set(made["pid"]) <= set(PID_ALPHABET)


async def test_buyers_see_only_products_in_production(world: World) -> None:
    dev, trial = await world.product(stage="development"), await world.product(stage="trial")
    assert (await world.call("buyer", "GET", f"/products/{dev}")).status_code == 404
    assert (await world.ok("buyer", "GET", f"/products/{trial}"))["stage"] == "trial"
    assert dev not in {p["pid"] for p in await world.ok("buyer", "GET", "/products")}


async def test_two_racing_redemptions_of_one_link_make_one_product(world: World, platform: Platform) -> None:
    _, token = await _offer(world)
    customer = await platform.run(acting_as, "customer")
    before = len(await world.ok("admin", "GET", "/products"))
    results = await asyncio.gather(
        *(platform.run(oem.redeem, customer, token, oem.Redemption("r", f"race-{i}"), platform.now()) for i in (1, 2)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, ConflictError)]
    assert (len(made), len(refused)) == (1, 1), results
    assert "this OEM link was used" in str(refused[0])
    assert len(await world.ok("admin", "GET", "/products")) == before + 1
