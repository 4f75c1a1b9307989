"""The BLE radio over real bleak (BleakScanner, BleakClient, bleak-retry-connector) and the simulated air."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from agent.config import AgentConfig, BleConfig
from agent.errors import DeviceNotFoundError, ProtocolError, RadioError
from agent.radios.ble.link import BleLink
from agent.radios.ble.radio import BleRadio
from agent.radios.registry import create_radio
from simulator.ble import BleLine, BleUnit, Latency, build_ble_line
from simulator.goods import UnitSpec
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire.device import Firmware, Radio, Status
from wire.keys import SigningKey
from wire.tokens import Grant, sign

FIND = 2.0
SN = "SN-BLE-0001"


@dataclass
class Tokens:
    """A real lease for a gateway key, and grants signed with it."""

    issuer: Issuer = field(default_factory=Issuer)
    gateway: SigningKey = field(default_factory=SigningKey.generate)
    lease: bytes = b""

    def __post_init__(self) -> None:
        cert, cert_token = self.issuer.certificate(10)
        _, self.lease = self.issuer.lease(cert, cert_token, self.gateway.public)

    def grant(self, sn: str, slot: int = 0) -> bytes:
        return sign(Grant(lease_id="L0001", slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time())), self.gateway)


def ble_config(**kw: object) -> BleConfig:
    return BleConfig.model_validate({"connect_timeout_s": 2.0, "fragment_timeout_s": 0.3, **kw})


def radio_for(line: BleLine, **kw: object) -> BleRadio:
    return BleRadio(ble_config(**kw), **line.radio_kwargs)


def ble(link: object) -> BleLink:
    assert isinstance(link, BleLink)
    return link


def open_connections(line: BleLine) -> list[str]:
    return [sn for sn, p in line.peripherals.items() if p.connection is not None and p.connection.open]


@pytest.mark.parametrize(("att_mtu", "payload"), [(23, 20), (247, 244)])
async def test_info_rebadge_info_with_a_real_lease_and_grant(att_mtu: int, payload: int) -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID, att_mtu=att_mtu)])
    radio = radio_for(line)
    grant = tokens.grant(SN)
    async with radio.connect(SN, FIND) as link:
        assert ble(link).payload == payload
        info = await link.info()
        assert (info.sn, info.pid, info.firmware, info.radio, info.receipt) == (
            SN, ORIGINAL_PID, Firmware.OEM, Radio.BLE, None,
        )  # fmt: skip
        answer = await link.rebadge(tokens.lease, grant)
        assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
        after = await link.info()
        assert (after.pid, after.receipt) == (NEW_PID, grant)
    assert open_connections(line) == []
    assert line.peripherals[SN].firmware.state.pid == NEW_PID


async def test_radio_comes_from_the_registry_with_the_simulated_backend() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [UnitSpec(SN, ORIGINAL_PID, radio=Radio.BLE)])
    config = AgentConfig.model_validate({"ble": {"fragment_timeout_s": 0.3}})
    radio = create_radio(Radio.BLE, config, **line.radio_kwargs)
    assert isinstance(radio, BleRadio)
    async with radio.connect(SN, FIND) as link:
        assert (await link.info()).sn == SN


async def test_sn_found_among_several_goods_and_remembered() -> None:
    tokens = Tokens()
    sns = [f"SN-BLE-000{i}" for i in range(1, 5)]
    line = build_ble_line(tokens.issuer.ring, [BleUnit(sn, ORIGINAL_PID) for sn in sns])
    radio = radio_for(line)
    async with radio.connect(sns[1], FIND) as link:
        assert (await link.info()).sn == sns[1]
    probed = [sn for sn in sns if line.peripherals[sn].connects]
    assert sns[1] in probed
    assert all([await radio.knows(sn) for sn in probed])
    assert not await radio.knows(sns[0]) or sns[0] in probed
    before = {sn: p.connects for sn, p in line.peripherals.items()}
    async with radio.connect(probed[0], FIND) as link:
        assert (await link.info()).sn == probed[0]
    after = {sn: p.connects for sn, p in line.peripherals.items()}
    assert {sn for sn in sns if after[sn] != before[sn]} == {probed[0]}, "a known SN connects straight to its device"
    assert open_connections(line) == []


async def test_newest_advertiser_is_tried_first() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit("SN-BLE-OLD1", ORIGINAL_PID)])
    radio = radio_for(line)
    await radio.start()
    try:
        await asyncio.sleep(0.01)
        line.place(BleUnit(SN, ORIGINAL_PID))
        async with asyncio.timeout(1):
            while len(radio.sightings.all()) < 2:  # noqa: ASYNC110 - the scan's own state
                await asyncio.sleep(0.005)
        async with radio.connect(SN, FIND) as link:
            assert (await link.info()).sn == SN
        assert line.peripherals["SN-BLE-OLD1"].connects == 0
    finally:
        await radio.stop()


async def test_concurrent_opens_for_different_sns() -> None:
    tokens = Tokens()
    sns = [f"SN-BLE-000{i}" for i in range(1, 4)]
    line = build_ble_line(tokens.issuer.ring, [BleUnit(sn, ORIGINAL_PID) for sn in sns])
    radio = radio_for(line)

    async def one(sn: str) -> str:
        async with radio.connect(sn, FIND) as link:
            return (await link.info()).sn

    assert await asyncio.gather(*(one(sn) for sn in sns)) == sns
    assert open_connections(line) == []


async def test_unknown_sn_is_not_found_in_time_and_nothing_stays_connected() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(f"SN-BLE-000{i}", ORIGINAL_PID) for i in range(1, 4)])
    radio = radio_for(line)
    started = time.monotonic()
    with pytest.raises(DeviceNotFoundError, match=r"no BLE device said it is SN-NOPE-1 within 0\.3 s on hci0") as err:
        await radio.open("SN-NOPE-1", 0.3)
    assert time.monotonic() - started < 1.0
    assert err.value.sn == "SN-NOPE-1"
    assert all(p.connects == 1 for p in line.peripherals.values())
    assert open_connections(line) == []


async def test_timeout_mid_connect_leaves_no_half_open_link() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID)], latency=Latency(connect_s=0.5))
    radio = radio_for(line)
    with pytest.raises(DeviceNotFoundError):
        await radio.open(SN, 0.2)
    await asyncio.sleep(0.4)  # the simulated connect would have completed by now
    assert open_connections(line) == []


async def test_general_firmware_ble_unit_answers_unsupported_firmware() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID, firmware=Firmware.GENERAL)])
    async with radio_for(line).connect(SN, FIND) as link:
        info = await link.info()
        assert info.firmware is Firmware.GENERAL
        answer = await link.rebadge(tokens.lease, tokens.grant(SN))
    assert (answer.status, answer.pid) == (Status.UNSUPPORTED_FIRMWARE, ORIGINAL_PID)


async def test_wrong_issuer_is_refused_by_the_device() -> None:
    tokens = Tokens()
    line = build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID)])
    async with radio_for(line).connect(SN, FIND) as link:
        answer = await link.rebadge(tokens.lease, tokens.grant(SN))
    assert answer.status is Status.UNKNOWN_KEY


async def test_new_pid_is_advertised_after_rebadge() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID)])
    radio = radio_for(line)
    await radio.start()
    try:
        async with radio.connect(SN, FIND) as link:
            address = ble(link).address
            await link.rebadge(tokens.lease, tokens.grant(SN))
        async with asyncio.timeout(1):
            while (seen := radio.sightings.get(address)) is None or seen.pid != NEW_PID:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await radio.stop()


async def test_adapter_from_config_reaches_bleak() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID)], adapters=("hci1",))
    async with radio_for(line, adapter="hci1").connect(SN, FIND) as link:
        assert (await link.info()).sn == SN
    with pytest.raises(RadioError, match="BLE adapter hci0 cannot scan") as err:
        await radio_for(line, adapter="hci0").open(SN, FIND)
    assert "adapter hci0 not found" in str(err.value)


async def test_scan_timeout_from_config_caps_the_search() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [])
    started = time.monotonic()
    with pytest.raises(DeviceNotFoundError, match=r"within 0\.2 s .*0 device\(s\) of our service tried"):
        await radio_for(line, scan_timeout_s=0.2).open(SN, 30.0)
    assert time.monotonic() - started < 0.5


async def test_a_request_over_the_size_limit_is_refused_before_sending() -> None:
    tokens = Tokens()
    line = build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID)])
    async with radio_for(line).connect(SN, FIND) as link:
        with pytest.raises(ProtocolError, match="cannot be sent: message of 1025 bytes") as err:
            await link.exchange(bytes(1025), 1.0)
        assert err.value.sent is False
        assert (await link.info()).sn == SN
