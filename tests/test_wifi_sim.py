"""The simulated Wi-Fi goods on their own: raw sockets on loopback play the gateway."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from simulator.firmware import DeviceState, Firmware
from simulator.goods import UnitSpec, build_wifi_line, make_firmware
from simulator.wifi import WifiDevice
from tests.helpers import ORIGINAL_PID, Issuer
from wire import device
from wire.cbor import dumps
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.errors import MalformedError
from wire.frames55aa import Command, Decoder, Frame, encode
from wire.keys import KeyRing

ANSWER = 1.0
SN = "SN-SIM-0001"


def firmware(sn: str = SN) -> Firmware:
    return Firmware(DeviceState(sn=sn, pid=ORIGINAL_PID), KeyRing())


async def read_frames(reader: asyncio.StreamReader, count: int = 1) -> list[Frame]:
    decoder = Decoder()
    frames: list[Frame] = []
    async with asyncio.timeout(ANSWER):
        while len(frames) < count:
            data = await reader.read(4096)
            assert data, "device closed the connection"
            frames += decoder.feed(data)
    return frames


async def test_request_written_one_byte_at_a_time_is_answered() -> None:
    async with WifiDevice(firmware()) as dev:
        reader, writer = await asyncio.open_connection(*dev.address)
        try:
            raw = encode(Frame(9, Command.INFO, device.InfoRequest(id=3).to_cbor()))
            for i in range(len(raw)):
                writer.write(raw[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
            (frame,) = await read_frames(reader)
        finally:
            writer.close()
    assert (frame.seq, frame.cmd) == (9, Command.INFO)
    info = device.decode_info(frame.payload)
    assert (info.id, info.sn, info.pid) == (3, SN, ORIGINAL_PID)
    assert dev.frames_in == 1


async def test_several_requests_in_one_write_are_answered_in_order() -> None:
    async with WifiDevice(firmware()) as dev:
        reader, writer = await asyncio.open_connection(*dev.address)
        try:
            writer.write(b"".join(encode(Frame(s, Command.INFO, device.InfoRequest(id=s).to_cbor())) for s in (1, 2)))
            frames = await read_frames(reader, 2)
        finally:
            writer.close()
    assert [f.seq for f in frames] == [1, 2]


async def test_unknown_command_gets_an_error_frame_and_the_connection_stays() -> None:
    async with WifiDevice(firmware()) as dev:
        reader, writer = await asyncio.open_connection(*dev.address)
        try:
            writer.write(encode(Frame(5, 0x07, b"{}")))
            (err,) = await read_frames(reader)
            writer.write(encode(Frame(6, Command.INFO, device.InfoRequest(id=1).to_cbor())))
            (ok,) = await read_frames(reader)
        finally:
            writer.close()
    assert (err.seq, err.cmd) == (5, Command.ERROR)
    assert (ok.seq, ok.cmd) == (6, Command.INFO)


async def test_bad_crc_from_the_gateway_gets_error_seq0_and_a_close() -> None:
    async with WifiDevice(firmware()) as dev:
        reader, writer = await asyncio.open_connection(*dev.address)
        try:
            raw = bytearray(encode(Frame(4, Command.INFO, device.InfoRequest(id=1).to_cbor())))
            raw[-6] ^= 0x01  # inside the CRC
            writer.write(bytes(raw))
            (err,) = await read_frames(reader)
            async with asyncio.timeout(ANSWER):
                assert await reader.read() == b""
        finally:
            writer.close()
    assert (err.seq, err.cmd) == (0, Command.ERROR)
    assert b"CRC" in err.payload
    assert dev.bad_frames == 1


async def test_malformed_request_gets_malformed_status_with_its_id() -> None:
    async with WifiDevice(firmware()) as dev:
        reader, writer = await asyncio.open_connection(*dev.address)
        try:
            bad = dumps({"id": 77, "op": "reflash"})
            writer.write(encode(Frame(1, Command.REBADGE, bad)))
            (frame,) = await read_frames(reader)
        finally:
            writer.close()
    answer = device.decode_rebadge(frame.payload)
    assert (answer.id, answer.status) == (77, device.Status.MALFORMED)


async def test_announcements_carry_the_real_port_and_current_pid() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        fw = firmware()
        async with WifiDevice(fw, announce_to=listener.getsockname(), announce_interval=0.02) as dev:
            async with asyncio.timeout(ANSWER):
                first = json.loads(await loop.sock_recv(listener, 2048))
            fw.state.pid = "brand002"
            async with asyncio.timeout(ANSWER):
                while (later := json.loads(await loop.sock_recv(listener, 2048)))["productKey"] != "brand002":
                    pass
    assert first == {"sn": SN, "productKey": ORIGINAL_PID, "ip": "127.0.0.1", "port": dev.port, "version": "1.0.0"}
    assert later["port"] == dev.port
    assert dev.port != 0
    assert dev.announcements >= 2


async def test_stop_drops_open_connections_and_leaves_no_tasks() -> None:
    dev = WifiDevice(firmware())
    await dev.start()
    reader, writer = await asyncio.open_connection(*dev.address)
    try:
        await dev.stop()
        async with asyncio.timeout(ANSWER):
            assert await reader.read() == b""
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(*dev.address)
    finally:
        writer.close()
    await dev.stop()  # idempotent


async def test_start_fails_cleanly_on_a_port_in_use() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            await WifiDevice(firmware(), port=taken.getsockname()[1]).start()


async def test_build_wifi_line_starts_every_unit() -> None:
    issuer = Issuer()
    specs = [UnitSpec("SN-LINE-0001", ORIGINAL_PID), UnitSpec("SN-LINE-0002", "stock0020000000x")]
    async with build_wifi_line(issuer.ring, specs, announce_to=None) as devices:
        assert sorted(devices) == ["SN-LINE-0001", "SN-LINE-0002"]
        ports = {d.port for d in devices.values()}
        for dev in devices.values():
            reader, writer = await asyncio.open_connection(*dev.address)
            try:
                writer.write(encode(Frame(1, Command.INFO, device.InfoRequest(id=1).to_cbor())))
                (frame,) = await read_frames(reader)
            finally:
                writer.close()
            assert device.decode_info(frame.payload).sn == dev.sn
    assert len(ports) == 2


def test_unit_spec_names_the_bad_field() -> None:
    with pytest.raises(MalformedError, match="unit SN-X-0001 pid 'Bad PID'"):
        UnitSpec("SN-X-0001", "Bad PID")
    with pytest.raises(MalformedError, match="unit sn"):
        UnitSpec("?", ORIGINAL_PID)


async def test_build_wifi_line_refuses_other_radios_and_duplicate_sns() -> None:
    ring = Issuer().ring
    with pytest.raises(ValueError, match="radio is 'ble'"):
        async with build_wifi_line(ring, [UnitSpec(SN, ORIGINAL_PID, radio=Radio.BLE)], announce_to=None):
            pass
    with pytest.raises(ValueError, match="twice"):
        async with build_wifi_line(ring, [UnitSpec(SN, ORIGINAL_PID)] * 2, announce_to=None):
            pass


def test_make_firmware_keeps_the_spec() -> None:
    fw = make_firmware(UnitSpec(SN, ORIGINAL_PID, firmware=FirmwareKind.CUSTOM, fw_version="2.1.0"), KeyRing())
    state = fw.state
    assert (state.sn, state.pid, state.firmware, state.fw_version) == (SN, ORIGINAL_PID, FirmwareKind.CUSTOM, "2.1.0")
