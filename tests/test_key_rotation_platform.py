"""Key rotation on the platform: the old key introduces the new one at the stored journal head; afterwards each key
signs only its own seqs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select, text

from agent.certs.identity import GatewayIdentity
from agent.key_rotation import introduction
from cloud_bridge import accounts, enrolment, gateways
from cloud_bridge.errors import ConflictError, InvalidRequestError
from cloud_bridge.ledger import Outcome
from cloud_bridge.platform import DB_FILE, Platform
from cloud_bridge.store.engine import create_engine, migrate, sqlite_url
from cloud_bridge.store.schema import anomalies, gateway_keys
from cloud_bridge.store.schema import gateways as gateway_table
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire import x509 as wx
from wire.key_rotation import possession
from wire.keys import SigningKey
from wire.lease_request import AnswerCode, LeaseRequest, RenewAnswer
from wire.records import RecordKind
from wire.tokens import sign


@dataclass
class Site:
    platform: Platform
    journal: Journal
    cert_no: str
    lease_id: str

    @property
    def gw(self) -> str:
        return self.journal.gw

    async def ingest(self, from_seq: int, *, key: SigningKey | None = None) -> Outcome:
        return (await self.platform.ingest(self.journal.batch(from_seq, key=key), topic_gw=self.gw)).outcome

    def intro(self, old: SigningKey, new: SigningKey, **kw: object) -> bytes:
        j = self.journal
        return introduction(GatewayIdentity(old, j.gw), new, len(j.records), j.head, **kw).token  # type: ignore[arg-type]

    async def rotate(self, new: SigningKey) -> RenewAnswer:
        answer = await self.platform.answer_rotate(self.gw, self.intro(self.journal.key, new))
        if answer.ok:
            self.journal.key = new
        return answer

    async def anomaly_kinds(self) -> list[str]:
        async with self.platform.engine.connect() as conn:
            rows = await conn.execute(select(anomalies.c.kind).where(anomalies.c.gw == self.gw))
            return [str(k) for k in rows.scalars()]


async def _site(platform: Platform) -> Site:
    journal = Journal()
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=10)
    lease, _, _ = await platform.issue_lease(cert.cert_no, journal.key.public, 4)
    journal.confirm(lease.lease_id, 0, "SN0001")
    journal.close(lease.lease_id, lease.slot_hi)  # seq 3: every lease of the old key ends before the rotation
    site = Site(platform, journal, cert.cert_no, lease.lease_id)
    assert await site.ingest(1) == Outcome.APPLIED
    return site


async def test_a_rotation_keeps_the_gateway_and_each_key_signs_its_own_seqs(platform: Platform) -> None:
    site = await _site(platform)
    old, new = site.journal.key, SigningKey.generate()
    answer = await site.rotate(new)
    assert answer.code == AnswerCode.OK, answer.message
    assert answer.certificate is not None
    cert = x509.load_pem_x509_certificate(answer.certificate)
    public = cert.public_key()
    assert isinstance(public, Ed25519PublicKey)
    assert public.public_bytes_raw() == new.public.raw
    assert cert.subject.rfc4514_string() == f"CN={site.gw}"  # the gateway id, not the new key's kid
    # A lease for the new key is the same gateway's; records it signs after seq 3 count.
    lease, _, _ = await platform.issue_lease(site.cert_no, new.public, 4)
    assert lease.gateway_key == new.public.raw
    site.journal.confirm(lease.lease_id, lease.slot_lo, "SN0002")
    assert await site.ingest(4) == Outcome.APPLIED
    assert await platform.confirmed_count(site.cert_no) == 2  # one under each key
    keys = await platform.gateway_keys(site.gw)
    assert [(r.kid, r.from_seq, r.to_seq) for r in keys] == [(old.kid.hex(), 0, 3), (new.kid.hex(), 4, None)]
    assert keys[1].introduction is not None
    history = await platform.gateway_history(site.gw)
    rotated = [h for h in history if h.kind == "key_rotated"]
    assert [(h.seq, old.kid.hex() in h.reason, new.kid.hex() in h.reason) for h in rotated] == [(3, True, True)]
    listed = await platform.run(gateways.list_visible, accounts.SYSTEM)
    assert [r.gw for r in listed] == [site.gw]  # still one gateway, not one per key
    assert await site.anomaly_kinds() == []


async def test_the_retired_key_cannot_sign_after_the_rotation(platform: Platform) -> None:
    site = await _site(platform)
    old = site.journal.key
    assert (await site.rotate(SigningKey.generate())).ok
    site.journal.add(site.lease_id, 1, "SN0009", RecordKind.RESERVED)  # seq 4, signed by the stolen old key
    assert await site.ingest(4, key=old) == Outcome.REJECTED
    assert await site.ingest(4, key=old) == Outcome.REJECTED  # resent as gateways do: flagged once
    assert await site.anomaly_kinds() == ["retired_key"]
    # Its requests too, and a second introduction by it: refused, stored as evidence, nothing changes.
    lease_request = site.journal.request(LeaseRequest, at=platform.now(), key=old, cert_no=site.cert_no, slots=2)
    assert (await platform.answer_lease(site.gw, lease_request)).code == AnswerCode.RETIRED_KEY
    attacker = SigningKey.generate()
    again = await platform.answer_rotate(site.gw, site.intro(old, attacker))
    assert again.code == AnswerCode.RETIRED_KEY
    assert await site.anomaly_kinds() == ["retired_key"] * 3
    assert [r.kid for r in await platform.gateway_keys(site.gw)][-1] == site.journal.key.kid.hex()
    # The batch the current key signs goes in.
    assert await site.ingest(4) == Outcome.APPLIED


async def test_the_new_key_cannot_sign_history_before_the_rotation(platform: Platform) -> None:
    site = await _site(platform)
    assert (await site.rotate(SigningKey.generate())).ok
    assert await site.ingest(1) == Outcome.REJECTED  # seqs 1..3 belong to the old key
    assert await site.anomaly_kinds() == ["bad_signature"]


async def test_a_forged_introduction_changes_nothing_and_blames_no_one(platform: Platform) -> None:
    site = await _site(platform)
    thief, new = SigningKey.generate(), SigningKey.generate()
    forged = await platform.answer_rotate(site.gw, site.intro(thief, new))  # not signed by the gateway's key
    assert forged.code == AnswerCode.BAD_SIGNATURE
    # The gateway's own key, but a counter-signature by a key that is not the one introduced.
    j = site.journal
    pop = possession(thief, gw=j.gw, old_kid=j.key.kid, seq=3, head=j.head)
    signed = introduction(GatewayIdentity(j.key, j.gw), new, 3, j.head)
    token = sign(signed.request.model_copy(update={"possession": pop}), j.key)
    assert (await platform.answer_rotate(site.gw, token)).code == AnswerCode.BAD_SIGNATURE
    broken = site.intro(j.key, new)
    assert (await platform.answer_rotate(site.gw, broken[:-1] + bytes([broken[-1] ^ 1]))).code == (
        AnswerCode.BAD_SIGNATURE
    )
    assert [r.kid for r in await platform.gateway_keys(site.gw)] == [j.key.kid.hex()]
    assert await site.anomaly_kinds() == []


async def test_a_replayed_or_stale_introduction_is_refused(platform: Platform) -> None:
    site = await _site(platform)
    old, new = site.journal.key, SigningKey.generate()
    stale = site.intro(old, new, clock=lambda: platform.now() - 3600)
    assert (await platform.answer_rotate(site.gw, stale)).code == AnswerCode.REPLAYED
    token = site.intro(old, new)
    assert (await platform.answer_rotate(site.gw, token)).ok
    replay = await platform.answer_rotate(site.gw, token)
    assert replay.code == AnswerCode.RETIRED_KEY  # signed by a key retired since; the history is unchanged
    assert len(await platform.gateway_keys(site.gw)) == 2


async def test_an_introduction_at_another_head_or_with_a_lease_open_is_refused(platform: Platform) -> None:
    site = await _site(platform)
    j, new = site.journal, SigningKey.generate()
    j.add(site.lease_id, 2, "SN0003", RecordKind.RESERVED)  # seq 4, not yet sent
    answer = await platform.answer_rotate(site.gw, site.intro(j.key, new))
    assert answer.code == AnswerCode.PENDING
    assert "up to seq 3" in answer.message
    other_head = introduction(GatewayIdentity(j.key, j.gw), new, 3, bytes(32)).token
    assert (await platform.answer_rotate(site.gw, other_head)).code == AnswerCode.REFUSED
    await site.ingest(4)
    lease, _, _ = await platform.issue_lease(site.cert_no, j.key.public, 2)
    refused = await platform.answer_rotate(site.gw, site.intro(j.key, new))
    assert refused.code == AnswerCode.REFUSED
    assert lease.lease_id in refused.message
    assert len(await platform.gateway_keys(site.gw)) == 1


async def test_a_revoked_or_frozen_gateway_keeps_its_key(platform: Platform) -> None:
    site = await _site(platform)
    await platform.run(gateways.record_event, site.gw, gateways.EventKind.FROZEN, platform.now())
    async with platform.engine.begin() as conn:
        await conn.execute(gateway_table.update().values(frozen_at=platform.now(), frozen_seq=2))
    frozen = await platform.answer_rotate(site.gw, site.intro(site.journal.key, SigningKey.generate()))
    assert frozen.code == AnswerCode.FROZEN
    await platform.revoke_gateway(site.gw)
    revoked = await platform.answer_rotate(site.gw, site.intro(site.journal.key, SigningKey.generate()))
    assert revoked.code == AnswerCode.REFUSED
    assert await site.anomaly_kinds() == ["revoked_gateway"]
    assert len(await platform.gateway_keys(site.gw)) == 1


async def test_a_new_key_that_is_another_gateways_is_refused(platform: Platform) -> None:
    site = await _site(platform)
    other = Journal()
    await platform.run(gateways.register, other.key.public, "", platform.now())
    answer = await platform.answer_rotate(site.gw, site.intro(site.journal.key, other.key))
    assert answer.code == AnswerCode.REFUSED
    assert "already a key" in answer.message


async def test_enrolling_again_takes_the_current_key_and_refuses_the_retired_one(platform: Platform) -> None:
    site = await _site(platform)
    org = await platform.run(accounts.create_org, accounts.SYSTEM, "F1-org", accounts.OrgKind.FACTORY, 0)
    async with platform.engine.begin() as conn:  # the factory's own gateway
        await conn.execute(gateway_table.update().values(org_id=org))
    old, new = site.journal.key, SigningKey.generate()
    assert (await site.rotate(new)).ok

    async def token() -> str:
        made, _ = await platform.run(enrolment.create_token, accounts.SYSTEM, "l", 600, platform.now(), org_id=org)
        return made

    done = await platform.enrol(await token(), wx.gateway_csr(new, site.gw))
    assert done.gw == site.gw
    with pytest.raises(InvalidRequestError, match="not the gateway id"):  # CN must stay the gateway id
        await platform.enrol(await token(), wx.gateway_csr(new))
    with pytest.raises(ConflictError, match="retired"):
        await platform.enrol(await token(), wx.gateway_csr(old))
    async with platform.engine.connect() as conn:
        assert len((await conn.execute(select(gateway_keys))).all()) == 2


async def test_gateways_registered_before_the_key_history_get_their_key(db_url: str | None, tmp_path: Path) -> None:
    data_dir = tmp_path / "cloud"
    data_dir.mkdir(mode=0o700)
    url = db_url or sqlite_url(data_dir / DB_FILE)
    await migrate(url, "0009")  # the schema before migration 0010
    journal = Journal()
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO gateways (gw, public_key, name, revoked, registered_at) VALUES (:gw, :k, '', false, 5)"),
            {"gw": journal.gw, "k": journal.key.public.raw},
        )
        await conn.execute(
            text("INSERT INTO gateway_heads (gw, seq, head, updated_at) VALUES (:gw, 0, :h, 5)"),
            {"gw": journal.gw, "h": bytes(32)},
        )
    await engine.dispose()
    platform = await Platform.open(data_dir, db_url=db_url)
    try:
        keys = await platform.gateway_keys(journal.gw)
        assert [(k.kid, bytes(k.public_key), k.from_seq, k.to_seq, k.introduced_at) for k in keys] == [
            (journal.gw, journal.key.public.raw, 0, None, 5)
        ]
        journal.add("L1", 0, "SN0001", RecordKind.RESERVED)
        assert (await platform.ingest(journal.batch(), topic_gw=journal.gw)).outcome == Outcome.APPLIED
        new = SigningKey.generate()
        intro = introduction(GatewayIdentity(journal.key, journal.gw), new, 1, journal.head).token
        assert (await platform.answer_rotate(journal.gw, intro)).ok
    finally:
        await platform.close()


async def test_a_second_rotation_retires_the_second_key_at_its_own_seq(platform: Platform) -> None:
    site = await _site(platform)
    first, second, third = site.journal.key, SigningKey.generate(), SigningKey.generate()
    assert (await site.rotate(second)).ok
    site.journal.add(site.lease_id, 1, "SN0005", RecordKind.RESERVED)  # seq 4, the second key's
    assert await site.ingest(4) == Outcome.APPLIED
    assert (await site.rotate(third)).ok
    keys = await platform.gateway_keys(site.gw)
    assert [(k.from_seq, k.to_seq) for k in keys] == [(0, 3), (4, 4), (5, None)]
    site.journal.add(site.lease_id, 2, "SN0006", RecordKind.RESERVED)  # seq 5
    for retired in (first, second):
        assert await site.ingest(5, key=retired) == Outcome.REJECTED
    assert await site.ingest(5) == Outcome.APPLIED
    assert await site.anomaly_kinds() == ["retired_key", "retired_key"]


async def test_a_batch_racing_a_rotation_never_lands_after_it(platform: Platform) -> None:
    # The batch is verified before any lock, so a rotation may commit in between: exactly one of the two wins.
    outcomes = []
    for _ in range(12):
        journal = Journal()
        await platform.run(gateways.register, journal.key.public, "", platform.now())
        intro = introduction(GatewayIdentity(journal.key), SigningKey.generate(), 0, journal.head).token
        journal.add("L1", 0, "SN0001", RecordKind.RESERVED)  # seq 1, signed by the key being retired
        ingested, rotated = await asyncio.gather(
            platform.ingest(journal.batch(), topic_gw=journal.gw), platform.answer_rotate(journal.gw, intro)
        )
        outcomes.append((ingested.outcome, rotated.code))
        assert (ingested.outcome == Outcome.APPLIED) != rotated.ok, outcomes[-1]
    assert {o for o, _ in outcomes} <= {Outcome.APPLIED, Outcome.REJECTED}


async def test_two_introductions_racing_leave_one_current_key(platform: Platform) -> None:
    # Say the key was stolen and the thief races the gateway: one new key wins, the other is refused.
    for _ in range(8):
        journal = Journal()
        await platform.run(gateways.register, journal.key.public, "", platform.now())
        ours, theirs = SigningKey.generate(), SigningKey.generate()
        answers = await asyncio.gather(
            *(
                platform.answer_rotate(
                    journal.gw, introduction(GatewayIdentity(journal.key), new, 0, journal.head).token
                )
                for new in (ours, theirs)
            )
        )
        assert sorted(a.ok for a in answers) == [False, True], [a.message for a in answers]
        assert [a.code for a in answers if not a.ok] == [AnswerCode.RETIRED_KEY]
        current = [k.kid for k in await platform.gateway_keys(journal.gw) if k.to_seq is None]
        winner = ours if answers[0].ok else theirs
        assert current == [winner.kid.hex()]


async def test_a_lease_request_racing_a_rotation_never_binds_a_lease_to_the_retired_key(platform: Platform) -> None:
    cert, _ = await platform.issue_certificate(factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=100)
    for _ in range(8):
        journal = Journal()
        await platform.run(gateways.register, journal.key.public, "", platform.now())
        ask = journal.request(LeaseRequest, at=platform.now(), cert_no=cert.cert_no, slots=2)
        intro = introduction(GatewayIdentity(journal.key), SigningKey.generate(), 0, journal.head).token
        leased, rotated = await asyncio.gather(
            platform.answer_lease(journal.gw, ask), platform.answer_rotate(journal.gw, intro)
        )
        assert leased.ok != rotated.ok, (leased.message, rotated.message)  # never both, and no deadlock
