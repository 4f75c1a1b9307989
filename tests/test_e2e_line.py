"""A whole Wi-Fi line end to end, in one process: real mosquitto, the platform on SQLite with its ingest worker,
simulated Wi-Fi goods on loopback, and the real agent service (journal, Wi-Fi radio, line, uplink)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from agent.errors import LeaseError
from agent.journal import Journal
from agent.service import load_lease_file
from rebadge.broker import PrivateBroker
from simulator.firmware import Fault
from simulator.goods import UnitSpec
from tests.e2e_support import (
    NEW_PID,
    ORIGINAL_PID,
    Cloud,
    Gateway,
    RunningAgent,
    odd_device,
    running_agent,
    running_cloud,
    running_goods,
    running_line,
    units,
    until,
)
from tests.helpers import Issuer
from wire.device import Firmware, Radio
from wire.keys import SigningKey
from wire.tokens import LeaseBundle, decode_bundle
from wire.topics import Result, ScanEvent


async def assert_synced(cloud: Cloud, agent: RunningAgent, gw: str) -> int:
    """The platform's acks cover the journal's head, and its store holds each seq 1..head exactly once."""
    head = await agent.synced()
    assert await agent.journal.acked() == head
    assert await cloud.head(gw) == head
    assert await cloud.rows_per_seq(gw) == dict.fromkeys(range(1, head + 1), 1)
    return head


# -- a full line -------------------------------------------------------------------------------------------------


async def test_full_line_stops_at_the_quota_and_a_rescan_spends_nothing(tmp_path: Path, broker: PrivateBroker) -> None:
    specs = units(12)
    async with running_line(tmp_path, broker, specs, quota=10) as line:
        cert_no = line.cloud.cert.cert_no
        events = [await line.agent.scan(u.sn) for u in specs]

        assert [e.result for e in events] == [Result.CONFIRMED] * 10 + [Result.REFUSED] * 2
        assert {e.slot for e in events[:10]} == set(range(10))
        for refused in events[10:]:
            assert refused.reason == "quota_exhausted"
            assert "quota exhausted" in refused.message
            assert f"all 10 slots of {cert_no} are used" in refused.message
            assert line.goods[refused.sn].firmware.rebadge_requests == 0
            assert line.goods[refused.sn].firmware.state.pid == ORIGINAL_PID
        assert all(line.goods[u.sn].firmware.state.pid == NEW_PID for u in specs[:10])

        before = await line.agent.counts(cert_no)
        head = await line.agent.head()
        again = await line.agent.scan(specs[3].sn)
        assert (again.result, again.reason) == (Result.ALREADY_REBADGED, "already_rebadged")
        assert again.slot == events[3].slot
        assert await line.agent.counts(cert_no) == before
        assert await line.agent.head() == head
        assert line.goods[specs[3].sn].firmware.rebadge_requests == 1

        assert (before.confirmed, before.in_doubt, before.remaining) == (10, 0, 0)
        await assert_synced(line.cloud, line.agent, line.gateway.gw)
        assert await line.cloud.confirmed_count() == before.confirmed == 10
        spent = await line.cloud.confirmations()
        assert len({(lease, slot) for lease, slot, _ in spent}) == len({sn for _, _, sn in spent}) == 10


# -- leases the gateway must not use -----------------------------------------------------------------------------


def forged(bundle: bytes) -> bytes:
    """The bundle with the last byte of the lease's signature flipped."""
    parsed = decode_bundle(bundle)
    lease = parsed.lease[:-1] + bytes([parsed.lease[-1] ^ 0x01])
    return LeaseBundle(lease=lease, certificate=parsed.certificate).to_cbor()


async def bad_bundle(kind: str, cloud: Cloud, gateway: Gateway) -> bytes:
    """A lease file this gateway must refuse, made the way each threat would make it."""
    ours = gateway.identity.public
    if kind == "bad_signature":
        return forged(await cloud.lease_bundle(ours, 5))
    if kind == "wrong_gateway":
        return await cloud.lease_bundle(SigningKey.generate().public, 5)
    platform_key = Issuer(key=cloud.platform.issuer)
    signer = cloud.platform.issuer if kind == "expired" else SigningKey.generate()
    exp = int(time.time()) - 1 if kind == "expired" else None
    lease, token = platform_key.lease(cloud.cert, cloud.cert_token, ours, exp=exp, signer=signer)
    assert lease.cert_no == cloud.cert.cert_no
    return LeaseBundle(lease=token, certificate=cloud.cert_token).to_cbor()


@pytest.mark.parametrize("reason", ["bad_signature", "wrong_gateway", "expired", "unknown_key"])
async def test_a_lease_the_gateway_must_not_use_is_refused_and_spends_nothing(
    tmp_path: Path, broker: PrivateBroker, reason: str
) -> None:
    specs = units(1)
    async with running_cloud(tmp_path, broker) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        with pytest.raises(LeaseError) as refused:
            await load_lease_file(gateway.config, await bad_bundle(reason, cloud, gateway))
        assert refused.value.reason == reason
        async with await Journal.open(gateway.journal_path, gateway.gw) as journal:
            assert await journal.leases(active_only=False) == []

        async with (
            running_goods(cloud.issuer, specs, gateway.discovery_port) as goods,
            running_agent(gateway.config) as agent,
        ):
            event = await agent.scan(specs[0].sn)
            assert (event.result, event.reason) == (Result.REFUSED, "no_lease")
            assert "no active lease" in event.message
            assert await agent.head() == 0
            assert goods[specs[0].sn].firmware.rebadge_requests == 0
        assert await cloud.head(gateway.gw) == 0


async def test_a_lease_that_expires_after_loading_refuses_the_next_scan(tmp_path: Path, broker: PrivateBroker) -> None:
    specs = units(2)
    lease_valid_s = 4  # the first scan must land inside it, even on a busy machine
    async with running_cloud(tmp_path, broker) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        gateway.settings["line"]["clock_margin_s"] = 0  # the lease's own expiry, not the margin before it
        checked = await load_lease_file(
            gateway.config, await cloud.lease_bundle(gateway.identity.public, 5, valid_s=lease_valid_s)
        )
        async with (
            running_goods(cloud.issuer, specs, gateway.discovery_port) as goods,
            running_agent(gateway.config) as agent,
        ):
            first = await agent.scan(specs[0].sn)
            assert first.result is Result.CONFIRMED, first.message
            before = await agent.counts(cloud.cert.cert_no)
            head = await agent.head()

            await asyncio.sleep(max(0.0, checked.lease.exp - time.time()) + 0.05)
            second = await agent.scan(specs[1].sn)
            assert (second.result, second.reason) == (Result.REFUSED, "lease_expired")
            assert "expired" in second.message
            assert goods[specs[1].sn].firmware.rebadge_requests == 0
            assert await agent.head() == head
            after = await agent.counts(cloud.cert.cert_no)
            assert (after.confirmed, after.in_doubt) == (before.confirmed, before.in_doubt) == (1, 0)


# -- devices the line must not rebadge ---------------------------------------------------------------------------


async def test_devices_that_must_not_be_rebadged_are_refused_without_spending(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    good = units(1, "GOOD")
    wrong_pid = [UnitSpec(sn="OTHER-0001", pid="other001")]
    async with AsyncExitStack() as stack:
        line = await stack.enter_async_context(running_line(tmp_path, broker, good + wrong_pid, quota=5))
        await stack.enter_async_context(
            odd_device(line.cloud.issuer, "BLEGEN-0001", line.gateway.discovery_port,
                       firmware=Firmware.GENERAL, radio=Radio.BLE)
        )  # fmt: skip
        cert_no = line.cloud.cert.cert_no
        before = await line.agent.counts(cert_no)

        refusals: dict[str, ScanEvent] = {}
        for sn in ("OTHER-0001", "BLEGEN-0001"):
            event = await line.agent.scan(sn)
            assert event.result is Result.REFUSED, event
            refusals[event.reason] = event
            after = await line.agent.counts(cert_no)
            assert (after.confirmed, after.in_doubt, after.remaining) == (0, 0, before.remaining)
            assert await line.agent.head() == 0
        assert set(refusals) == {"wrong_pid", "unsupported_firmware"}
        assert "other001" in refusals["wrong_pid"].message
        assert "general firmware" in refusals["unsupported_firmware"].message
        assert line.goods["OTHER-0001"].firmware.rebadge_requests == 0

        confirmed = await line.agent.scan(good[0].sn)
        assert confirmed.result is Result.CONFIRMED
        assert confirmed.slot == 0  # the refusals left the first slot free
        assert (await line.agent.counts(cert_no)).refused == 2
        await assert_synced(line.cloud, line.agent, line.gateway.gw)
        assert await line.cloud.confirmed_count() == 1


async def test_goods_on_a_radio_the_certificate_does_not_cover_are_refused(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    specs = units(1)
    async with running_cloud(tmp_path, broker, quantity=5, protocols=("ble", "zigbee")) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public))
        async with (
            running_goods(cloud.issuer, specs, gateway.discovery_port) as goods,
            running_agent(gateway.config) as agent,
        ):
            event = await agent.scan(specs[0].sn)
            assert (event.result, event.reason) == (Result.REFUSED, "protocol_not_certified")
            assert "does not cover wifi" in event.message
            counts = await agent.counts(cloud.cert.cert_no)
            assert (counts.confirmed, counts.in_doubt, counts.remaining) == (0, 0, 5)
            assert await agent.head() == 0
            assert goods[specs[0].sn].firmware.rebadge_requests == 0


# -- devices that go silent --------------------------------------------------------------------------------------


async def test_silent_devices_leave_slots_in_doubt_and_a_rescan_settles_them(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    after = units(1, "AFTER", fault=Fault.SILENT_AFTER_APPLY, fault_times=1)[0]
    before = units(1, "BEFORE", fault=Fault.SILENT_BEFORE_APPLY, fault_times=1)[0]
    async with running_line(tmp_path, broker, [after, before], quota=5) as line:
        cert_no = line.cloud.cert.cert_no

        doubt_after = await line.agent.scan(after.sn)
        assert (doubt_after.result, doubt_after.reason) == (Result.IN_DOUBT, "no_answer")
        assert line.goods[after.sn].firmware.state.pid == NEW_PID  # it applied, then said nothing
        doubt_before = await line.agent.scan(before.sn)
        assert (doubt_before.result, doubt_before.reason) == (Result.IN_DOUBT, "no_answer")
        assert line.goods[before.sn].firmware.state.pid == ORIGINAL_PID
        counts = await line.agent.counts(cert_no)
        assert (counts.confirmed, counts.in_doubt, counts.remaining) == (0, 2, 3)

        settled = await line.agent.scan(after.sn)
        assert (settled.result, settled.reason) == (Result.CONFIRMED, "settled")
        assert settled.slot == doubt_after.slot
        assert line.goods[after.sn].firmware.rebadge_requests == 1  # settled by reading, not by sending again

        fresh = await line.agent.scan(before.sn)
        assert (fresh.result, fresh.reason) == (Result.CONFIRMED, "")
        assert line.goods[before.sn].firmware.rebadge_requests == 2
        counts = await line.agent.counts(cert_no)
        assert (counts.confirmed, counts.in_doubt, counts.remaining) == (2, 0, 3)

        gw = line.gateway.gw
        await assert_synced(line.cloud, line.agent, gw)
        assert [r.kind for r in await line.cloud.records(gw, after.sn)] == ["reserved", "in_doubt", "confirmed"]
        assert [r.kind for r in await line.cloud.records(gw, before.sn)] == [
            "reserved", "in_doubt", "released", "reserved", "confirmed",
        ]  # fmt: skip
        spent = await line.cloud.confirmations()
        assert sorted(sn for _, _, sn in spent) == sorted([after.sn, before.sn])
        assert len({(lease, slot) for lease, slot, _ in spent}) == 2
        assert (await line.cloud.confirmations(after.sn))[0][1] == doubt_after.slot
        assert await line.cloud.confirmed_count() == 2


# -- the broker goes away ----------------------------------------------------------------------------------------


# The agent's first reconnect attempt comes AGENT_BACK_S/2 to AGENT_BACK_S after it lost the broker; the test
# starts the broker again well within that, so the platform's worker (retrying every 50 ms) is subscribed first.
# The other order is the next test's.
AGENT_BACK_S = 2.0


async def test_every_record_reaches_the_platform_once_across_a_broker_restart(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    specs = units(9)
    slow_return = {"reconnect_min_s": AGENT_BACK_S, "reconnect_max_s": AGENT_BACK_S}
    async with running_line(tmp_path, broker, specs, quota=9, mqtt=slow_return) as line:
        gw, uplink, worker = line.gateway.gw, line.agent.service.uplink, line.cloud.worker
        assert uplink is not None
        results: list[ScanEvent] = [await line.agent.scan(u.sn) for u in specs[:3]]
        await line.agent.synced()

        broker.stop()
        results += [await line.agent.scan(u.sn) for u in specs[3:6]]
        assert not uplink.is_connected
        assert await line.agent.journal.acked() == 6 < await line.agent.head() == 12
        broker.start()
        async with asyncio.timeout(AGENT_BACK_S / 2):
            await worker.ready.wait()
        results += [await line.agent.scan(u.sn) for u in specs[6:]]

        assert Counter(e.result for e in results) == {Result.CONFIRMED: 9}
        head = await assert_synced(line.cloud, line.agent, gw)
        assert head == 18  # reserved + confirmed for each unit
        assert uplink.connections == 2
        assert await line.cloud.confirmed_count() == 9


# The worker retries the broker this slowly, so the agent (back within 0.4 s) sends into a broker no worker listens on.
WORKER_BACK_S = 2.0


async def test_records_sent_before_the_worker_is_back_are_sent_again_when_it_says_ready(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    specs = units(6)
    never = {"resend_s": 600.0}  # the resend timer alone would take ten minutes
    async with running_line(tmp_path, broker, specs, quota=6, mqtt=never, worker_reconnect_s=WORKER_BACK_S) as line:
        uplink, worker = line.agent.service.uplink, line.cloud.worker
        assert uplink is not None
        results = [await line.agent.scan(u.sn) for u in specs[:3]]
        await line.agent.synced()
        broker.stop()
        results += [await line.agent.scan(u.sn) for u in specs[3:]]
        broker.start()
        await until(lambda: uplink.connections == 2 and uplink.is_connected, "the agent reconnected")
        assert not worker.ready.is_set()  # the agent is back first: its records go to no one
        await line.agent.synced()  # once the worker says it is ready, long before resend_s
        assert worker.ready.is_set()
        assert Counter(e.result for e in results) == {Result.CONFIRMED: 6}
        assert await line.cloud.confirmed_count() == 6
