"""The broker SIGKILLed and restarted on its port while a line scans: nothing lost, retained status and acks back,
no duplicate in the ledger, and each reconnection within the backoff a healthy session resets to."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from mqtt_link import ConnectionState
from rebadge.broker import PrivateBroker
from tests.e2e_support import WAIT_S, running_line, units
from tests.test_e2e_line import assert_synced
from wire import topics
from wire.keys import KeyRing
from wire.tokens import Ack, verify
from wire.topics import Result, ScanEvent, StatusPayload

pytestmark = pytest.mark.slow

# mosquitto saves its state after every change, so a SIGKILL loses no retained message.
PERSISTENT = "persistence true\npersistence_location {dir}/\nautosave_on_changes true\nautosave_interval 1\n"
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 2.0
HEALTHY_AFTER_S = 0.5
# Down long enough for several failed attempts: without the reset the next outage would start near the maximum.
DOWN_S = 1.5
KILLS = 3
# asyncio's sleep may wake a little late on a busy loop; far below what a backoff that did not reset would add.
SCHEDULING_SLACK_S = 0.05


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    workdir = tmp_path / "broker"
    b = PrivateBroker(workdir, extra_config=PERSISTENT.format(dir=workdir))
    b.start()
    yield b
    b.stop()


def sigkill(broker: PrivateBroker) -> None:
    assert broker.proc is not None
    broker.proc.kill()
    broker.proc.wait()
    broker.proc = None


async def retained(broker: PrivateBroker, topic: str) -> bytes:
    """The retained message on `topic`, as a client connecting now gets it."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe(topic, qos=1)
        async with asyncio.timeout(WAIT_S):
            message = await anext(aiter(client.messages))
    assert message.retain
    assert isinstance(message.payload, bytes)
    return message.payload


async def test_broker_sigkill_under_load_loses_nothing_and_reconnects_within_the_reset_backoff(
    tmp_path: Path, persistent_broker: PrivateBroker
) -> None:
    broker = persistent_broker
    per_round = 3
    specs = units(per_round * (KILLS + 1) + KILLS)
    mqtt = {"reconnect_min_s": RECONNECT_MIN_S, "reconnect_max_s": RECONNECT_MAX_S,
            "healthy_after_s": HEALTHY_AFTER_S, "resend_s": 2.0}  # fmt: skip
    async with running_line(tmp_path, broker, specs, quota=len(specs), mqtt=mqtt) as line:
        gw, uplink, worker = line.gateway.gw, line.agent.service.uplink, line.cloud.worker
        assert uplink is not None
        transitions: list[tuple[float, ConnectionState]] = [(time.monotonic(), uplink.state)]
        uplink.mqtt.link.add_listener(lambda _old, new: transitions.append((time.monotonic(), new)))
        todo = iter(specs)
        results: list[ScanEvent] = []
        for _ in range(KILLS):
            scans = asyncio.gather(*(line.agent.scan(next(todo).sn) for _ in range(per_round)))
            await asyncio.sleep(0.05)  # scanning and sending when the broker dies
            sigkill(broker)
            results += await scans
            results.append(await line.agent.scan(next(todo).sn))  # the line goes on offline
            await asyncio.sleep(DOWN_S)
            broker.start()
            await uplink.wait_connected(WAIT_S)
            async with asyncio.timeout(WAIT_S):
                await worker.ready.wait()
            await line.agent.synced()
            await asyncio.sleep(HEALTHY_AFTER_S)  # a healthy session: the next outage starts over
        results += [await line.agent.scan(next(todo).sn) for _ in range(per_round)]

        assert [e.result for e in results] == [Result.CONFIRMED] * len(specs)
        head = await assert_synced(line.cloud, line.agent, gw)  # every seq stored exactly once
        assert head == 2 * len(specs)
        assert await line.cloud.confirmed_count() == len(specs)
        assert set((await line.cloud.rows_per_seq(gw)).values()) == {1}
        assert uplink.connections == KILLS + 1

        status = StatusPayload.model_validate_json(await retained(broker, topics.status(gw)))
        assert status.state == "online"
        ack = verify(await retained(broker, topics.ack(gw)), Ack, KeyRing([line.cloud.issuer]))
        assert ack.seq == head

    delays = first_reconnect_delays(transitions)
    assert len(delays) == KILLS
    bound = uplink.mqtt.policy.reset_delay_max_s
    assert all(d <= bound + SCHEDULING_SLACK_S for d in delays), (delays, bound)
    assert max(later_delays(transitions)) > bound  # the outages were long enough for the backoff to grow


def _waits(transitions: list[tuple[float, ConnectionState]]) -> list[tuple[bool, float]]:
    """(first after a session?, seconds) for every wait between BACKING_OFF and the next CONNECTING."""
    out: list[tuple[bool, float]] = []
    previous: ConnectionState | None = None
    start = 0.0
    after_session = False
    for at, state in transitions:
        if state is ConnectionState.BACKING_OFF:
            start, after_session = at, previous is ConnectionState.CONNECTED
        elif state is ConnectionState.CONNECTING and previous is ConnectionState.BACKING_OFF:
            out.append((after_session, at - start))
        previous = state
    return out


def first_reconnect_delays(transitions: list[tuple[float, ConnectionState]]) -> list[float]:
    """The wait before the first attempt after each lost session."""
    return [d for first, d in _waits(transitions) if first]


def later_delays(transitions: list[tuple[float, ConnectionState]]) -> list[float]:
    """The waits before the attempts that followed a failed one."""
    return [d for first, d in _waits(transitions) if not first]
