"""The count holds, as a property: an adversary holding every gateway key drives the platform's ledger.

Any interleaving of lease requests, honest and forged batches, records of any kind on any lease and slot, closes,
restores from a backup (forks), write-offs, reinstatements and rebases, revocations, key rotations, enrolments again
(with the current key, a retired one, or after revocation), clock jumps and activations of any receipt a gateway key
can sign, current or retired; batches signed by retired keys too. The gateways enrol as in the field: a factory
admin's one-time token and a CSR of the gateway key. After every
step: activations and confirmations per certificate stay within its quantity, no slot is counted or activated for two
leases, every confirmed or activated slot stays held by the lease that spent it, no two leases hold one slot, and
every slot was spent by the key its lease is bound to (a confirmation within that key's seqs, an activation on a
receipt that key signed). `REBADGE_PROPERTY_PROFILE=long` runs many more examples.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select

from agent.certs.identity import GatewayIdentity
from agent.key_rotation import introduction
from cloud_bridge import accounts, enrolment
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import CloudError
from cloud_bridge.leases import LeasePolicy
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import activations, cert_counts, confirmations, gateway_keys, leases, slot_holds
from tests.test_cloud_helpers import NEW_PID, OLD_PID, T0, Journal
from wire import x509 as wx
from wire.keys import KeyRing, SigningKey
from wire.lease_request import LeaseRequest, lease_answer_from_cbor
from wire.records import RecordKind
from wire.tokens import Grant, Lease, decode_bundle, decode_payload, sign, sign1_payload, verify

settings.register_profile(
    "ci", max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=1000, stateful_step_count=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE_NAME = os.environ.get("REBADGE_PROPERTY_PROFILE", "ci")
PROFILE = settings.get_profile(PROFILE_NAME)
TIMEOUT_S = 3 * 3600 if PROFILE_NAME == "long" else 120

QUANTITY = 4
GATEWAYS = 3
SNS = [f"SN{i:04d}" for i in range(6)]
AUDITOR = Actor(Role.AUDITOR, None, name="auditor")
ADMIN = Actor(Role.ADMIN, None, name="admin")
KINDS = [RecordKind.RESERVED, RecordKind.CONFIRMED, RecordKind.RELEASED, RecordKind.IN_DOUBT]


@functools.cache
def _template() -> Path:
    """A migrated platform data dir made once, copied for every example (migrating costs more than a run)."""
    path = Path(tempfile.mkdtemp(prefix="rebadge-ledger-template-"))
    asyncio.run(_make_template(path))
    return path


async def _make_template(path: Path) -> None:
    platform = await Platform.open(path / "cloud")
    await platform.close()


class Clock:
    """The platform's clock, which the adversary may move."""

    def __init__(self) -> None:
        self.t = float(T0)

    def __call__(self) -> float:
        return self.t


class LedgerUnderAttack(RuleBasedStateMachine):
    """The platform against gateways whose keys the adversary holds."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="rebadge-ledger-"))
        shutil.copytree(_template() / "cloud", self.dir / "cloud")
        self.clock = Clock()
        self.platform = self._run(
            Platform.open(self.dir / "cloud", clock=self.clock, policy=LeasePolicy(max_slots=QUANTITY, valid_s=600))
        )
        self.journals = [Journal() for _ in range(GATEWAYS)]
        self.keys = [[j.key] for j in self.journals]  # every key each gateway has had, the current one last
        self.revoked: set[str] = set()
        self.leases: list[Lease] = []
        self.cert_no = ""

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self._run(self.platform.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def setup(self) -> None:
        cert, _ = self._run(
            self.platform.issue_certificate(
                factory="F1", original_pid=OLD_PID, new_pid=NEW_PID, quantity=QUANTITY, valid_s=30 * 86400
            )
        )
        self.cert_no = cert.cert_no
        self.factory = int(self._run(self.platform.run(accounts.org_named, "F1")).id)
        for j in self.journals:
            assert self._enrol(j.key) == j.gw
        self.request_lease(0, QUANTITY // 2, 0)  # a first honest lease, so every rule is enabled from the start

    def _enrol(self, key: SigningKey) -> str | None:
        """Enrol `key` with a fresh token of the factory; its gateway id, or None when refused."""
        now = int(self.clock.t)
        token, _ = self._run(self.platform.run(enrolment.create_token, ADMIN, "line 1", 600, now, org_id=self.factory))
        try:
            return str(self._run(self.platform.enrol(token, wx.gateway_csr(key, self._gw_of(key)))).gw)
        except CloudError:
            return None

    def _gw_of(self, key: SigningKey) -> str | None:
        return next((self.journals[g].gw for g, keys in enumerate(self.keys) if key in keys), None)

    # -- what the adversary does ------------------------------------------------------------------------------

    @rule(g=st.integers(0, GATEWAYS - 1), slots=st.integers(1, QUANTITY + 1), skew=st.sampled_from([0, 0, 400]))
    def request_lease(self, g: int, slots: int, skew: int) -> None:
        j = self.journals[g]
        token = j.request(LeaseRequest, at=int(self.clock.t) + skew, cert_no=self.cert_no, slots=slots)
        answer = lease_answer_from_cbor(self._run(self.platform.answer_lease(j.gw, token)).to_cbor())
        if answer.ok:
            assert answer.bundle is not None
            lease_token = decode_bundle(answer.bundle).lease
            self.leases.append(verify(lease_token, Lease, KeyRing([self.platform.issuer.public])))
        replay = lease_answer_from_cbor(self._run(self.platform.answer_lease(j.gw, token)).to_cbor())
        assert not replay.ok  # the same signed request never leases twice

    @precondition(lambda self: self.leases)
    @rule(
        g=st.integers(0, GATEWAYS - 1),
        pick=st.integers(0, 50),
        slot=st.integers(0, QUANTITY + 1),
        sn=st.sampled_from(SNS),
        kind=st.sampled_from(KINDS),
    )
    def journal_record(self, g: int, pick: int, slot: int, sn: str, kind: RecordKind) -> None:
        lease = self.leases[pick % len(self.leases)]  # any lease, this gateway's or another's
        self.journals[g].add(lease.lease_id, slot, sn, kind)

    @precondition(lambda self: self.leases)
    @rule(g=st.integers(0, GATEWAYS - 1), pick=st.integers(0, 50))
    def journal_close(self, g: int, pick: int) -> None:
        lease = self.leases[pick % len(self.leases)]
        self.journals[g].close(lease.lease_id, lease.slot_hi)

    @rule(g=st.integers(0, GATEWAYS - 1), back=st.integers(0, 5), forged=st.sampled_from([False, False, False, True]))
    def send_batch(self, g: int, back: int, forged: bool) -> None:
        j = self.journals[g]
        if not j.records:
            return
        from_seq = max(1, len(j.records) - back)
        other = self.journals[(g + 1) % GATEWAYS].key
        payload = j.batch(from_seq, key=other if forged else None)
        self._run(self.platform.ingest(payload, topic_gw=j.gw))

    @rule(g=st.integers(0, GATEWAYS - 1), keep=st.integers(0, 10))
    def restore_from_backup(self, g: int, keep: int) -> None:
        j = self.journals[g]
        j.records = j.records[: min(keep, len(j.records))]

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(0, 50))
    def write_off(self, pick: int) -> None:
        lease = self.leases[pick % len(self.leases)]
        with contextlib.suppress(CloudError):  # already ended
            self._run(self.platform.write_off_lease(AUDITOR, lease.lease_id, "gateway never came back"))

    @rule(g=st.integers(0, GATEWAYS - 1), seq=st.none() | st.integers(0, 12))
    def reinstate(self, g: int, seq: int | None) -> None:
        with contextlib.suppress(CloudError):  # not frozen, or no such seq to rebase to
            self._run(self.platform.reinstate_gateway(ADMIN, self.journals[g].gw, "checked by the admin", seq=seq))
        self._run(self.platform.due_acks())

    @rule(g=st.integers(0, GATEWAYS - 1))
    def revoke_gateway(self, g: int) -> None:
        self._run(self.platform.revoke_gateway(self.journals[g].gw))
        self.revoked.add(self.journals[g].gw)

    @rule(g=st.integers(0, GATEWAYS - 1), close_first=st.booleans())
    def rotate_key(self, g: int, close_first: bool) -> None:
        j = self.journals[g]
        if close_first:  # as `rotate-key` does: close the key's leases, send the records, then introduce
            for lease in self.leases:
                if lease.gateway_key == j.key.public.raw:
                    j.close(lease.lease_id, lease.slot_hi)
            if j.records:
                self._run(self.platform.ingest(j.batch(1), topic_gw=j.gw))
        new = SigningKey.generate()
        intro = introduction(GatewayIdentity(j.key, j.gw), new, len(j.records), j.head, clock=self.clock).token
        answer = self._run(self.platform.answer_rotate(j.gw, intro))
        event(f"rotation: {answer.code}")
        if answer.ok:
            j.key = new
            self.keys[g].append(new)

    @rule(g=st.integers(0, GATEWAYS - 1), back=st.integers(0, 5), old=st.integers(0, 3))
    def send_batch_with_a_retired_key(self, g: int, back: int, old: int) -> None:
        j = self.journals[g]
        if j.records and len(self.keys[g]) > 1:
            key = self.keys[g][old % (len(self.keys[g]) - 1)]
            self._run(self.platform.ingest(j.batch(max(1, len(j.records) - back), key=key), topic_gw=j.gw))

    @rule(g=st.integers(0, GATEWAYS - 1), k=st.integers(0, 1))
    def enrol_again(self, g: int, k: int) -> None:
        key = self.keys[g][-1 - k % len(self.keys[g])]  # the current key, or one a rotation retired
        gw = self._enrol(key)
        revoked = self.journals[g].gw in self.revoked
        which = "current" if key == self.keys[g][-1] else "retired"
        event(f"enrolment again ({which} key, revoked {revoked}): {'refused' if gw is None else 'enrolled'}")
        if key == self.keys[g][-1] and not revoked:
            assert gw == self.journals[g].gw  # the same gateway, a new client certificate
        else:
            assert gw is None, f"{'a revoked gateway' if revoked else 'a retired key'} enrolled again"

    @rule(dt=st.sampled_from([-3600, 60, 700, 86_400]))
    def jump_clock(self, dt: int) -> None:
        self.clock.t += dt

    @precondition(lambda self: self.leases)
    @rule(
        g=st.integers(0, GATEWAYS - 1),
        pick=st.integers(0, 50),
        slot=st.integers(0, QUANTITY + 1),
        sn=st.sampled_from(SNS),
        k=st.integers(0, 1),
    )
    def activate(self, g: int, pick: int, slot: int, sn: str, k: int) -> None:
        lease = self.leases[pick % len(self.leases)]
        grant = Grant(lease_id=lease.lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=T0)
        key = self.keys[g][-1 - k % len(self.keys[g])]  # the current key, or one a rotation retired
        verdict = self._run(self.platform.activate(sn, NEW_PID, sign(grant, key)))
        event(f"activation by a {'retired' if key != self.keys[g][-1] else 'current'} key: {verdict.verdict}")
        if verdict.accepted:
            assert key.public.raw == lease.gateway_key, f"{lease.lease_id} activated on a receipt of another key"

    # -- what must hold after every step ------------------------------------------------------------------------

    @invariant()
    def the_count_holds(self) -> None:
        if self.cert_no:
            self._run(self._check())

    async def _check(self) -> None:
        async with self.platform.engine.connect() as conn:
            acts = (await conn.execute(select(activations))).all()
            confs = (await conn.execute(select(confirmations))).all()
            holds = (await conn.execute(select(slot_holds))).all()
            counted = (await conn.execute(select(cert_counts))).all()
            bound = {r.lease_id: bytes(r.token) for r in (await conn.execute(select(leases))).all()}
            ranges = {
                bytes(r.public_key): (int(r.from_seq), r.to_seq) for r in (await conn.execute(select(gateway_keys)))
            }
        assert len(acts) <= QUANTITY
        assert len(confs) <= QUANTITY
        assert sum(int(r.confirmed) for r in counted) == len(confs)
        assert all(Counter(r.slot for r in rows).most_common(1)[0][1] == 1 for rows in (acts, confs) if rows)
        assert all(0 <= r.slot < QUANTITY for r in (*acts, *confs))
        held: dict[int, str] = {}
        for h in holds:
            assert 0 <= h.lo < h.hi <= QUANTITY
            for s in range(h.lo, h.hi):
                assert s not in held, f"slot {s} held by {held[s]} and {h.lease_id}"
                held[s] = h.lease_id
        for r in (*acts, *confs):
            assert held.get(r.slot) == r.lease_id, f"slot {r.slot} spent by {r.lease_id} but held by {held.get(r.slot)}"
        for r in confs:  # counted only within the seqs of the key its lease is bound to
            lo, hi = ranges[decode_payload(sign1_payload(bound[r.lease_id]), Lease).gateway_key]
            assert lo <= r.seq, f"slot {r.slot} confirmed at seq {r.seq}, before its lease's key signs"
            assert hi is None or r.seq <= hi, f"slot {r.slot} confirmed at seq {r.seq}, after its lease's key retired"


LedgerUnderAttack.TestCase.settings = PROFILE
test_ledger_under_attack = pytest.mark.timeout(TIMEOUT_S)(LedgerUnderAttack.TestCase)
