"""Zigbee goods through the real line and journal: each fault ends confirmed, released or in doubt, a rescan settles
what was in doubt, and no slot is spent twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.certs.identity import GatewayIdentity
from agent.config import LineConfig
from agent.journal import Journal
from agent.line import Line
from simulator.firmware import Fault, Faults
from simulator.zigbee import LinkFault, SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from tests.test_zigbee_radio import running
from wire.device import Firmware
from wire.keys import SigningKey
from wire.topics import Result

GUARD_S = 10.0
LINE = LineConfig(find_timeout_s=3.0, info_timeout_s=1.0, rebadge_timeout_s=0.8)
SN = "ZB-L-0001"


@dataclass
class Bench:
    line: Line
    goods: SimulatedZigbeeLine
    journal: Journal
    cert_no: str

    async def scan(self, sn: str = SN) -> tuple[Result, str]:
        async with asyncio.timeout(GUARD_S):
            event = await self.line.scan(sn)
        return event.result, event.reason

    async def counts(self) -> tuple[int, int, int]:
        counts = await self.journal.counts(self.cert_no)
        return counts.confirmed, counts.in_doubt, counts.remaining


@pytest.fixture
async def bench(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bench]:
    issuer = Issuer()
    identity = GatewayIdentity(SigningKey.generate())
    goods = build_zigbee_line(list(request.param), issuer.ring)
    async with await Journal.open(tmp_path / "journal.db", identity.gw) as journal, running(goods, tmp_path) as radio:
        cert, cert_token = issuer.certificate(10)
        lease, lease_token = issuer.lease(cert, cert_token, identity.public)
        await journal.add_lease(lease, lease_token, cert, cert_token)
        line = Line(journal, [radio], identity, issuer.ring, LINE)
        yield Bench(line, goods, journal, cert.cert_no)


def unit(sn: str = SN, fault: Fault | LinkFault = Fault.NONE, **kw: object) -> ZigbeeUnit:
    return ZigbeeUnit(sn, ORIGINAL_PID, fault=fault, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("bench", [[unit("ZB-L-0001"), unit("ZB-L-0002"), unit("ZB-L-0003")]], indirect=True)
async def test_clean_units_are_confirmed_once(bench: Bench) -> None:
    for sn in ("ZB-L-0001", "ZB-L-0002", "ZB-L-0003"):
        assert await bench.scan(sn) == (Result.CONFIRMED, "")
        assert bench.goods.node(sn).manufacturer_name.endswith(NEW_PID)
    assert (await bench.scan("ZB-L-0001"))[0] is Result.ALREADY_REBADGED
    assert await bench.counts() == (3, 0, 7)


@pytest.mark.parametrize("bench", [[ZigbeeUnit(SN, ORIGINAL_PID, firmware=Firmware.GENERAL)]], indirect=True)
async def test_general_firmware_zigbee_unit_is_refused_before_reserving(bench: Bench) -> None:
    assert await bench.scan() == (Result.REFUSED, "unsupported_firmware")
    assert bench.goods.node(SN).firmware.rebadge_requests == 0
    assert await bench.counts() == (0, 0, 10)


@pytest.mark.parametrize(
    "bench",
    [[unit(fault=LinkFault.NO_ACK)], [unit(fault=LinkFault.LEAVE_MID_TRANSFER)]],
    indirect=True,
    ids=["no_ack", "leave_mid_transfer"],
)
async def test_a_request_that_never_arrived_releases_the_slot(bench: Bench) -> None:
    assert await bench.scan() == (Result.REFUSED, "device_error")
    assert await bench.counts() == (0, 0, 10)
    assert await bench.scan() == (Result.CONFIRMED, "")
    assert await bench.counts() == (1, 0, 9)


@pytest.mark.parametrize(
    "bench",
    [[unit(fault=LinkFault.LEAVE_AFTER_APPLY)], [unit(fault=Fault.SILENT_AFTER_APPLY)]],
    indirect=True,
    ids=["leave_after_apply", "silent_after_apply"],
)
async def test_an_applied_rebadge_without_answer_is_in_doubt_until_a_rescan_confirms(bench: Bench) -> None:
    assert (await bench.scan())[0] is Result.IN_DOUBT
    assert await bench.counts() == (0, 1, 9)
    assert await bench.scan() == (Result.CONFIRMED, "settled")
    assert await bench.counts() == (1, 0, 9)


@pytest.mark.parametrize("bench", [[unit(fault=LinkFault.NO_ACK_LAST_CHUNK)]], indirect=True)
async def test_a_lost_ack_with_no_answer_is_settled_by_the_receipt(bench: Bench) -> None:
    bench.goods.node(SN).firmware.faults = Faults(Fault.SILENT_AFTER_APPLY, times=1)
    assert (await bench.scan())[0] is Result.IN_DOUBT
    assert await bench.scan() == (Result.CONFIRMED, "settled")
    assert await bench.counts() == (1, 0, 9)


@pytest.mark.parametrize(
    "bench",
    [[unit(fault=LinkFault.NO_ACK_LAST_CHUNK)], [unit(fault=LinkFault.DUPLICATE, fault_times=None)]],
    indirect=True,
    ids=["ack_lost_answer_came", "duplicated_frames"],
)
async def test_link_trouble_that_still_delivers_is_confirmed(bench: Bench) -> None:
    assert await bench.scan() == (Result.CONFIRMED, "")
    assert bench.goods.node(SN).firmware.rebadge_requests == 1
    assert await bench.counts() == (1, 0, 9)


@pytest.mark.parametrize("bench", [[unit(fault=Fault.SILENT_BEFORE_APPLY)]], indirect=True)
async def test_a_request_dropped_unapplied_is_in_doubt_until_a_rescan_releases_and_retries(bench: Bench) -> None:
    assert (await bench.scan())[0] is Result.IN_DOUBT
    assert await bench.scan() == (Result.CONFIRMED, "")
    assert await bench.counts() == (1, 0, 9)
