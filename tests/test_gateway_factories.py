"""A gateway spends only its own factory's certificates, however it was registered and whoever asks."""

from __future__ import annotations

import itertools

import pytest

from cloud_bridge import accounts, certificates, gateways, leases
from cloud_bridge.accounts import SYSTEM
from cloud_bridge.errors import ConflictError
from cloud_bridge.platform import Platform
from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    T0,
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.keys import SigningKey
from wire.lease_request import AnswerCode, LeaseRequest, lease_answer_from_cbor


async def _ask(p: Platform, j: Journal, cert_no: str) -> tuple[AnswerCode, str]:
    token = j.request(LeaseRequest, at=int(p.now()), cert_no=cert_no, slots=1)
    answer = lease_answer_from_cbor((await p.answer_lease(j.gw, token)).to_cbor())
    return answer.code, answer.message


@pytest.mark.parametrize("registered_to", [None, "F1", "F2"])
async def test_a_gateway_leases_over_mqtt_only_its_own_factorys_certificate(
    platform: Platform, registered_to: str | None
) -> None:
    ours, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=5)
    await platform.issue_certificate(factory="F2", original_pid="f2old001", new_pid="f2new001", quantity=5)
    j = Journal()
    await platform.register_gateway(j.key.public, "line 1", factory=registered_to)
    code, message = await _ask(platform, j, ours.cert_no)
    if registered_to == "F1":
        assert code == AnswerCode.OK
        return
    missing = await _ask(platform, j, "RC999999")
    # Refused exactly as a certificate that does not exist: the answer tells a stranger nothing.
    assert (code, message.replace(ours.cert_no, "?")) == (missing[0], missing[1].replace("RC999999", "?"))
    assert code == AnswerCode.NOT_FOUND
    assert await platform.run(leases.list_for, SYSTEM, ours.cert_no) == []


async def test_a_lease_an_admin_makes_binds_a_new_gateway_to_the_certificates_factory(platform: Platform) -> None:
    f1, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=5)
    f2, _ = await platform.issue_certificate(factory="F2", original_pid="f2old001", new_pid="f2new001", quantity=5)
    by_api, by_platform = Journal(), Journal()
    await platform.run(
        leases.issue_as, SYSTEM, f1.cert_no, by_api.key.public, 1,
        valid_s=None, policy=platform.policy, issuer=platform.issuer, now=int(platform.now()),
    )  # fmt: skip
    await platform.issue_lease(f1.cert_no, by_platform.key.public, 1)
    for j in (by_api, by_platform):
        assert (await _ask(platform, j, f1.cert_no))[0] == AnswerCode.OK
        assert (await _ask(platform, j, f2.cert_no))[0] == AnswerCode.NOT_FOUND
        # Not even an admin leases another factory's certificate to it, nor the ledger below every caller.
        with pytest.raises(ConflictError, match="belongs to organisation"):
            await platform.issue_lease(f2.cert_no, j.key.public, 1)
        with pytest.raises(ConflictError, match=r"not a certificate of gateway \w+'s factory"):
            await platform.run(
                leases.issue, f2.cert_no, j.key.public, 1,
                valid_s=None, policy=platform.policy, issuer=platform.issuer, now=int(platform.now()),
            )  # fmt: skip
    assert await platform.run(leases.list_for, SYSTEM, f2.cert_no) == []


async def test_an_admin_gives_a_gateway_of_no_factory_to_one_and_then_cannot_move_it(platform: Platform) -> None:
    f1, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=5)
    f2, _ = await platform.issue_certificate(factory="F2", original_pid="f2old001", new_pid="f2new001", quantity=5)
    org1, org2 = [(await platform.run(certificates.get, c.cert_no)).org_id for c in (f1, f2)]
    j = Journal()
    gw = await platform.register_gateway(j.key.public)  # the platform's own: no factory
    assert (await _ask(platform, j, f1.cert_no))[0] == AnswerCode.NOT_FOUND
    assert (await platform.run(gateways.get, gw)).org_id is None
    assert await platform.run(gateways.register_as, SYSTEM, j.key.public, "", T0, org_id=org1) == gw
    assert (await _ask(platform, j, f1.cert_no))[0] == AnswerCode.OK
    with pytest.raises(ConflictError, match=f"belongs to organisation {org1}, not {org2}"):
        await platform.run(gateways.register_as, SYSTEM, j.key.public, "", T0, org_id=org2)
    assert (await _ask(platform, j, f2.cert_no))[0] == AnswerCode.NOT_FOUND
    # A gateway an admin once registered to the platform's own organisation is given to a factory the same way.
    legacy = Journal()
    staff_org = await platform.run(accounts.create_org, SYSTEM, "platform staff", accounts.OrgKind.PLATFORM, T0)
    old_gw = await platform.run(gateways.register, legacy.key.public, "", T0, org_id=staff_org)
    assert await platform.run(gateways.register_as, SYSTEM, legacy.key.public, "", T0, org_id=org2) == old_gw
    assert (await _ask(platform, legacy, f2.cert_no))[0] == AnswerCode.OK


async def test_registering_a_gateway_over_http_names_its_factory(world: World) -> None:
    w, keys = world, (SigningKey.generate().public.raw.hex() for _ in itertools.count())
    unnamed = await w.call("admin", "POST", "/gateways", {"public_key": next(keys)})
    assert unnamed.status_code == 422
    assert unnamed.json()["field"] == "org_id"
    assert "must name the factory" in unnamed.json()["detail"]
    brand = await w.call("admin", "POST", "/gateways", {"public_key": next(keys), "org_id": w.org["brand"]})
    assert (brand.status_code, brand.json()["field"]) == (422, "org_id")
    assert "is not a factory" in brand.json()["detail"]
    foreign = await w.call("factory_admin", "POST", "/gateways", {"public_key": next(keys), "org_id": w.org["rival"]})
    assert foreign.status_code == 403
    key = next(keys)
    made = await w.ok("admin", "POST", "/gateways", {"public_key": key, "org_id": w.org["rival"]})
    assert made["public_key"] == key
    assert [g["gw"] for g in await w.ok("rival", "GET", "/gateways")] == [made["gw"]]
    # The rival's new gateway is refused the factory's certificate, over HTTP as over MQTT.
    lease = await w.call("rival", "POST", f"/certificates/{w.cert_no}/leases", {"gateway_key": key, "slots": 1})
    assert lease.status_code == 404
    by_admin = await w.call("admin", "POST", f"/certificates/{w.cert_no}/leases", {"gateway_key": key, "slots": 1})
    assert by_admin.status_code == 409
    assert f"belongs to organisation {w.org['rival']}" in by_admin.json()["detail"]
