"""The simulated BLE backend through bleak's own facade: what a real BlueZ backend would show the agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from simulator.ble import Air, BleFault, BleFaults, BleUnit, Latency, SimBleakClient, SimBleakScanner, build_ble_line
from tests.helpers import ORIGINAL_PID, Issuer
from wire import fragments
from wire.device import InfoRequest, decode_info

SN = "SN-BLE-SIM-1"


async def discover(
    air: Air, timeout: float = 0.05, uuids: tuple[str, ...] = (fragments.SERVICE_UUID,), **kw: Any
) -> dict[str, tuple[BLEDevice, AdvertisementData]]:
    """BleakScanner.discover, through the constructor (discover's typed keywords leave out backend extras)."""
    async with BleakScanner(None, list(uuids), backend=SimBleakScanner, air=air, **kw) as scanner:
        await asyncio.sleep(timeout)
    return scanner.discovered_devices_and_advertisement_data


async def test_scanner_reports_our_service_and_pid_in_service_data() -> None:
    line = build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID), BleUnit("SN-BLE-SIM-2", "other001")])
    found = await discover(line.air)
    assert len(found) == 2
    _, adv = found[line.peripherals[SN].address]
    assert adv.service_uuids == [fragments.SERVICE_UUID]
    assert fragments.pid_of_service_data(adv.service_data[fragments.SERVICE_UUID]) == ORIGINAL_PID
    assert SN not in repr(adv), "the SN is not advertised"


async def test_scanner_filters_other_services_and_hears_after_the_advertising_delay() -> None:
    line = build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID)], latency=Latency(advertise_s=0.2))
    assert await discover(line.air, timeout=0.05) == {}
    assert await discover(line.air, 0.3, ("0000180f-0000-1000-8000-00805f9b34fb",)) == {}
    assert len(await discover(line.air, timeout=0.3)) == 1


async def test_client_round_trip_by_hand_with_fragments() -> None:
    line = build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID, att_mtu=247)])
    (device, _), = (await discover(line.air)).values()  # fmt: skip
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with BleakClient(device, backend=SimBleakClient, air=line.air) as client:
        assert client.mtu_size == 247
        write = client.services.get_characteristic(fragments.WRITE_CHAR_UUID)
        assert write is not None
        assert write.max_write_without_response_size == 244
        await client.start_notify(fragments.NOTIFY_CHAR_UUID, lambda _c, data: got.put_nowait(bytes(data)))
        for raw in fragments.split(InfoRequest(id=5).to_cbor(), 9, 244):
            await client.write_gatt_char(write, raw, response=True)
        r = fragments.Reassembler()
        async with asyncio.timeout(1):
            while (done := r.feed(await got.get())) is None:
                pass
        assert done[0] == 9
        assert decode_info(done[1]).sn == SN
        with pytest.raises(BleakGATTProtocolError) as err:
            await client.write_gatt_char(write, bytes(245), response=True)
        assert err.value.code is BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH
        with pytest.raises(BleakGATTProtocolError):
            await client.read_gatt_char(write)
    connection = line.peripherals[SN].connection
    assert connection is not None
    assert not connection.open


async def test_connect_failure_fault_and_missing_adapter_raise_like_bleak() -> None:
    line = build_ble_line(
        Issuer().ring, [BleUnit(SN, ORIGINAL_PID, link_fault=BleFaults(BleFault.CONNECT_FAILS, times=1))]
    )
    (device, _), = (await discover(line.air)).values()  # fmt: skip
    client = BleakClient(device, backend=SimBleakClient, air=line.air)
    with pytest.raises(BleakError, match="failed to be established"):
        await client.connect()
    await client.connect()
    await client.disconnect()
    other = BleakClient(device, backend=SimBleakClient, air=line.air, bluez={"adapter": "hci1"})
    with pytest.raises(BleakError, match="adapter hci1 not found"):
        await other.connect()
    with pytest.raises(BleakError, match="adapter hci1 not found"):
        await discover(line.air, bluez={"adapter": "hci1"})


async def test_link_lost_calls_the_disconnected_callback() -> None:
    line = build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID)])
    (device, _), = (await discover(line.air)).values()  # fmt: skip
    lost = asyncio.Event()
    client = BleakClient(device, lambda _c: lost.set(), backend=SimBleakClient, air=line.air)
    await client.connect()
    line.take_away(SN)
    async with asyncio.timeout(1):
        await lost.wait()
    assert not client.is_connected
    with pytest.raises(BleakError, match="Not connected"):
        await client.write_gatt_char(fragments.WRITE_CHAR_UUID, b"\x00\x00", response=True)
    await client.disconnect()


def test_units_are_checked() -> None:
    with pytest.raises(ValueError, match="a BLE PID has 8 characters"):
        BleUnit(SN, "stock001stock001")
    with pytest.raises(ValueError, match="listed twice"):
        build_ble_line(Issuer().ring, [BleUnit(SN, ORIGINAL_PID), BleUnit(SN, ORIGINAL_PID)])
