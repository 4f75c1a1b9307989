"""General firmware: the MCU UART codec, and a Wi-Fi device whose PID lives in an MCU on a real pty pair."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from agent.config import WifiConfig
from agent.errors import DeviceTimeoutError
from agent.radios.wifi import WifiRadio
from simulator.firmware import DeviceState
from simulator.goods import UnitSpec, WifiLine, build_wifi_line
from simulator.mcu import GeneralFirmware, McuError, McuFault, McuUart, SimulatedMcu
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from tests.test_wifi_radio import free_udp_port
from wire import mcu_uart
from wire.device import Firmware as FirmwareKind
from wire.device import Status
from wire.errors import FrameError, MalformedError
from wire.keys import KeyRing, SigningKey
from wire.mcu_uart import McuCommand, McuDecoder, McuFrame, ProductInfo
from wire.tokens import Grant, sign

SN = "SN-GENERAL-0001"
MCU_WAIT = 0.15
FIND = 2.0
ANSWER = 2.0

frames = st.builds(
    McuFrame,
    ver=st.integers(0, 255),
    cmd=st.integers(0, 255),
    data=st.binary(max_size=mcu_uart.MAX_DATA),
)


# --- codec ---------------------------------------------------------------------------------------------------------


def test_known_vectors() -> None:
    # Tuya's MCU SDK documents the heartbeat as 55 aa 00 00 00 00 ff and the product query as 55 aa 00 01 00 00 00.
    assert mcu_uart.encode(McuFrame(0x00, McuCommand.HEARTBEAT)) == bytes.fromhex("55aa000000 00ff".replace(" ", ""))
    assert mcu_uart.encode(mcu_uart.product_query()) == bytes.fromhex("55aa00010000" + "00")
    assert mcu_uart.encode(mcu_uart.set_pid_request("brand001")) == bytes.fromhex(
        "55aa00e00008" + b"brand001".hex() + f"{(0x55 + 0xAA + 0xE0 + 8 + sum(b'brand001')) & 0xFF:02x}"
    )


@given(frames)
def test_round_trip(frame: McuFrame) -> None:
    assert McuDecoder().feed(mcu_uart.encode(frame)) == [frame]


@given(st.lists(frames, min_size=1, max_size=4), st.data())
def test_any_chunking_gives_the_same_frames(batch: list[McuFrame], data: st.DataObject) -> None:
    raw = b"".join(mcu_uart.encode(f) for f in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=8)))
    decoder = McuDecoder()
    got: list[McuFrame] = []
    for lo, hi in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        got += decoder.feed(raw[lo:hi])
    assert got == batch


@given(st.binary(max_size=64).filter(lambda b: 0x55 not in b), frames)
def test_noise_before_a_frame_is_skipped_and_counted(noise: bytes, frame: McuFrame) -> None:
    decoder = McuDecoder()
    assert decoder.feed(noise + mcu_uart.encode(frame)) == [frame]
    assert decoder.skipped == len(noise)


@given(frames, frames, st.integers(1, 255))
def test_bad_checksum_raises_once_then_decoding_resumes(bad: McuFrame, good: McuFrame, delta: int) -> None:
    raw = bytearray(mcu_uart.encode(bad))
    # A false header inside the bad frame would be tried next (that is the resync); keep this case clean.
    assume(b"\x55" not in raw[2:-1])
    raw[-1] = (raw[-1] + delta) & 0xFF
    decoder = McuDecoder()
    with pytest.raises(FrameError) as caught:
        decoder.feed(bytes(raw))
    assert caught.value.field == "sum8"
    assert decoder.feed(mcu_uart.encode(good)) == [good]


def test_good_frame_ahead_of_a_bad_one_is_kept() -> None:
    good = mcu_uart.encode(mcu_uart.product_query())
    bad = bytearray(mcu_uart.encode(McuFrame(3, 1, b"{}")))
    bad[-1] ^= 0xFF
    decoder = McuDecoder()
    assert decoder.feed(good + bytes(bad)) == [mcu_uart.product_query()]
    with pytest.raises(FrameError):
        decoder.feed(b"")


def test_oversized_length_is_refused() -> None:
    with pytest.raises(FrameError, match="over"):
        McuDecoder().feed(b"\x55\xaa\x03\x01\xff\xff")
    with pytest.raises(FrameError):
        mcu_uart.encode(McuFrame(0, 1, b"x" * (mcu_uart.MAX_DATA + 1)))


def test_product_info_json() -> None:
    info = mcu_uart.parse_product_info(b'{"p":"stock001","v":"2.0.1","m":1,"mt":10}')
    assert (info.pid, info.version, info.mode) == (ORIGINAL_PID, "2.0.1", 1)
    assert ProductInfo(pid=ORIGINAL_PID, version="1.0.0", mode=0).to_bytes() == b'{"p":"stock001","v":"1.0.0","m":0}'
    with pytest.raises(MalformedError) as caught:
        mcu_uart.parse_product_info(b'{"p":"NOT A PID","v":"1","m":0}')
    assert caught.value.field == "p"
    with pytest.raises(MalformedError):
        mcu_uart.parse_product_info(b"\xff")


def test_set_pid_messages() -> None:
    assert mcu_uart.parse_set_pid_request(b"brand001") == NEW_PID
    with pytest.raises(MalformedError):
        mcu_uart.parse_set_pid_request(b"\xff\xfe")
    assert mcu_uart.parse_set_pid_answer(b"\x00") is mcu_uart.SetPidStatus.OK
    with pytest.raises(MalformedError, match="status"):
        mcu_uart.parse_set_pid_answer(b"\x00\x00")


# --- the MCU on a pty ----------------------------------------------------------------------------------------------


async def test_module_queries_the_mcu_over_the_pty() -> None:
    async with SimulatedMcu(ORIGINAL_PID, version="3.1.4", mode=2) as mcu:
        uart = McuUart(mcu.port, SN)
        await uart.open()
        try:
            answer = await uart.request(mcu_uart.product_query(), MCU_WAIT * 5)
            beat = await uart.request(McuFrame(0, McuCommand.HEARTBEAT), MCU_WAIT * 5)
        finally:
            await uart.close()
    assert answer.ver == mcu_uart.VERSION_MCU
    assert mcu_uart.parse_product_info(answer.data) == ProductInfo(pid=ORIGINAL_PID, version="3.1.4", mode=2)
    assert beat.data == b"\x01"
    assert mcu.queries == 1


async def test_silent_mcu_is_an_mcu_error_within_the_timeout() -> None:
    async with SimulatedMcu(ORIGINAL_PID, fault=McuFault.SILENT) as mcu:
        uart = McuUart(mcu.port, SN)
        await uart.open()
        try:
            started = time.monotonic()
            with pytest.raises(McuError, match="did not answer"):
                await uart.request(mcu_uart.product_query(), MCU_WAIT)
            assert time.monotonic() - started < MCU_WAIT + 0.3
        finally:
            await uart.close()


def test_general_firmware_needs_general_state() -> None:
    with pytest.raises(ValueError, match="general"):
        GeneralFirmware(DeviceState(sn=SN, pid=ORIGINAL_PID), KeyRing(), mcu_port="unused")


# --- end to end: agent -> Wi-Fi -> module -> UART -> MCU ---------------------------------------------------------


def rebadge_tokens(issuer: Issuer, gateway: SigningKey) -> tuple[bytes, bytes]:
    cert, cert_token = issuer.certificate()
    lease, lease_token = issuer.lease(cert, cert_token, gateway.public)
    grant = Grant(lease_id=lease.lease_id, slot=3, sn=SN, new_pid=NEW_PID, iat=int(time.time()))
    return lease_token, sign(grant, gateway)


@asynccontextmanager
async def general_line(issuer: Issuer) -> AsyncIterator[tuple[WifiRadio, WifiLine]]:
    radio = WifiRadio(WifiConfig(bind_address="127.0.0.1", discovery_port=free_udp_port()))
    await radio.start()
    try:
        spec = UnitSpec(SN, ORIGINAL_PID, firmware=FirmwareKind.GENERAL)
        async with build_wifi_line(
            issuer.ring, [spec], announce_to=radio.discovery_address, announce_interval=0.02, mcu_timeout=MCU_WAIT
        ) as line:
            yield radio, line
    finally:
        await radio.stop()


async def test_general_firmware_rebadge_goes_through_the_mcu_and_reads_back() -> None:
    issuer, gateway = Issuer(), SigningKey.generate()
    lease, grant = rebadge_tokens(issuer, gateway)
    async with general_line(issuer) as (radio, line), radio.connect(SN, FIND) as link:
        mcu = line.mcus[SN]
        before = await link.info(ANSWER)
        answer = await link.rebadge(lease, grant, ANSWER)
        after = await link.info(ANSWER)
    assert (before.pid, before.firmware) == (ORIGINAL_PID, FirmwareKind.GENERAL)
    assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
    assert (after.pid, after.receipt) == (NEW_PID, grant)
    assert mcu.pid == NEW_PID
    assert mcu.set_requests == [NEW_PID]
    assert mcu.queries >= 3  # info, before the rebadge, the read-back after SET_PID, info again


async def test_info_reports_the_pid_the_mcu_reports() -> None:
    async with general_line(Issuer()) as (radio, line), radio.connect(SN, FIND) as link:
        line.mcus[SN].info = ProductInfo(pid="other123", version="1.0.0", mode=0)
        assert (await link.info(ANSWER)).pid == "other123"


@pytest.mark.parametrize("fault", [McuFault.SILENT, McuFault.REFUSE_SET, McuFault.IGNORE_SET])
async def test_mcu_failure_answers_busy_with_nothing_applied(fault: McuFault) -> None:
    issuer, gateway = Issuer(), SigningKey.generate()
    lease, grant = rebadge_tokens(issuer, gateway)
    async with general_line(issuer) as (radio, line), radio.connect(SN, FIND) as link:
        mcu, module = line.mcus[SN], line[SN].firmware
        assert (await link.info(ANSWER)).pid == ORIGINAL_PID
        mcu.fault = fault
        answer = await link.rebadge(lease, grant, ANSWER)
        assert (answer.status, answer.pid) == (Status.BUSY, ORIGINAL_PID)
        assert mcu.pid == ORIGINAL_PID
        assert mcu.set_requests == ([] if fault is McuFault.SILENT else [NEW_PID])
        assert (module.state.pid, module.state.receipt) == (ORIGINAL_PID, None)
        if fault is McuFault.SILENT:
            # Without its MCU the module cannot say what PID it has, so it says nothing.
            with pytest.raises(DeviceTimeoutError):
                await link.info(MCU_WAIT * 3)


async def test_lost_set_ack_is_settled_by_the_product_query() -> None:
    issuer, gateway = Issuer(), SigningKey.generate()
    lease, grant = rebadge_tokens(issuer, gateway)
    async with general_line(issuer) as (radio, line), radio.connect(SN, FIND) as link:
        line.mcus[SN].fault = McuFault.DROP_SET_ACK
        answer = await link.rebadge(lease, grant, ANSWER)
        assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
        assert line.mcus[SN].pid == NEW_PID


async def test_an_mcu_that_applies_then_goes_silent_makes_the_module_answer_busy() -> None:
    issuer, gateway = Issuer(), SigningKey.generate()
    lease, grant = rebadge_tokens(issuer, gateway)
    async with general_line(issuer) as (radio, line):
        mcu, module = line.mcus[SN], line[SN].firmware
        mcu.fault, mcu.silent_s = McuFault.SILENT_AFTER_SET, MCU_WAIT * 8
        async with radio.connect(SN, FIND) as link:
            answer = await link.rebadge(lease, grant, ANSWER)
            # The module could not confirm the PID, so it says busy; the MCU took it all the same.
            assert (answer.status, answer.pid) == (Status.BUSY, ORIGINAL_PID)
            assert mcu.pid == NEW_PID
            assert module.state.receipt is None
            with pytest.raises(DeviceTimeoutError):
                await link.info(MCU_WAIT * 2)  # still silent: the module cannot read its MCU, so it says nothing
        await asyncio.sleep(MCU_WAIT * 8)
        async with radio.connect(SN, FIND) as link:
            after = await link.info(ANSWER)
    assert (after.pid, after.receipt) == (NEW_PID, None)  # the new PID without a receipt: neither done nor undone
