"""ZigbeeRadio against simulated goods through the real zigpy stack: join, interview, info, rebadge, read-back."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import pytest
import zigpy.zdo.types as zdo_t
from zigpy.device import ZigbeeDevice

from agent.config import AgentConfig, GatewayConfig, ZigbeeConfig
from agent.errors import (
    ConfigError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    LinkLostError,
    ProtocolError,
    RadioError,
)
from agent.radios.registry import create_radio
from agent.radios.zigbee.cluster import RebadgeCluster
from agent.radios.zigbee.radio import RADIO_LIBRARIES, ZigbeeLink, ZigbeeRadio
from simulator.zigbee import SIMULATED_NETWORK_KEY, SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire import zigbee_chunks as zc
from wire.device import Radio as RadioKind
from wire.device import Status
from wire.keys import KeyRing, SigningKey
from wire.tokens import Grant, sign

OLD_PID = ORIGINAL_PID
TEST_TIMEOUT = 10.0
FIND_TIMEOUT = 3.0
# Shrunk from the defaults so the fault tests stay fast.
TEST_CONFIG = ZigbeeConfig(permit_join_s=30, frame_timeout_s=0.3)


@dataclass
class Keys:
    """The platform's issuer and this gateway's key: a real lease for the gateway, real grants from it."""

    issuer: Issuer = field(default_factory=Issuer)
    gateway: SigningKey = field(default_factory=SigningKey.generate)

    @property
    def ring(self) -> KeyRing:
        return self.issuer.ring

    def lease(self) -> bytes:
        cert, cert_token = self.issuer.certificate(100)
        return self.issuer.lease(cert, cert_token, self.gateway.public)[1]

    def grant(self, sn: str, slot: int = 3) -> bytes:
        return sign(Grant(lease_id="L0001", slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time())), self.gateway)


@pytest.fixture
def keys() -> Keys:
    return Keys()


def make_line(keys: Keys, *units: ZigbeeUnit, latency_s: float = 0.0) -> SimulatedZigbeeLine:
    return build_zigbee_line(list(units), keys.ring, latency_s=latency_s)


@asynccontextmanager
async def running(
    line: SimulatedZigbeeLine, state_dir: Path, config: ZigbeeConfig = TEST_CONFIG
) -> AsyncIterator[ZigbeeRadio]:
    """A started ZigbeeRadio on the simulated line, always stopped (zigpy shut down) at the end."""
    radio = ZigbeeRadio(config, state_dir=state_dir, **line.radio_kwargs())
    await radio.start()
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            yield radio
    finally:
        await radio.stop()


async def open_link(radio: ZigbeeRadio, sn: str) -> ZigbeeLink:
    link = await radio.open(sn, FIND_TIMEOUT)
    assert isinstance(link, ZigbeeLink)
    return link


async def test_join_and_interview_through_zigpy(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID), ZigbeeUnit("ZB-0002", OLD_PID))
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0002")
        dev = link.device
        assert isinstance(dev, ZigbeeDevice)
        assert dev.ieee == line.node("ZB-0002").ieee
        assert dev.manufacturer == "_TZ3000_" + OLD_PID
        assert dev.model == "rebadge-sim-plug"
        assert dev.node_desc is not None
        assert dev.node_desc.logical_type == zdo_t.LogicalType.Router
        assert dev.node_desc.manufacturer_code == zc.MANUFACTURER_CODE
        assert isinstance(dev.endpoints[1].in_clusters[zc.CLUSTER_ID], RebadgeCluster)
        assert await radio.knows("ZB-0002")
        assert not await radio.knows("ZB-0404")
    assert (tmp_path / "zigbee.db").exists()


async def test_info_and_rebadge_with_a_real_lease_and_grant(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    node = line.node("ZB-0001")
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0001")
        info = await link.info()
        assert (info.sn, info.pid, info.radio, info.receipt) == ("ZB-0001", OLD_PID, RadioKind.ZIGBEE, None)
        grant = keys.grant("ZB-0001")
        answer = await link.rebadge(keys.lease(), grant)
        assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
        assert node.manufacturer_name == "_TZ3000_" + NEW_PID
        back = await link.info()
        assert (back.pid, back.receipt) == (NEW_PID, grant)
        assert await link.read_pid(1.0) == NEW_PID


async def test_the_read_back_is_a_fresh_basic_read(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    node = line.node("ZB-0001")
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0001")
        assert await link.read_pid(1.0) == OLD_PID
        # zigpy cached the interview's value; the device now says otherwise and the read must see it.
        node.stale_manufacturer_name = "_TZ3000_zzzz9999"
        assert await link.read_pid(1.0) == "zzzz9999"
        assert link.device.manufacturer == "_TZ3000_" + OLD_PID


async def test_manufacturer_name_disagreeing_with_the_firmware_is_a_protocol_error(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    line.node("ZB-0001").stale_manufacturer_name = "_TZ3000_" + NEW_PID
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0001")
        with pytest.raises(ProtocolError, match=f"ManufacturerName says PID {NEW_PID}, its firmware says {OLD_PID}"):
            await link.info()


async def test_unreadable_manufacturer_name_is_a_protocol_error(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    line.node("ZB-0001").stale_manufacturer_name = "Acme Plug"
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0001")
        with pytest.raises(ProtocolError, match="ManufacturerName 'Acme Plug'"):
            await link.read_pid(1.0)


async def test_a_device_that_left_is_not_known_until_it_is_back(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    line.network.rejoin_delay_s = 0.5
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, "ZB-0001")
        line.network.leave(line.node("ZB-0001"))
        await asyncio.sleep(0.05)
        assert not await radio.knows("ZB-0001")
        with pytest.raises(LinkLostError, match="left the network") as info:
            await link.info(1.0)
        assert info.value.sent is False
        link = await open_link(radio, "ZB-0001")  # it rejoins within the open permit window
        assert await radio.knows("ZB-0001")
        assert (await link.info()).pid == OLD_PID


async def test_units_put_on_and_taken_off_the_line(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    async with running(line, tmp_path) as radio:
        await open_link(radio, "ZB-0001")
        line.take_away("ZB-0001")
        node = line.place(ZigbeeUnit("ZB-0002", OLD_PID))
        assert node.nwk != 0x1A00  # a fresh address, never the one of the unit taken away
        link = await open_link(radio, "ZB-0002")  # joins in the window the first scan opened
        assert link.device.ieee == node.ieee
        # A unit powered off says nothing: the radio still knows it, and the first exchange finds it silent.
        # A one-chunk request is its own last chunk, whose lost ACK may hide a delivered frame: sent stays True.
        gone = await open_link(radio, "ZB-0001")
        with pytest.raises(DeviceTimeoutError, match="no answer after the last of 1 request chunk") as info:
            await gone.info(1.0)
        assert info.value.sent is True


async def test_an_unknown_sn_is_not_found_in_time(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    async with running(line, tmp_path) as radio:
        started = time.monotonic()
        with pytest.raises(DeviceNotFoundError, match="no zigbee device answered as ZB-0404") as info:
            await radio.open("ZB-0404", 0.5)
        assert time.monotonic() - started < 1.5
        assert info.value.sent is False
        assert "1 device(s) with our cluster" in str(info.value)


async def test_devices_known_from_the_database_are_found_after_a_restart(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    async with running(line, tmp_path) as radio:
        await open_link(radio, "ZB-0001")
    frames = line.network.frames
    async with running(line, tmp_path) as radio:
        assert len([d for d in radio.app.devices.values() if d.ieee == line.node("ZB-0001").ieee]) == 1  # type: ignore[union-attr]
        link = await open_link(radio, "ZB-0001")
        assert (await link.info()).sn == "ZB-0001"
    # No permit window, join or interview the second time: zigpy's startup permit(0) broadcasts (2),
    # the probe (1 request + 2 answer chunks), the info (3) and one Basic read (2).
    assert line.network.frames - frames == 10


async def test_concurrent_scans_on_one_network(keys: Keys, tmp_path: Path) -> None:
    sns = [f"ZB-{i:04d}" for i in range(5)]
    line = make_line(keys, *(ZigbeeUnit(sn, OLD_PID) for sn in sns))
    async with running(line, tmp_path) as radio:

        async def one(slot: int, sn: str) -> tuple[str, str]:
            link = await open_link(radio, sn)
            answer = await link.rebadge(keys.lease(), keys.grant(sn, slot))
            assert answer.status is Status.OK
            return sn, (await link.info()).pid

        results = await asyncio.gather(*(one(i, sn) for i, sn in enumerate(sns)))
    assert results == [(sn, NEW_PID) for sn in sns]


async def test_a_blank_coordinator_forms_a_network(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    line.network.nvram = None
    async with running(line, tmp_path) as radio:
        assert line.network.nvram is not None  # zigpy formed a network and wrote it to the stick
        assert radio.app is not None
        assert radio.app.state.network_info.channel == 15
        assert (await (await open_link(radio, "ZB-0001")).info()).pid == OLD_PID


async def test_a_coordinator_that_fails_to_start_is_a_radio_error_and_closes_the_database(
    keys: Keys, tmp_path: Path
) -> None:
    line = make_line(keys)
    config = {**line.app_config, SIMULATED_NETWORK_KEY: "not a network"}
    radio = ZigbeeRadio(TEST_CONFIG, state_dir=tmp_path, app_class=line.app_class, app_config=config)
    with pytest.raises(RadioError, match="did not start: app config key 'rebadge_simulated_network'"):
        await radio.start()
    assert radio.app is None
    assert not [t for t in threading.enumerate() if isinstance(t, aiosqlite.Connection)]


async def test_open_before_start_is_a_radio_error(keys: Keys, tmp_path: Path) -> None:
    radio = ZigbeeRadio(TEST_CONFIG, state_dir=tmp_path, **make_line(keys).radio_kwargs())
    with pytest.raises(RadioError, match="not started"):
        await radio.open("ZB-0001", 0.1)
    await radio.stop()  # stopping what never started is harmless


async def test_the_registry_builds_the_radio_with_a_simulated_coordinator(keys: Keys, tmp_path: Path) -> None:
    line = make_line(keys, ZigbeeUnit("ZB-0001", OLD_PID))
    config = AgentConfig(gateway=GatewayConfig(state_dir=tmp_path), zigbee=TEST_CONFIG)
    radio = create_radio(RadioKind.ZIGBEE, config, **line.radio_kwargs())
    assert isinstance(radio, ZigbeeRadio)
    await radio.start()
    try:
        link = await radio.open("ZB-0001", FIND_TIMEOUT)
        assert (await link.info()).pid == OLD_PID
    finally:
        await radio.stop()
    assert (tmp_path / "zigbee.db").exists()


@pytest.mark.parametrize("radio_type", sorted(RADIO_LIBRARIES))
def test_a_missing_radio_library_names_its_extra(radio_type: str, tmp_path: Path) -> None:
    module = RADIO_LIBRARIES[radio_type][0].partition(".")[0]
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    config = ZigbeeConfig.model_validate({"radio_type": radio_type})
    with pytest.raises(ConfigError) as info:
        ZigbeeRadio(config, state_dir=tmp_path)
    message = str(info.value)
    assert f"pip install '.[{radio_type}]'" in message
    assert f"zigbee.radio_type {radio_type!r}" in message


def test_zigpy_config_comes_from_our_config(tmp_path: Path, keys: Keys) -> None:
    config = ZigbeeConfig(device="/dev/ttyACM3", baudrate=460800, flow_control="hardware")
    radio = ZigbeeRadio(config, state_dir=tmp_path, app_class=make_line(keys).app_class, app_config={"ota": {}})
    zconf = radio.zigpy_config()
    assert zconf["device"] == {"path": "/dev/ttyACM3", "baudrate": 460800, "flow_control": "hardware"}
    assert zconf["database_path"] == str(tmp_path / "zigbee.db")
    assert zconf["ota"] == {"enabled": False}
