"""Home Assistant discovery configs come back when Home Assistant announces itself and after the broker lost them
(a restart of a mosquitto without persistence), on a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from agent.config import MqttConfig
from agent.journal import Journal
from agent.uplink import Uplink, UplinkTiming
from agent.uplink.discovery import COUNTERS, HA_STATUS, config_topic
from rebadge.broker import PrivateBroker
from tests.helpers import Issuer
from tests.uplink_support import WAIT_S, Gateway, eventually, running
from wire import topics
from wire.keys import SigningKey
from wire.topics import ProgressPayload

FAST = UplinkTiming(connect_timeout_s=5.0, mqtt_timeout_s=1.0, idle_check_s=1.0, offline_publish_timeout_s=1.0)
CERT = "RC000001"
# Time for a flood of "online" to have been answered, if it were.
SETTLE_S = 0.5
# A broker sends the retained messages of a subscription at once; this long is plenty on loopback.
RETAINED_S = 0.3


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    key = SigningKey.generate()
    journal = await Journal.open(tmp_path / "journal.sqlite", key.kid.hex())
    yield Gateway(key, journal, Issuer())
    await journal.close()


def _uplink(gateway: Gateway, broker: PrivateBroker) -> Uplink:
    config = MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    return Uplink(
        config, gateway.gw, gateway.journal, sign_checkpoint=gateway.sign_checkpoint, issuers=gateway.issuer.ring,
        name="line-7", version="9.9", timing=FAST,
    )  # fmt: skip


async def _retained_configs(broker: PrivateBroker, gw: str) -> dict[str, dict[str, object]]:
    """The retained discovery configs a Home Assistant starting now would find (asked until all are there)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            found: dict[str, dict[str, object]] = {}
            async with aiomqtt.Client(broker.host, broker.port) as client:
                await client.subscribe(f"homeassistant/sensor/{gw}/+/config", qos=1)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETAINED_S):
                        async for message in client.messages:
                            if message.retain and isinstance(message.payload, bytes):
                                found[message.topic.value] = json.loads(message.payload)
            if len(found) == len(COUNTERS):
                return found


async def test_configs_are_sent_again_when_home_assistant_says_online_at_most_once_per_window(
    broker: PrivateBroker, gateway: Gateway
) -> None:
    uplink = _uplink(gateway, broker)
    await uplink.publish_progress(ProgressPayload(cert_no=CERT, confirmed=1, in_doubt=0, refused=0, lease_size=9,
                                                  remaining=8))  # fmt: skip
    heard: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port) as ha:
        await ha.subscribe(f"homeassistant/sensor/{gateway.gw}/+/config", qos=1)

        async def listen() -> None:
            async for message in ha.messages:
                heard.append(message.topic.value)

        async with running(listen(), "ha"), running(uplink.run(), "uplink"):
            await uplink.wait_connected(WAIT_S)
            await eventually(lambda: len(heard) == len(COUNTERS))
            # Home Assistant restarts: its birth message (not retained) brings every config again.
            await ha.publish(HA_STATUS, b"online", qos=1)
            await eventually(lambda: len(heard) == 2 * len(COUNTERS))
            assert sorted(heard[len(COUNTERS) :]) == sorted(config_topic(gateway.gw, CERT, c) for c in COUNTERS)
            # Another client repeating "online" (or "offline", or junk) gets nothing more within the window.
            for payload in (b"online", b"offline", b"\xff" * 10, b"online") * 5:
                await ha.publish(HA_STATUS, payload, qos=1)
            await asyncio.sleep(SETTLE_S)
            assert len(heard) == 2 * len(COUNTERS)
            assert uplink.is_connected


async def test_configs_are_back_after_the_broker_restarts_and_forgets_them(
    broker: PrivateBroker, gateway: Gateway
) -> None:
    uplink = _uplink(gateway, broker)
    await uplink.publish_progress(ProgressPayload(cert_no=CERT, confirmed=2, in_doubt=0, refused=0, lease_size=9,
                                                  remaining=7))  # fmt: skip
    async with running(uplink.run(), "uplink"):
        await uplink.wait_connected(WAIT_S)
        before = await _retained_configs(broker, gateway.gw)
        assert set(before) == {config_topic(gateway.gw, CERT, c) for c in COUNTERS}
        connections = uplink.connections
        broker.stop()  # persistence false: every retained message is gone
        broker.start()
        await eventually(lambda: uplink.connections > connections and uplink.is_connected)
        after = await _retained_configs(broker, gateway.gw)
    assert after == before
    progress = after[config_topic(gateway.gw, CERT, "confirmed")]
    assert progress["state_topic"] == topics.progress(gateway.gw, CERT)
    assert progress["unique_id"] == f"rebadge_{gateway.gw}_{CERT}_confirmed"
