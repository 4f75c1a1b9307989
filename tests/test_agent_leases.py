"""Lease requests over MQTT against a real mosquitto, the real platform and its worker, the real journal and uplink:
a lease at start, top-up at low water, one request at a time, no_slots and silence retried with backoff, forged or
mismatched answers refused, answers nobody asked for ignored, the agent service asking by itself, and the CLI."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from click.testing import CliRunner, Result
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease
from agent.cli import group
from agent.config import LeaseConfig, MqttConfig
from agent.errors import LeaseError, LeaseRefusedError, RequestTimeoutError
from agent.journal import Attempt, Journal
from agent.leases import LeaseKeeper, TopUp, request_lease
from agent.service import JOURNAL_FILE
from agent.uplink import Uplink, UplinkTiming
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.leases import LeasePolicy
from cloud_bridge.platform import Platform
from cloud_bridge.worker import IngestWorker
from rebadge.broker import PrivateBroker
from tests.e2e_support import Gateway, running_agent, running_cloud
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from tests.uplink_support import eventually, running
from wire import topics
from wire.keys import KeyRing, SigningKey
from wire.lease_request import LEASE_OP, AnswerCode, LeaseAnswer, LeaseRequest
from wire.tokens import Checkpoint, Grant, LeaseBundle, sign, verify

WAIT_S = 10.0
POLL_S = 0.01
AUDITOR = Actor(Role.AUDITOR, None, name="audit-1")
FAST = UplinkTiming(connect_timeout_s=5.0, mqtt_timeout_s=2.0, offline_publish_timeout_s=1.0)
KEEPER = {
    "low_water": 2, "request_slots": 4, "request_timeout_s": 2.0, "retry_min_s": 0.05, "retry_max_s": 0.2,
    "check_interval_s": 5.0,
}  # fmt: skip


class Clock:
    """The platform's clock: real time plus a skew the test moves forward."""

    def __init__(self) -> None:
        self.skew = 0.0

    def __call__(self) -> float:
        return time.time() + self.skew


async def until(check: Callable[[], Awaitable[bool]], timeout: float = WAIT_S) -> None:
    """Poll an async condition (journal state owned by other tasks)."""
    async with asyncio.timeout(timeout):
        while not await check():  # noqa: ASYNC110 - the journal has no event to wait on
            await asyncio.sleep(POLL_S)


@dataclass
class Rig:
    """A registered gateway with its journal and running uplink, and the platform with one approved certificate."""

    platform: Platform
    broker: PrivateBroker
    identity: GatewayIdentity
    journal: Journal
    uplink: Uplink
    cert_no: str
    scans: int = 0

    @property
    def issuers(self) -> KeyRing:
        return KeyRing([self.platform.issuer.public])

    def keeper(self, on_lease: Callable[[CheckedLease], None] | None = None, **lease: Any) -> LeaseKeeper:
        config = LeaseConfig(cert_no=self.cert_no, **{**KEEPER, **lease})
        return LeaseKeeper(
            config, config.cert_no, self.journal, self.uplink, self.identity, self.issuers, on_lease=on_lease
        )

    async def ask(self, slots: int = 4, timeout: float = 2.0) -> CheckedLease:
        return await request_lease(
            self.uplink, self.journal, self.identity, self.issuers, self.cert_no, slots,
            valid_s=None, timeout=timeout,
        )  # fmt: skip

    async def spend(self, n: int) -> list[Attempt]:
        """Reserve and confirm `n` new SNs, as the line does."""
        spent = []
        for _ in range(n):
            sn = f"SN{self.scans:06d}"
            self.scans += 1

            def sign_grant(lease_id: str, slot: int, sn: str = sn) -> bytes:
                grant = Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time()))
                return sign(grant, self.identity.key)

            attempt = await self.journal.reserve(self.cert_no, sn, ORIGINAL_PID, NEW_PID, "wifi", sign_grant)
            assert attempt is not None, f"no free slot for {sn}"
            spent.append(await self.journal.confirm(attempt.id))
        return spent

    async def remaining(self) -> int:
        return (await self.journal.counts(self.cert_no)).remaining

    async def lease_ranges(self) -> list[tuple[int, int]]:
        return [(lease.slot_lo, lease.slot_hi) for lease in await self.journal.leases(active_only=False)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def platform(tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    policy = LeasePolicy(max_slots=50, valid_s=3600)
    p = await Platform.open(tmp_path / "cloud", clock=clock, policy=policy)
    yield p
    await p.close()


async def make_rig(
    platform: Platform, broker: PrivateBroker, state_dir: Path, quantity: int, protocol: str = "auto"
) -> Rig:
    cert, _ = await platform.issue_certificate(
        factory="F1", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=quantity
    )
    identity = GatewayIdentity.load_or_create(state_dir)
    await platform.register_gateway(identity.public, "line 1", factory="F1")
    journal = await Journal.open(state_dir / JOURNAL_FILE, identity.gw)

    def sign_checkpoint(seq: int, head: bytes) -> bytes:
        return sign(Checkpoint(gw=identity.gw, seq=seq, head=head, at=int(time.time())), identity.key)

    config = MqttConfig.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.2,
            "protocol": protocol,
        }
    )
    uplink = Uplink(
        config, identity.gw, journal, sign_checkpoint=sign_checkpoint,
        issuers=KeyRing([platform.issuer.public]), timing=FAST,
    )  # fmt: skip
    return Rig(platform, broker, identity, journal, uplink, cert.cert_no)


@asynccontextmanager
async def rig_of(
    platform: Platform, broker: PrivateBroker, state_dir: Path, quantity: int = 20, protocol: str = "auto"
) -> AsyncIterator[Rig]:
    rig = await make_rig(platform, broker, state_dir, quantity, protocol)
    try:
        async with running(rig.uplink.run(), "uplink"):
            await rig.uplink.wait_connected(WAIT_S)
            yield rig
    finally:
        await rig.journal.close()


@pytest.fixture
async def rig(platform: Platform, broker: PrivateBroker, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig_of(platform, broker, tmp_path / "gw") as r:
        yield r


@asynccontextmanager
async def worker_on(platform: Platform, broker: PrivateBroker) -> AsyncIterator[IngestWorker]:
    worker = IngestWorker(platform, host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
    async with running(worker.run(), "worker"):
        async with asyncio.timeout(WAIT_S):
            await worker.ready.wait()
        yield worker


AnswerFor = Callable[[LeaseRequest], list[bytes]]


@dataclass
class Responder:
    """Stands where the platform's worker would: answers each lease request with what the test chooses."""

    broker: PrivateBroker
    gateway: GatewayIdentity
    answer: AnswerFor
    echo_correlation: bool = False
    requests: list[LeaseRequest] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        async with aiomqtt.Client(self.broker.host, self.broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe(topics.request(self.gateway.gw, LEASE_OP), qos=1)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                # The request is a token signed by the gateway key, in its own name.
                request = verify(message.payload, LeaseRequest, KeyRing([self.gateway.public]))
                assert request.gw == self.gateway.gw
                self.requests.append(request)
                props = None
                if self.echo_correlation and message.properties is not None:
                    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                    props.CorrelationData = getattr(message.properties, "CorrelationData", None)
                for payload in self.answer(request):
                    await client.publish(topics.response(self.gateway.gw, LEASE_OP), payload, qos=1, properties=props)


@asynccontextmanager
async def responding(rig: Rig, answer: AnswerFor, *, echo_correlation: bool = False) -> AsyncIterator[Responder]:
    responder = Responder(rig.broker, rig.identity, answer, echo_correlation)
    async with running(responder.run(), "responder"):
        async with asyncio.timeout(WAIT_S):
            await responder.ready.wait()
        yield responder


def ok(request_id: str, bundle: bytes) -> bytes:
    return LeaseAnswer(id=request_id, code=AnswerCode.OK, message="here", bundle=bundle).to_cbor()


# -- with the real platform -------------------------------------------------------------------------------------


async def test_keeper_gets_a_lease_at_start_and_the_line_can_reserve(platform: Platform, rig: Rig) -> None:
    keeper = rig.keeper()
    async with worker_on(platform, rig.broker), running(keeper.run(), "keeper"):
        await until(lambda: _has_lease(rig))
        spent = await rig.spend(1)
    assert await rig.lease_ranges() == [(0, 4)]
    assert (spent[0].slot, spent[0].cert_no) == (0, rig.cert_no)
    assert await rig.remaining() == 3
    assert keeper.requests == 1


async def _has_lease(rig: Rig) -> bool:
    return bool(await rig.journal.leases(rig.cert_no))


async def test_keeper_tops_up_when_remaining_reaches_low_water(platform: Platform, rig: Rig) -> None:
    told: list[str] = []
    keeper = rig.keeper(lambda checked: told.append(checked.lease.lease_id), low_water=2, request_slots=4)
    async with worker_on(platform, rig.broker), running(keeper.run(), "keeper"):
        await until(lambda: _has_lease(rig))
        await rig.spend(1)
        keeper.wake()
        assert await keeper.top_up() is TopUp.NOT_NEEDED  # 3 left, above low water
        await rig.spend(1)
        keeper.wake()  # 2 left: at low water
        await until(lambda: _lease_count(rig, 2))
        after = await rig.spend(3)
    assert await rig.lease_ranges() == [(0, 4), (4, 8)]
    assert [a.slot for a in after] == [2, 3, 4]
    assert after[-1].lease_id != after[0].lease_id  # the reservation moved on into the new lease
    assert await rig.remaining() == 3
    assert keeper.requests == 2
    assert told == [lease.lease_id for lease in await rig.journal.leases(rig.cert_no)]


async def _lease_count(rig: Rig, n: int) -> bool:
    return len(await rig.journal.leases(rig.cert_no)) >= n


async def test_two_top_ups_at_once_send_one_request(platform: Platform, rig: Rig) -> None:
    keeper = rig.keeper(low_water=2, request_slots=4)
    async with worker_on(platform, rig.broker):
        outcomes = await asyncio.gather(keeper.top_up(), keeper.top_up(), keeper.top_up())
    assert sorted(outcomes) == sorted([TopUp.OBTAINED, TopUp.NOT_NEEDED, TopUp.NOT_NEEDED])
    assert keeper.requests == 1
    assert await rig.lease_ranges() == [(0, 4)]


async def test_keeper_stops_asking_when_it_holds_every_slot(
    platform: Platform, broker: PrivateBroker, tmp_path: Path
) -> None:
    async with rig_of(platform, broker, tmp_path / "gw", quantity=6) as rig:
        keeper = rig.keeper(low_water=10, request_slots=4)
        async with worker_on(platform, broker):
            assert await keeper.top_up() is TopUp.OBTAINED
            assert await keeper.slots_wanted(rig.cert_no) == 2  # only 2 slots lie outside this gateway's lease
            assert await keeper.top_up() is TopUp.OBTAINED
            assert await keeper.top_up() is TopUp.NOT_NEEDED  # all 6 are ours: asking would only earn no_slots
        assert await rig.lease_ranges() == [(0, 4), (4, 6)]
        assert keeper.requests == 2


async def test_no_slots_is_logged_stores_nothing_and_is_retried(
    platform: Platform, broker: PrivateBroker, tmp_path: Path, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.leases")
    async with rig_of(platform, broker, tmp_path / "gw", quantity=4) as rig:
        other, _, _ = await platform.issue_lease(rig.cert_no, SigningKey.generate().public, 4, valid_s=60)
        keeper = rig.keeper()  # another line has every slot
        async with worker_on(platform, broker), running(keeper.run(), "keeper"):
            await eventually(lambda: keeper.requests >= 3)
            assert await rig.lease_ranges() == []
            clock.skew += 120  # the other line's lease expires: that alone returns nothing
            await eventually(lambda: keeper.requests >= 4)
            assert await rig.lease_ranges() == []
            # The other line never comes back: an auditor writes its lease off, and its unspent slots return.
            assert await platform.write_off_lease(AUDITOR, other.lease_id, "line 2 scrapped") == 4
            await until(lambda: _has_lease(rig))
        assert await rig.lease_ranges() == [(0, 4)]
    refusals = [r.getMessage() for r in caplog.records if "no_slots" in r.getMessage()]
    assert refusals
    assert f"the platform answered no_slots to a request for 4 slots of certificate {rig.cert_no}" in refusals[0]
    assert "apply for a certificate with a larger quantity" in refusals[0]
    assert any("asking for slots again in" in r.getMessage() for r in caplog.records)


async def test_silence_is_retried_until_the_platform_answers(
    platform: Platform, rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.leases")
    keeper = rig.keeper(request_timeout_s=0.2)
    async with running(keeper.run(), "keeper"):
        await eventually(lambda: keeper.requests >= 2)  # nobody answers: timeouts, then asked again
        assert await rig.lease_ranges() == []
        async with worker_on(platform, rig.broker):
            await until(lambda: _has_lease(rig))
    assert any("no answer to lease request" in r.getMessage() for r in caplog.records)
    assert await rig.lease_ranges() == [(0, 4)]


async def test_refusals_name_the_code(platform: Platform, rig: Rig) -> None:
    async with worker_on(platform, rig.broker):
        rig.cert_no = "RC999999"
        with pytest.raises(LeaseRefusedError) as missing:
            await rig.ask()
        assert missing.value.reason == "not_found"
        assert "check the certificate number" in str(missing.value)
        await platform.revoke_gateway(rig.identity.gw)
        with pytest.raises(LeaseRefusedError) as revoked:
            await rig.ask()
        assert revoked.value.reason == "refused"
    assert await rig.lease_ranges() == []


# -- answers the test writes ------------------------------------------------------------------------------------


def flip_last_bit(token: bytes) -> bytes:
    """The token with one signature bit flipped (overwriting a byte with a fixed value misses 1 time in 256)."""
    return token[:-1] + bytes([token[-1] ^ 1])


def forged_bundles(rig: Rig) -> dict[str, bytes]:
    """Answers that must all be refused, by the reason the agent gives."""
    issuer = Issuer(rig.platform.issuer)
    cert, cert_token = issuer.certificate(20, cert_no=rig.cert_no)
    gateway = rig.identity.public

    def bundle(lease_token: bytes, certificate: bytes = cert_token) -> bytes:
        return LeaseBundle(lease=lease_token, certificate=certificate).to_cbor()

    stranger = Issuer()
    other_cert, other_token = issuer.certificate(20, cert_no=rig.cert_no, new_pid="other001")
    return {
        "unknown_key": bundle(stranger.lease(cert, cert_token, gateway, 0, 4)[1]),
        "bad_signature": bundle(flip_last_bit(issuer.lease(cert, cert_token, gateway, 0, 4)[1])),
        "wrong_gateway": bundle(issuer.lease(cert, cert_token, SigningKey.generate().public, 0, 4)[1]),
        "certificate_mismatch": bundle(issuer.lease(other_cert, other_token, gateway, 0, 4)[1]),
        "expired": bundle(issuer.lease(cert, cert_token, gateway, 0, 4, exp=int(time.time()) - 1)[1]),
        "malformed": b"\xa1\x61x\x01",
    }


async def test_forged_or_mismatched_leases_are_refused_and_nothing_is_stored(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    forged = forged_bundles(rig)
    reason_now = ""
    async with responding(rig, lambda request: [ok(request.id, forged[reason_now])]):
        for reason in forged:
            reason_now = reason
            with pytest.raises(LeaseError) as refused:
                await rig.ask()
            assert refused.value.reason == reason, refused.value
            assert not isinstance(refused.value, LeaseRefusedError)
        reason_now = "wrong_gateway"
        keeper = rig.keeper()
        assert await keeper.top_up() is TopUp.FAILED  # the keeper logs it and lives on
    assert await rig.lease_ranges() == []
    assert any(
        r.levelno == logging.ERROR and "refused the lease the platform sent (wrong_gateway)" in r.getMessage()
        for r in caplog.records
    )


async def test_answers_nobody_asked_for_are_ignored(rig: Rig) -> None:
    issuer = Issuer(rig.platform.issuer)
    cert, cert_token = issuer.certificate(20, cert_no=rig.cert_no)

    def genuine(lease_id: str, lo: int, hi: int) -> bytes:
        lease_token = issuer.lease(cert, cert_token, rig.identity.public, lo, hi, lease_id=lease_id)[1]
        return LeaseBundle(lease=lease_token, certificate=cert_token).to_cbor()

    def answers(request: LeaseRequest) -> list[bytes]:
        return [
            b"\xff not cbor",
            LeaseAnswer(id="x", code=AnswerCode.OK, bundle=b"\x00").to_cbor()[:-1],  # truncated
            ok("lease-0000000000000000", genuine("LSTALE", 8, 12)),  # valid, but for a request nobody made
            ok(request.id, genuine("LMINE", 0, 4)),
        ]

    async with responding(rig, answers):
        checked = await rig.ask()
    assert checked.lease.lease_id == "LMINE"
    assert [lease.lease_id for lease in await rig.journal.leases(active_only=False)] == ["LMINE"]
    assert rig.uplink.ignored_answers == 3


async def test_an_answer_without_id_is_matched_by_mqtt5_correlation_data(rig: Rig) -> None:
    def failing(request: LeaseRequest) -> list[bytes]:
        # What the worker sends when its database is down: it never read the id, but echoes the correlation data.
        return [LeaseAnswer(id="", code=AnswerCode.ERROR, message="try later").to_cbor()]

    assert rig.uplink.protocol == "5"
    async with responding(rig, failing, echo_correlation=True):
        with pytest.raises(LeaseRefusedError) as refused:
            await rig.ask(timeout=WAIT_S)
    assert refused.value.reason == "error"
    assert "try again in a while" in str(refused.value)


async def test_mqtt_3_1_1_matches_answers_by_payload_id(
    platform: Platform, broker: PrivateBroker, tmp_path: Path
) -> None:
    async with rig_of(platform, broker, tmp_path / "gw", protocol="3.1.1") as rig, worker_on(platform, broker):
        assert rig.uplink.protocol == "3.1.1"
        checked = await rig.ask(slots=3)
    assert (checked.lease.slot_lo, checked.lease.slot_hi) == (0, 3)


async def test_a_request_with_nobody_listening_times_out(rig: Rig) -> None:
    with pytest.raises(RequestTimeoutError) as silent:
        await rig.ask(timeout=0.2)
    assert silent.value.op == LEASE_OP
    assert "no answer to lease request" in str(silent.value)
    assert await rig.lease_ranges() == []


# -- the whole agent and the CLI ----------------------------------------------------------------------------------


async def test_the_agent_service_asks_for_its_first_lease_by_itself(broker: PrivateBroker, tmp_path: Path) -> None:
    async with running_cloud(tmp_path, broker, quantity=10) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        await cloud.platform.register_gateway(gateway.identity.public, factory="e2e-factory")
        gateway.settings["lease"] = {**KEEPER, "cert_no": cloud.cert.cert_no, "request_slots": 6}
        async with running_agent(gateway.config) as agent:
            await until(lambda: _holds(agent.journal, cloud.cert.cert_no))
            counts = await agent.counts(cloud.cert.cert_no)
    assert (counts.lease_size, counts.remaining) == (6, 6)


async def _holds(journal: Journal, cert_no: str) -> bool:
    return bool(await journal.leases(cert_no))


def write_config(path: Path, state_dir: Path, issuer: SigningKey, broker: PrivateBroker) -> Path:
    path.write_text(
        f'[gateway]\nstate_dir = "{state_dir}"\n'
        f'[trust]\nissuer_keys = ["{issuer.public.raw.hex()}"]\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        "[lease]\nrequest_timeout_s = 5.0\n"
    )
    return path


async def cli(*args: str) -> Result:
    # The command runs its own event loop, so it runs in a thread while this loop serves the platform's worker.
    return await asyncio.to_thread(CliRunner().invoke, group, list(args))


async def test_request_lease_cli_end_to_end(platform: Platform, broker: PrivateBroker, tmp_path: Path) -> None:
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=5)
    state_dir = tmp_path / "gw"
    identity = GatewayIdentity.load_or_create(state_dir)
    config = write_config(tmp_path / "agent.toml", state_dir, platform.issuer, broker)
    async with worker_on(platform, broker):
        unknown = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "3")
        await platform.register_gateway(identity.public, factory="F1")
        got = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "3")
        rest = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "3")
        empty = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "3")
    assert unknown.exit_code == 1
    assert "unknown_gateway" in unknown.output
    assert "enrol it" in unknown.output
    assert got.exit_code == 0, got.output
    assert f"certificate {cert.cert_no}, {ORIGINAL_PID} -> {NEW_PID}, slots 0..2 (3 of 3 asked for)" in got.output
    assert rest.exit_code == 0, rest.output
    assert "slots 3..4 (2 of 3 asked for)" in rest.output
    assert empty.exit_code == 1
    assert "no lease stored: the platform answered no_slots" in empty.output
    async with await Journal.open(state_dir / JOURNAL_FILE, identity.gw) as journal:
        assert [(lease.slot_lo, lease.slot_hi) for lease in await journal.leases()] == [(0, 3), (3, 5)]


async def test_request_lease_cli_without_a_certificate_says_what_to_set(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "gw"}"\n[trust]\nissuer_keys = ["{"ab" * 32}"]\n'
        f'[mqtt]\ntransport = "unix"\nsocket_path = "{tmp_path / "no-broker.sock"}"\n'
    )
    missing = await cli("request-lease", "-c", str(config))
    assert missing.exit_code == 2
    assert "pass --cert" in missing.output


async def test_release_lease_cli_hands_unspent_slots_back_to_the_real_platform(
    platform: Platform, broker: PrivateBroker, tmp_path: Path
) -> None:
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=5)
    state_dir = tmp_path / "gw"
    identity = GatewayIdentity.load_or_create(state_dir)
    await platform.register_gateway(identity.public, factory="F1")
    config = write_config(tmp_path / "agent.toml", state_dir, platform.issuer, broker)
    async with worker_on(platform, broker):
        got = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "5")
        assert got.exit_code == 0, got.output
        async with await Journal.open(state_dir / JOURNAL_FILE, identity.gw) as journal:
            (lease,) = await journal.leases()
            sign_grant = _signer(identity, "SN000001")
            attempt = await journal.reserve(cert.cert_no, "SN000001", ORIGINAL_PID, NEW_PID, "wifi", sign_grant)
            assert attempt is not None
            await journal.confirm(attempt.id)
        released = await cli("release-lease", "-c", str(config), lease.lease_id, "--reason", "line moved")
        again = await cli("request-lease", "-c", str(config), "--cert", cert.cert_no, "--slots", "5")
    assert released.exit_code == 0, released.output
    assert f"lease {lease.lease_id} closed at seq 3 (line moved)" in released.output
    assert f"the platform took back 4 unused slots of lease {lease.lease_id}" in released.output
    assert again.exit_code == 0, again.output
    assert "(4 of 5 asked for)" in again.output  # the 4 unspent slots, and not the spent one


def _signer(identity: GatewayIdentity, sn: str) -> Callable[[str, int], bytes]:
    def sign_grant(lease_id: str, slot: int) -> bytes:
        grant = Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time()))
        return sign(grant, identity.key)

    return sign_grant
