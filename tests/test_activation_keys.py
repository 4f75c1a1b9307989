"""Activation after a key rotation: a receipt activates only when it is signed by the key its lease is bound to,
as devices check it, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from cloud_bridge.activation import Verdict
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    T0,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from tests.test_key_rotation_platform import _site
from wire.keys import SigningKey
from wire.tokens import Grant, sign


def _receipt(key: SigningKey, lease_id: str, slot: int, sn: str) -> bytes:
    return sign(Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=T0), key)


async def test_a_retired_key_cannot_activate_units_on_the_new_keys_lease(platform: Platform) -> None:
    # The old key was rotated out (lost, or stolen: why one rotates). Its holder signs receipts for slots of the
    # lease the platform bound to the new key, and presents them as devices would, before the line spends them.
    site = await _site(platform)
    old, new = site.journal.key, SigningKey.generate()
    assert (await site.rotate(new)).ok
    lease, _, _ = await platform.issue_lease(site.cert_no, new.public, 3)
    stolen = await platform.activate("SN6666", NEW_PID, _receipt(old, lease.lease_id, lease.slot_lo, "SN6666"))
    assert stolen.verdict == Verdict.INVALID_RECEIPT, stolen.message
    assert new.kid.hex() in stolen.message
    assert old.kid.hex() in stolen.message
    # The slot is still the line's: the unit it rebadges under the new key activates.
    real = await platform.activate("SN0002", NEW_PID, _receipt(new, lease.lease_id, lease.slot_lo, "SN0002"))
    assert real.verdict == Verdict.ACTIVATED, real.message


async def test_the_new_key_cannot_activate_slots_of_a_lease_bound_to_the_old_key(platform: Platform) -> None:
    # The other way round: the old key's lease was closed with one unit confirmed; the new key signs a receipt for
    # that confirmed slot with another SN, and for a slot the close handed back.
    site = await _site(platform)
    old, new = site.journal.key, SigningKey.generate()
    assert (await site.rotate(new)).ok
    for slot, sn in ((0, "SN0001"), (1, "SN7777")):
        forged = await platform.activate(sn, NEW_PID, _receipt(new, site.lease_id, slot, sn))
        assert forged.verdict != Verdict.ACTIVATED, forged.message
    # The unit the old key really rebadged before the rotation still activates on its own receipt.
    kept = await platform.activate("SN0001", NEW_PID, _receipt(old, site.lease_id, 0, "SN0001"))
    assert kept.verdict == Verdict.ACTIVATED, kept.message
    async with platform.engine.connect() as conn:
        kinds = list((await conn.execute(select(anomalies.c.kind))).scalars())
    assert "spent_slot_activation" not in kinds
