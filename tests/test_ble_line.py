"""BLE goods through the real line and journal: each link fault ends confirmed, released or in doubt, and a rescan
settles what was in doubt; no slot is spent twice."""

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
from simulator.ble import BleFault, BleFaults, BleLine, BleUnit, build_ble_line
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from tests.test_ble_radio import radio_for
from wire.device import Firmware
from wire.keys import SigningKey
from wire.topics import Result

GUARD_S = 10.0
LINE = LineConfig(find_timeout_s=2.0, info_timeout_s=1.0, rebadge_timeout_s=0.5)


@dataclass
class Bench:
    line: Line
    goods: BleLine
    journal: Journal
    cert_no: str

    async def scan(self, sn: str) -> tuple[Result, str]:
        async with asyncio.timeout(GUARD_S):
            event = await self.line.scan(sn)
        return event.result, event.reason


@pytest.fixture
async def bench(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Bench]:
    issuer = Issuer()
    identity = GatewayIdentity(SigningKey.generate())
    units: list[BleUnit] = request.param
    goods = build_ble_line(issuer.ring, units)
    async with await Journal.open(tmp_path / "journal.db", identity.gw) as journal:
        cert, cert_token = issuer.certificate(10)
        lease, lease_token = issuer.lease(cert, cert_token, identity.public)
        await journal.add_lease(lease, lease_token, cert, cert_token)
        line = Line(journal, [radio_for(goods)], identity, issuer.ring, LINE)
        yield Bench(line, goods, journal, cert.cert_no)


def unit(sn: str, kind: BleFault = BleFault.NONE, **kw: object) -> BleUnit:
    return BleUnit(sn, ORIGINAL_PID, link_fault=BleFaults(kind, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bench",
    [[unit("SN-L-0001"), BleUnit("SN-L-0002", ORIGINAL_PID, att_mtu=247), unit("SN-L-0003", BleFault.CONNECT_FAILS)]],
    indirect=True,
)
async def test_clean_units_are_confirmed_once(bench: Bench) -> None:
    for sn in ("SN-L-0001", "SN-L-0002", "SN-L-0003"):
        assert await bench.scan(sn) == (Result.CONFIRMED, "")
        assert bench.goods.peripherals[sn].firmware.state.pid == NEW_PID
    assert (await bench.scan("SN-L-0001"))[0] is Result.ALREADY_REBADGED
    counts = await bench.journal.counts(bench.cert_no)
    assert (counts.confirmed, counts.in_doubt, counts.remaining) == (3, 0, 7)


@pytest.mark.parametrize("bench", [[BleUnit("SN-L-0001", ORIGINAL_PID, firmware=Firmware.GENERAL)]], indirect=True)
async def test_general_firmware_ble_unit_is_refused_before_reserving(bench: Bench) -> None:
    assert await bench.scan("SN-L-0001") == (Result.REFUSED, "unsupported_firmware")
    assert bench.goods.peripherals["SN-L-0001"].firmware.rebadge_requests == 0
    assert (await bench.journal.counts(bench.cert_no)).remaining == 10


@pytest.mark.parametrize("bench", [[unit("SN-L-0001", BleFault.LINK_LOSS_IN_REQUEST, at_fragment=2)]], indirect=True)
async def test_link_lost_before_the_last_fragment_releases_the_slot(bench: Bench) -> None:
    assert await bench.scan("SN-L-0001") == (Result.REFUSED, "device_error")
    counts = await bench.journal.counts(bench.cert_no)
    assert (counts.confirmed, counts.in_doubt, counts.remaining) == (0, 0, 10)
    assert await bench.scan("SN-L-0001") == (Result.CONFIRMED, "")


@pytest.mark.parametrize(
    "bench",
    [
        [unit("SN-L-0001", BleFault.LINK_LOSS_IN_ANSWER)],
        [unit("SN-L-0001", BleFault.DROP_ANSWER_FRAGMENT, at_fragment=99)],
        [unit("SN-L-0001", BleFault.SLOW_NOTIFY, slow_s=0.6)],
    ],
    indirect=True,
    ids=["link_loss_in_answer", "last_answer_fragment_lost", "slow_notify"],
)
async def test_answer_lost_after_applying_is_in_doubt_until_a_rescan_confirms(bench: Bench) -> None:
    assert (await bench.scan("SN-L-0001"))[0] is Result.IN_DOUBT
    assert (await bench.journal.counts(bench.cert_no)).in_doubt == 1
    assert await bench.scan("SN-L-0001") == (Result.CONFIRMED, "settled")
    counts = await bench.journal.counts(bench.cert_no)
    assert (counts.confirmed, counts.in_doubt, counts.remaining) == (1, 0, 9)


@pytest.mark.parametrize(
    "bench",
    [
        [unit("SN-L-0001", BleFault.DROP_REQUEST_FRAGMENT, at_fragment=3)],
        [unit("SN-L-0001", BleFault.LINK_LOSS_IN_REQUEST, at_fragment=99)],
    ],
    indirect=True,
    ids=["request_fragment_lost", "link_loss_at_last_fragment"],
)
async def test_request_never_whole_is_in_doubt_until_a_rescan_releases_and_retries(bench: Bench) -> None:
    assert (await bench.scan("SN-L-0001"))[0] is Result.IN_DOUBT
    assert await bench.scan("SN-L-0001") == (Result.CONFIRMED, "")
    counts = await bench.journal.counts(bench.cert_no)
    assert (counts.confirmed, counts.in_doubt, counts.remaining) == (1, 0, 9)


@pytest.mark.parametrize(
    "bench", [[unit("SN-L-0001", BleFault.DUPLICATE_FRAGMENTS, target="any", times=None)]], indirect=True
)
async def test_duplicated_fragments_confirm_with_one_request(bench: Bench) -> None:
    assert await bench.scan("SN-L-0001") == (Result.CONFIRMED, "")
    assert bench.goods.peripherals["SN-L-0001"].firmware.rebadge_requests == 1
