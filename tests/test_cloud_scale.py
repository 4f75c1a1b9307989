"""Two stateless workers share one MQTT 5 shared subscription in front of one PostgreSQL: every record once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy import func, select

from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import gateway_heads, records
from cloud_bridge.worker import IngestWorker
from rebadge.broker import PrivateBroker
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    Journal,
    fixture_pg_database,
    fixture_pg_run,
)
from wire import topics
from wire.keys import KeyRing
from wire.tokens import Ack, verify

GATEWAYS = 6
BATCHES = 8
PER_BATCH = 6  # records: 3 rebadges of 2 records each
ACK_WAIT_S = 0.5  # a gateway resends from its acked seq when no ack came this long
GIVE_UP_S = 30.0

pytestmark = pytest.mark.postgres


async def _gateway(platform: Platform, broker: PrivateBroker, j: Journal) -> int:
    """Send the journal in batches as a gateway does, resending from the acked seq until all is acked."""
    ring = KeyRing([platform.issuer.public])
    acked = 0
    sends = 0
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(topics.ack(j.gw), qos=1)
        messages = aiter(client.messages)
        async with asyncio.timeout(GIVE_UP_S):
            while acked < len(j.records):
                for start in range(acked + 1, len(j.records) + 1, PER_BATCH):
                    end = min(start + PER_BATCH - 1, len(j.records))
                    await client.publish(topics.records(j.gw), j.batch(start, end), qos=1)
                    sends += 1
                try:
                    while acked < len(j.records):
                        async with asyncio.timeout(ACK_WAIT_S):
                            message = await anext(messages)
                        assert isinstance(message.payload, bytes)
                        acked = max(acked, verify(message.payload, Ack, ring).seq)
                except TimeoutError:
                    continue
    return sends


@pytest.fixture
async def two_workers(
    pg_database: str, tmp_path: Path, broker: PrivateBroker
) -> AsyncIterator[tuple[Platform, list[IngestWorker]]]:
    async with AsyncExitStack() as stack:
        platforms = [await Platform.open(tmp_path / "cloud", db_url=pg_database) for _ in range(2)]
        for p in platforms:
            stack.push_async_callback(p.close)
        workers = [IngestWorker(p, host=broker.host, port=broker.port, shared_group="cloud") for p in platforms]
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(w.run()) for w in workers]
            async with asyncio.timeout(5):
                for w in workers:
                    await w.ready.wait()
            yield platforms[0], workers
            for task in running:
                task.cancel()


async def test_two_workers_store_every_record_exactly_once(
    two_workers: tuple[Platform, list[IngestWorker]], broker: PrivateBroker
) -> None:
    platform, workers = two_workers
    cert, _ = await platform.issue_certificate(
        factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=GATEWAYS * BATCHES * 3
    )
    journals = []
    for _ in range(GATEWAYS):
        j = Journal()
        lease, _, _ = await platform.issue_lease(cert.cert_no, j.key.public, BATCHES * 3)
        for slot in range(lease.slot_lo, lease.slot_hi):
            j.confirm(lease.lease_id, slot, f"SN{slot:05d}")
        journals.append(j)
    async with asyncio.TaskGroup() as tasks:
        sends = [tasks.create_task(_gateway(platform, broker, j)) for j in journals]
    async with platform.engine.connect() as conn:
        stored = (await conn.execute(select(func.count()).select_from(records))).scalar_one()
        distinct = (await conn.execute(select(func.count()).select_from(
            select(records.c.gw, records.c.seq).distinct().subquery()))).scalar_one()  # fmt: skip
        heads = {r.gw: (r.seq, bytes(r.head)) for r in await conn.execute(select(gateway_heads))}
    total = GATEWAYS * BATCHES * PER_BATCH
    assert stored == distinct == total
    assert heads == {j.gw: (len(j.records), j.head) for j in journals}
    assert await platform.confirmed_count(cert.cert_no) == total // 2
    assert all(w.handled > 0 for w in workers), [w.handled for w in workers]
    assert sum(w.handled for w in workers) >= sum(s.result() for s in sends)
