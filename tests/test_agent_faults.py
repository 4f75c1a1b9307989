"""The whole agent (real journal, real mosquitto, simulated goods) under faults that are not the unit's: a Zigbee
coordinator that fails at start, the discovery port already taken, a journal error and a driver bug mid-scan. The
gateway runs on, says so in its health, and the next scan works."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.config import WifiConfig, ZigbeeConfig
from agent.errors import RadioStartError
from agent.radios.base import Radio, RadioState
from agent.radios.wifi.link import WifiLink
from agent.radios.wifi.radio import WifiRadio
from agent.radios.zigbee.radio import ZigbeeRadio
from agent.service import load_lease_file
from mqtt_link import ReconnectPolicy
from rebadge.broker import PrivateBroker
from simulator.zigbee import SIMULATED_NETWORK_KEY, ZigbeeUnit, build_zigbee_line
from tests.e2e_support import (
    REPO,
    STOP_S,
    Gateway,
    Heard,
    RunningAgent,
    agent_command,
    is_event,
    listening,
    running_agent,
    running_goods,
    send_scan,
    units,
    write_toml,
)
from tests.helpers import ORIGINAL_PID, Issuer
from wire import topics
from wire.refusals import OutcomeReason, RefusalReason
from wire.topics import Result, ScanEvent

# Shrunk from the defaults so a coordinator's frames time out fast.
ZIGBEE = ZigbeeConfig(permit_join_s=30, frame_timeout_s=0.3)
# A radio retried in these tests comes back within this.
FAST_RETRY = ReconnectPolicy(0.05, 0.1)
WAIT_S = 15.0


class DriverWithABug(WifiRadio):
    """The real Wi-Fi driver with a bug that fires once, on one SN (what a driver exception looks like)."""

    def __init__(self, config: WifiConfig, bug_sn: str) -> None:
        super().__init__(config)
        self.bug_sn = bug_sn
        self.fired = False

    async def open(self, sn: str, timeout: float) -> WifiLink:
        if sn == self.bug_sn and not self.fired:
            self.fired = True
            raise KeyError(f"driver bug: no route entry for {sn}")
        return await super().open(sn, timeout)


@dataclass
class Bench:
    agent: RunningAgent
    gateway: Gateway
    heard: Heard
    client: Any

    async def health(self, holds: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The first retained health the gateway published for which `holds` is true."""

        def find(topic: str, payload: bytes) -> bool:
            return topic == topics.health(self.gateway.gw) and holds(json.loads(payload))

        return dict(json.loads(await self.heard.wait_for(find, what, WAIT_S)))


@asynccontextmanager
async def bench(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer, make_radios: Callable[[Gateway], list[Radio]], n: int = 3,
    **debug: float,
) -> AsyncIterator[Bench]:  # fmt: skip
    """A gateway with a lease of 10 slots, `n` Wi-Fi goods announcing to it, the agent running with `make_radios`."""
    gateway = Gateway.create(tmp_path, issuer.key.public, broker, mqtt=None, **debug)
    await load_lease_file(gateway.config, issuer.bundle(gateway.identity.public, quantity=10))
    async with AsyncExitStack() as stack:
        heard, client = await stack.enter_async_context(listening(broker, gateway.gw))
        await stack.enter_async_context(running_goods(issuer.key.public, units(n), gateway.discovery_port))
        agent = await stack.enter_async_context(running_agent(gateway.config, make_radios(gateway)))
        yield Bench(agent, gateway, heard, client)


@pytest.fixture
def issuer() -> Issuer:
    return Issuer()


async def test_a_zigbee_coordinator_that_fails_at_start_leaves_the_wifi_line_rebadging(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer
) -> None:
    zigbee = build_zigbee_line([], issuer.ring)
    broken = {**zigbee.app_config, SIMULATED_NETWORK_KEY: "not a network"}

    def radios(gateway: Gateway) -> list[Radio]:
        coordinator = ZigbeeRadio(ZIGBEE, state_dir=gateway.state_dir, app_class=zigbee.app_class, app_config=broken)
        return [WifiRadio(gateway.config.wifi), coordinator]

    async with bench(tmp_path, broker, issuer, radios) as b:
        event = await b.agent.scan("E2E-0001")
        assert event.result is Result.CONFIRMED, event.message
        assert event.radio == "wifi"
        health = await b.health(lambda h: h["radios"]["zigbee"]["state"] != "starting", "zigbee's state in health")
        assert health["radios"]["wifi"] == {"state": "running", "error": ""}
        assert health["radios"]["zigbee"]["state"] == "retrying"  # a coordinator may come back: tried again
        assert "did not start" in health["radios"]["zigbee"]["error"]
        # A unit no running radio finds says which radio is off and why.
        missing = await b.agent.scan("ZB-0404")
        assert missing.reason is RefusalReason.NOT_FOUND
        assert "zigbee: off (retrying: zigbee: the" in missing.message


async def test_the_discovery_port_in_use_is_a_plain_message_and_zigbee_runs(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    zigbee = build_zigbee_line([ZigbeeUnit("ZB-0001", ORIGINAL_PID)], issuer.ring)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:

        def radios(gateway: Gateway) -> list[Radio]:
            squatter.bind(("127.0.0.1", gateway.discovery_port))  # another program holds the port
            coordinator = ZigbeeRadio(ZIGBEE, state_dir=gateway.state_dir, **zigbee.radio_kwargs())
            return [WifiRadio(gateway.config.wifi), coordinator]

        async with bench(tmp_path, broker, issuer, radios, n=0) as b:
            event = await b.agent.scan("ZB-0001")
            assert event.result is Result.CONFIRMED, event.message
            assert event.radio == "zigbee"
            health = await b.health(lambda h: h["radios"]["wifi"]["state"] == "retrying", "wifi retrying")
            assert health["radios"]["zigbee"]["state"] == "running"
            port = b.gateway.discovery_port
    finally:
        squatter.close()
    said = [r for r in caplog.records if "wifi.discovery_port" in r.getMessage()]
    assert said, "the message names the setting"
    text = said[0].getMessage()
    assert f"UDP port {port} (wifi.discovery_port) is in use" in text
    assert "set wifi.discovery_port" in text
    assert all(r.exc_info is None for r in said)  # a message, not a traceback
    assert "Traceback" not in caplog.text


async def test_a_radio_whose_port_frees_up_comes_back_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.radios.base")
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 0))
    radio = WifiRadio(WifiConfig(bind_address="127.0.0.1", discovery_port=squatter.getsockname()[1]))
    with pytest.raises(RadioStartError) as err:
        await radio.start()
    assert not err.value.permanent
    assert radio.state is RadioState.RETRYING
    keeper = asyncio.create_task(radio.keep_started(FAST_RETRY))
    await asyncio.sleep(0.3)
    assert not keeper.done()  # still trying while the port is held
    squatter.close()
    async with asyncio.timeout(WAIT_S):
        await keeper
    assert radio.health() == {"state": "running", "error": ""}
    retries = [r for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) >= 2
    assert [r.levelno for r in retries].count(logging.WARNING) == 1  # one warning per cause, not per retry
    await radio.stop()
    assert radio.health()["state"] == "stopped"


async def test_a_permanent_start_failure_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    radio = WifiRadio(WifiConfig(bind_address="192.0.2.1"))  # TEST-NET: no address of this machine
    async with asyncio.timeout(WAIT_S):
        await radio.keep_started(FAST_RETRY)  # returns: failed for good, nothing raised
    assert radio.state is RadioState.FAILED
    assert "wifi.bind_address '192.0.2.1' is not an address of this machine" in radio.last_error
    assert sum("stays off" in r.getMessage() for r in caplog.records) == 1


async def test_a_journal_error_and_a_driver_bug_mid_scan_leave_the_agent_running(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    def radios(gateway: Gateway) -> list[Radio]:
        return [DriverWithABug(gateway.config.wifi, bug_sn="E2E-0002")]

    async with bench(tmp_path, broker, issuer, radios) as b:
        task = asyncio.current_task()
        assert task is not None
        # Another program holds the journal's write lock (as a backup tool or sqlite3 shell can): the reservation
        # fails after SQLite's busy timeout.
        holder = sqlite3.connect(b.gateway.journal_path, timeout=0, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            fault = await b.agent.scan("E2E-0001")
        finally:
            holder.close()
        assert fault.result is Result.REFUSED
        assert fault.reason is RefusalReason.GATEWAY_FAULT
        assert "database is locked" in fault.message
        health = await b.health(lambda h: (h.get("scans") or {}).get("faults") == 1, "the journal fault in health")
        assert health["scans"]["last_fault"]["sn"] == "E2E-0001"
        assert "JournalError" in health["scans"]["last_fault"]["error"]

        again = await b.agent.scan("E2E-0001")  # the lock is gone: the same unit rebadges, nothing was spent
        assert again.result is Result.CONFIRMED, again.message
        assert again.slot == 0

        # A driver bug on an MQTT scan: answered on the broker with the command's id, the agent runs on.
        await send_scan(b.client, b.gateway.gw, "E2E-0002", "req-bug", issuer.key)
        payload = await b.heard.wait_for(is_event(b.gateway.gw, "req-bug"), "the fault event", WAIT_S)
        bug = ScanEvent.model_validate_json(payload)
        assert bug.reason is RefusalReason.GATEWAY_FAULT
        assert "KeyError" in bug.message
        health = await b.health(lambda h: h["scans"]["faults"] == 2, "the driver fault in health")
        assert health["scans"]["last_fault"]["source"] == "mqtt"
        await send_scan(b.client, b.gateway.gw, "E2E-0002", "req-again", issuer.key)
        payload = await b.heard.wait_for(is_event(b.gateway.gw, "req-again"), "the next event", WAIT_S)
        assert ScanEvent.model_validate_json(payload).result is Result.CONFIRMED
        assert (await b.agent.scan("E2E-0003")).result is Result.CONFIRMED
        counts = await b.agent.counts("RC000001")
        assert (counts.confirmed, counts.in_doubt) == (3, 0)
    driver_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "E2E-0002" in r.getMessage()]
    assert driver_logs
    assert driver_logs[0].exc_info is not None  # a bug keeps its traceback in the log
    journal_logs = [r for r in caplog.records if r.levelno == logging.ERROR and "E2E-0001" in r.getMessage()]
    assert journal_logs
    assert journal_logs[0].exc_info is None  # the agent's own error says enough


@pytest.mark.slow
async def test_the_agent_process_starts_with_plain_messages_for_a_taken_port_and_no_terminal(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer
) -> None:
    gateway = Gateway.create(tmp_path, issuer.key.public, broker)
    gateway.settings["scanner"]["keyboard"] = True
    config = write_toml(tmp_path / "agent.toml", gateway.settings)
    log_file = tmp_path / "agent.log"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", gateway.discovery_port))
        async with listening(broker, gateway.gw) as (heard, _):
            with log_file.open("wb") as out:
                proc = await asyncio.create_subprocess_exec(
                    *agent_command(config), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, cwd=REPO,
                    env={k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")},
                )  # fmt: skip
            try:

                def running_without_wifi(topic: str, payload: bytes) -> bool:
                    if topic != topics.health(gateway.gw):
                        return False
                    health = json.loads(payload)
                    return bool(health.get("pid") == proc.pid and health["radios"]["wifi"]["state"] == "retrying")

                await heard.wait_for(running_without_wifi, "the agent's health with wifi retrying", WAIT_S)
            finally:
                if proc.returncode is None:
                    proc.terminate()
                async with asyncio.timeout(STOP_S):
                    code = await proc.wait()
    text = log_file.read_text(errors="replace")
    assert code == 0, text
    assert "Traceback" not in text, text
    assert f"UDP port {gateway.discovery_port} (wifi.discovery_port) is in use" in text, text
    assert "not a terminal" in text, text
    assert "ready" in text, text


async def test_a_journal_error_after_the_reservation_is_settled_by_the_next_scan(
    tmp_path: Path, broker: PrivateBroker, issuer: Issuer
) -> None:
    def radios(gateway: Gateway) -> list[Radio]:
        return [WifiRadio(gateway.config.wifi)]

    async with bench(tmp_path, broker, issuer, radios, n=1, pause_after_reserve_s=0.5) as b:
        scan = asyncio.create_task(b.agent.scan("E2E-0001"))
        async with asyncio.timeout(WAIT_S):  # the slot is reserved (the pause follows the reservation's commit)
            while (await b.agent.counts("RC000001")).remaining == 10:  # noqa: ASYNC110 - the journal has no event
                await asyncio.sleep(0.02)
        holder = sqlite3.connect(b.gateway.journal_path, timeout=0, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # the grant goes out; its confirmation cannot be written
            fault = await scan
        finally:
            holder.close()
        assert fault.reason is RefusalReason.GATEWAY_FAULT
        assert "settled then" in fault.message
        assert (await b.agent.counts("RC000001")).remaining == 9  # the slot is held, not lost or spent twice

        settled = await b.agent.scan("E2E-0001")  # the unit reads back our receipt: the same slot, confirmed
        assert (settled.result, settled.reason, settled.slot) == (Result.CONFIRMED, OutcomeReason.SETTLED, 0)
        counts = await b.agent.counts("RC000001")
        assert (counts.confirmed, counts.in_doubt, counts.remaining) == (1, 0, 9)
