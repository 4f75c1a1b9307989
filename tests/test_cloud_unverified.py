"""Unverified payloads on a gateway's topics: counted per topic, one bounded summary per topic per interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.ledger import Outcome
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies
from cloud_bridge.unverified import EVIDENCE_PREFIX_BYTES, MAX_SUMMARIES_PER_INTERVAL, RECORDS, UnverifiedTraffic
from tests.test_cloud_helpers import T0, Journal
from wire.keys import SigningKey


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def platform(tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    p = await Platform.open(tmp_path / "cloud", clock=clock)
    yield p
    await p.close()


async def stored(platform: Platform) -> list[tuple[str, str | None, str, bytes | None]]:
    async with platform.engine.connect() as conn:
        rows = await conn.execute(
            select(anomalies.c.kind, anomalies.c.gw, anomalies.c.message, anomalies.c.payload).order_by(anomalies.c.id)
        )
        return [(r.kind, r.gw, r.message, r.payload) for r in rows]


async def test_garbage_is_summarised_once_per_interval_and_counted(platform: Platform, clock: Clock) -> None:
    j = Journal()
    await platform.register_gateway(j.key.public)
    j.add("L1", 0, "SN0001")
    forged = j.batch(key=SigningKey.generate())
    first = await platform.ingest(forged, topic_gw=j.gw)
    assert first.outcome == Outcome.REJECTED
    assert first.rejection is not None
    assert first.rejection.kind == AnomalyKind.BAD_SIGNATURE
    assert [a.gw for a in first.anomalies] == [None]
    for _ in range(199):
        later = await platform.ingest(b"\x00" * 4096, topic_gw=j.gw)
        assert later.rejection is not None
        assert later.anomalies == ()
    clock.now += platform.unverified.interval_s
    await platform.ingest(forged, topic_gw=j.gw)
    rows = await stored(platform)
    assert [(kind, gw) for kind, gw, _, _ in rows] == [("bad_signature", None), ("bad_signature", None)]
    assert rows[0][2].startswith(f"1 unverified payload on the records topic of gateway {j.gw} since its last")
    assert rows[1][2].startswith("200 unverified payloads")
    assert "not attributed to the gateway" in rows[1][2]
    assert all(payload is not None and len(payload) <= EVIDENCE_PREFIX_BYTES for *_, payload in rows)
    assert platform.unverified.counts() == {(RECORDS, j.gw): 201}


async def test_made_up_topics_cannot_fill_the_table(platform: Platform) -> None:
    for i in range(MAX_SUMMARIES_PER_INTERVAL + 50):
        await platform.ingest(b"\xff", topic_gw=f"{i:016x}")
    assert len(await stored(platform)) == MAX_SUMMARIES_PER_INTERVAL
    assert platform.unverified.total == MAX_SUMMARIES_PER_INTERVAL + 50


def test_topics_past_the_cap_share_one_bucket() -> None:
    traffic = UnverifiedTraffic(lambda: 0.0, max_topics=3)
    for gw in ("a", "b", "c", "d", "e"):
        traffic.count(RECORDS, gw)
    assert traffic.counts() == {(RECORDS, "a"): 1, (RECORDS, "b"): 1, (RECORDS, "c"): 1, (RECORDS, "*"): 2}


async def test_a_verified_batch_with_bad_records_is_still_evidence_against_its_gateway(platform: Platform) -> None:
    j = Journal()
    await platform.register_gateway(j.key.public)
    j.confirm("Lnever0000", 0, "SN0001")  # signed by the gateway itself, on a lease that does not exist
    result = await platform.ingest(j.batch(), topic_gw=j.gw)
    assert result.outcome == Outcome.APPLIED
    assert [(a.kind, a.gw) for a in result.anomalies] == [(AnomalyKind.UNKNOWN_LEASE, j.gw)]
    assert platform.unverified.counts() == {}
