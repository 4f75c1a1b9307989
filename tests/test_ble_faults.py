"""BLE link faults end in the right agent error with the right `sent`, within bounded time, links closed."""

from __future__ import annotations

import asyncio
import time

import pytest

from agent.errors import DeviceNotFoundError, DeviceTimeoutError, LinkLostError, ProtocolError, RadioError
from simulator.ble import BleFault, BleFaults, BleLine, BleUnit, build_ble_line
from simulator.firmware import Fault, Faults
from tests.helpers import NEW_PID, ORIGINAL_PID
from tests.test_ble_radio import FIND, SN, Tokens, ble, open_connections, radio_for
from wire.device import Status

# Every test here must end well inside this; a hang fails instead of blocking the suite.
GUARD_S = 5.0
ANSWER_S = 0.5


def line_with(tokens: Tokens, fault: BleFaults | None = None, **unit: object) -> BleLine:
    return build_ble_line(tokens.issuer.ring, [BleUnit(SN, ORIGINAL_PID, link_fault=fault or BleFaults(), **unit)])  # type: ignore[arg-type]


async def rebadge_error(line: BleLine, tokens: Tokens) -> RadioError:
    """Open, read, rebadge; return what the rebadge raised."""
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        await link.info()
        with pytest.raises(RadioError) as err:
            await link.rebadge(tokens.lease, tokens.grant(SN), ANSWER_S)
    assert open_connections(line) == []
    return err.value


async def read_back(line: BleLine) -> tuple[str, bytes | None]:
    """Scan the unit again, as the line does to settle an attempt in doubt."""
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        info = await link.info()
    return info.pid, info.receipt


async def test_connect_failures_are_retried_by_bleak_retry_connector() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.CONNECT_FAILS, times=2))
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        assert (await link.info()).sn == SN
    assert line.air.connect_attempts == 3


async def test_a_device_that_never_connects_is_not_found() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.CONNECT_FAILS, times=None))
    with pytest.raises(DeviceNotFoundError, match=r"could not connect to .* on hci0: .*Failed to connect after 3"):
        async with asyncio.timeout(GUARD_S):
            await radio_for(line).open(SN, 1.0)
    assert line.air.connect_attempts == 6, "two probes of three attempts each"
    assert open_connections(line) == []


@pytest.mark.parametrize(("at", "sent"), [(2, False), (99, True)])
async def test_link_lost_mid_request(at: int, sent: bool) -> None:
    """Lost before the last fragment: the device cannot hold the request (sent False); at the last: maybe."""
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.LINK_LOSS_IN_REQUEST, at_fragment=at))
    err = await rebadge_error(line, tokens)
    assert isinstance(err, LinkLostError)
    assert err.sent is sent
    assert err.sn == SN
    assert await read_back(line) == (ORIGINAL_PID, None)


async def test_link_lost_mid_answer_leaves_the_rebadge_applied_and_in_doubt() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.LINK_LOSS_IN_ANSWER, at_fragment=1))
    err = await rebadge_error(line, tokens)
    assert isinstance(err, LinkLostError)
    assert err.sent is True
    pid, receipt = await read_back(line)
    assert pid == NEW_PID
    assert receipt is not None


async def test_dropped_request_fragment_times_out_after_sending() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.DROP_REQUEST_FRAGMENT, at_fragment=3))
    started = time.monotonic()
    err = await rebadge_error(line, tokens)
    assert isinstance(err, DeviceTimeoutError)
    assert err.sent is True
    assert time.monotonic() - started < ANSWER_S + 1.0
    assert await read_back(line) == (ORIGINAL_PID, None)


async def test_dropped_answer_fragment_is_a_gap_in_a_long_answer() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.DROP_ANSWER_FRAGMENT, target="info", spare=1, at_fragment=1))
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        with pytest.raises(ProtocolError, match="fragment 2 arrived while fragment 1 was expected") as err:
            await link.info()
        assert err.value.sent is True
        assert (await link.info()).sn == SN, "the link stays usable after a broken answer"


async def test_dropped_last_answer_fragment_stalls_the_answer() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.DROP_ANSWER_FRAGMENT, at_fragment=99))
    err = await rebadge_error(line, tokens)
    assert isinstance(err, DeviceTimeoutError)
    assert err.sent is True
    assert await read_back(line) == (NEW_PID, line.peripherals[SN].firmware.state.receipt)


@pytest.mark.parametrize("att_mtu", [23, 247])
async def test_duplicated_fragments_both_ways_change_nothing(att_mtu: int) -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.DUPLICATE_FRAGMENTS, target="any", times=None), att_mtu=att_mtu)
    grant = tokens.grant(SN)
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        assert (await link.info()).pid == ORIGINAL_PID
        answer = await link.rebadge(tokens.lease, grant, ANSWER_S)
        assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
        assert (await link.info()).receipt == grant
    assert line.peripherals[SN].firmware.rebadge_requests == 1


async def test_slow_notifications_within_the_fragment_timeout_succeed() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.SLOW_NOTIFY, target="any", times=None, slow_s=0.02))
    async with asyncio.timeout(GUARD_S), radio_for(line, fragment_timeout_s=0.3).connect(SN, FIND) as link:
        answer = await link.rebadge(tokens.lease, tokens.grant(SN), 2.0)
    assert answer.status is Status.OK


async def test_notifications_slower_than_the_fragment_timeout_stall() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.SLOW_NOTIFY, slow_s=0.3))
    async with asyncio.timeout(GUARD_S), radio_for(line, fragment_timeout_s=0.1).connect(SN, FIND) as link:
        with pytest.raises(DeviceTimeoutError, match=r"answer stalled, no fragment for 0\.1 s") as err:
            await link.rebadge(tokens.lease, tokens.grant(SN), 2.0)
    assert err.value.sent is True


async def test_open_timing_out_during_the_probe_closes_the_link() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.SLOW_NOTIFY, target="info", slow_s=1.0))
    with pytest.raises(DeviceNotFoundError):
        await radio_for(line).open(SN, 0.3)
    assert line.peripherals[SN].connects == 1
    assert open_connections(line) == []


async def test_late_answer_of_a_timed_out_request_is_not_taken_for_the_next() -> None:
    tokens = Tokens()
    line = line_with(tokens, firmware_faults=Faults(Fault.SLOW, times=1, slow_s=0.3))
    grant = tokens.grant(SN)
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        with pytest.raises(DeviceTimeoutError) as err:
            await link.rebadge(tokens.lease, grant, 0.1)
        assert err.value.sent is True
        info = await link.info()
        assert (info.pid, info.receipt) == (NEW_PID, grant)
        assert ble(link).stale >= 1


async def test_silent_device_times_out_with_sent() -> None:
    tokens = Tokens()
    line = line_with(tokens, firmware_faults=Faults(Fault.SILENT_BEFORE_APPLY, times=1))
    err = await rebadge_error(line, tokens)
    assert isinstance(err, DeviceTimeoutError)
    assert err.sent is True
    assert await read_back(line) == (ORIGINAL_PID, None)


async def test_a_probe_broken_once_gets_a_second_chance() -> None:
    tokens = Tokens()
    line = line_with(tokens, BleFaults(BleFault.LINK_LOSS_IN_ANSWER, target="info", times=1))
    async with asyncio.timeout(GUARD_S), radio_for(line).connect(SN, FIND) as link:
        assert (await link.info()).sn == SN
    assert line.peripherals[SN].connects == 2
