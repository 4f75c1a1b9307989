"""Leases coming back (release, expiry), late records for returned slots, and activation in the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.activation import Verdict
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.leases import LeasePolicy
from cloud_bridge.platform import Platform
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    T0,
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
)
from wire.keys import SigningKey
from wire.lease_request import (
    AnswerCode,
    LeaseRequest,
    Release,
    ReleaseRequest,
    lease_answer_from_cbor,
    release_answer_from_cbor,
)
from wire.records import RecordKind
from wire.tokens import Grant, decode_bundle, sign

GRACE_S = 100


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.t = float(T0)

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def platform(db_url: str | None, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    policy = LeasePolicy(max_slots=50, valid_s=1000, return_grace_s=GRACE_S)
    p = await Platform.open(tmp_path / "cloud", db_url=db_url, clock=clock, policy=policy)
    yield p
    await p.close()


async def _cert(p: Platform, quantity: int = 10) -> str:
    cert, _ = await p.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=quantity)
    return cert.cert_no


async def test_lease_over_mqtt_payloads(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=100)
    j = Journal()
    unknown = lease_answer_from_cbor(
        (await platform.answer_lease(j.gw, LeaseRequest(id="r1", cert_no=cert_no, slots=5).to_cbor())).to_cbor()
    )
    assert (unknown.id, unknown.code) == ("r1", AnswerCode.UNKNOWN_GATEWAY)
    await platform.register_gateway(j.key.public, "line 1")
    big = lease_answer_from_cbor(
        (await platform.answer_lease(j.gw, LeaseRequest(id="r2", cert_no=cert_no, slots=80).to_cbor())).to_cbor()
    )
    assert big.ok
    assert big.bundle is not None
    lease_token = decode_bundle(big.bundle).lease
    assert lease_token
    missing = lease_answer_from_cbor(
        (await platform.answer_lease(j.gw, LeaseRequest(id="r3", cert_no="RC999999", slots=1).to_cbor())).to_cbor()
    )
    assert missing.code == AnswerCode.NOT_FOUND
    garbage = lease_answer_from_cbor((await platform.answer_lease(j.gw, b"\xa1\x61")).to_cbor())
    assert garbage.code == AnswerCode.MALFORMED
    await platform.revoke_gateway(j.gw)
    revoked = lease_answer_from_cbor(
        (await platform.answer_lease(j.gw, LeaseRequest(id="r4", cert_no=cert_no, slots=1).to_cbor())).to_cbor()
    )
    assert revoked.code == AnswerCode.REFUSED


async def test_policy_caps_a_lease(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=100)
    lease, _, _ = await platform.issue_lease(cert_no, SigningKey.generate().public, 80)
    assert lease.size == 50


async def test_signed_release_returns_unused_slots_once_records_are_in(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 6)
    j.confirm(lease.lease_id, 0, "SN0001")
    j.add(lease.lease_id, 1, "SN0002", RecordKind.RESERVED)
    j.add(lease.lease_id, 1, "SN0002", RecordKind.RELEASED)  # refused: slot 1 may be used again
    j.add(lease.lease_id, 2, "SN0003", RecordKind.RESERVED)
    j.add(lease.lease_id, 2, "SN0003", RecordKind.IN_DOUBT)  # held until settled
    release = sign(Release(lease_id=lease.lease_id, seq=len(j.records), at=T0), j.key)

    async def ask(token: bytes) -> tuple[AnswerCode, int]:
        answer = release_answer_from_cbor(
            (await platform.answer_release(j.gw, ReleaseRequest(id="x", release=token).to_cbor())).to_cbor()
        )
        return answer.code, answer.returned

    assert await ask(release) == (AnswerCode.PENDING, 0)
    assert await ask(sign(Release(lease_id=lease.lease_id, seq=0, at=T0), SigningKey.generate())) == (
        AnswerCode.BAD_SIGNATURE,
        0,
    )
    await platform.ingest(j.batch(), topic_gw=j.gw)
    assert await ask(release) == (AnswerCode.OK, 4)  # slots 1, 3, 4, 5 come back; 0 and 2 stay spent
    assert await ask(release) == (AnswerCode.OK, 0)  # idempotent
    other = SigningKey.generate().public
    first, _, _ = await platform.issue_lease(cert_no, other, 1)
    second, _, _ = await platform.issue_lease(cert_no, other, 10)
    assert (first.slot_lo, first.slot_hi) == (1, 2)
    assert (second.slot_lo, second.slot_hi) == (3, 10)  # the largest free run; slot 2 is in doubt


async def test_expiry_returns_slots_after_the_grace_and_flags_late_records(platform: Platform, clock: Clock) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 10, valid_s=500)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    clock.t = lease.exp + GRACE_S - 1
    assert await platform.expire_leases() == 0
    clock.t = lease.exp + GRACE_S
    assert await platform.expire_leases() == 1
    j.confirm(lease.lease_id, 5, "SN0005")  # arrives late, for a slot that went back
    late = await platform.ingest(j.batch(3), topic_gw=j.gw)
    assert [a.kind for a in late.anomalies] == [AnomalyKind.RETURNED_SLOT]
    assert await platform.confirmed_count(cert_no) == 1
    again, _, _ = await platform.issue_lease(cert_no, SigningKey.generate().public, 20)
    assert (again.slot_lo, again.slot_hi) == (1, 10)


async def test_each_slot_and_each_sn_activates_once(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)

    def receipt(slot: int, sn: str, key: SigningKey = j.key) -> bytes:
        return sign(Grant(lease_id=lease.lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=T0), key)

    first = await platform.activate("SN0001", NEW_PID, receipt(0, "SN0001"))
    assert first.verdict == Verdict.ACTIVATED
    assert (first.cert_no, first.slot) == (cert_no, 0)
    assert (await platform.activate("SN0001", NEW_PID, receipt(0, "SN0001"))).verdict == Verdict.ALREADY_ACTIVATED
    clone = await platform.activate("SN0002", NEW_PID, receipt(0, "SN0002"))
    assert clone.verdict == Verdict.SPENT_SLOT
    assert clone.anomaly is not None
    assert clone.anomaly.kind == AnomalyKind.SPENT_SLOT_ACTIVATION
    twice = await platform.activate("SN0001", NEW_PID, receipt(1, "SN0001"))
    assert twice.verdict == Verdict.SN_ALREADY_ACTIVATED
    for sn, pid, token in (
        ("SN0003", NEW_PID, receipt(2, "SN0003", SigningKey.generate())),  # forged
        ("SN0004", NEW_PID, receipt(2, "SN0003")),  # someone else's receipt
        ("SN0003", OLD_PID, receipt(2, "SN0003")),  # wrong PID
        ("SN0003", NEW_PID, receipt(9, "SN0003")),  # outside the lease
        ("SN0003", NEW_PID, b"\x00\x01"),
    ):
        result = await platform.activate(sn, pid, token)
        assert result.verdict == Verdict.INVALID_RECEIPT, (sn, pid, result)
    assert not clone.accepted


async def test_revoked_gateway_receipts_activate_only_if_its_journal_confirmed_them(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    await platform.revoke_gateway(j.gw)

    def receipt(slot: int, sn: str) -> bytes:
        return sign(Grant(lease_id=lease.lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=T0), j.key)

    assert (await platform.activate("SN0001", NEW_PID, receipt(0, "SN0001"))).accepted
    assert (await platform.activate("SN0009", NEW_PID, receipt(1, "SN0009"))).verdict == Verdict.INVALID_RECEIPT
