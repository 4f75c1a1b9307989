"""Signed gateway requests and `rebadge agent release-lease`, against a real mosquitto, the real journal, uplink and
CLI, with stand-ins for the platform that verify every request with the gateway's key (the platform itself is
tested in the cloud tests)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
import pytest
from click.testing import CliRunner, Result

from agent import leases as agent_leases
from agent.certs.identity import GatewayIdentity
from agent.cli import group
from agent.config import MqttConfig
from agent.errors import LeaseRefusedError
from agent.journal import Journal
from agent.leases import request_lease
from agent.service import JOURNAL_FILE
from agent.uplink import Uplink, UplinkTiming
from rebadge.broker import PrivateBroker, free_port
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from tests.uplink_support import Platform, running
from wire import topics
from wire.keys import KeyRing
from wire.lease_request import (
    LEASE_OP,
    RELEASE_OP,
    REQUEST_WINDOW_S,
    AnswerCode,
    LeaseAnswer,
    LeaseRequest,
    Release,
    ReleaseAnswer,
)
from wire.tokens import Checkpoint, Grant, sign, verify

WAIT_S = 10.0
FAST = UplinkTiming(connect_timeout_s=5.0, mqtt_timeout_s=2.0, offline_publish_timeout_s=1.0)
LEASE_ID = "L0001"


@dataclass
class Desk:
    """Stands where the platform's worker would: verifies each signed request with the gateway's key and answers
    what the test chooses."""

    broker: PrivateBroker
    gateway: GatewayIdentity
    answer_lease: Callable[[LeaseRequest], LeaseAnswer] | None = None
    answer_release: Callable[[Release], ReleaseAnswer] | None = None
    tokens: list[bytes] = field(default_factory=list)
    leases: list[LeaseRequest] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        ring = KeyRing([self.gateway.public])
        async with aiomqtt.Client(self.broker.host, self.broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            for op in (LEASE_OP, RELEASE_OP):
                await client.subscribe(topics.request(self.gateway.gw, op), qos=1)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                self.tokens.append(message.payload)
                if message.topic.value == topics.request(self.gateway.gw, LEASE_OP):
                    request = verify(message.payload, LeaseRequest, ring)
                    self.leases.append(request)
                    assert self.answer_lease is not None
                    payload = self.answer_lease(request).to_cbor()
                    await client.publish(topics.response(self.gateway.gw, LEASE_OP), payload, qos=1)
                else:
                    release = verify(message.payload, Release, ring)
                    self.releases.append(release)
                    assert self.answer_release is not None
                    payload = self.answer_release(release).to_cbor()
                    await client.publish(topics.response(self.gateway.gw, RELEASE_OP), payload, qos=1)


@asynccontextmanager
async def at_the_desk(desk: Desk) -> AsyncIterator[Desk]:
    async with running(desk.run(), "desk"):
        async with asyncio.timeout(WAIT_S):
            await desk.ready.wait()
        yield desk


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayIdentity, Journal]]:
    identity = GatewayIdentity.load_or_create(tmp_path / "gw")
    journal = await Journal.open(tmp_path / "gw" / JOURNAL_FILE, identity.gw)
    yield identity, journal
    await journal.close()


def uplink_of(identity: GatewayIdentity, journal: Journal, broker: PrivateBroker, issuer: Issuer) -> Uplink:
    def sign_checkpoint(seq: int, head: bytes) -> bytes:
        return sign(Checkpoint(gw=identity.gw, seq=seq, head=head, at=int(time.time())), identity.key)

    config = MqttConfig(host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    return Uplink(config, identity.gw, journal, sign_checkpoint=sign_checkpoint, issuers=issuer.ring, timing=FAST)


# -- signed requests ----------------------------------------------------------------------------------------------


async def test_lease_requests_are_signed_in_the_gateways_name_with_a_fresh_nonce_and_time(
    broker: PrivateBroker, gateway: tuple[GatewayIdentity, Journal]
) -> None:
    identity, journal = gateway
    issuer = Issuer()

    def refuse(request: LeaseRequest) -> LeaseAnswer:
        code = AnswerCode.REPLAYED if len(desk.leases) == 1 else AnswerCode.FROZEN
        return LeaseAnswer(id=request.id, code=code, message="said the platform")

    desk = Desk(broker, identity, answer_lease=refuse)
    uplink = uplink_of(identity, journal, broker, issuer)
    async with running(uplink.run(), "uplink"), at_the_desk(desk):
        await uplink.wait_connected(WAIT_S)
        refusals = []
        for _ in range(2):
            with pytest.raises(LeaseRefusedError) as refused:
                await request_lease(uplink, journal, identity, issuer.ring, "RC000001", 5, valid_s=None, timeout=2.0)
            refusals.append(refused.value)
    first, second = desk.leases
    assert (first.gw, first.cert_no, first.slots) == (identity.gw, "RC000001", 5)
    assert first.nonce != second.nonce
    assert first.id != second.id
    assert all(abs(r.at - time.time()) < REQUEST_WINDOW_S for r in desk.leases)
    with pytest.raises(Exception, match="unknown key"):
        verify(desk.tokens[0], LeaseRequest, issuer.ring)  # signed by the gateway key, nothing else
    assert [r.reason for r in refusals] == ["replayed", "frozen"]
    assert "check the gateway's clock (NTP), then ask again" in str(refusals[0])
    assert "its journal was restored from a backup; ask a platform admin to reinstate the gateway" in str(refusals[1])
    assert await journal.leases(active_only=False) == []


# -- release-lease, through the CLI -------------------------------------------------------------------------------


async def prepared(state_dir: Path, issuer: Issuer, *, confirmed: int, in_doubt: int = 0) -> GatewayIdentity:
    """A gateway with one lease of 5 slots: `confirmed` units confirmed, `in_doubt` left in doubt."""
    identity = GatewayIdentity.load_or_create(state_dir)
    cert, cert_token = issuer.certificate(5)
    lease, lease_token = issuer.lease(cert, cert_token, identity.public, lease_id=LEASE_ID)
    async with await Journal.open(state_dir / JOURNAL_FILE, identity.gw) as journal:
        await journal.add_lease(lease, lease_token, cert, cert_token)
        for i in range(confirmed + in_doubt):
            sn = f"SN{i:06d}"

            def sign_grant(lease_id: str, slot: int, sn: str = sn) -> bytes:
                return sign(
                    Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time())), identity.key
                )

            attempt = await journal.reserve(cert.cert_no, sn, ORIGINAL_PID, NEW_PID, "wifi", sign_grant)
            assert attempt is not None
            if i < confirmed:
                await journal.confirm(attempt.id)
            else:
                await journal.mark_in_doubt(attempt.id, "no answer")
    return identity


def config_file(path: Path, state_dir: Path, issuer: Issuer, broker: PrivateBroker | None) -> Path:
    """The agent's config; without a broker, a port where nothing listens."""
    host, port = (broker.host, broker.port) if broker is not None else ("127.0.0.1", free_port())
    mqtt = f'host = "{host}"\nport = {port}\n'
    path.write_text(
        f'[gateway]\nstate_dir = "{state_dir}"\n[trust]\nissuer_keys = ["{issuer.key.public.raw.hex()}"]\n'
        f"[mqtt]\n{mqtt}[lease]\nrequest_timeout_s = 5.0\n"
    )
    return path


async def cli(*args: str) -> Result:
    # The command runs its own event loop, so it runs in a thread while this loop serves the stand-ins.
    return await asyncio.to_thread(CliRunner().invoke, group, list(args))


async def closed_seq(state_dir: Path, identity: GatewayIdentity) -> int | None:
    async with await Journal.open(state_dir / JOURNAL_FILE, identity.gw) as journal:
        (lease,) = await journal.leases(active_only=False)
        return lease.closed_seq


async def test_release_lease_closes_sends_the_records_and_a_signed_release(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    issuer, state_dir = Issuer(), tmp_path / "gw"
    identity = await prepared(state_dir, issuer, confirmed=2)
    config = config_file(tmp_path / "agent.toml", state_dir, issuer, broker)
    platform = Platform(broker.host, broker.port, identity.gw, KeyRing([identity.public]), issuer.key)

    def answer(release: Release) -> ReleaseAnswer:
        if platform.head_seq < release.seq:
            return ReleaseAnswer(id=release.id, code=AnswerCode.PENDING, message="send the records first")
        return ReleaseAnswer(id=release.id, code=AnswerCode.OK, message="3 slots returned", returned=3)

    desk = Desk(broker, identity, answer_release=answer)
    async with running(platform.run(), "platform"), at_the_desk(desk):
        await platform.subscribed.wait()
        released = await cli("release-lease", "-c", str(config), LEASE_ID, "--reason", "line moved")
        again = await cli("release-lease", "-c", str(config), LEASE_ID)
    assert released.exit_code == 0, released.output
    assert f"lease {LEASE_ID} closed at seq 5 (line moved); no slot of it is spent any more" in released.output
    assert f"the platform took back 3 unused slots of lease {LEASE_ID}" in released.output
    assert again.exit_code == 0, again.output
    assert f"lease {LEASE_ID} was closed already at seq 5 (line moved)" in again.output
    assert [(r.lease_id, r.seq, r.gw) for r in desk.releases] == [(LEASE_ID, 5, identity.gw)] * 2
    assert desk.releases[0].nonce != desk.releases[1].nonce
    assert platform.head_seq == 5  # the closed record went out with the others, before the release
    assert platform.errors == []
    assert await closed_seq(state_dir, identity) == 5


async def test_release_lease_answered_pending_says_what_to_do(tmp_path: Path, broker: PrivateBroker) -> None:
    issuer, state_dir = Issuer(), tmp_path / "gw"
    identity = await prepared(state_dir, issuer, confirmed=1)
    config = config_file(tmp_path / "agent.toml", state_dir, issuer, broker)

    def pending(release: Release) -> ReleaseAnswer:
        return ReleaseAnswer(id=release.id, code=AnswerCode.PENDING, message="journal not stored yet")

    async with at_the_desk(Desk(broker, identity, answer_release=pending)):  # nobody acks the records
        result = await cli("release-lease", "-c", str(config), LEASE_ID)
    assert result.exit_code == 0, result.output
    assert "pending: the platform has not yet stored this gateway's journal up to seq 3" in result.output
    assert f"start the agent (it sends the records), then run 'rebadge agent release-lease {LEASE_ID}' again" in (
        result.output
    )


async def test_release_lease_refuses_open_attempts_unless_forced_and_works_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_leases, "CLI_CONNECT_TIMEOUT_S", 0.5)
    issuer, state_dir = Issuer(), tmp_path / "gw"
    identity = await prepared(state_dir, issuer, confirmed=1, in_doubt=1)
    config = config_file(tmp_path / "agent.toml", state_dir, issuer, None)
    refused = await cli("release-lease", "-c", str(config), LEASE_ID)
    assert refused.exit_code == 1
    assert f"lease {LEASE_ID} not released: lease {LEASE_ID} has attempts whose outcome is not known: SN000001" in (
        refused.output
    )
    assert "scan those units again to settle them, or close with --force" in refused.output
    assert await closed_seq(state_dir, identity) is None
    forced = await cli("release-lease", "-c", str(config), LEASE_ID, "--force")
    assert forced.exit_code == 0, forced.output
    assert "left in doubt for good: SN000001 (slot 1); its slot counts as spent" in forced.output
    assert "the MQTT broker is not reachable: the close stays in the journal" in forced.output
    assert await closed_seq(state_dir, identity) == 5


async def test_status_reports_the_freeze_and_closed_leases(tmp_path: Path) -> None:
    issuer, state_dir = Issuer(), tmp_path / "gw"
    identity = await prepared(state_dir, issuer, confirmed=1)
    async with await Journal.open(state_dir / JOURNAL_FILE, identity.gw) as journal:
        await journal.close_lease(LEASE_ID, "line moved")
        await journal.apply_ack(9, bytes(32), int(time.time()))  # the platform holds more of our chain than we do
    config = config_file(tmp_path / "agent.toml", state_dir, issuer, None)
    result = await cli("status", "-c", str(config))
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["frozen"]["ack_seq"] == 9
    assert status["frozen"]["message"].startswith(
        "this gateway's journal was restored from a backup; the platform has frozen it"
    )
    assert [(lease["lease_id"], lease["closed_seq"]) for lease in status["leases"]] == [(LEASE_ID, 3)]
