"""A mixed line end to end: Wi-Fi, BLE and Zigbee goods scanned at once through one agent (real mosquitto, the
platform on SQLite with its ingest worker, the real agent service with its journal, line and uplink, the three
radio drivers on simulated goods). Scans on different radios are in flight together, a slow or failing radio holds
up no other, and a concurrent run ends with the agent's count equal to the platform's verified one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.radios.registry import create_radio
from agent.service import load_lease_file
from rebadge.broker import PrivateBroker
from simulator.ble import BleFault, BleFaults, BleLine, BleUnit, build_ble_line
from simulator.firmware import Firmware
from simulator.goods import UnitSpec, WifiLine
from simulator.zigbee import SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from tests.e2e_support import (
    NEW_PID,
    ORIGINAL_PID,
    Cloud,
    Gateway,
    RunningAgent,
    running_agent,
    running_cloud,
    running_goods,
    until,
)
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.keys import KeyRing
from wire.topics import Result, ScanEvent

RADIOS = (Radio.WIFI, Radio.BLE, Radio.ZIGBEE)
# No scan of these tests may take this long: a scan that waited for one radio to give up before asking the next
# would fail its guard (SCAN_GUARD_S).
FIND_S = 60.0
SCAN_GUARD_S = 20.0
# Roomy bounds: a held device answers only once the test lets it.
INFO_S = 2.0
REBADGE_S = 5.0
# A held device gives up waiting for the gate after this (the test has failed by then).
GATE_S = 10.0


# -- goods that can be held at the moment they apply a rebadge ----------------------------------------------------


@dataclass
class Gate:
    """Where held devices wait, and when each arrived there."""

    opened: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: dict[str, float] = field(default_factory=dict)


class HeldFirmware(Firmware):
    """The reference firmware, holding a verified rebadge before it applies it until the gate opens."""

    def __init__(self, base: Firmware, gate: Gate) -> None:
        super().__init__(base.state, base.issuers, faults=base.faults, state_file=base.state_file)
        self.gate = gate

    async def apply_pid(self, pid: str) -> None:
        self.gate.arrived[self.state.sn] = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GATE_S):
                await self.gate.opened.wait()


@dataclass
class Goods:
    """The simulated goods of the three radios."""

    wifi: WifiLine
    ble: BleLine
    zigbee: SimulatedZigbeeLine

    def firmware(self, sn: str) -> Firmware:
        if sn in self.wifi:
            return self.wifi[sn].firmware
        if sn in self.ble.peripherals:
            return self.ble.peripherals[sn].firmware
        return self.zigbee.node(sn).firmware

    def hold(self, sn: str, gate: Gate) -> None:
        """Put the unit's firmware behind `gate` (before the agent starts)."""
        held = HeldFirmware(self.firmware(sn), gate)
        if sn in self.wifi:
            self.wifi[sn].firmware = held
        elif sn in self.ble.peripherals:
            self.ble.peripherals[sn].firmware = held
        else:
            self.zigbee.node(sn).firmware = held


@dataclass
class MixedLine:
    cloud: Cloud
    gateway: Gateway
    goods: Goods
    agent: RunningAgent

    async def scan_all(self, sns: Sequence[str]) -> list[ScanEvent]:
        async with asyncio.timeout(SCAN_GUARD_S):
            return await asyncio.gather(*(self.agent.scan(sn) for sn in sns))


def wifi(sn: str, firmware: FirmwareKind = FirmwareKind.OEM) -> UnitSpec:
    return UnitSpec(sn=sn, pid=ORIGINAL_PID, firmware=firmware)


def ble(sn: str, firmware: FirmwareKind = FirmwareKind.OEM, fault: BleFault = BleFault.NONE) -> BleUnit:
    return BleUnit(sn, ORIGINAL_PID, firmware=firmware, link_fault=BleFaults(fault))


def zigbee(sn: str) -> ZigbeeUnit:
    return ZigbeeUnit(sn, ORIGINAL_PID)


@asynccontextmanager
async def mixed_line(
    tmp_path: Path, broker: PrivateBroker, wifi_units: list[UnitSpec], ble_units: list[BleUnit],
    zigbee_units: list[ZigbeeUnit], *, quota: int = 10, held: Sequence[str] = (), gate: Gate | None = None,
    find_s: float = FIND_S,
) -> AsyncIterator[MixedLine]:  # fmt: skip
    """Cloud, a gateway with all three radios and one lease of `quota` slots, the goods (`held` behind `gate`),
    and the running agent."""
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(
            running_cloud(tmp_path, broker, quantity=quota, protocols=[r.value for r in RADIOS])
        )
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        gateway.settings["line"].update(
            radios=[r.value for r in RADIOS], find_timeout_s=find_s, info_timeout_s=INFO_S, rebadge_timeout_s=REBADGE_S
        )
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public))
        issuers = KeyRing([cloud.issuer])
        goods = Goods(
            await stack.enter_async_context(running_goods(cloud.issuer, wifi_units, gateway.discovery_port)),
            build_ble_line(issuers, ble_units),
            build_zigbee_line(zigbee_units, issuers),
        )
        for sn in held:
            assert gate is not None
            goods.hold(sn, gate)
        config = gateway.config
        radios = [
            create_radio(Radio.WIFI, config),
            create_radio(Radio.BLE, config, **goods.ble.radio_kwargs),
            create_radio(Radio.ZIGBEE, config, **goods.zigbee.radio_kwargs()),
        ]
        agent = await stack.enter_async_context(running_agent(config, radios))
        yield MixedLine(cloud, gateway, goods, agent)


# -- scans on different radios run at once --------------------------------------------------------------------------


async def test_a_wifi_a_ble_and_a_zigbee_unit_are_in_flight_at_once(tmp_path: Path, broker: PrivateBroker) -> None:
    gate = Gate()
    sns = ["MIX-WIFI-0001", "MIX-BLE-0001", "MIX-ZB-0001"]
    async with mixed_line(
        tmp_path, broker, [wifi(sns[0])], [ble(sns[1])], [zigbee(sns[2])], held=sns, gate=gate
    ) as line:
        scans = [asyncio.create_task(line.agent.scan(sn), name=f"scan:{sn}") for sn in sns]
        try:
            # Each device holds its verified rebadge: one radio at a time would never bring all three here.
            await until(lambda: len(gate.arrived) == 3 or any(s.done() for s in scans), "all three rebadges held")
            assert set(gate.arrived) == set(sns), f"only {sorted(gate.arrived)} arrived"
            assert not any(s.done() for s in scans)
        finally:
            gate.opened.set()
            async with asyncio.timeout(SCAN_GUARD_S):
                events = await asyncio.gather(*scans)

        assert [(e.result, e.radio) for e in events] == [(Result.CONFIRMED, r.value) for r in RADIOS]
        assert len({e.slot for e in events}) == 3
        assert all(line.goods.firmware(sn).state.pid == NEW_PID for sn in sns)
        await line.agent.synced()
        assert await line.cloud.confirmed_count() == 3


# -- a slow or failing radio holds up no other --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slow", "fault", "outcome"),
    [
        (Radio.ZIGBEE, BleFault.NONE, Result.CONFIRMED),
        (Radio.WIFI, BleFault.NONE, Result.CONFIRMED),
        (Radio.BLE, BleFault.NONE, Result.CONFIRMED),
        (Radio.BLE, BleFault.LINK_LOSS_IN_ANSWER, Result.IN_DOUBT),
    ],
    ids=["zigbee_slow", "wifi_slow", "ble_slow", "ble_link_drops"],
)
async def test_a_slow_or_failing_radio_does_not_stall_the_others(
    tmp_path: Path, broker: PrivateBroker, slow: Radio, fault: BleFault, outcome: Result
) -> None:
    gate = Gate()
    sns = {Radio.WIFI: "MIX-WIFI-0001", Radio.BLE: "MIX-BLE-0001", Radio.ZIGBEE: "MIX-ZB-0001"}
    async with mixed_line(
        tmp_path, broker, [wifi(sns[Radio.WIFI])], [ble(sns[Radio.BLE], fault=fault)], [zigbee(sns[Radio.ZIGBEE])],
        held=[sns[slow]], gate=gate,
    ) as line:  # fmt: skip
        held = asyncio.create_task(line.agent.scan(sns[slow]), name="scan:held")
        try:
            await until(lambda: sns[slow] in gate.arrived or held.done(), f"the {slow.value} unit held")
            others = [r for r in RADIOS if r is not slow]
            events = await line.scan_all([sns[r] for r in others])
            assert [(e.result, e.radio) for e in events] == [(Result.CONFIRMED, r.value) for r in others]
            assert not held.done(), "the held unit's scan ended before its device answered"
        finally:
            gate.opened.set()
            async with asyncio.timeout(SCAN_GUARD_S):
                late = await held

        assert (late.result, late.radio) == (outcome, slow.value), late.message
        if outcome is Result.IN_DOUBT:  # the receipt on the device settles it
            (again,) = await line.scan_all([sns[slow]])
            assert (again.result, again.reason, again.slot) == (Result.CONFIRMED, "settled", late.slot)
        counts = await line.agent.counts(line.cloud.cert.cert_no)
        assert (counts.confirmed, counts.in_doubt) == (3, 0)
        await line.agent.synced()
        assert await line.cloud.confirmed_count() == 3


async def test_a_unit_no_radio_reaches_is_refused_naming_every_radio(tmp_path: Path, broker: PrivateBroker) -> None:
    async with mixed_line(
        tmp_path, broker, [wifi("MIX-WIFI-0001")], [ble("MIX-BLE-0001")], [zigbee("MIX-ZB-0001")], find_s=1.0
    ) as line:
        missing, present = await line.scan_all(["MIX-NONE-0001", "MIX-BLE-0001"])

        assert (missing.result, missing.reason, missing.slot) == (Result.REFUSED, "not_found", None)
        for radio in RADIOS:
            assert f"{radio.value}: " in missing.message
        assert (present.result, present.radio) == (Result.CONFIRMED, Radio.BLE.value)
        assert (await line.agent.counts(line.cloud.cert.cert_no)).confirmed == 1
        # The radios that gave up on the missing SN leave no link open.
        assert all(p.connection is None or not p.connection.open for p in line.goods.ble.peripherals.values())


# -- a concurrent run across the three radios ---------------------------------------------------------------------


async def test_a_concurrent_run_matches_the_platforms_verified_count(tmp_path: Path, broker: PrivateBroker) -> None:
    general_wifi, general_ble = "MIX-WIFI-0005", "MIX-BLE-0004"
    wifi_units = [wifi(f"MIX-WIFI-{i:04d}") for i in range(1, 5)] + [wifi(general_wifi, FirmwareKind.GENERAL)]
    ble_units = [ble(f"MIX-BLE-{i:04d}") for i in range(1, 4)] + [ble(general_ble, FirmwareKind.GENERAL)]
    zigbee_units = [zigbee(f"MIX-ZB-{i:04d}") for i in range(1, 5)]
    quota = 10  # 12 units could take a slot (the general-firmware BLE unit cannot)
    radio_of = {u.sn: Radio.WIFI for u in wifi_units} | {u.sn: Radio.BLE for u in ble_units}
    radio_of |= {u.sn: Radio.ZIGBEE for u in zigbee_units}
    async with mixed_line(tmp_path, broker, wifi_units, ble_units, zigbee_units, quota=quota) as line:
        sns = sorted(radio_of, key=lambda sn: sn[-4:])  # interleaved: the radios take turns in the scan order
        events = await line.scan_all(sns)

        by_result = Counter((e.result, e.reason) for e in events)
        assert by_result == {
            (Result.CONFIRMED, ""): quota,
            (Result.REFUSED, "quota_exhausted"): 2,
            (Result.REFUSED, "unsupported_firmware"): 1,
        }, by_result
        confirmed = {e.sn: e for e in events if e.result is Result.CONFIRMED}
        refused_ble = next(e for e in events if e.sn == general_ble)
        assert (refused_ble.result, refused_ble.reason) == (Result.REFUSED, "unsupported_firmware")
        assert {e.radio for e in confirmed.values()} == {r.value for r in RADIOS}
        assert all(e.radio == radio_of[sn].value for sn, e in confirmed.items())
        for e in events:
            firmware = line.goods.firmware(e.sn)
            assert (firmware.state.pid == NEW_PID) is (e.sn in confirmed)
            if e.result is Result.REFUSED:
                assert firmware.rebadge_requests == 0, e.sn
        # A general-firmware Wi-Fi unit holds its PID in its MCU: confirmed means the MCU took the new one.
        assert line.goods.wifi.mcus[general_wifi].pid == (NEW_PID if general_wifi in confirmed else ORIGINAL_PID)

        counts = await line.agent.counts(line.cloud.cert.cert_no)
        assert (counts.confirmed, counts.in_doubt, counts.remaining) == (quota, 0, 0)
        head = await line.agent.synced()
        assert await line.cloud.rows_per_seq(line.gateway.gw) == dict.fromkeys(range(1, head + 1), 1)
        assert await line.cloud.confirmed_count() == counts.confirmed == quota
        spent = await line.cloud.confirmations()
        slots = [(lease, slot) for lease, slot, _ in spent]
        assert len(slots) == len(set(slots)) == quota, "a slot was used twice"
        assert {slot for _, slot in slots} == set(range(quota))
        assert sorted(sn for _, _, sn in spent) == sorted(confirmed)
        assert {(e.lease_id, e.slot) for e in confirmed.values()} == set(slots)
        stored = await line.cloud.records(line.gateway.gw)
        reserved = [(r.lease_id, r.slot) for r in stored if r.kind == "reserved"]
        assert len(reserved) == len(set(reserved)) == quota, "a slot was reserved twice"
        assert Counter(r.kind for r in stored) == {"reserved": quota, "confirmed": quota}
