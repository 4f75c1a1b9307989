"""Refusals never reveal another organisation's objects: its object and none at all get byte-identical answers."""

from __future__ import annotations

import base64

from cloud_bridge.api.product_routes import PID_NOT_ACCEPTED
from cloud_bridge.platform import Platform
from tests.test_cloud_api import World, fixture_world, pid  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.keys import SigningKey


async def test_release_of_a_foreign_lease_answers_as_for_no_lease(world: World) -> None:
    token = {"release": base64.b64encode(b"any signed release").decode()}  # the lease is looked up first
    foreign = await world.call("rival", "POST", f"/leases/{world.lease_id}/release", token)
    missing = await world.call("rival", "POST", "/leases/Lzzzzzzzzz/release", token)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.content.replace(world.lease_id.encode(), b"L") == missing.content.replace(b"Lzzzzzzzzz", b"L")
    assert world.cert_no.encode() not in foreign.content


async def test_gateway_registration_names_no_holder(world: World, platform: Platform) -> None:
    rivals_try = {"name": "mine now"}
    factory_key = world.gateway.public.raw.hex()  # registered to the factory when it was leased
    platform_key = SigningKey.generate().public
    await platform.register_gateway(platform_key)  # held by the platform itself
    a = await world.call("rival", "POST", "/gateways", {"public_key": factory_key, **rivals_try})
    b = await world.call("rival", "POST", "/gateways", {"public_key": platform_key.raw.hex(), **rivals_try})
    assert (a.status_code, b.status_code) == (409, 409)
    assert a.json()["detail"].replace(world.gateway.kid.hex(), "") == b.json()["detail"].replace(
        platform_key.kid.hex(), ""
    )
    assert b"organisation " not in a.content
    assert b"factory" not in a.content
    revoke_foreign = await world.call("rival", "POST", f"/gateways/{world.gateway.kid.hex()}/revoke")
    revoke_missing = await world.call("rival", "POST", f"/gateways/{'0' * 16}/revoke")
    assert revoke_foreign.status_code == 404
    assert revoke_foreign.content.replace(world.gateway.kid.hex().encode(), b"") == revoke_missing.content.replace(
        b"0" * 16, b""
    )


async def test_product_creation_takes_no_pid_and_model_numbers_are_per_organisation(world: World) -> None:
    before = await world.ok("admin", "GET", "/products")
    typed = await world.call("factory_admin", "POST", "/products", {"pid": pid(), "name": "x", "model_no": "x1"})
    assert typed.status_code == 422
    assert typed.json() == {"detail": PID_NOT_ACCEPTED, "field": "pid"}
    factorys = await world.product(model_no="lamp-1")
    again = await world.call("factory_admin", "POST", "/products", {"name": "x", "model_no": "lamp-1"})
    assert again.status_code == 409
    assert factorys in again.json()["detail"]  # the factory's own product, named to its own admin
    rivals = await world.product(role="rival", model_no="lamp-1")  # another organisation's numbers are its own
    assert rivals != factorys
    assert len({p["pid"] for p in await world.ok("admin", "GET", "/products")}) == len(before) + 2
    stage_foreign = await world.call("rival", "POST", f"/products/{factorys}/stage", {"stage": "mass"})
    stage_missing = await world.call("rival", "POST", f"/products/{pid()}/stage", {"stage": "mass"})
    assert stage_foreign.status_code == stage_missing.status_code == 404
    assert stage_foreign.content.replace(factorys.encode(), b"P") == stage_missing.content.replace(
        stage_missing.json()["detail"].split("'")[1].encode(), b"P"
    )


async def test_a_certificate_names_only_the_factorys_products(world: World) -> None:
    brands = await world.product(role="customer", stage="development", name="brand lamp")
    original = await world.product()
    answers = []
    for new in (brands, "zzzz9999"):  # the brand's product, and none at all
        body = {"original_pid": original, "new_pid": new, "quantity": 1, "reason": "r"}
        r = await world.call("factory_admin", "POST", "/certificates", body)
        answers.append((r.status_code, r.content.replace(new.encode(), b"P")))
    assert answers[0] == answers[1]
    assert answers[0][0] == 404
    rival_body = {"original_pid": original, "new_pid": world.new_pid, "quantity": 1, "reason": "r"}
    rivals = await world.call("rival", "POST", "/certificates", rival_body)
    missing = await world.call("rival", "POST", "/certificates", rival_body | {"original_pid": "zzzz9999"})
    assert (rivals.status_code, rivals.content.replace(original.encode(), b"P")) == (
        missing.status_code, missing.content.replace(b"zzzz9999", b"P"))  # fmt: skip


async def test_readers_are_fixed_at_application(world: World) -> None:
    listed = await world.ok("factory_admin", "GET", f"/certificates/{world.cert_no}")
    assert listed["cert_no"] == world.cert_no
    for outsider in ("rival", "customer"):
        seen = await world.call(outsider, "GET", f"/certificates/{world.cert_no}")
        none = await world.call(outsider, "GET", "/certificates/RC999999")
        assert seen.status_code == 404
        assert seen.content.replace(world.cert_no.encode(), b"N") == none.content.replace(b"RC999999", b"N")
