"""The agent as a real process (`python -m rebadge.cli agent run`): killed with SIGKILL in the middle of a rebadge,
restarted, and refusing to start on a journal edited on disk. The platform, broker and goods are real or simulated
as in test_e2e_line; scans arrive as MQTT commands, as from a dashboard."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from agent.journal import Journal
from agent.service import load_lease_file
from rebadge.broker import PrivateBroker
from simulator.wifi import WifiDevice
from tests.e2e_support import (
    NEW_PID,
    ORIGINAL_PID,
    AgentProcess,
    Cloud,
    Gateway,
    Heard,
    is_event,
    is_health_of,
    is_record,
    listening,
    read_journal,
    run_agent_to_exit,
    running_cloud,
    running_goods,
    send_scan,
    units,
    until,
    until_async,
    write_toml,
)
from tests.helpers import Issuer
from wire.records import record_from_cbor
from wire.tokens import Grant, sign
from wire.topics import Result, ScanEvent

pytestmark = pytest.mark.slow

QUOTA = 5
# Long enough that the test always kills the agent inside the pause.
PAUSE_S = 30.0


@dataclass
class ProcessLine:
    """Cloud, gateway with a lease, one simulated device, and a listener on the gateway's topics."""

    cloud: Cloud
    gateway: Gateway
    device: WifiDevice
    heard: Heard
    client: aiomqtt.Client
    workdir: Path

    async def start_agent(self, name: str, **debug: float) -> AgentProcess:
        """Start the agent process with these [debug] pauses; return once it is connected and listening."""
        config = write_toml(self.workdir / f"{name}.toml", self.gateway.with_debug(**debug))
        agent = AgentProcess(config, self.workdir / f"{name}.log")
        await agent.start()
        try:
            await self.heard.wait_for(is_health_of(self.gateway.gw, agent.pid), f"agent {name} online")
        except AssertionError as exc:
            await agent.close()
            raise AssertionError(f"{exc}\n{agent.log_tail()}") from None
        return agent

    async def scan(self, request_id: str) -> None:
        await send_scan(self.client, self.gateway.gw, self.device.sn, request_id, self.cloud.platform.issuer)

    async def event(self, request_id: str) -> ScanEvent:
        payload = await self.heard.wait_for(is_event(self.gateway.gw, request_id), f"event of scan {request_id}")
        return ScanEvent.model_validate_json(payload)


@asynccontextmanager
async def process_line(workdir: Path, broker: PrivateBroker) -> AsyncIterator[ProcessLine]:
    spec = units(1, "KILL")
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(running_cloud(workdir, broker, quantity=QUOTA))
        gateway = Gateway.create(workdir, cloud.issuer, broker)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public))
        goods = await stack.enter_async_context(running_goods(cloud.issuer, spec, gateway.discovery_port))
        heard, client = await stack.enter_async_context(listening(broker, gateway.gw))
        yield ProcessLine(cloud, gateway, goods[spec[0].sn], heard, client, workdir)


async def assert_nothing_spent_twice(line: ProcessLine, agent: AgentProcess) -> None:
    """Once the platform acked everything: heads agree, every record is stored once, one slot spent for one SN."""
    gw, sn, path = line.gateway.gw, line.device.sn, line.gateway.journal_path

    async def acked() -> bool:
        state = await read_journal(path)
        return state.retired_seq == state.head_seq and await line.cloud.head(gw) == state.head_seq

    await until_async(acked, f"platform acks the journal head\n{agent.log_tail()}")
    assert await agent.terminate() == 0, agent.log_tail()

    async with await Journal.open(path, gw) as journal:
        head, _ = await journal.head()
        counts = await journal.counts(line.cloud.cert.cert_no)
        assert await journal.acked() == head
    assert (counts.confirmed, counts.in_doubt, counts.remaining) == (1, 0, QUOTA - 1)
    assert await line.cloud.head(gw) == head
    assert await line.cloud.rows_per_seq(gw) == dict.fromkeys(range(1, head + 1), 1)
    assert await line.cloud.confirmed_count() == 1
    assert len(await line.cloud.confirmations(sn)) == 1
    assert line.device.firmware.state.pid == NEW_PID
    assert line.device.firmware.rebadge_requests == 1  # one grant ever reached the device


async def test_agent_killed_between_reserving_and_sending_spends_the_slot_once(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    async with process_line(tmp_path, broker) as line:
        gw, sn = line.gateway.gw, line.device.sn
        agent = await line.start_agent("paused-after-reserve", pause_after_reserve_s=PAUSE_S)
        try:
            await line.scan("first")
            await line.heard.wait_for(is_record(gw, sn, "reserved"), "the reservation's record")
            await agent.kill()
            assert line.device.firmware.rebadge_requests == 0
            assert [(s, state) for s, _, state in (await read_journal(line.gateway.journal_path)).attempts] == [
                (sn, "reserved")
            ]

            agent = await line.start_agent("restarted")
            await line.scan("rescan")
            event = await line.event("rescan")
            assert event.result is Result.CONFIRMED, event
            await assert_nothing_spent_twice(line, agent)
            kinds = [r.kind for r in await line.cloud.records(gw, sn)]
            assert kinds == ["reserved", "in_doubt", "released", "reserved", "confirmed"]
        finally:
            await agent.close()


async def test_agent_killed_between_sending_and_confirming_settles_the_slot_once(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    async with process_line(tmp_path, broker) as line:
        gw, sn = line.gateway.gw, line.device.sn
        agent = await line.start_agent("paused-after-send", pause_after_send_s=PAUSE_S)
        try:
            await line.scan("first")
            await until(lambda: line.device.firmware.state.pid == NEW_PID, "the device takes the new PID")
            await agent.kill()
            assert line.device.firmware.rebadge_requests == 1
            assert [(s, state) for s, _, state in (await read_journal(line.gateway.journal_path)).attempts] == [
                (sn, "reserved")
            ]

            agent = await line.start_agent("restarted")
            await line.scan("rescan")
            event = await line.event("rescan")
            assert (event.result, event.reason) == (Result.CONFIRMED, "settled"), event
            await assert_nothing_spent_twice(line, agent)
            kinds = [r.kind for r in await line.cloud.records(gw, sn)]
            assert kinds == ["reserved", "in_doubt", "confirmed"]
        finally:
            await agent.close()


async def journal_with_records(gateway: Gateway, issuer: Issuer, sns: list[str]) -> int:
    """A journal holding a lease and a confirmed rebadge of each SN, none acked yet; return its head seq."""
    cert, cert_token = issuer.certificate()
    lease, lease_token = issuer.lease(cert, cert_token, gateway.identity.public)

    def grant_signer(sn: str) -> Callable[[str, int], bytes]:
        def sign_grant(lease_id: str, slot: int) -> bytes:
            grant = Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time()))
            return sign(grant, gateway.identity.key)

        return sign_grant

    async with await Journal.open(gateway.journal_path, gateway.gw) as journal:
        await journal.add_lease(lease, lease_token, cert, cert_token)
        for sn in sns:
            attempt = await journal.reserve(cert.cert_no, sn, ORIGINAL_PID, NEW_PID, "wifi", grant_signer(sn))
            assert attempt is not None
            await journal.confirm(attempt.id)
        return (await journal.head())[0]


def edit_record(path: Path, seq: int) -> None:
    """Change the slot of the record at `seq` in the file, as someone with the disk in hand would."""
    db = sqlite3.connect(path)
    try:
        (body,) = db.execute("SELECT body FROM records WHERE seq = ?", (seq,)).fetchone()
        record = record_from_cbor(bytes(body))
        tampered = record.model_copy(update={"slot": record.slot + 7}).to_cbor()
        db.execute("UPDATE records SET body = ? WHERE seq = ?", (tampered, seq))
        db.commit()
    finally:
        db.close()


async def test_agent_refuses_to_start_on_a_journal_row_edited_on_disk(tmp_path: Path, broker: PrivateBroker) -> None:
    issuer = Issuer()
    gateway = Gateway.create(tmp_path, issuer.key.public, broker)
    assert await journal_with_records(gateway, issuer, ["EDIT-0001", "EDIT-0002"]) == 4
    config = write_toml(tmp_path / "agent.toml", gateway.settings)
    edited_seq = 2
    edit_record(gateway.journal_path, edited_seq)

    code, stderr = await run_agent_to_exit(config)
    assert code != 0
    assert f"journal chain broken at seq {edited_seq}" in stderr, stderr
    assert "refusing to start" in stderr, stderr
    assert (await read_journal(gateway.journal_path)).head_seq == 4  # refused, not repaired
