"""Zigbee faults end in a clear agent error with the right `sent`, never a hang; the next scan settles them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.errors import DeviceTimeoutError, LinkLostError, ProtocolError
from agent.radios.zigbee.radio import ZigbeeRadio
from simulator.firmware import Fault, Faults
from simulator.zigbee import LinkFault, SimulatedZigbeeLine, ZigbeeUnit
from tests.helpers import NEW_PID
from tests.test_zigbee_radio import OLD_PID, TEST_CONFIG, Keys, keys, make_line, open_link, running
from wire.device import Status

__all__ = ["keys"]  # the fixture, imported for pytest

SN = "ZB-0100"
REBADGE_TIMEOUT = 1.5


def line_with(keys: Keys, fault: Fault | LinkFault, times: int | None = 1) -> SimulatedZigbeeLine:
    return make_line(keys, ZigbeeUnit(SN, OLD_PID, fault=fault, fault_times=times))


async def rebadge_once(radio: ZigbeeRadio, keys: Keys, grant: bytes | None = None) -> Status:
    link = await open_link(radio, SN)
    answer = await link.rebadge(keys.lease(), grant or keys.grant(SN), REBADGE_TIMEOUT)
    return answer.status


async def settle(radio: ZigbeeRadio) -> tuple[str, bytes | None]:
    """What a later scan of the unit reads back (the unit may have to join again first)."""
    link = await open_link(radio, SN)
    info = await link.info(2.0)
    return info.pid, info.receipt


async def test_no_ack_for_a_request_chunk_is_a_timeout_before_anything_was_sent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.NO_ACK)
    async with running(line, tmp_path) as radio:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match=r"did not acknowledge chunk 1/\d+ of the request") as info:
            await rebadge_once(radio, keys)
        assert info.value.sent is False
        assert info.value.sn == SN
        assert time.monotonic() - started < REBADGE_TIMEOUT
        assert line.node(SN).firmware.rebadge_requests == 0
        assert await settle(radio) == (OLD_PID, None)
        assert await rebadge_once(radio, keys) is Status.OK  # the fault hit one request only


async def test_lost_ack_of_the_last_chunk_still_gets_the_answer(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.NO_ACK_LAST_CHUNK)
    async with running(line, tmp_path) as radio:
        assert await rebadge_once(radio, keys) is Status.OK
        assert (await settle(radio))[0] == NEW_PID


async def test_lost_ack_of_the_last_chunk_and_no_answer_leaves_it_sent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.NO_ACK_LAST_CHUNK)
    line.node(SN).firmware.faults = Faults(Fault.SILENT_AFTER_APPLY, times=1)
    grant = keys.grant(SN)
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, SN)
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match=r"last of .* request chunk.* unacknowledged") as info:
            await link.rebadge(keys.lease(), grant, REBADGE_TIMEOUT)
        assert info.value.sent is True
        # Bounded by the frame timeout, not the caller's whole budget.
        assert time.monotonic() - started < TEST_CONFIG.frame_timeout_s * 3 + 0.5
        assert await settle(radio) == (NEW_PID, grant)


async def test_a_node_leaving_mid_transfer_loses_the_link_unsent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.LEAVE_MID_TRANSFER)
    async with running(line, tmp_path) as radio:
        with pytest.raises(LinkLostError, match="left the network") as info:
            await rebadge_once(radio, keys)
        assert info.value.sent is False
        # It joins again at the next permit window, unchanged, and can be rebadged then.
        assert await settle(radio) == (OLD_PID, None)
        assert await radio.knows(SN)
        assert await rebadge_once(radio, keys) is Status.OK


async def test_a_node_leaving_after_applying_loses_the_link_sent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.LEAVE_AFTER_APPLY)
    grant = keys.grant(SN)
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, SN)
        with pytest.raises(LinkLostError, match="left the network") as info:
            await link.rebadge(keys.lease(), grant, REBADGE_TIMEOUT)
        assert info.value.sent is True
        assert await settle(radio) == (NEW_PID, grant)  # the receipt settles the attempt


async def test_duplicated_frames_both_ways_change_nothing(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, LinkFault.DUPLICATE, times=None)
    grant = keys.grant(SN)
    async with running(line, tmp_path) as radio:
        assert await rebadge_once(radio, keys, grant) is Status.OK
        assert await settle(radio) == (NEW_PID, grant)
    node = line.node(SN)
    assert node.firmware.rebadge_requests == 1  # the repeated chunks made no second request
    assert node._reassembler.duplicates > 0


async def test_silence_after_sending_is_a_timeout_with_sent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, Fault.SILENT_AFTER_APPLY)
    async with running(line, tmp_path) as radio:
        started = time.monotonic()
        with pytest.raises(DeviceTimeoutError, match="no answer after sending all") as info:
            await rebadge_once(radio, keys)
        assert info.value.sent is True
        assert REBADGE_TIMEOUT <= time.monotonic() - started < REBADGE_TIMEOUT + 0.5


async def test_a_garbled_answer_is_a_protocol_error_with_sent(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, Fault.GARBLED)
    async with running(line, tmp_path) as radio:
        with pytest.raises(ProtocolError, match="bad rebadge answer") as info:
            await rebadge_once(radio, keys)
        assert info.value.sent is True


async def test_a_refusal_comes_back_as_a_status(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, Fault.REFUSE)
    async with running(line, tmp_path) as radio:
        assert await rebadge_once(radio, keys) is Status.BUSY
        assert await rebadge_once(radio, keys) is Status.OK


async def test_a_wrong_sn_grant_is_refused_by_the_firmware(keys: Keys, tmp_path: Path) -> None:
    line = line_with(keys, Fault.NONE)
    async with running(line, tmp_path) as radio:
        link = await open_link(radio, SN)
        answer = await link.rebadge(keys.lease(), keys.grant("ZB-9999"), REBADGE_TIMEOUT)
        assert (answer.status, answer.pid) == (Status.WRONG_SN, OLD_PID)
