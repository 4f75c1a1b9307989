"""The platform's store: certificates, disjoint leases and verified ingest, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.errors import InvalidRequestError, NoSlotsLeftError
from cloud_bridge.ledger import Outcome
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies, records
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.cbor import dumps
from wire.keys import KeyRing, SigningKey
from wire.records import Batch, RecordKind
from wire.tokens import Ack, Certificate, Checkpoint, Lease, decode_bundle, sign, token_hash, verify


async def _cert(p: Platform, quantity: int = 10) -> str:
    cert, _ = await p.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=quantity)
    return cert.cert_no


async def _stored(p: Platform, gw: str) -> list[tuple[int, str]]:
    async with p.engine.connect() as conn:
        rows = await conn.execute(select(records.c.seq, records.c.kind).where(records.c.gw == gw).order_by("seq"))
        return [(r.seq, r.kind) for r in rows]


async def _anomaly_kinds(p: Platform, gw: str) -> list[str]:
    async with p.engine.connect() as conn:
        rows = await conn.execute(select(anomalies.c.kind).where(anomalies.c.gw == gw).order_by(anomalies.c.id))
        return [r.kind for r in rows]


async def test_certificate_is_signed_by_the_issuer(platform: Platform) -> None:
    cert, token = await platform.issue_certificate(
        factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=5, protocols=("wifi", "ble")
    )
    assert cert.cert_no.startswith("RC")
    assert len(cert.cert_no) <= 12
    assert verify(token, Certificate, KeyRing([platform.issuer.public])) == cert
    assert cert.protocols == ("wifi", "ble")
    second, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=5)
    assert second.cert_no != cert.cert_no


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("new_pid", {"new_pid": "NOT-A-PID"}),
        ("quantity", {"quantity": 0}),
        ("protocols", {"protocols": ("lora",)}),
        ("protocols", {"protocols": ("zigbee",), "original_pid": "0123456789abcdef", "new_pid": "fedcba9876543210"}),
        ("new_pid", {"new_pid": OLD_PID}),
    ],
)
async def test_bad_certificate_request_names_the_field(
    platform: Platform, field: str, kwargs: dict[str, object]
) -> None:
    args: dict[str, object] = {"factory": "F1", "original_pid": OLD_PID, "new_pid": NEW_PID, "quantity": 3} | kwargs
    with pytest.raises(InvalidRequestError) as info:
        await platform.issue_certificate(**args)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_leases_are_disjoint_and_run_out(platform: Platform) -> None:
    cert_no = await _cert(platform, quantity=10)
    a, b = SigningKey.generate(), SigningKey.generate()
    ring = KeyRing([platform.issuer.public])
    first, token, bundle = await platform.issue_lease(cert_no, a.public, 4)
    second, _, _ = await platform.issue_lease(cert_no, b.public, 4)
    third, _, _ = await platform.issue_lease(cert_no, a.public, 4)  # only 2 left: a smaller lease
    assert verify(token, Lease, ring) == first
    assert (first.slot_lo, first.slot_hi, second.slot_lo, second.slot_hi) == (0, 4, 4, 8)
    assert (third.slot_lo, third.slot_hi) == (8, 10)
    assert len({first.lease_id, second.lease_id, third.lease_id}) == 3
    assert all(len(x.lease_id) <= 10 for x in (first, second, third))
    assert second.gateway_key == b.public.raw
    assert second.gateway_kid == b.kid
    parsed = decode_bundle(bundle)
    assert parsed.lease == token
    assert first.cert_hash == token_hash(parsed.certificate)
    with pytest.raises(NoSlotsLeftError, match=cert_no):
        await platform.issue_lease(cert_no, b.public, 1)


async def test_batch_is_stored_once_and_acked(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    j.confirm(lease.lease_id, 1, "SN0002")
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert result.outcome == Outcome.APPLIED
    assert result.stored == 4
    assert result.ack is not None
    ack = verify(result.ack, Ack, KeyRing([platform.issuer.public]))
    assert (ack.gw, ack.seq, ack.head) == (j.gw, 4, j.head)
    assert [p.confirmed for p in result.progress] == [2]
    assert await platform.confirmed_count(cert_no) == 2
    again = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert again.outcome == Outcome.DUPLICATE
    assert again.seq == 4
    assert again.ack is not None
    assert len(await _stored(platform, j.gw)) == 4
    assert await platform.confirmed_count(cert_no) == 2


async def test_gap_waits_then_fills_and_overlap_stores_only_the_tail(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    for slot in range(3):
        j.confirm(lease.lease_id, slot, f"SN000{slot}")
    waiting = await platform.ingest(j.batch(3, 6), topic_gw=j.gw)
    assert waiting.outcome == Outcome.WAITING
    assert waiting.ack is None
    assert await _stored(platform, j.gw) == []
    assert (await platform.ingest(j.batch(1, 2), topic_gw=j.gw)).seq == 2
    tail = await platform.ingest(j.batch(1, 6), topic_gw=j.gw)  # seqs 1-2 again, 3-6 new
    assert tail.outcome == Outcome.APPLIED
    assert tail.stored == 4
    assert tail.seq == 6
    assert [s for s, _ in await _stored(platform, j.gw)] == list(range(1, 7))
    assert await platform.confirmed_count(cert_no) == 3


async def test_fork_is_flagged_once_freezes_and_changes_no_count(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.ingest(j.batch(), topic_gw=j.gw)
    restored = Journal(j.key)  # the gateway restored from a backup: seq 2 is written again, differently
    restored.records = j.records[:1]
    restored.add(lease.lease_id, 0, "SN0001", RecordKind.RELEASED)
    restored.confirm(lease.lease_id, 1, "SN0002")
    for _ in range(2):
        result = await platform.ingest(restored.batch(), topic_gw=j.gw)
        assert result.outcome == Outcome.FORK
        assert result.ack is not None
        ack = verify(result.ack, Ack, KeyRing([platform.issuer.public]))
        assert (ack.seq, ack.head) == (2, j.head)  # the platform's head: the restored gateway cannot match it
    assert await _anomaly_kinds(platform, j.gw) == [AnomalyKind.FORK]
    assert [(h.kind, h.seq) for h in await platform.gateway_history(j.gw)] == [("frozen", 2)]
    assert await _stored(platform, j.gw) == [(1, "reserved"), (2, "confirmed")]
    assert await platform.confirmed_count(cert_no) == 1


async def test_forged_unknown_and_malformed_change_nothing(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    forged = await platform.ingest(j.batch(key=SigningKey.generate()), topic_gw=j.gw)
    stranger = Journal()
    stranger.confirm(lease.lease_id, 1, "SN0002")
    unknown = await platform.ingest(stranger.batch(), topic_gw=stranger.gw)
    garbage = await platform.ingest(b"\xa1\x61x\xff not cbor", topic_gw=j.gw)
    wrong_topic = await platform.ingest(j.batch(), topic_gw=stranger.gw)
    assert [r.outcome for r in (forged, unknown, garbage, wrong_topic)] == [Outcome.REJECTED] * 4
    assert [r.rejection.kind for r in (forged, unknown, garbage, wrong_topic) if r.rejection] == [
        AnomalyKind.BAD_SIGNATURE,
        AnomalyKind.UNKNOWN_GATEWAY,
        AnomalyKind.MALFORMED,
        AnomalyKind.TOPIC_MISMATCH,
    ]
    assert forged.rejection is not None
    assert "checkpoint" in str(forged.rejection)
    assert await _stored(platform, j.gw) == []
    assert await _stored(platform, stranger.gw) == []
    assert await platform.confirmed_count(cert_no) == 0


async def test_records_that_must_not_count_are_flagged(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j, other = Journal(), Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 3)
    foreign, _, _ = await platform.issue_lease(cert_no, other.key.public, 3)
    j.confirm(lease.lease_id, 0, "SN0001")  # counts
    j.confirm(lease.lease_id, 0, "SN0002")  # same slot, another SN
    j.confirm(lease.lease_id, 1, "SN0001")  # same SN, another slot
    j.confirm(lease.lease_id, 7, "SN0003")  # outside [0, 3)
    j.confirm(foreign.lease_id, 3, "SN0004")  # another gateway's lease
    j.confirm("Lnever0000", 0, "SN0005")
    j.add(lease.lease_id, 2, "SN0006", old_pid="0000aaaa")
    j.confirm(lease.lease_id, 0, "SN0001")  # the first one again: already counted, no anomaly
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert result.outcome == Outcome.APPLIED
    assert result.stored == 15
    assert [a.kind for a in result.anomalies] == [
        AnomalyKind.DUPLICATE_SLOT,
        AnomalyKind.SN_REBADGED_TWICE,
        AnomalyKind.SLOT_OUTSIDE_LEASE,
        AnomalyKind.FOREIGN_LEASE,
        AnomalyKind.UNKNOWN_LEASE,
        AnomalyKind.PID_MISMATCH,
    ]
    assert await platform.confirmed_count(cert_no) == 1


async def test_revoked_gateway_batches_are_refused(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 3)
    j.confirm(lease.lease_id, 0, "SN0001")
    await platform.revoke_gateway(j.gw)
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert result.outcome == Outcome.REJECTED
    assert result.rejection is not None
    assert result.rejection.kind == AnomalyKind.REVOKED_GATEWAY
    # Signed by the gateway's own key: evidence against it, unlike garbage on its topic.
    assert [(a.kind, a.gw) for a in result.anomalies] == [(AnomalyKind.REVOKED_GATEWAY, j.gw)]
    assert await platform.confirmed_count(cert_no) == 0


async def test_broken_chains_and_incomplete_records_are_refused(platform: Platform) -> None:
    cert_no = await _cert(platform)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert_no, j.key.public, 5)
    j.confirm(lease.lease_id, 0, "SN0001")
    j.confirm(lease.lease_id, 1, "SN0002")
    edited = Journal(j.key)
    edited.records = [*j.records[:2], j.records[2].model_copy(update={"sn": "SN0666"}), j.records[3]]
    broken = await platform.ingest(edited.batch(), topic_gw=j.gw)
    assert broken.outcome == Outcome.REJECTED
    assert broken.rejection is not None
    assert (broken.rejection.kind, broken.rejection.seq) == (AnomalyKind.BROKEN_CHAIN, 4)
    body = j.records[0].model_dump(mode="python")
    del body["reason"]  # decodes (reason has a default) but is not the canonical encoding that was hashed
    short = Batch(
        gw=j.gw,
        from_seq=1,
        records=[dumps(body)],
        checkpoint=sign(Checkpoint(gw=j.gw, seq=1, head=j.records[0].digest(), at=0), j.key),
    ).to_cbor()
    incomplete = await platform.ingest(short, topic_gw=j.gw)
    assert incomplete.rejection is not None
    assert incomplete.rejection.kind == AnomalyKind.MALFORMED
    assert "leaves out fields" in str(incomplete.rejection)
    assert await _stored(platform, j.gw) == []
