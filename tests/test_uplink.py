"""The uplink against a real mosquitto and the real journal: records out in order with valid checkpoints, signed
acks in, forged acks ignored, nothing lost across a broker restart, events/progress/health kept while offline,
scan commands; status and last will, MQTT 3.1.1 and the fallback to it, mTLS that never falls back to plaintext,
unix sockets, backoff, and config that cannot work."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from agent.config import MqttConfig, TlsConfig
from agent.errors import AckTimeoutError, ConfigError
from agent.journal import AckOutcome, AckResult, Journal
from agent.uplink import Uplink, UplinkTiming
from agent.uplink.discovery import COUNTERS, config_topic
from agent.uplink.records import RecordSender
from rebadge.broker import PrivateBroker, free_port
from tests.conftest import Broker
from tests.helpers import Issuer
from tests.uplink_support import WAIT_S, Gateway, MqttProxy, Platform, eventually, make_tls, running, tls_listener
from wire import topics
from wire.chain import ChainChecker
from wire.keys import SigningKey
from wire.records import RecordKind, batch_from_cbor
from wire.refusals import RefusalReason
from wire.scan_command import COMMAND_WINDOW_S, sign_scan
from wire.tokens import Ack, Checkpoint, sign, verify
from wire.topics import ProgressPayload, Result, ScanCommand, ScanEvent

FAST = UplinkTiming(connect_timeout_s=5.0, mqtt_timeout_s=1.0, idle_check_s=1.0, offline_publish_timeout_s=1.0)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    key = SigningKey.generate()
    journal = await Journal.open(tmp_path / "journal.sqlite", key.kid.hex())
    gw = Gateway(key, journal, Issuer())
    await gw.add_lease()
    yield gw
    await journal.close()


def uplink_for(
    gateway: Gateway, port: int, *, batch_records: int = 200, timing: UplinkTiming = FAST,
    on_scan: Callable[[ScanCommand], Awaitable[None]] | None = None, **mqtt: Any,
) -> Uplink:  # fmt: skip
    fields = {"host": "127.0.0.1", "port": port, "batch_records": batch_records, "reconnect_min_s": 0.05,
              "reconnect_max_s": 0.2, "resend_s": 0.5, **mqtt}  # fmt: skip
    config = MqttConfig(**fields)
    return Uplink(
        config, gateway.gw, gateway.journal, sign_checkpoint=gateway.sign_checkpoint, issuers=gateway.issuer.ring,
        name="line-7", version="9.9", on_scan=on_scan, timing=timing,
    )  # fmt: skip


def platform_for(gateway: Gateway, broker: Broker, *, auto_ack: bool = True) -> Platform:
    return Platform(broker.host, broker.port, gateway.gw, gateway.ring, gateway.issuer.key, auto_ack=auto_ack)


@dataclass
class Watcher:
    """A dashboard: collects every message on some topics."""

    port: int
    filters: list[str]
    got: list[aiomqtt.Message] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    _new: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            for f in self.filters:
                await client.subscribe(f, qos=1)
            self.ready.set()
            async for message in client.messages:
                self.got.append(message)
                self._new.set()

    def on(self, topic: str) -> list[bytes]:
        return [m.payload for m in self.got if m.topic.value == topic]

    async def wait_for(self, check: Callable[[], bool], timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self._new.clear()
                await self._new.wait()


async def wait_logged(caplog: pytest.LogCaptureFixture, text: str, count: int = 1) -> None:
    await eventually(lambda: sum(text in r.getMessage() for r in caplog.records) >= count)


# -- records and acks -------------------------------------------------------------------------------------------


async def test_records_go_out_in_order_with_valid_checkpoints(broker: Broker, gateway: Gateway) -> None:
    head = await gateway.scan(5)
    platform = platform_for(gateway, broker, auto_ack=False)
    uplink = uplink_for(gateway, broker.port, batch_records=3)
    async with running(platform.run(), "platform"):
        await platform.subscribed.wait()
        async with running(uplink.run(), "uplink"):
            await eventually(lambda: platform.head_seq >= head)
    assert platform.errors == []
    first = platform.batches[: (head + 2) // 3]
    assert [b.from_seq for b in first] == [1, 4, 7, 10]
    assert [len(b.records) for b in first] == [3, 3, 3, 1]
    chain = ChainChecker(gateway.gw)
    for body in (r for b in first for r in b.records):
        chain.feed(body)
    tip = chain.head
    last = verify(first[-1].checkpoint, Checkpoint, gateway.ring)
    assert (last.gw, last.seq, last.head) == (gateway.gw, head, tip)
    assert (head, tip) == await gateway.journal.head()
    assert await gateway.journal.acked() == 0  # nothing is retired without an ack


async def test_ack_applies_and_retires(broker: Broker, gateway: Gateway) -> None:
    head = await gateway.scan(3)
    platform = platform_for(gateway, broker)
    uplink = uplink_for(gateway, broker.port)
    async with running(platform.run(), "platform"), running(uplink.run(), "uplink"):
        await uplink.wait_acked(head, WAIT_S)
        assert await gateway.journal.pending(0, 100) == []
        more = await gateway.scan(2)
        uplink.records_changed()
        await uplink.wait_acked(more, WAIT_S)
    assert await gateway.journal.acked() == more
    assert platform.errors == []


async def test_forged_garbled_and_foreign_acks_are_ignored(
    broker: Broker, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    head = await gateway.scan(2)
    _, digest = await gateway.journal.head()
    uplink = uplink_for(gateway, broker.port)
    stranger = SigningKey.generate()
    bad = [
        b"\x00garbage",
        sign(Ack(gw=gateway.gw, seq=head, head=digest, at=1), stranger),  # not the pinned issuer
        sign(Ack(gw="0123456789abcdef", seq=head, head=digest, at=1), gateway.issuer.key),  # another gateway's
        sign(Checkpoint(gw=gateway.gw, seq=head, head=digest, at=1), gateway.issuer.key),  # not an ack at all
    ]
    caplog.set_level(logging.WARNING, logger="agent.uplink")
    async with running(uplink.run(), "uplink") as task, aiomqtt.Client("127.0.0.1", broker.port) as client:
        await uplink.wait_connected(WAIT_S)
        for token in bad:
            await client.publish(topics.ack(gateway.gw), token, qos=1, retain=True)
        await wait_logged(caplog, "ack", count=len(bad))
        assert await gateway.journal.acked() == 0
        assert len(await gateway.journal.pending(0, 100)) == head
        assert gateway.journal.frozen is None  # nothing that does not verify as our issuer's ack of us counts
        assert not task.done()
        good = sign(Ack(gw=gateway.gw, seq=head, head=digest, at=1), gateway.issuer.key)
        await client.publish(topics.ack(gateway.gw), good, qos=1, retain=True)
        await uplink.wait_acked(head, WAIT_S)
    assert await gateway.journal.pending(0, 100) == []


async def test_a_signed_ack_of_another_chain_freezes_until_a_later_matching_ack(
    broker: Broker, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    head = await gateway.scan(2)
    _, digest = await gateway.journal.head()
    uplink = uplink_for(gateway, broker.port)

    def ack(seq: int, at: int, head: bytes = digest) -> bytes:
        return sign(Ack(gw=gateway.gw, seq=seq, head=head, at=at), gateway.issuer.key)

    caplog.set_level(logging.WARNING, logger="agent.uplink")
    async with running(uplink.run(), "uplink"), aiomqtt.Client("127.0.0.1", broker.port) as client:
        await uplink.wait_connected(WAIT_S)
        await client.publish(topics.ack(gateway.gw), ack(head + 5, 10), qos=1, retain=True)  # beyond our head
        await eventually(lambda: gateway.journal.frozen is not None)
        await client.publish(topics.ack(gateway.gw), ack(head, 10, bytes(32)), qos=1, retain=True)  # another chain
        await client.publish(topics.ack(gateway.gw), ack(head, 10), qos=1, retain=True)  # matches, but not newer
        await wait_logged(caplog, "the gateway stays frozen", count=2)
        await client.publish(topics.ack(gateway.gw), ack(head, 9), qos=1, retain=True)  # older: a replay
        await wait_logged(caplog, "older than the newest ack applied (a replay)")
        assert gateway.journal.frozen is not None
        assert await gateway.journal.acked() == 0
        await client.publish(topics.ack(gateway.gw), ack(head, 11), qos=1, retain=True)  # reinstated, rebased
        await uplink.wait_acked(head, WAIT_S)
    assert gateway.journal.frozen is None
    # Lifting closed the written-off lease: its `closed` record is all that is left to send.
    assert [r.kind for r in await gateway.journal.pending(head, 100)] == [RecordKind.CLOSED]
    assert any("shows another chain than this journal's" in r.getMessage() for r in caplog.records)


async def test_broker_restart_loses_no_record(broker: Broker, gateway: Gateway) -> None:
    await gateway.scan(3)
    platform = platform_for(gateway, broker)
    uplink = uplink_for(gateway, broker.port, batch_records=4)
    async with running(platform.run(), "platform"), running(uplink.run(), "uplink"):
        await uplink.wait_acked(6, WAIT_S)
        broker.stop()
        await gateway.scan(4)  # written while the broker is away
        uplink.records_changed()
        await asyncio.sleep(0.3)
        assert not uplink.is_connected
        broker.start()
        head = await gateway.scan(3)
        uplink.records_changed()
        await uplink.wait_acked(head, WAIT_S)
        assert uplink.connections >= 2
    assert platform.errors == []
    assert set(platform.seen) == set(range(1, head + 1))  # duplicates allowed, gaps not
    assert platform.head_seq == head


def recording_sender(
    gateway: Gateway, *, resend_after_s: float, idle_check_s: float
) -> tuple[RecordSender, Callable[[str, bytes], Awaitable[None]], list[tuple[int, int]]]:
    """A sender of two-record batches, two out at most; its publish function and the (from, to) seqs it sent."""
    sent: list[tuple[int, int]] = []

    async def publish(topic: str, payload: bytes) -> None:
        batch = batch_from_cbor(payload)
        sent.append((batch.from_seq, batch.from_seq + len(batch.records) - 1))

    sender = RecordSender(
        gateway.journal, gateway.gw, gateway.sign_checkpoint, gateway.issuer.ring,
        batch_records=2, max_in_flight=2, resend_after_s=resend_after_s, idle_check_s=idle_check_s,
    )  # fmt: skip
    return sender, publish, sent


async def test_sender_keeps_a_bounded_window_and_resends_without_acks(gateway: Gateway) -> None:
    await gateway.scan(5)
    sender, publish, sent = recording_sender(gateway, resend_after_s=0.3, idle_check_s=5.0)
    async with running(sender.run(publish), "sender"):
        await asyncio.sleep(0.15)
        assert sent == [(1, 2), (3, 4)]  # two batches out, then it waits for an ack
        await eventually(lambda: len(sent) >= 4)
        assert sent[2:] == [(1, 2), (3, 4)]  # no ack in time: the same records again, from acked + 1
        rec = (await gateway.journal.pending(3, 1))[0]
        applied = await sender.on_ack(sign(Ack(gw=gateway.gw, seq=4, head=rec.digest(), at=1), gateway.issuer.key))
        assert applied == AckResult(AckOutcome.RETIRED, 4)
        await eventually(lambda: (5, 6) in sent and (7, 8) in sent)
        assert sent[4:6] == [(5, 6), (7, 8)]


async def test_a_live_ack_short_of_every_batch_out_resends_at_once(gateway: Gateway) -> None:
    await gateway.scan(5)
    sender, publish, sent = recording_sender(gateway, resend_after_s=60.0, idle_check_s=60.0)
    head_2 = (await gateway.journal.pending(1, 1))[0].digest()

    def ack(at: int) -> bytes:
        return sign(Ack(gw=gateway.gw, seq=2, head=head_2, at=at), gateway.issuer.key)

    async with running(sender.run(publish), "sender"):
        await eventually(lambda: len(sent) == 2)
        await sender.on_ack(ack(1), live=True)  # covers (1, 2): the window moves on
        await eventually(lambda: len(sent) == 3)
        await sender.on_ack(ack(2), live=False)  # a retained ack proves nothing about the batches out
        await asyncio.sleep(0.05)
        assert sent == [(1, 2), (3, 4), (5, 6)]
        await sender.on_ack(ack(3), live=True)  # the platform still holds 2: it never got (3, 4)
        await eventually(lambda: len(sent) == 5)  # long before the 60 s resend timer
    assert sent[3:] == [(3, 4), (5, 6)]
    assert sender.early_resends == 1


async def test_a_worker_saying_ready_resends_what_is_out_at_most_once_per_interval(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.uplink.records.READY_RESEND_MIN_S", 0.5)
    sender, publish, sent = recording_sender(gateway, resend_after_s=60.0, idle_check_s=60.0)
    async with running(sender.run(publish), "sender"):
        sender.platform_ready()  # nothing out: nothing to send again
        await asyncio.sleep(0.05)
        assert sent == []
        await gateway.scan(2)
        sender.wake()
        await eventually(lambda: len(sent) == 2)
        sender.platform_ready()
        await eventually(lambda: len(sent) == 4)  # long before the 60 s resend timer
        for _ in range(20):  # a client repeating the cue gets no more
            sender.platform_ready()
            await asyncio.sleep(0.005)
        assert len(sent) == 4
        await asyncio.sleep(0.5)
        sender.platform_ready()
        await eventually(lambda: len(sent) == 6)
    assert sent == [(1, 2), (3, 4)] * 3
    assert sender.early_resends == 2


# -- dashboards -------------------------------------------------------------------------------------------------


def event(sn: str) -> ScanEvent:
    return ScanEvent(sn=sn, result=Result.CONFIRMED, radio="wifi", cert_no="RC000001")


@pytest.fixture
async def proxy(broker: Broker) -> AsyncIterator[MqttProxy]:
    p = MqttProxy(broker.host, broker.port)
    await p.start()
    yield p
    await p.close()


async def test_events_queued_while_offline_arrive_after_reconnect(
    broker: Broker, proxy: MqttProxy, gateway: Gateway
) -> None:
    uplink = uplink_for(gateway, proxy.port)
    watcher = Watcher(broker.port, [topics.events(gateway.gw)])
    async with running(watcher.run(), "watcher"), running(uplink.run(), "uplink"):
        await watcher.ready.wait()
        await uplink.wait_connected(WAIT_S)
        await uplink.publish_event(event("SN0001"))
        await watcher.wait_for(lambda: len(watcher.got) == 1)
        proxy.accepting = False
        proxy.cut()
        await eventually(lambda: not uplink.is_connected)
        for sn in ("SN0002", "SN0003", "SN0004"):
            await uplink.publish_event(event(sn))
        await asyncio.sleep(0.2)
        assert len(watcher.got) == 1
        proxy.accepting = True
        await watcher.wait_for(lambda: len(watcher.got) == 4)
    sns = [ScanEvent.model_validate_json(p).sn for p in watcher.on(topics.events(gateway.gw))]
    assert sns == ["SN0001", "SN0002", "SN0003", "SN0004"]
    assert all(not m.retain for m in watcher.got)


async def test_event_queue_drops_oldest_past_its_bound_with_a_counted_warning(
    broker: Broker, proxy: MqttProxy, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    timing = UplinkTiming(**{**FAST.__dict__, "max_queued_events": 3})
    uplink = uplink_for(gateway, proxy.port, timing=timing)
    watcher = Watcher(broker.port, [topics.events(gateway.gw)])
    proxy.accepting = False
    async with running(watcher.run(), "watcher"), running(uplink.run(), "uplink"):
        await watcher.ready.wait()
        for i in range(5):
            await uplink.publish_event(event(f"SN000{i}"))
        assert uplink.dropped_events == 2
        assert any("dropped the oldest (1 dropped so far)" in r.getMessage() for r in caplog.records)
        proxy.accepting = True
        await watcher.wait_for(lambda: len(watcher.got) == 3)
    assert [ScanEvent.model_validate_json(m.payload).sn for m in watcher.got] == ["SN0002", "SN0003", "SN0004"]


async def test_progress_and_health_keep_the_latest_and_announce_to_home_assistant(
    broker: Broker, proxy: MqttProxy, gateway: Gateway
) -> None:
    uplink = uplink_for(gateway, proxy.port)
    proxy.accepting = False
    cert = "RC000001"
    for confirmed in (1, 2, 3):
        p = ProgressPayload(cert_no=cert, confirmed=confirmed, in_doubt=1, refused=0, lease_size=10, remaining=6)
        await uplink.publish_progress(p)
    await uplink.publish_health({"journal_seq": 1})
    await uplink.publish_health({"journal_seq": 7})
    progress_topic, health_topic = topics.progress(gateway.gw, cert), topics.health(gateway.gw)
    watcher = Watcher(broker.port, [progress_topic, health_topic, "homeassistant/#"])
    async with running(watcher.run(), "watcher"), running(uplink.run(), "uplink"):
        await watcher.ready.wait()
        await asyncio.sleep(0.1)
        proxy.accepting = True
        await watcher.wait_for(lambda: len(watcher.got) == 2 + len(COUNTERS))
        await asyncio.sleep(0.1)
    assert [json.loads(p)["confirmed"] for p in watcher.on(progress_topic)] == [3]  # only the latest went out
    assert [json.loads(p) for p in watcher.on(health_topic)] == [{"journal_seq": 7}]
    for counter in COUNTERS:
        assert config_topic(gateway.gw, cert, counter) == f"homeassistant/sensor/{gateway.gw}/{cert}_{counter}/config"
        (raw,) = watcher.on(config_topic(gateway.gw, cert, counter))
        config = json.loads(raw)
        assert config["state_topic"] == progress_topic
        assert config["value_template"] == f"{{{{ value_json.{counter} }}}}"
        assert config["availability_topic"] == topics.status(gateway.gw)
        assert config["unique_id"] == f"rebadge_{gateway.gw}_{cert}_{counter}"
    # Retained: a dashboard that comes later still finds them.
    async with aiomqtt.Client("127.0.0.1", broker.port) as late:
        await late.subscribe(progress_topic)
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(late.messages))
    assert message.retain
    assert json.loads(message.payload)["confirmed"] == 3


# -- commands ---------------------------------------------------------------------------------------------------


async def test_scan_commands_reach_on_scan_only_signed_by_the_platform_and_the_rest_are_refused(
    broker: Broker, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[ScanCommand] = []
    arrived = asyncio.Event()

    async def on_scan(cmd: ScanCommand) -> None:
        got.append(cmd)
        arrived.set()
        if cmd.sn == "SN-BOOM":
            raise RuntimeError("radio fell over")

    uplink = uplink_for(gateway, broker.port, on_scan=on_scan)
    topic = topics.command(gateway.gw, "scan")
    platform_key, now = gateway.issuer.key, int(time.time())
    replayed = sign_scan(platform_key, gateway.gw, "SN0042", "req-1", now)
    bad = {
        "json": b'{"sn": "SN0001", "id": "json"}',  # the old unsigned form
        "garbage": b"not a token at all",
        "forged": sign_scan(SigningKey.generate(), gateway.gw, "SN0001", "forged", now),  # another key
        "elsewhere": sign_scan(platform_key, "gw-other", "SN0001", "elsewhere", now),
        "old": sign_scan(platform_key, gateway.gw, "SN0001", "old", now - COMMAND_WINDOW_S - 5),
        "ahead": sign_scan(platform_key, gateway.gw, "SN0001", "ahead", now + COMMAND_WINDOW_S + 5),
        "lease": gateway.issuer.certificate()[1],  # signed by the platform, but not a command
    }
    watcher = Watcher(broker.port, [topics.events(gateway.gw)])
    caplog.set_level(logging.WARNING, logger="agent.uplink")
    async with running(watcher.run(), "watcher"), running(uplink.run(), "uplink") as task:
        await watcher.ready.wait()
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await uplink.wait_connected(WAIT_S)
            for payload in bad.values():
                await client.publish(topic, payload, qos=1)
            await client.publish(topic, sign_scan(platform_key, gateway.gw, "SN-BOOM", "boom", now), qos=1)
            await client.publish(topic, replayed, qos=1)
            await client.publish(topic, replayed, qos=1)  # the same bytes again: a replay
            await watcher.wait_for(lambda: len(watcher.on(topics.events(gateway.gw))) >= len(bad) + 1)
            async with asyncio.timeout(WAIT_S):
                while len(got) < 2:
                    arrived.clear()
                    await arrived.wait()
        assert not task.done()  # a failing scan does not take the uplink down
    events = [ScanEvent.model_validate_json(p) for p in watcher.on(topics.events(gateway.gw))]
    assert all(e.result is Result.REFUSED for e in events)
    by_id = {e.id: e for e in events}
    assert {e.reason for e in events} == {RefusalReason.BAD_COMMAND, RefusalReason.STALE_COMMAND}
    assert by_id["old"].reason is by_id["ahead"].reason is RefusalReason.STALE_COMMAND
    assert "check the clocks" in by_id["old"].message
    assert by_id["forged"].sn == "SN0001"  # what it claimed, so the sender can match the refusal
    assert "unknown key" in by_id["forged"].message
    assert "gateway gw-other" in by_id["elsewhere"].message
    assert "seen before" in by_id["req-1"].message
    assert sum(e.id is None for e in events) == 3  # the JSON, the garbage and the certificate claim nothing
    assert got == [ScanCommand(sn="SN-BOOM", id="boom"), ScanCommand(sn="SN0042", id="req-1")]
    assert "SN-BOOM: scan command failed" in caplog.text


async def test_a_command_carried_out_before_a_restart_is_refused_after_it(broker: Broker, gateway: Gateway) -> None:
    # The agent keeps the nonces it saw in memory: restarted within the window, it must not scan the same command
    # again when it is replayed (or when the broker delivers it again).
    got: list[ScanCommand] = []
    arrived = asyncio.Event()

    async def on_scan(cmd: ScanCommand) -> None:
        got.append(cmd)
        arrived.set()

    async def scanned(n: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(got) < n:
                arrived.clear()
                await arrived.wait()

    topic = topics.command(gateway.gw, "scan")
    command = sign_scan(gateway.issuer.key, gateway.gw, "SN0042", "before", int(time.time()))
    first = uplink_for(gateway, broker.port, on_scan=on_scan)
    async with running(first.run(), "uplink"):
        await first.wait_connected(WAIT_S)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish(topic, command, qos=1)
            await scanned(1)
    await asyncio.sleep(1.1)  # the restart comes a second later, well within the window
    restarted = uplink_for(gateway, broker.port, on_scan=on_scan)
    watcher = Watcher(broker.port, [topics.events(gateway.gw)])
    async with running(watcher.run(), "watcher"), running(restarted.run(), "uplink"):
        await watcher.ready.wait()
        await restarted.wait_connected(WAIT_S)
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish(topic, command, qos=1)
            await watcher.wait_for(lambda: len(watcher.on(topics.events(gateway.gw))) >= 1)
            fresh = sign_scan(gateway.issuer.key, gateway.gw, "SN0043", "after", int(time.time()))
            await client.publish(topic, fresh, qos=1)
            await scanned(2)
    (event,) = [ScanEvent.model_validate_json(p) for p in watcher.on(topics.events(gateway.gw))]
    assert (event.id, event.result, event.reason) == ("before", Result.REFUSED, RefusalReason.STALE_COMMAND)
    assert "before this gateway's agent started" in event.message
    assert got == [ScanCommand(sn="SN0042", id="before"), ScanCommand(sn="SN0043", id="after")]


# -- the connection ---------------------------------------------------------------------------------------------


def states(watcher: Watcher, gw: str) -> list[str]:
    return [json.loads(p)["state"] for p in watcher.on(topics.status(gw))]


async def retained_status(port: int, gw: str) -> dict[str, object]:
    async with aiomqtt.Client("127.0.0.1", port) as client:
        await client.subscribe(topics.status(gw))
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(client.messages))
    assert message.retain
    assert isinstance(message.payload, bytes)
    status: dict[str, object] = json.loads(message.payload)
    return status


async def test_status_online_then_the_will_says_offline_when_the_link_dies(
    broker: Broker, proxy: MqttProxy, gateway: Gateway
) -> None:
    uplink = uplink_for(gateway, proxy.port)
    watcher = Watcher(broker.port, [topics.status(gateway.gw)])
    async with running(watcher.run(), "watcher"), running(uplink.run(), "uplink"):
        await watcher.ready.wait()
        await watcher.wait_for(lambda: states(watcher, gateway.gw) == ["online"])
        status = json.loads(watcher.on(topics.status(gateway.gw))[0])
        assert status == {"state": "online", "gw": gateway.gw, "name": "line-7", "version": "9.9", "at": status["at"]}
        proxy.accepting = False
        proxy.cut()  # the socket dies without a DISCONNECT: only the broker's will can say offline
        await watcher.wait_for(lambda: states(watcher, gateway.gw) == ["online", "offline"])
        assert (await retained_status(broker.port, gateway.gw))["state"] == "offline"
        proxy.accepting = True  # the uplink comes back by itself and says online again
        await watcher.wait_for(lambda: states(watcher, gateway.gw) == ["online", "offline", "online"])
        await eventually(lambda: uplink.connections == 2)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_clean_shutdown_leaves_status_offline(broker: Broker, gateway: Gateway, protocol: str) -> None:
    uplink = uplink_for(gateway, broker.port, protocol=protocol)
    async with running(uplink.run(), "uplink"):
        await uplink.wait_connected(WAIT_S)
        assert uplink.protocol == protocol
        assert (await retained_status(broker.port, gateway.gw))["state"] == "online"
    assert not uplink.is_connected
    assert (await retained_status(broker.port, gateway.gw))["state"] == "offline"


async def test_records_and_acks_over_mqtt_311(broker: Broker, gateway: Gateway) -> None:
    head = await gateway.scan(4)
    platform = platform_for(gateway, broker)
    uplink = uplink_for(gateway, broker.port, protocol="3.1.1", batch_records=3)
    async with running(platform.run(), "platform"), running(uplink.run(), "uplink"):
        await uplink.wait_acked(head, WAIT_S)
        assert uplink.protocol == "3.1.1"
    assert platform.errors == []
    assert await gateway.journal.pending(0, 100) == []


async def test_auto_falls_back_to_311_when_the_broker_refuses_5(
    broker: Broker, proxy: MqttProxy, gateway: Gateway
) -> None:
    proxy.refuse_v5 = True
    head = await gateway.scan(1)
    platform = platform_for(gateway, broker)
    uplink = uplink_for(gateway, proxy.port, protocol="auto")
    async with running(platform.run(), "platform"), running(uplink.run(), "uplink"):
        await uplink.wait_acked(head, WAIT_S)
    assert uplink.protocol == "3.1.1"
    assert proxy.refused_v5 == 1  # asked once, then remembered


async def test_mqtt_5_only_does_not_fall_back(
    broker: Broker, proxy: MqttProxy, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.refuse_v5 = True
    uplink = uplink_for(gateway, proxy.port, protocol="5")
    caplog.set_level(logging.WARNING, logger="agent.uplink")
    async with running(uplink.run(), "uplink") as task:
        await eventually(lambda: proxy.refused_v5 >= 2)  # refused, backed off, tried MQTT 5 again
        assert not uplink.is_connected
        assert not task.done()
    assert "Unsupported protocol version" in caplog.text


async def test_wait_acked_times_out_naming_how_far_acks_got(broker: Broker, gateway: Gateway) -> None:
    head = await gateway.scan(1)
    uplink = uplink_for(gateway, broker.port)
    async with running(uplink.run(), "uplink"):
        with pytest.raises(AckTimeoutError, match=rf"acked up to seq 0, not seq {head}") as info:
            await uplink.wait_acked(head, 0.2)
    assert (info.value.seq, info.value.acked) == (head, 0)


# -- transports -------------------------------------------------------------------------------------------------


async def test_mutual_tls_connects_and_never_falls_back_to_plaintext(
    tmp_path: Path, gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    files = make_tls(tmp_path / "tls")
    tls_port = free_port()
    tls = TlsConfig(ca_file=files.ca, cert_file=files.client_cert, key_file=files.client_key)
    caplog.set_level(logging.DEBUG, logger="agent.uplink")  # the same failure again is logged at debug
    with PrivateBroker(tmp_path / "broker", extra_config=tls_listener(files, tls_port)) as broker:
        # The TLS port: connects, and a dashboard on the plain port sees the same broker.
        uplink = uplink_for(gateway, tls_port, tls=tls)
        async with running(uplink.run(), "uplink"):
            await uplink.wait_connected(WAIT_S)
            assert (await retained_status(broker.port, gateway.gw))["state"] == "online"
        # A plaintext port with TLS configured: the handshake fails and the uplink keeps trying TLS only.
        plain = uplink_for(gateway, broker.port, tls=tls)
        caplog.clear()
        async with running(plain.run(), "plain"):
            await wait_logged(caplog, f"127.0.0.1:{broker.port} (TLS)", count=2)
            assert not plain.is_connected
        log_text = (broker.workdir / "mosquitto.log").read_text()
    assert f"as rebadge-gw-{gateway.gw}" in log_text
    assert log_text.count(f"as rebadge-gw-{gateway.gw}") == 1  # the plaintext port never saw a CONNECT from us


async def test_unix_socket_transport(tmp_path: Path, gateway: Gateway) -> None:
    sock = tmp_path / "mq.sock"
    with PrivateBroker(tmp_path / "broker", extra_config=f"listener 0 {sock}\n") as broker:
        config = MqttConfig(transport="unix", socket_path=sock, reconnect_min_s=0.05, reconnect_max_s=0.2)
        uplink = Uplink(
            config, gateway.gw, gateway.journal, sign_checkpoint=gateway.sign_checkpoint,
            issuers=gateway.issuer.ring, timing=FAST,
        )  # fmt: skip
        async with running(uplink.run(), "uplink"):
            await uplink.wait_connected(WAIT_S)
            assert (await retained_status(broker.port, gateway.gw))["state"] == "online"


# -- pure parts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"transport": "unix"}, "mqtt.socket_path"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "mqtt.reconnect_max_s"),
        ({"password": "secret"}, "mqtt.password"),
    ],
)
async def test_config_that_cannot_work_is_refused_naming_the_field(
    gateway: Gateway, fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        uplink_for(gateway, 1883, **fields)
