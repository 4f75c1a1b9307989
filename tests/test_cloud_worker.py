"""The ingest worker against a real mosquitto: acks, duplicates, gaps, forks, hostile payloads, broker restarts."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy import func, select

from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies, records
from cloud_bridge.unverified import EVIDENCE_PREFIX_BYTES
from cloud_bridge.worker import IngestWorker
from rebadge.broker import PrivateBroker
from tests.test_cloud_helpers import NEW_PID, OLD_PID, Journal
from wire import topics
from wire.keys import KeyRing, SigningKey
from wire.lease_request import LEASE_OP, AnswerCode, LeaseRequest, lease_answer_from_cbor, new_nonce
from wire.records import Batch, batch_from_cbor
from wire.tokens import Ack, Lease, decode_bundle, sign, verify

WAIT_S = 5.0
QUIET_S = 0.3  # how long "nothing happens" is watched for


class Listener:
    """Everything the platform publishes under rebadge/v1/cloud/, as (topic, payload, retained)."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[str, bytes, bool]] = asyncio.Queue()

    async def next(self, topic: str, timeout: float = WAIT_S) -> tuple[bytes, bool]:
        """The next message on `topic` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                got, payload, retained = await self.messages.get()
                if got == topic:
                    return payload, retained

    async def nothing_on(self, topic: str) -> bool:
        """True when no message arrives on `topic` for QUIET_S."""
        try:
            await self.next(topic, timeout=QUIET_S)
        except TimeoutError:
            return True
        return False


@asynccontextmanager
async def listening(broker: PrivateBroker) -> AsyncIterator[Listener]:
    listener = Listener()
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("rebadge/v1/cloud/#", qos=1)

        async def pump() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                listener.messages.put_nowait((m.topic.value, m.payload, m.retain))

        task = asyncio.create_task(pump())
        try:
            yield listener
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(WAIT_S):
                    await task


@asynccontextmanager
async def running_worker(platform: Platform, broker: PrivateBroker) -> AsyncIterator[IngestWorker]:
    worker = IngestWorker(platform, host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(WAIT_S):
            await worker.ready.wait()
        yield worker
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):
                await task


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    p = await Platform.open(tmp_path / "cloud")
    yield p
    await p.close()


async def publish(broker: PrivateBroker, gw: str, payload: bytes) -> None:
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.publish(topics.records(gw), payload, qos=1)


async def stored_count(platform: Platform, gw: str) -> int:
    async with platform.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).where(records.c.gw == gw))).scalar_one())


async def leased_journal(platform: Platform, slots: int = 5) -> tuple[Journal, str, str]:
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=10)
    j = Journal()
    lease, _, _ = await platform.issue_lease(cert.cert_no, j.key.public, slots)
    return j, cert.cert_no, lease.lease_id


def acked(platform: Platform, token: bytes) -> Ack:
    return verify(token, Ack, KeyRing([platform.issuer.public]))


async def test_batch_over_mqtt_is_stored_once_and_acked_retained(platform: Platform, broker: PrivateBroker) -> None:
    j, cert_no, lease_id = await leased_journal(platform)
    j.confirm(lease_id, 0, "SN0001")
    j.confirm(lease_id, 1, "SN0002")
    async with running_worker(platform, broker), listening(broker) as heard:
        await publish(broker, j.gw, j.batch())
        ack = acked(platform, (await heard.next(topics.ack(j.gw)))[0])
        assert (ack.gw, ack.seq, ack.head) == (j.gw, 4, j.head)
        progress = json.loads((await heard.next(topics.cert_progress(cert_no)))[0])
        assert progress == {"cert_no": cert_no, "confirmed": 2, "quantity": 10}
        await publish(broker, j.gw, j.batch())  # the gateway did not see the ack and resends
        again = acked(platform, (await heard.next(topics.ack(j.gw)))[0])
        assert again.seq == 4
    assert await stored_count(platform, j.gw) == 4
    async with listening(broker) as late:  # a gateway connecting later still finds its ack
        payload, retained = await late.next(topics.ack(j.gw))
        assert retained
        assert acked(platform, payload).seq == 4


async def test_gap_waits_and_is_answered_with_the_current_ack_then_fills(
    platform: Platform, broker: PrivateBroker
) -> None:
    j, _, lease_id = await leased_journal(platform)
    for slot in range(3):
        j.confirm(lease_id, slot, f"SN000{slot}")
    async with running_worker(platform, broker) as worker, listening(broker) as heard:
        await publish(broker, j.gw, j.batch(1, 2))
        assert acked(platform, (await heard.next(topics.ack(j.gw)))[0]).seq == 2
        await publish(broker, j.gw, j.batch(5, 6))  # records 3 and 4 never reached the platform
        waiting = acked(platform, (await heard.next(topics.ack(j.gw)))[0])
        assert (waiting.seq, waiting.head) == (2, j.records[1].digest())  # "I hold 2": resend from 3 now
        assert worker.health()["reacked"] == 1
        assert await stored_count(platform, j.gw) == 2
        await publish(broker, j.gw, j.batch(3, 6))
        assert acked(platform, (await heard.next(topics.ack(j.gw)))[0]).seq == 6
    assert await stored_count(platform, j.gw) == 6


async def test_fork_is_published_as_an_anomaly(platform: Platform, broker: PrivateBroker) -> None:
    j, _, lease_id = await leased_journal(platform)
    j.confirm(lease_id, 0, "SN0001")
    restored = Journal(j.key)
    restored.confirm(lease_id, 0, "SN0009")
    async with running_worker(platform, broker), listening(broker) as heard:
        await publish(broker, j.gw, j.batch())
        await heard.next(topics.ack(j.gw))
        await publish(broker, j.gw, restored.batch())
        anomaly = json.loads((await heard.next(topics.ANOMALIES))[0])
        assert anomaly["kind"] == "fork"
        assert anomaly["gw"] == j.gw
        assert anomaly["seq"] == 1
        assert await heard.nothing_on(topics.ack(j.gw))
    assert await stored_count(platform, j.gw) == 2


async def test_hostile_payloads_change_nothing_and_the_worker_lives_on(
    platform: Platform, broker: PrivateBroker
) -> None:
    j, cert_no, lease_id = await leased_journal(platform)
    j.confirm(lease_id, 0, "SN0001")
    stranger = Journal()
    stranger.confirm(lease_id, 1, "SN0002")
    hostile = [
        (j.gw, j.batch(key=SigningKey.generate())),  # the first on j's topic: summarised, as bad_signature
        (stranger.gw, stranger.batch()),  # another topic: summarised too, as unknown_gateway
        (j.gw, b"\xff\x00 not cbor at all"),  # the rest on j's topic within the interval: counted only
        (j.gw, b""),
        (j.gw, j.batch()[:-7]),  # truncated
    ]
    async with running_worker(platform, broker) as worker, listening(broker) as heard:
        for gw, payload in hostile:
            await publish(broker, gw, payload)
        summaries = [json.loads((await heard.next(topics.ANOMALIES))[0]) for _ in range(2)]
        assert [(a["kind"], a["gw"]) for a in summaries] == [("bad_signature", None), ("unknown_gateway", None)]
        await publish(broker, j.gw, j.batch())
        assert acked(platform, (await heard.next(topics.ack(j.gw)))[0]).seq == 2
        assert await heard.nothing_on(topics.ANOMALIES)
        assert worker.handled == len(hostile) + 1
        assert worker.health()["unverified"] == {f"records/{j.gw}": 4, f"records/{stranger.gw}": 1}
    assert await stored_count(platform, j.gw) == 2
    assert await platform.confirmed_count(cert_no) == 1


async def test_a_flood_of_garbage_on_one_gateways_topics_stores_a_bounded_summary(
    platform: Platform, broker: PrivateBroker
) -> None:
    j, cert_no, lease_id = await leased_journal(platform)
    j.confirm(lease_id, 0, "SN0001")
    replayed = Batch(  # a real checkpoint of j's, seen on the broker, over records of the attacker's making
        gw=j.gw, from_seq=1, records=[b"\xa0" * 10, bytes(300)], checkpoint=batch_from_cbor(j.batch()).checkpoint
    ).to_cbor()
    big = Batch(gw=j.gw, from_seq=1, records=[bytes(200_000)] * 4, checkpoint=b"\xd2").to_cbor()
    flood = [replayed, big, j.batch(key=SigningKey.generate()), b"\x00" * 5000, j.batch()[:-1], os.urandom(700)]
    rounds = 40
    async with (
        running_worker(platform, broker) as worker,
        aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
    ):
        for i in range(rounds):
            for payload in flood:
                await client.publish(topics.records(j.gw), payload, qos=1)
            await client.publish(topics.request(j.gw, LEASE_OP), os.urandom(64 + i), qos=1)
        await client.publish(topics.records(j.gw), j.batch(), qos=1)
        async with listening(broker) as heard:
            assert acked(platform, (await heard.next(topics.ack(j.gw)))[0]).seq == 2
        assert worker.health()["unverified"] == {
            f"records/{j.gw}": rounds * len(flood),
            f"req/{LEASE_OP}/{j.gw}": rounds,
        }
    async with platform.engine.connect() as conn:
        rows = list(await conn.execute(select(anomalies.c.gw, anomalies.c.payload)))
    assert len(rows) == 1  # one interval, one topic: one summary
    assert rows[0].gw is None  # the topic's gateway is not blamed
    assert len(rows[0].payload) <= EVIDENCE_PREFIX_BYTES
    assert await platform.confirmed_count(cert_no) == 1


async def test_worker_reconnects_after_a_broker_restart(platform: Platform, broker: PrivateBroker) -> None:
    j, _, lease_id = await leased_journal(platform)
    j.confirm(lease_id, 0, "SN0001")
    async with running_worker(platform, broker) as worker:
        broker.stop()
        async with asyncio.timeout(WAIT_S):
            await worker.lost.wait()
        broker.start()
        async with asyncio.timeout(WAIT_S):
            await worker.ready.wait()
        async with listening(broker) as heard:
            await publish(broker, j.gw, j.batch())
            assert acked(platform, (await heard.next(topics.ack(j.gw)))[0]).seq == 2


async def test_lease_request_over_mqtt_is_answered_with_a_lease_file(platform: Platform, broker: PrivateBroker) -> None:
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=10)
    gateway = SigningKey.generate()
    gw = await platform.register_gateway(gateway.public, factory="F1")
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = b"corr-1"
    async with (
        running_worker(platform, broker),
        aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client,
    ):
        await client.subscribe(topics.response(gw, LEASE_OP), qos=1)
        request = LeaseRequest(id="req-1", gw=gw, nonce=new_nonce(), at=platform.now(), cert_no=cert.cert_no, slots=4)
        await client.publish(topics.request(gw, LEASE_OP), sign(request, gateway), qos=1, properties=props)
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(client.messages))
    assert isinstance(message.payload, bytes)
    answer = lease_answer_from_cbor(message.payload)
    assert (answer.id, answer.code) == ("req-1", AnswerCode.OK)
    assert answer.bundle is not None
    lease = verify(decode_bundle(answer.bundle).lease, Lease, KeyRing([platform.issuer.public]))
    assert (lease.slot_lo, lease.slot_hi, lease.gateway_kid) == (0, 4, gateway.kid)
    assert message.properties is not None
    assert getattr(message.properties, "CorrelationData", None) == b"corr-1"
