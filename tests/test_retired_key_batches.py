"""What a retired gateway key may still send after a key rotation: only the records the platform holds already.
Anything else it signs within its old seqs (another history, a fork) is refused as the retired key's, and neither
freezes the gateway nor counts; on SQLite and PostgreSQL."""

from __future__ import annotations

from cloud_bridge import gateways
from cloud_bridge.ledger import Outcome
from cloud_bridge.platform import Platform
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from tests.test_key_rotation_platform import _site
from wire.keys import SigningKey
from wire.records import RecordKind


async def test_a_retired_key_cannot_fork_the_history_it_signed_nor_freeze_the_gateway(platform: Platform) -> None:
    site = await _site(platform)  # seqs 1..3 under the old key: SN0001 confirmed in slot 0, the lease closed
    old, new = site.journal.key, SigningKey.generate()
    assert (await site.rotate(new)).ok
    lease, _, _ = await platform.issue_lease(site.cert_no, new.public, 3)
    site.journal.confirm(lease.lease_id, lease.slot_lo, "SN0002")
    assert await site.ingest(4) == Outcome.APPLIED
    # The thief rewrites seqs 2..3 with the old key (its seqs): another unit in slot 0 instead of the close.
    forged = Journal(old)
    forged.add(site.lease_id, 0, "SN0001", RecordKind.RESERVED)
    forged.add(site.lease_id, 1, "SN6666", RecordKind.RESERVED)
    forged.add(site.lease_id, 1, "SN6666", RecordKind.CONFIRMED)
    result = await platform.ingest(forged.batch(1), topic_gw=site.gw)
    assert result.outcome == Outcome.REJECTED
    assert result.ack is None
    async with platform.engine.connect() as conn:
        row = await gateways.find(conn, site.gw)
    assert row is not None
    assert row.frozen_at is None  # the line goes on
    assert "retired_key" in await site.anomaly_kinds()
    assert await platform.confirmed_count(site.cert_no) == 2
    # The new key's batches still go in.
    site.journal.add(lease.lease_id, lease.slot_lo + 1, "SN0003", RecordKind.RESERVED)
    assert await site.ingest(6) == Outcome.APPLIED


async def test_a_retired_key_may_resend_exactly_what_the_platform_holds(platform: Platform) -> None:
    site = await _site(platform)
    old = site.journal.key
    history = Journal(old)
    history.records = list(site.journal.records)
    assert (await site.rotate(SigningKey.generate())).ok
    result = await platform.ingest(history.batch(1), topic_gw=site.gw)  # a resend from before the switch-over
    assert result.outcome == Outcome.DUPLICATE
    assert result.ack is not None
    assert "retired_key" not in await site.anomaly_kinds()


async def test_a_batch_straddling_the_rotation_counts_only_under_the_new_key(platform: Platform) -> None:
    site = await _site(platform)  # the old key signed seqs 1..3
    old, new = site.journal.key, SigningKey.generate()
    assert (await site.rotate(new)).ok
    lease, _, _ = await platform.issue_lease(site.cert_no, new.public, 3)
    site.journal.confirm(lease.lease_id, lease.slot_lo, "SN0002")  # seqs 4..5
    assert await site.ingest(2, key=old) == Outcome.REJECTED  # 2..5: the old key may not vouch for 4..5
    assert await platform.confirmed_count(site.cert_no) == 1
    assert await site.ingest(2, key=new) == Outcome.APPLIED  # 2..3 are the stored ones, 4..5 the new key's
    assert await platform.confirmed_count(site.cert_no) == 2
    assert await site.ingest(1, key=new) == Outcome.DUPLICATE
    assert await site.anomaly_kinds() == ["retired_key"]
