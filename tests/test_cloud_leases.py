"""Leases end only by their gateway's close (ingested) or a write-off; expiry returns nothing; activation follows."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud_bridge.accounts import Actor, Role
from cloud_bridge.activation import Verdict
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.errors import ConflictError, InvalidRequestError, NoSlotsLeftError, PermissionDeniedError
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
from wire.keys import KeyRing, SigningKey
from wire.lease_request import (
    REQUEST_WINDOW_S,
    AnswerCode,
    LeaseRequest,
    Release,
    lease_answer_from_cbor,
    release_answer_from_cbor,
)
from wire.records import RecordKind
from wire.tokens import Ack, Grant, decode_bundle, sign, verify

AUDITOR = Actor(Role.AUDITOR, None, name="audit-1")
ADMIN = Actor(Role.ADMIN, None, name="admin-1")


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
    policy = LeasePolicy(max_slots=50, valid_s=1000)
    p = await Platform.open(tmp_path / "cloud", db_url=db_url, clock=clock, policy=policy)
    yield p
    await p.close()


async def _cert(p: Platform, quantity: int = 10) -> str:
    cert, _ = await p.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=quantity)
    return cert.cert_no


def _receipt(lease_id: str, slot: int, sn: str, key: SigningKey) -> bytes:
    return sign(Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=T0), key)


async def _ask_lease(p: Platform, gw: str, token: bytes) -> tuple[AnswerCode, str]:
    answer = lease_answer_from_cbor((await p.answer_lease(gw, token)).to_cbor())
    return answer.code, answer.message


async def _ask_release(p: Platform, j: Journal, lease_id: str, seq: int) -> tuple[AnswerCode, int]:
    token = j.request(Release, lease_id=lease_id, seq=seq)
    answer = release_answer_from_cbor((await p.answer_release(j.gw, token)).to_cbor())
    return answer.code, answer.returned


async def test_lease_requests_are_signed_fresh_and_never_replayed(platform: Platform, clock: Clock) -> None:
    cert_no = await _cert(platform, quantity=100)
    j = Journal()
    assert (await _ask_lease(platform, j.gw, j.request(LeaseRequest, cert_no=cert_no, slots=5)))[0] == (
        AnswerCode.UNKNOWN_GATEWAY
    )
    await platform.register_gateway(j.key.public, "line 1", factory="F1")
    token = j.request(LeaseRequest, cert_no=cert_no, slots=80)
    ok = lease_answer_from_cbor((await platform.answer_lease(j.gw, token)).to_cbor())
    assert ok.ok
    assert ok.bundle is not None
    assert decode_bundle(ok.bundle).lease
    code, message = await _ask_lease(platform, j.gw, token)
    assert code == AnswerCode.REPLAYED
    assert "nonce was seen before" in message
    unsigned = LeaseRequest(id="u", gw=j.gw, nonce=bytes(16), at=T0, cert_no=cert_no, slots=5).to_cbor()
    assert (await _ask_lease(platform, j.gw, unsigned))[0] == AnswerCode.BAD_SIGNATURE
    stranger = j.request(LeaseRequest, cert_no=cert_no, slots=5, key=SigningKey.generate())
    assert (await _ask_lease(platform, j.gw, stranger))[0] == AnswerCode.BAD_SIGNATURE
    other = Journal()
    await platform.register_gateway(other.key.public, factory="F1")
    on_other_topic = other.request(LeaseRequest, cert_no=cert_no, slots=5)
    assert (await _ask_lease(platform, j.gw, on_other_topic))[0] == AnswerCode.BAD_SIGNATURE
    code, message = await _ask_lease(
        platform, j.gw, j.request(LeaseRequest, cert_no=cert_no, slots=5, at=T0 - REQUEST_WINDOW_S - 1)
    )
    assert code == AnswerCode.REPLAYED
    assert "clock" in message
    assert (await _ask_lease(platform, j.gw, j.request(LeaseRequest, cert_no="RC999999", slots=1)))[0] == (
        AnswerCode.NOT_FOUND
    )
    assert (await _ask_lease(platform, j.gw, b"\xa1\x61"))[0] == AnswerCode.BAD_SIGNATURE
    await platform.revoke_gateway(j.gw)
    assert (await _ask_lease(platform, j.gw, j.request(LeaseRequest, cert_no=cert_no, slots=1)))[0] == (
        AnswerCode.REFUSED
    )
    # Nonces are forgotten once their requests could no longer pass the time check anyway.
    clock.t = T0 + 3 * REQUEST_WINDOW_S
    assert await platform.prune_nonces() >= 1


async def test_policy_caps_a_lease(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=100)
    lease, _, _ = await platform.issue_lease(cert_no, SigningKey.generate().public, 80)
    assert lease.size == 50


async def test_a_close_in_the_chain_returns_only_unspent_slots(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 6)
    j.confirm(lease.lease_id, 0, "SN0001")
    j.add(lease.lease_id, 1, "SN0002", RecordKind.RESERVED)
    j.add(lease.lease_id, 1, "SN0002", RecordKind.RELEASED)  # read back unchanged: slot 1 may be used again
    j.add(lease.lease_id, 2, "SN0003", RecordKind.RESERVED)
    j.add(lease.lease_id, 2, "SN0003", RecordKind.IN_DOUBT)  # held until settled
    close = j.close(lease.lease_id, lease.slot_hi)
    assert await _ask_release(platform, j, lease.lease_id, close.seq) == (AnswerCode.PENDING, 0)
    await platform.ingest(j.batch(), topic_gw=j.gw)
    assert await _ask_release(platform, j, lease.lease_id, close.seq) == (AnswerCode.OK, 4)  # 1, 3, 4, 5 back
    assert await _ask_release(platform, j, lease.lease_id, close.seq) == (AnswerCode.OK, 4)  # the same answer
    assert (await _ask_release(platform, j, lease.lease_id, 2))[0] == AnswerCode.REFUSED  # not where it closed
    j.confirm(lease.lease_id, 4, "SN0005")  # a spend after the close counts for nothing
    late = await platform.ingest(j.batch(close.seq + 1), topic_gw=j.gw)
    assert {a.kind for a in late.anomalies} == {AnomalyKind.AFTER_LEASE_END}
    assert await platform.confirmed_count(cert_no) == 1
    other = SigningKey.generate().public
    first, _, _ = await platform.issue_lease(cert_no, other, 1)
    second, _, _ = await platform.issue_lease(cert_no, other, 10)
    assert (first.slot_lo, first.slot_hi) == (1, 2)
    assert (second.slot_lo, second.slot_hi) == (3, 10)  # the largest free run; slot 2 is in doubt


async def test_a_release_after_a_confirmation_returns_nothing(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=5)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    for slot in range(5):
        j.confirm(lease.lease_id, slot, f"SN000{slot}")
        j.add(lease.lease_id, slot, f"SN000{slot}", RecordKind.RELEASED)
    j.close(lease.lease_id, lease.slot_hi)
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert [a.kind for a in result.anomalies] == [AnomalyKind.RELEASE_AFTER_CONFIRM] * 5
    assert await platform.confirmed_count(cert_no) == 5
    with pytest.raises(NoSlotsLeftError):
        await platform.issue_lease(cert_no, SigningKey.generate().public, 1)


async def test_expiry_returns_nothing_and_an_offline_line_still_counts(platform: Platform, clock: Clock) -> None:
    cert_no = await _cert(platform, quantity=4)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 4, valid_s=500)
    for slot in range(4):
        j.confirm(lease.lease_id, slot, f"SN000{slot}")  # while the broker is down
    clock.t = lease.exp + 86_400  # a day past expiry: nothing comes back
    second = Journal()
    await platform.register_gateway(second.key.public, factory="F1")
    code, message = await _ask_lease(
        platform, second.gw, second.request(LeaseRequest, cert_no=cert_no, slots=4, at=int(clock.t))
    )
    assert code == AnswerCode.NO_SLOTS
    assert "close a lease" in message
    assert await platform.stale_holds(cert_no) == 4  # held by a gateway silent since its lease expired
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert result.anomalies == ()
    assert await platform.confirmed_count(cert_no) == 4
    for slot in range(4):
        assert (
            await platform.activate(f"SN000{slot}", NEW_PID, _receipt(lease.lease_id, slot, f"SN000{slot}", j.key))
        ).accepted
    assert await platform.stale_holds(cert_no) == 0


async def test_returned_slots_never_activate_under_the_lease_that_returned_them(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=5)
    activated = 0
    for _ in range(3):  # the observed attack: lease 5, sign 5 grants, close at once, repeat
        j = Journal()
        lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
        grants = [_receipt(lease.lease_id, s, f"SN{lease.lease_id}{s}", j.key) for s in range(5)]
        close = j.close(lease.lease_id, lease.slot_hi)
        await platform.ingest(j.batch(), topic_gw=j.gw)
        assert await _ask_release(platform, j, lease.lease_id, close.seq) == (AnswerCode.OK, 5)
        for slot, grant in enumerate(grants):
            result = await platform.activate(f"SN{lease.lease_id}{slot}", NEW_PID, grant)
            assert result.verdict == Verdict.NOT_HELD, result
            assert "went back to the certificate" in result.message
            activated += result.accepted
    assert activated == 0


async def test_a_slot_activated_before_its_journal_arrives_stays_spent_after_a_close(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=2)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 2)
    assert (await platform.activate("SN0001", NEW_PID, _receipt(lease.lease_id, 0, "SN0001", j.key))).accepted
    j.close(lease.lease_id, lease.slot_hi)  # a dishonest gateway never journaled slot 0
    await platform.ingest(j.batch(), topic_gw=j.gw)
    other = Journal()
    again, _, _ = await platform.issue_lease(cert_no, other.key.public, 2)
    assert (again.slot_lo, again.slot_hi) == (1, 2)  # slot 0 was activated, so it was spent


async def test_each_certificate_slot_and_each_sn_activates_once(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)

    def receipt(slot: int, sn: str, key: SigningKey = j.key) -> bytes:
        return _receipt(lease.lease_id, slot, sn, key)

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


async def test_a_confirmed_slot_activates_only_for_its_confirmed_sn(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    other = await platform.activate("SN0009", NEW_PID, _receipt(lease.lease_id, 0, "SN0009", j.key))
    assert other.verdict == Verdict.NOT_HELD
    assert "confirmed for SN SN0001" in other.message
    assert (await platform.activate("SN0001", NEW_PID, _receipt(lease.lease_id, 0, "SN0001", j.key))).accepted


async def test_revoked_gateway_receipts_activate_only_if_its_journal_confirmed_them(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    await platform.revoke_gateway(j.gw)
    assert (await platform.activate("SN0001", NEW_PID, _receipt(lease.lease_id, 0, "SN0001", j.key))).accepted
    refused = await platform.activate("SN0009", NEW_PID, _receipt(lease.lease_id, 1, "SN0009", j.key))
    assert refused.verdict == Verdict.NOT_HELD
    assert "revoked" in refused.message


async def test_a_write_off_is_audited_and_keeps_only_confirmed_slots(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=5)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    j.add(lease.lease_id, 1, "SN0002", RecordKind.RESERVED)
    j.add(lease.lease_id, 1, "SN0002", RecordKind.IN_DOUBT)
    await platform.ingest(j.batch(), topic_gw=j.gw)
    factory = Actor(Role.FACTORY_ADMIN, 1, name="factory")
    with pytest.raises(PermissionDeniedError):
        await platform.write_off_lease(factory, lease.lease_id, "gone")
    with pytest.raises(InvalidRequestError, match="reason"):
        await platform.write_off_lease(AUDITOR, lease.lease_id, " ")
    assert await platform.write_off_lease(AUDITOR, lease.lease_id, "gateway burnt in a fire") == 4
    with pytest.raises(ConflictError, match="written_off already"):
        await platform.write_off_lease(AUDITOR, lease.lease_id, "again")
    j.confirm(lease.lease_id, 2, "SN0003")  # the gateway comes back after all: counts for nothing
    late = await platform.ingest(j.batch(5), topic_gw=j.gw)
    assert {a.kind for a in late.anomalies} == {AnomalyKind.AFTER_LEASE_END}
    assert (await platform.activate("SN0001", NEW_PID, _receipt(lease.lease_id, 0, "SN0001", j.key))).accepted
    for slot, sn in ((1, "SN0002"), (2, "SN0003")):
        result = await platform.activate(sn, NEW_PID, _receipt(lease.lease_id, slot, sn, j.key))
        assert result.verdict == Verdict.NOT_HELD
    history = await platform.gateway_history(j.gw)
    assert [(h.kind, h.actor, h.reason) for h in history] == [("written_off", "audit-1", "gateway burnt in a fire")]
    again, _, _ = await platform.issue_lease(cert_no, SigningKey.generate().public, 5)
    assert (again.slot_lo, again.slot_hi) == (1, 5)


async def test_a_fork_freezes_the_gateway_until_an_admin_reinstates_it(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=10)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 10)
    for slot in range(3):
        j.confirm(lease.lease_id, slot, f"SN000{slot}")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    restored = Journal(j.key)
    restored.records = j.records[:2]  # a backup taken after the first rebadge
    restored.confirm(lease.lease_id, 1, "SN0100")  # spends slot 1 again: seq 3 now differs
    forked = await platform.ingest(restored.batch(), topic_gw=j.gw)
    assert forked.outcome == "fork"
    assert forked.ack is not None  # names the platform's head, which the restored gateway cannot match
    assert [a.kind for a in forked.anomalies] == [AnomalyKind.FORK]
    code, message = await _ask_lease(platform, j.gw, j.request(LeaseRequest, cert_no=cert_no, slots=1))
    assert code == AnswerCode.FROZEN
    assert "reinstates" in message
    # The other copy of the key (a cloned box) goes on along the platform's chain: kept, counted for nothing.
    j.confirm(lease.lease_id, 5, "SN0005")
    clone = await platform.ingest(j.batch(7), topic_gw=j.gw)
    assert clone.outcome == "applied"
    assert [a.kind for a in clone.anomalies] == [AnomalyKind.FROZEN_GATEWAY]
    assert "frozen from seq 3" in clone.anomalies[0].message
    assert await platform.confirmed_count(cert_no) == 3
    post_fork = await platform.activate("SN0100", NEW_PID, _receipt(lease.lease_id, 3, "SN0100", j.key))
    assert post_fork.verdict == Verdict.NOT_HELD
    assert "frozen" in post_fork.message
    assert (await platform.activate("SN0000", NEW_PID, _receipt(lease.lease_id, 0, "SN0000", j.key))).accepted
    with pytest.raises(PermissionDeniedError):
        await platform.reinstate_gateway(AUDITOR, j.gw, "checked")
    assert await platform.reinstate_gateway(ADMIN, j.gw, "restored on purpose after a disk failure") == 2
    assert [h.kind for h in await platform.gateway_history(j.gw)] == ["frozen", "written_off", "reinstated"]
    # The gateway's own branch now continues; what it spent twice counts once, and its old lease is gone.
    continued = await platform.ingest(restored.batch(3), topic_gw=j.gw)
    assert continued.outcome == "applied"
    assert await platform.confirmed_count(cert_no) == 3
    assert (await _ask_lease(platform, j.gw, j.request(LeaseRequest, cert_no=cert_no, slots=10)))[0] == AnswerCode.OK


async def test_a_write_off_racing_an_ingest_never_counts_a_slot_twice(platform: Platform) -> None:
    # Observed on PostgreSQL with two workers before the locks: a confirmation ingested while its lease was being
    # ended was both counted and handed back, and a second gateway confirmed the same slot (60 of 60 trials).
    for trial in range(15):
        cert_no = await _cert(platform, quantity=1)
        first, second = Journal(), Journal()
        lease, _, _ = await platform.issue_lease(cert_no, first.key.public, 1)
        first.confirm(lease.lease_id, 0, f"SN-A{trial:03d}")
        ingest = platform.ingest(first.batch(), topic_gw=first.gw)
        write_off = platform.write_off_lease(AUDITOR, lease.lease_id, "racing")
        _, returned = await asyncio.gather(ingest, write_off)
        counted = await platform.confirmed_count(cert_no)
        assert counted + returned == 1, trial  # the slot is either spent (and kept) or returned, never both
        if counted:
            with pytest.raises(NoSlotsLeftError):
                await platform.issue_lease(cert_no, second.key.public, 1)
            continue
        other, _, _ = await platform.issue_lease(cert_no, second.key.public, 1)
        second.confirm(other.lease_id, 0, f"SN-B{trial:03d}")
        await platform.ingest(second.batch(), topic_gw=second.gw)
        assert await platform.confirmed_count(cert_no) == 1, trial


async def test_a_gateway_behind_the_platform_is_rebased_only_at_a_seq_an_admin_names(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=10)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 10)
    for slot in range(3):
        j.confirm(lease.lease_id, slot, f"SN000{slot}")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    # Restored with nothing new written: no fork to see, the agent stops on the ack beyond its head.
    with pytest.raises(ConflictError, match="name the head seq"):
        await platform.reinstate_gateway(ADMIN, j.gw, "disk replaced")
    with pytest.raises(InvalidRequestError, match="below the platform's head seq 6"):
        await platform.reinstate_gateway(ADMIN, j.gw, "disk replaced", seq=6)
    assert await platform.due_acks() == []
    assert await platform.reinstate_gateway(ADMIN, j.gw, "disk replaced", seq=2) == 2
    (gw, token), *rest = await platform.due_acks()
    ack = verify(token, Ack, KeyRing([platform.issuer.public]))
    assert (gw, ack.seq, ack.head, rest) == (j.gw, 2, j.records[1].digest(), [])
    assert await platform.due_acks() == []  # told once
    assert await platform.confirmed_count(cert_no) == 3  # what the lost branch rebadged still counts
    restored = Journal(j.key)
    restored.records = j.records[:2]
    restored.confirm(lease.lease_id, 1, "SN0100")  # the restored box re-spends slot 1 on its old lease
    result = await platform.ingest(restored.batch(3), topic_gw=j.gw)
    assert result.outcome == "applied"
    assert {a.kind for a in result.anomalies} == {AnomalyKind.AFTER_LEASE_END}
    assert await platform.confirmed_count(cert_no) == 3


async def test_an_activation_racing_a_close_is_either_kept_or_refused(platform: Platform) -> None:
    for trial in range(15):
        cert_no = await _cert(platform, quantity=1)
        first, second = Journal(), Journal()
        lease, _, _ = await platform.issue_lease(cert_no, first.key.public, 1)
        sn = f"SN-A{trial:03d}"
        first.close(lease.lease_id, lease.slot_hi)  # the gateway never journaled the grant it signed
        grant = _receipt(lease.lease_id, 0, sn, first.key)
        _, activation = await asyncio.gather(
            platform.ingest(first.batch(), topic_gw=first.gw), platform.activate(sn, NEW_PID, grant)
        )
        if activation.accepted:  # the activation came first: the close keeps the slot it spent
            with pytest.raises(NoSlotsLeftError):
                await platform.issue_lease(cert_no, second.key.public, 1)
        else:
            assert activation.verdict == Verdict.NOT_HELD
            other, _, _ = await platform.issue_lease(cert_no, second.key.public, 1)
            assert (other.slot_lo, other.slot_hi) == (0, 1)


async def test_a_slot_kept_in_doubt_at_a_close_activates_only_for_the_sn_it_was_kept_for(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=2)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 2)
    j.add(lease.lease_id, 0, "SN0001", RecordKind.RESERVED)
    j.add(lease.lease_id, 0, "SN0001", RecordKind.IN_DOUBT)
    close = j.close(lease.lease_id, lease.slot_hi)
    # A dishonest gateway goes on after its own close, naming another unit in the kept slot.
    j.add(lease.lease_id, 0, "SN0666", RecordKind.RESERVED)
    j.add(lease.lease_id, 0, "SN0666", RecordKind.CONFIRMED)
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert [a.kind for a in result.anomalies] == [AnomalyKind.AFTER_LEASE_END]
    assert await _ask_release(platform, j, lease.lease_id, close.seq) == (AnswerCode.OK, 1)  # slot 1 back
    late = await platform.activate("SN0666", NEW_PID, _receipt(lease.lease_id, 0, "SN0666", j.key))
    assert late.verdict == Verdict.NOT_HELD
    assert (await platform.activate("SN0001", NEW_PID, _receipt(lease.lease_id, 0, "SN0001", j.key))).accepted
