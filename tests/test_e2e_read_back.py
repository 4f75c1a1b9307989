"""The real agent (journal, Wi-Fi radio, line, uplink) against simulated goods on loopback and a real mosquitto,
without the platform: only a read-back releases a slot once a grant may have left, a closed lease spends nothing
more, a forked ack freezes the gateway, and a lease stops taking reservations before it expires."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.config import load_config
from agent.service import load_lease_file
from rebadge.broker import PrivateBroker
from simulator.firmware import Fault
from simulator.goods import UnitSpec, WifiLine, build_wifi_line
from simulator.mcu import McuFault
from tests.e2e_support import ANNOUNCE_S, Gateway, RunningAgent, is_event, listening, running_agent, send_scan
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire import topics
from wire.device import Firmware
from wire.keys import KeyRing
from wire.tokens import Ack, sign
from wire.topics import Result

CERT_NO = "RC000001"
# The module waits this long for its MCU; it answers `busy` after two such waits (SET_PID, then a product query).
MCU_WAIT_S = 0.2


@asynccontextmanager
async def line_of(
    tmp_path: Path, broker: PrivateBroker, specs: Sequence[UnitSpec], *, slots: int, valid_s: int = 3600,
    margin_s: float = 0.0, scan_commands: bool = True,
) -> AsyncIterator[tuple[Issuer, Gateway, WifiLine, RunningAgent]]:  # fmt: skip
    """A gateway holding one lease of `slots` slots, the goods announcing themselves to it, and the agent running."""
    issuer = Issuer()
    gateway = Gateway.create(tmp_path, issuer.key.public, broker)
    gateway.settings["line"].update({"rebadge_timeout_s": 3.0, "clock_margin_s": margin_s})
    gateway.settings["scanner"]["mqtt"] = scan_commands
    bundle = issuer.bundle(gateway.identity.public, quantity=slots, exp=int(time.time()) + valid_s)
    await load_lease_file(gateway.config, bundle)
    async with (
        build_wifi_line(
            KeyRing([issuer.key.public]), specs, announce_to=("127.0.0.1", gateway.discovery_port),
            announce_interval=ANNOUNCE_S, mcu_timeout=MCU_WAIT_S,
        ) as goods,
        running_agent(gateway.config) as agent,
    ):  # fmt: skip
        yield issuer, gateway, goods, agent


def carrying_new_pid(goods: WifiLine) -> list[str]:
    """Units whose PID (in the MCU for general firmware) is the new one."""
    pids = {sn: goods.mcus[sn].pid if sn in goods.mcus else device.firmware.state.pid for sn, device in goods.items()}
    return sorted(sn for sn, pid in pids.items() if pid == NEW_PID)


async def test_a_brown_out_mcu_never_yields_more_units_than_slots(tmp_path: Path, broker: PrivateBroker) -> None:
    """Issue 7, observed break 5: the MCU applies the new PID, then goes silent for a second, so the Wi-Fi module
    answers `busy`. Releasing on `busy` spent each slot twice; only a read-back may release."""
    specs = [
        UnitSpec(
            f"BROWN-{i:04d}", ORIGINAL_PID, Firmware.GENERAL, mcu_fault=McuFault.SILENT_AFTER_SET, mcu_silent_s=1.0
        )
        for i in range(1, 5)
    ]
    async with line_of(tmp_path, broker, specs, slots=3) as (_, _, goods, agent):
        events = [await agent.scan(spec.sn) for spec in specs]
        counts = await agent.counts(CERT_NO)
        new = carrying_new_pid(goods)
        assert len(new) <= 3, f"{len(new)} units carry the new PID on a lease of 3"
        assert (counts.confirmed + counts.in_doubt, counts.remaining) == (len(new), 0)
        assert new == sorted(s.sn for s in specs[:3])
        assert [e.result for e in events] == [Result.IN_DOUBT] * 3 + [Result.REFUSED]
        assert [e.reason for e in events] == ["read_back_failed"] * 3 + ["quota_exhausted"]
        assert "answered busy" in events[0].message
        assert goods[specs[3].sn].firmware.rebadge_requests == 0

        await asyncio.sleep(1.2)  # the MCUs answer again
        again = [await agent.scan(spec.sn) for spec in specs[:3]]  # the unit shows NEW_PID, but not our receipt
        assert {(e.result, e.reason) for e in again} == {(Result.IN_DOUBT, "read_back_mismatch")}
        assert "nothing is released" in again[0].message
        assert await agent.counts(CERT_NO) == counts
        assert carrying_new_pid(goods) == new


async def test_a_busy_unit_read_back_unchanged_is_released(tmp_path: Path, broker: PrivateBroker) -> None:
    refusing = UnitSpec(sn="BUSY-0001", pid=ORIGINAL_PID, fault=Fault.REFUSE, fault_times=1)
    fine = UnitSpec(sn="FINE-0001", pid=ORIGINAL_PID)
    async with line_of(tmp_path, broker, [refusing, fine], slots=1) as (_, gateway, goods, agent):
        busy = await agent.scan(refusing.sn)
        assert (busy.result, busy.reason) == (Result.REFUSED, "busy")
        assert "reads back unchanged; nothing spent" in busy.message
        done = await agent.scan(fine.sn)
        assert (done.result, done.slot) == (Result.CONFIRMED, busy.slot)  # the slot came back by the read-back
        assert carrying_new_pid(goods) == [fine.sn]
        kinds = [(r.kind.value, r.sn) for r in await agent.journal.pending(0, 100)]
    assert kinds == [
        ("reserved", refusing.sn), ("released", refusing.sn), ("reserved", fine.sn), ("confirmed", fine.sn),
    ]  # fmt: skip
    assert gateway.gw


async def test_a_closed_lease_spends_nothing_more_and_its_doubt_stays(tmp_path: Path, broker: PrivateBroker) -> None:
    silent = UnitSpec(sn="SILENT-0001", pid=ORIGINAL_PID, fault=Fault.SILENT_AFTER_APPLY, fault_times=1)
    other = UnitSpec(sn="OTHER-0001", pid=ORIGINAL_PID)
    async with line_of(tmp_path, broker, [silent, other], slots=3) as (_, _, goods, agent):
        doubt = await agent.scan(silent.sn)
        assert (doubt.result, doubt.reason) == (Result.IN_DOUBT, "no_answer")
        (lease,) = await agent.journal.leases()
        closed = await agent.journal.close_lease(lease.lease_id, "line stopped", force=True)
        assert [a.sn for a in closed.in_doubt] == [silent.sn]
        head = await agent.head()
        rescan = await agent.scan(silent.sn)
        assert (rescan.result, rescan.reason) == (Result.REFUSED, "lease_closed")
        assert "stays in doubt for good" in rescan.message
        assert f"shows {NEW_PID} with our receipt" in rescan.message
        refused = await agent.scan(other.sn)
        assert (refused.result, refused.reason) == (Result.REFUSED, "no_lease")
        assert await agent.head() == head  # nothing written on (or after) the closed lease
        assert goods[other.sn].firmware.rebadge_requests == 0


async def test_a_forked_ack_freezes_the_gateway_and_health_says_so(tmp_path: Path, broker: PrivateBroker) -> None:
    unit = UnitSpec(sn="FROZEN-0001", pid=ORIGINAL_PID)
    async with line_of(tmp_path, broker, [unit], slots=3) as (issuer, gateway, goods, agent):
        async with listening(broker, gateway.gw) as (heard, client):
            ack = sign(Ack(gw=gateway.gw, seq=40, head=bytes(32), at=int(time.time())), issuer.key)  # beyond our head
            await client.publish(topics.ack(gateway.gw), ack, qos=1, retain=True)
            health = await heard.wait_for(
                lambda topic, payload: topic == topics.health(gateway.gw) and json.loads(payload).get("frozen"),
                "health reporting the freeze",
            )
        frozen = json.loads(health)["frozen"]
        assert frozen["ack_seq"] == 40
        assert frozen["message"].startswith(
            "this gateway's journal was restored from a backup; the platform has frozen it"
        )
        event = await agent.scan(unit.sn)
        assert (event.result, event.reason) == (Result.REFUSED, "journal_restored")
        assert "ask a platform admin to reinstate the gateway" in event.message
        assert goods[unit.sn].firmware.rebadge_requests == 0
        assert await agent.head() == 0


async def test_a_lease_within_the_clock_margin_is_refused_as_expiring(tmp_path: Path, broker: PrivateBroker) -> None:
    unit = UnitSpec(sn="LATE-0001", pid=ORIGINAL_PID)
    async with line_of(tmp_path, broker, [unit], slots=3, valid_s=200, margin_s=300) as (_, _, goods, agent):
        event = await agent.scan(unit.sn)
        assert (event.result, event.reason) == (Result.REFUSED, "lease_expiring")
        assert "expire within 300 s (line.clock_margin_s)" in event.message
        assert "request a new lease" in event.message
        assert goods[unit.sn].firmware.rebadge_requests == 0
        assert await agent.head() == 0


async def test_scan_commands_are_not_taken_unless_turned_on(tmp_path: Path, broker: PrivateBroker) -> None:
    assert load_config(None).scanner.mqtt is False  # off by default
    unit = UnitSpec(sn="CMD-0001", pid=ORIGINAL_PID)
    async with line_of(tmp_path, broker, [unit], slots=3, scan_commands=False) as (issuer, gateway, goods, agent):
        async with listening(broker, gateway.gw) as (heard, client):
            await send_scan(client, gateway.gw, unit.sn, "cmd-1", issuer.key)
            with pytest.raises(AssertionError, match="not heard"):
                await heard.wait_for(is_event(gateway.gw, "cmd-1"), "a scan event", timeout=1.0)
        assert goods[unit.sn].firmware.rebadge_requests == 0
        assert await agent.head() == 0
