"""The Wi-Fi radio against simulated Wi-Fi goods, over real UDP and TCP sockets on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from agent.config import AgentConfig, StaticWifiDevice, WifiConfig
from agent.errors import DeviceNotFoundError, DeviceTimeoutError, LinkLostError, ProtocolError
from agent.radios.base import DeviceLink
from agent.radios.registry import create_radio
from agent.radios.wifi import ConnectionState, WifiLink, WifiRadio
from agent.radios.wifi.ap import join_command
from simulator.firmware import Fault
from simulator.goods import UnitSpec, build_wifi_line
from simulator.wifi import LinkFault, WifiDevice
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire.announce import Announce
from wire.device import InfoRequest, Radio, Status
from wire.frames55aa import Command, Decoder, Frame, encode
from wire.keys import SigningKey
from wire.tokens import Grant, sign

ANNOUNCE_EVERY = 0.02
FIND = 2.0
ANSWER = 1.0
SN = "SN-WIFI-0001"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wifi_config(**kw: object) -> WifiConfig:
    return WifiConfig.model_validate({"bind_address": "127.0.0.1", "discovery_port": free_udp_port(), **kw})


def wifi(link: DeviceLink) -> WifiLink:
    assert isinstance(link, WifiLink)
    return link


async def until(condition: Callable[[], bool], timeout: float = FIND) -> None:
    """Poll a condition on a short tick (what is awaited here has no event of its own)."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling state owned by the code under test
            await asyncio.sleep(0.005)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def gateway() -> SigningKey:
    return SigningKey.generate()


def rebadge_tokens(issuer: Issuer, gateway: SigningKey, sn: str = SN, slot: int = 0) -> tuple[bytes, bytes]:
    """A real lease (issuer-signed) and grant (gateway-signed) for one device."""
    cert, cert_token = issuer.certificate()
    lease, lease_token = issuer.lease(cert, cert_token, gateway.public)
    grant = Grant(lease_id=lease.lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time()))
    return lease_token, sign(grant, gateway)


@asynccontextmanager
async def started(config: WifiConfig, **kw: object) -> AsyncIterator[WifiRadio]:
    radio = WifiRadio(config, **kw)  # type: ignore[arg-type]
    await radio.start()
    try:
        yield radio
    finally:
        await radio.stop()


@asynccontextmanager
async def line(radio: WifiRadio, issuer: Issuer, *units: UnitSpec) -> AsyncIterator[dict[str, WifiDevice]]:
    async with build_wifi_line(
        issuer.ring, units, announce_to=radio.discovery_address, announce_interval=ANNOUNCE_EVERY
    ) as devices:
        yield devices


async def test_announcement_makes_the_device_known_and_reachable(issuer: Issuer) -> None:
    async with started(wifi_config()) as radio, line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)) as devices:
        assert not await radio.knows("SN-OTHER-0001")
        async with radio.connect(SN, FIND) as link:
            assert await radio.knows(SN)
            info = await link.info(ANSWER)
        (seen,) = radio.sightings()
        assert (seen.sn, seen.pid, seen.ip, seen.port) == (SN, ORIGINAL_PID, "127.0.0.1", devices[SN].port)
        assert info.sn == SN
        assert info.pid == ORIGINAL_PID
        assert info.radio is Radio.WIFI
        assert info.receipt is None


async def test_malformed_datagrams_are_counted_and_ignored(issuer: Issuer) -> None:
    async with started(wifi_config()) as radio:
        assert radio.discovery_address is not None
        junk = [
            b"not json",
            b"\xff\xfe\x00",
            b'{"sn":"SN-WIFI-0001","productKey":"NOT A PID","ip":"127.0.0.1","port":6668}',
            b'{"sn":"SN-WIFI-0001","productKey":"stock001","ip":"127.0.0.1","port":0}',
            b"[]",
            b"x" * 5000,
        ]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for data in junk:
                s.sendto(data, radio.discovery_address)
        await until(lambda: radio.table.malformed >= len(junk))
        assert not await radio.knows(SN)
        async with line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)), radio.connect(SN, FIND) as link:
            assert (await link.info(ANSWER)).pid == ORIGINAL_PID
        assert radio.table.malformed == len(junk)


async def test_rebadge_applies_a_verified_grant_and_reads_back(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    async with started(wifi_config()) as radio, line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)) as devices:
        async with radio.connect(SN, FIND) as link:
            answer = await link.rebadge(lease, grant, ANSWER)
            back = await link.info(ANSWER)
        assert (answer.status, answer.pid) == (Status.OK, NEW_PID)
        assert (back.pid, back.receipt) == (NEW_PID, grant)
        assert devices[SN].firmware.state.pid == NEW_PID
        # The next announcement carries the new PID.
        await until(lambda: getattr(radio.table.fresh(SN), "pid", None) == NEW_PID)


async def test_a_grant_for_another_sn_is_refused(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway, sn="SN-SOMEONE-ELSE")
    async with started(wifi_config()) as radio, line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)):
        async with radio.connect(SN, FIND) as link:
            answer = await link.rebadge(lease, grant, ANSWER)
        assert (answer.status, answer.pid) == (Status.WRONG_SN, ORIGINAL_PID)


async def test_refuse_fault_is_an_answer_not_an_error(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    async with (
        started(wifi_config()) as radio,
        line(radio, issuer, UnitSpec(SN, ORIGINAL_PID, fault=Fault.REFUSE)),
        radio.connect(SN, FIND) as link,
    ):
        answer = await link.rebadge(lease, grant, ANSWER)
    assert (answer.status, answer.pid) == (Status.BUSY, ORIGINAL_PID)


@pytest.mark.parametrize(
    ("fault", "applied"), [(Fault.SILENT_BEFORE_APPLY, False), (Fault.SILENT_AFTER_APPLY, True), (Fault.SLOW, True)]
)
async def test_silence_after_sending_is_a_timeout_with_sent(
    issuer: Issuer, gateway: SigningKey, fault: Fault, applied: bool
) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, fault=fault, slow_s=1.0)
    async with started(wifi_config()) as radio, line(radio, issuer, spec) as devices:
        async with radio.connect(SN, FIND) as link:
            started_at = time.monotonic()
            with pytest.raises(DeviceTimeoutError) as caught:
                await link.rebadge(lease, grant, 0.2)
            assert time.monotonic() - started_at < 0.6
            assert wifi(link).state is ConnectionState.CLOSED
        assert caught.value.sent is True
        assert caught.value.sn == SN
        assert isinstance(caught.value, TimeoutError)
        assert devices[SN].firmware.rebadge_requests == 1
        assert (devices[SN].firmware.state.pid == NEW_PID) is applied


async def test_slow_device_within_the_timeout_answers(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, fault=Fault.SLOW, slow_s=0.1)
    async with started(wifi_config()) as radio, line(radio, issuer, spec), radio.connect(SN, FIND) as link:
        answer = await link.rebadge(lease, grant, ANSWER)
    assert answer.status is Status.OK


async def test_garbled_answer_is_a_protocol_error_with_sent(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, fault=Fault.GARBLED)
    async with started(wifi_config()) as radio, line(radio, issuer, spec), radio.connect(SN, FIND) as link:
        with pytest.raises(ProtocolError) as caught:
            await link.rebadge(lease, grant, ANSWER)
    assert caught.value.sent is True


async def test_bad_crc_frame_is_a_protocol_error_and_drops_the_link(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, link_fault=LinkFault.BAD_CRC)
    async with started(wifi_config()) as radio, line(radio, issuer, spec) as devices:
        async with radio.connect(SN, FIND) as link:
            with pytest.raises(ProtocolError, match="CRC") as caught:
                await link.rebadge(lease, grant, ANSWER)
            assert caught.value.sent is True
            assert wifi(link).state is ConnectionState.CLOSED
            with pytest.raises(LinkLostError) as again:
                await link.info(ANSWER)
            assert again.value.sent is False
        # The device did apply: the CRC broke on the way back, which is why `sent` must be True.
        assert devices[SN].firmware.state.pid == NEW_PID
        async with radio.connect(SN, FIND) as fresh:
            assert (await fresh.info(ANSWER)).receipt == grant


async def test_connection_closed_mid_frame_is_link_lost_with_sent(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, link_fault=LinkFault.CLOSE_MID_FRAME)
    async with started(wifi_config()) as radio, line(radio, issuer, spec), radio.connect(SN, FIND) as link:
        with pytest.raises(LinkLostError) as caught:
            await link.rebadge(lease, grant, ANSWER)
        assert wifi(link).bytes_received > 0
    assert caught.value.sent is True


async def test_device_never_announced_is_not_found_within_the_timeout() -> None:
    async with started(wifi_config()) as radio:
        started_at = time.monotonic()
        with pytest.raises(DeviceNotFoundError, match="announcement") as caught:
            await radio.open(SN, 0.2)
        elapsed = time.monotonic() - started_at
    assert 0.2 <= elapsed < 0.5
    assert caught.value.sent is False
    assert caught.value.sn == SN


async def test_invalid_sn_fails_at_once() -> None:
    async with started(wifi_config()) as radio:
        with pytest.raises(DeviceNotFoundError, match="serial number"):
            await radio.open("no spaces allowed", 5.0)


async def test_answer_delivered_one_byte_at_a_time(issuer: Issuer) -> None:
    spec = UnitSpec(SN, ORIGINAL_PID)
    async with started(wifi_config()) as radio, build_wifi_line(issuer.ring, [spec], announce_to=None) as devices:
        device = devices[SN]
        device.trickle_s = 0.0005
        async with _static(radio, device) as link:
            info = await link.info(ANSWER)
        assert info.pid == ORIGINAL_PID
        assert link.chunks_received > 10  # the answer really came in pieces


@asynccontextmanager
async def _static(radio: WifiRadio, device: WifiDevice) -> AsyncIterator[WifiLink]:
    link = await radio._connect(device.sn, *device.address)
    try:
        yield link
    finally:
        await link.close()


async def test_static_devices_need_no_announcement(issuer: Issuer) -> None:
    async with build_wifi_line(issuer.ring, [UnitSpec(SN, ORIGINAL_PID)], announce_to=None) as devices:
        host, port = devices[SN].address
        from_config = wifi_config(static_devices=[StaticWifiDevice(sn=SN, host=host, port=port)])
        async with started(from_config) as radio, radio.connect(SN, 0.5) as link:
            assert await radio.knows(SN)
            assert (await link.info(ANSWER)).sn == SN
        async with started(wifi_config(), static_devices={SN: (host, port)}) as radio, radio.connect(SN, 0.5) as link:
            assert (await link.info(ANSWER)).sn == SN


async def test_static_device_refusing_connections_is_not_found_at_once() -> None:
    async with started(wifi_config(), static_devices={SN: ("127.0.0.1", dead_port())}) as radio:
        started_at = time.monotonic()
        with pytest.raises(DeviceNotFoundError, match="TCP connect failed") as caught:
            await radio.open(SN, 1.0)
        assert time.monotonic() - started_at < 0.5
    assert caught.value.sent is False


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again before anyone connects


def announce(radio: WifiRadio, sn: str, port: int) -> None:
    assert radio.discovery_address is not None
    ann = Announce(sn=sn, pid=ORIGINAL_PID, ip="127.0.0.1", port=port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(ann.to_bytes(), radio.discovery_address)


async def test_stale_address_waits_for_the_restarted_device(issuer: Issuer) -> None:
    async with started(wifi_config()) as radio:
        announce(radio, SN, dead_port())
        await until(lambda: radio.table.fresh(SN) is not None)
        opening = asyncio.create_task(radio.open(SN, FIND))
        await asyncio.sleep(0.05)  # the first connect is refused; the radio now waits for a new announcement
        assert not opening.done()
        async with line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)):
            link = await opening
            try:
                assert (await link.info(ANSWER)).sn == SN
            finally:
                await link.close()


async def test_announced_but_dead_device_is_not_found_naming_the_connect_failure() -> None:
    async with started(wifi_config()) as radio:
        announce(radio, SN, dead_port())
        await until(lambda: radio.table.fresh(SN) is not None)
        with pytest.raises(DeviceNotFoundError, match="TCP connect failed") as caught:
            await radio.open(SN, 0.2)
    assert caught.value.sent is False


async def test_radio_can_be_restarted(issuer: Issuer) -> None:
    radio = WifiRadio(wifi_config())
    for _ in range(2):
        await radio.start()
        try:
            async with line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)), radio.connect(SN, FIND) as link:
                assert (await link.info(ANSWER)).sn == SN
        finally:
            await radio.stop()


async def test_cancelling_an_exchange_propagates_and_closes_the_link(issuer: Issuer, gateway: SigningKey) -> None:
    lease, grant = rebadge_tokens(issuer, gateway)
    spec = UnitSpec(SN, ORIGINAL_PID, fault=Fault.SILENT_BEFORE_APPLY)
    async with started(wifi_config()) as radio, line(radio, issuer, spec) as devices, radio.connect(SN, FIND) as link:
        task = asyncio.create_task(link.rebadge(lease, grant, 5.0))
        await until(lambda: devices[SN].firmware.rebadge_requests == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wifi(link).state is ConnectionState.CLOSED


async def test_stop_closes_links_and_fails_waiters(issuer: Issuer) -> None:
    radio = WifiRadio(wifi_config())
    await radio.start()
    async with line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)):
        link = await radio.open(SN, FIND)
        waiting = asyncio.create_task(radio.open("SN-NEVER-SEEN", 5.0))
        await asyncio.sleep(0.02)
        await radio.stop()
        assert wifi(link).state is ConnectionState.CLOSED
        with pytest.raises(DeviceNotFoundError, match="stopped"):
            await waiting


async def test_oversized_request_is_refused_before_sending(issuer: Issuer) -> None:
    async with (
        started(wifi_config()) as radio,
        line(radio, issuer, UnitSpec(SN, ORIGINAL_PID)),
        radio.connect(SN, FIND) as link,
    ):
        with pytest.raises(ProtocolError) as too_big:
            await link.exchange(b"\x00" * 5000, ANSWER)
        assert too_big.value.sent is False
        assert wifi(link).state is ConnectionState.CONNECTED
        assert (await link.info(ANSWER)).sn == SN


@asynccontextmanager
async def scripted_peer(*answers: tuple[int | None, int, bytes]) -> AsyncIterator[tuple[str, int]]:
    """A bare TCP peer that answers the first request frame with these frames (seq None: the request's seq)."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            decoder = Decoder()
            frames: list[Frame] = []
            while not frames:
                frames = decoder.feed(await reader.read(4096))
            for seq, cmd, payload in answers:
                writer.write(encode(Frame(frames[0].seq if seq is None else seq, cmd, payload)))
            await writer.drain()
            await reader.read()  # until the link closes
        finally:
            writer.close()

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.create_task(serve(reader, writer)))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def exchange_with(peer: tuple[str, int]) -> bytes:
    link = WifiLink(SN, *peer)
    await link.connect()
    try:
        return await link.exchange(InfoRequest(id=1).to_cbor(), ANSWER)
    finally:
        await link.close()


async def test_device_error_frame_is_a_protocol_error() -> None:
    async with scripted_peer((None, Command.ERROR, b"unknown command")) as peer:
        with pytest.raises(ProtocolError, match="unknown command") as caught:
            await exchange_with(peer)
    assert caught.value.sent is True


async def test_stale_frames_are_skipped_until_the_answer_with_our_seq() -> None:
    async with scripted_peer((4242, Command.INFO, b"stale"), (None, Command.INFO, b"mine")) as peer:
        assert await exchange_with(peer) == b"mine"


async def test_answer_with_another_command_is_a_protocol_error() -> None:
    async with scripted_peer((None, Command.REBADGE, b"wrong")) as peer:
        with pytest.raises(ProtocolError, match="command"):
            await exchange_with(peer)


def test_registry_builds_the_wifi_radio() -> None:
    radio = create_radio(Radio.WIFI, AgentConfig(), static_devices={SN: ("127.0.0.1", 1)})
    assert isinstance(radio, WifiRadio)


# AP mode: there is no Wi-Fi here, so nmcli is a stand-in script; the command line is checked as nmcli would get it.


def test_ap_join_command_line() -> None:
    config = WifiConfig(ap_mode=True, ap_password="s3cret-key", ap_interface="wlan1", ap_join_timeout_s=12)
    assert join_command(config, SN) == [
        "nmcli", "--wait", "12", "device", "wifi", "connect", f"rebadge-{SN}",
        "password", "s3cret-key", "ifname", "wlan1",
    ]  # fmt: skip
    assert join_command(WifiConfig(ap_mode=True), SN)[-1] == f"rebadge-{SN}"


def fake_nmcli(tmp_path: Path, body: str) -> str:
    script = tmp_path / "nmcli"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return os.fspath(script)


async def test_ap_mode_joins_then_connects_to_the_ap_address(issuer: Issuer, tmp_path: Path) -> None:
    args_file = tmp_path / "args"
    nmcli = fake_nmcli(tmp_path, f'echo "$@" >> {args_file}')
    async with build_wifi_line(issuer.ring, [UnitSpec(SN, ORIGINAL_PID)], announce_to=None) as devices:
        config = WifiConfig(ap_mode=True, ap_device_address="127.0.0.1", device_port=devices[SN].port)
        async with started(config, nmcli=nmcli) as radio:
            assert radio.discovery_address is None
            first = await radio.open(SN, 2.0)
            # One access point at a time: the next open waits until this link is closed.
            second = asyncio.create_task(radio.open(SN, 2.0))
            await asyncio.sleep(0.1)
            assert not second.done()
            assert (await first.info(ANSWER)).sn == SN
            await first.close()
            link = await second
            await link.close()
    assert args_file.read_text().splitlines() == [f"--wait 30 device wifi connect rebadge-{SN}"] * 2


async def test_ap_mode_join_failure_is_not_found_with_nmcli_message(tmp_path: Path) -> None:
    nmcli = fake_nmcli(tmp_path, 'echo "Error: No network with SSID found." >&2; exit 10')
    async with started(WifiConfig(ap_mode=True), nmcli=nmcli) as radio:
        with pytest.raises(DeviceNotFoundError, match="No network with SSID") as caught:
            await radio.open(SN, 2.0)
        assert caught.value.sent is False
        assert not radio._ap_lock.locked()


async def test_ap_mode_join_that_hangs_is_bounded(tmp_path: Path) -> None:
    nmcli = fake_nmcli(tmp_path, "exec sleep 30")
    async with started(WifiConfig(ap_mode=True), nmcli=nmcli) as radio:
        started_at = time.monotonic()
        with pytest.raises(DeviceNotFoundError, match="joining its access point"):
            await radio.open(SN, 0.3)
        assert time.monotonic() - started_at < 2.5
        assert not radio._ap_lock.locked()
