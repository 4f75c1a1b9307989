"""The platform facade: one store, one issuer key; certificates, leases, gateways and verified ingest."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud_bridge import (
    accounts,
    activation,
    anomalies,
    ca,
    certificates,
    enrolment,
    gateways,
    issuer,
    key_rotation,
    leases,
    ledger,
    quarantine,
    requests,
    seed,
)
from cloud_bridge.accounts import Actor
from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.errors import ConfigError
from cloud_bridge.leases import LeasePolicy
from cloud_bridge.ledger import Outcome
from cloud_bridge.store.engine import check_reachable, create_engine, migrate, sqlite_url
from cloud_bridge.store.schema import anomalies as anomaly_table
from cloud_bridge.store.schema import issuer_keys
from cloud_bridge.unverified import RECORDS, UnverifiedTraffic
from cloud_bridge.verify import BatchRejectedError, VerifiedBatch, checkpoint_kid, parse_batch, verify_batch
from wire.keys import PublicKey, SigningKey
from wire.lease_request import AnswerCode, LeaseAnswer, ReleaseAnswer, RenewAnswer
from wire.tokens import Ack, Certificate, Lease, sign
from wire.topics import CertProgressPayload

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DB_FILE = "platform.db"
DEFAULT_CERT_VALID_S = 30 * 86400
DEFAULT_LEASE_VALID_S = LeasePolicy.valid_s


@dataclass(frozen=True)
class IngestResult:
    """What one `records` payload did: the outcome, the ack to publish (if any), new anomalies, fresh counts."""

    outcome: Outcome
    gw: str | None
    seq: int | None = None  # the acked (or stored) seq of the gateway
    head: bytes | None = None
    ack: bytes | None = None  # signed Ack token, to publish retained on the gateway's ack topic
    stored: int = 0
    anomalies: tuple[AnomalyEvent, ...] = ()
    progress: tuple[CertProgressPayload, ...] = ()
    rejection: BatchRejectedError | None = None  # why a REJECTED payload was refused, whether summarised or not


class Platform:
    """The platform's state and operations; every method is one database transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        issuer_key: SigningKey,
        *,
        clock: Callable[[], float] = time.time,
        policy: LeasePolicy | None = None,
        authority: ca.CertificateAuthority | None = None,
        client_cert_valid_s: int = ca.DEFAULT_CLIENT_CERT_VALID_S,
    ) -> None:
        self.engine = engine
        self.issuer = issuer_key
        self.authority = authority
        self.client_cert_valid_s = client_cert_valid_s
        self.policy = policy or LeasePolicy()
        self._clock = clock
        self.unverified = UnverifiedTraffic(clock)

    @classmethod
    async def open(
        cls,
        data_dir: Path,
        *,
        db_url: str | None = None,
        clock: Callable[[], float] = time.time,
        policy: LeasePolicy | None = None,
        client_cert_valid_s: int = ca.DEFAULT_CLIENT_CERT_VALID_S,
    ) -> Platform:
        """Open (creating on first use) the data dir, issuer key, CA and database, migrated to the newest schema."""
        key = await asyncio.to_thread(issuer.load_or_create, data_dir)
        authority = await asyncio.to_thread(ca.load_or_create, data_dir, int(clock()))
        url = db_url or sqlite_url(data_dir / DB_FILE)
        await check_reachable(url, "--db-url / REBADGE_DB_URL" if db_url else "--data-dir / REBADGE_DATA_DIR")
        await migrate(url)
        engine = create_engine(url)
        try:
            platform = cls(
                engine, key, clock=clock, policy=policy, authority=authority, client_cert_valid_s=client_cert_valid_s
            )
            await platform._pin_issuer_key()
        except BaseException:
            await engine.dispose()
            raise
        return platform

    async def close(self) -> None:
        """Close the database connections."""
        await self.engine.dispose()

    def now(self) -> int:
        """The platform's clock, in whole seconds."""
        return int(self._clock())

    async def run(
        self, op: Callable[Concatenate[AsyncConnection, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run one operation (a store function taking the connection first) in one transaction."""
        async with self.engine.begin() as conn:
            return await op(conn, *args, **kwargs)

    async def _pin_issuer_key(self) -> None:
        kid = self.issuer.kid.hex()
        async with self.engine.begin() as conn:
            known = await conn.execute(select(issuer_keys.c.kid).where(issuer_keys.c.kid == kid))
            if known.first() is None:
                await conn.execute(
                    issuer_keys.insert().values(
                        kid=kid, public_key=self.issuer.public.raw, created_at=self.now(), active=True
                    )
                )

    async def issue_certificate(
        self,
        *,
        factory: str,
        original_pid: str,
        new_pid: str,
        quantity: int,
        protocols: Sequence[str] = ("wifi",),
        valid_s: int = DEFAULT_CERT_VALID_S,
        reason: str = "issued by the platform",
        actor: Actor = accounts.SYSTEM,
    ) -> tuple[Certificate, bytes]:
        """Issue an approved certificate to the factory `factory` under the API's rules, as platform staff `actor`.

        For the demo, benchmarks and tests, the factory and both products are first made if absent (through the
        API's own functions); the CLI and the API never make them implicitly.
        """
        application = certificates.Application(original_pid, new_pid, quantity, reason, tuple(protocols), valid_s)
        certificates.check_request(original_pid, new_pid, quantity, protocols)  # before anything is made of them
        async with self.engine.begin() as conn:
            await seed.factory_with_products(conn, factory, (original_pid, new_pid), self.now())
            return await certificates.issue_as(conn, actor, factory, application, issuer=self.issuer, now=self.now())

    async def register_gateway(self, key: PublicKey, name: str = "", *, factory: str | None = None) -> str:
        """Register a gateway key to the factory named `factory` (idempotent); return its gateway id.

        A gateway of no factory leases no factory's certificate.
        """
        async with self.engine.begin() as conn:
            org_id = None if factory is None else int((await accounts.org_named(conn, factory)).id)
            return await gateways.register(conn, key, name, self.now(), org_id=org_id)

    async def enrol(self, token: str, csr: bytes) -> enrolment.Enrolled:
        """Exchange a one-time enrolment token and a gateway's CSR for its client certificate."""
        if self.authority is None:
            raise ConfigError("this platform was opened without its CA; open it with Platform.open(data_dir)")
        return await self.run(
            enrolment.enrol, token, csr, ca=self.authority, cert_valid_s=self.client_cert_valid_s, now=self.now()
        )

    async def revoke_gateway(self, gw: str) -> None:
        """Revoke a gateway: no more leases; its batches become anomalies."""
        async with self.engine.begin() as conn:
            await gateways.revoke(conn, gw, self.now())

    async def issue_lease(
        self, cert_no: str, gateway: PublicKey, slots: int, *, valid_s: int | None = None
    ) -> tuple[Lease, bytes, bytes]:
        """Lease up to `slots` free slots of a certificate to a gateway, as an admin would: (lease, token, bundle).

        A new gateway (or one of no factory) is registered to the certificate's factory.
        """
        return await self.run(
            leases.issue_as, accounts.SYSTEM, cert_no, gateway, slots,
            valid_s=valid_s, policy=self.policy, issuer=self.issuer, now=self.now(),
        )  # fmt: skip

    async def answer_lease(self, gw: str, payload: bytes) -> LeaseAnswer:
        """Answer a gateway's `req/lease` payload."""
        return await self.run(
            requests.answer_lease, gw, payload, policy=self.policy, issuer=self.issuer, now=self.now()
        )

    async def answer_renew(self, gw: str, payload: bytes) -> RenewAnswer:
        """Answer a gateway's `req/renew` payload with a new client certificate (or a refusal)."""
        if self.authority is None:
            return RenewAnswer(id="", code=AnswerCode.ERROR, message="this platform runs without its CA")
        return await self.run(
            requests.answer_renew, gw, payload, ca=self.authority, cert_valid_s=self.client_cert_valid_s, now=self.now()
        )

    async def answer_rotate(self, gw: str, payload: bytes) -> RenewAnswer:
        """Answer a gateway's `req/rotate` key introduction: the new key's client certificate, or a refusal."""
        return await self.run(
            key_rotation.answer_rotate, gw, payload, ca=self.authority, cert_valid_s=self.client_cert_valid_s,
            now=self.now(),
        )  # fmt: skip

    async def gateway_keys(self, gw: str) -> list[Row[Any]]:
        """Every key the gateway has had, oldest first, with the seqs each may sign."""
        return await self.run(gateways.keys, gw)

    async def answer_release(self, gw: str, payload: bytes) -> ReleaseAnswer:
        """Answer a gateway's `req/release` payload."""
        return await self.run(requests.answer_release, gw, payload, now=self.now())

    async def write_off_lease(self, actor: Actor, lease_id: str, reason: str) -> int:
        """An auditor or admin writes off a lease whose gateway never came back; return the slots returned."""
        return await self.run(leases.write_off, actor, lease_id, reason, self.now())

    async def reinstate_gateway(self, actor: Actor, gw: str, reason: str, *, seq: int | None = None) -> int:
        """An admin lifts a fork's freeze (or rebases a gateway behind at `seq`); return where its chain goes on."""
        return await self.run(quarantine.reinstate, actor, gw, reason, self.now(), seq=seq)

    async def due_acks(self) -> list[tuple[str, bytes]]:
        """(gw, signed ack) for every chain an admin rebased since the last call: publish them retained."""
        due = await self.run(quarantine.due_acks)
        return [(gw, sign(Ack(gw=gw, seq=seq, head=head, at=self.now()), self.issuer)) for gw, seq, head in due]

    def current_ack(self, result: IngestResult) -> bytes | None:
        """A fresh signed ack of the stored head an ingest result read (None when it read none): for a WAITING batch."""
        if result.gw is None or result.seq is None or result.head is None:
            return None
        return sign(Ack(gw=result.gw, seq=result.seq, head=result.head, at=self.now()), self.issuer)

    async def stale_holds(self, cert_no: str) -> int:
        """Slots of a certificate held by gateways silent since their lease expired."""
        return (await self.run(leases.stale_holds, [cert_no], self.now())).get(cert_no, 0)

    async def gateway_history(self, gw: str) -> list[Row[Any]]:
        """A gateway's audit history (frozen, reinstated, written off), oldest first."""
        return await self.run(gateways.history, gw)

    async def prune_nonces(self) -> int:
        """Forget request nonces older than the replay window; return how many."""
        return await self.run(requests.prune_nonces, self.now())

    async def activate(self, sn: str, pid: str, receipt: bytes) -> activation.Activation:
        """A device in the field presents its receipt; each (certificate, slot) activates once."""
        return await self.run(activation.activate, sn, pid, receipt, self.now())

    async def authenticate(self, api_key: str | None) -> Actor:
        """The account an API key belongs to."""
        return await self.run(accounts.authenticate, api_key)

    async def bootstrap_admin(self) -> str | None:
        """On a platform with no accounts, create a first admin and return its API key (else None)."""
        return await self.run(accounts.bootstrap_admin, self.now())

    async def confirmed_count(self, cert_no: str) -> int:
        """Distinct (lease, slot) confirmed by verified records of this certificate."""
        async with self.engine.connect() as conn:
            counts = await ledger.confirmed_counts(conn, {cert_no})
        return counts.get(cert_no, (0, 0))[0]

    async def ingest(self, payload: bytes, *, topic_gw: str | None = None) -> IngestResult:
        """Verify one `records` payload and apply it to the ledger; never raises for bad input.

        The signature and chain are checked before any lock is taken, so a flood of garbage on a gateway's topic
        does not queue its honest batches behind it; which seqs the signing key may sign is checked under the lock.
        """
        now = self.now()
        try:
            verified = await self._verify(payload, topic_gw)
        except BatchRejectedError as exc:
            async with self.engine.begin() as conn:
                # Nothing here verified as the gateway's own words, whatever the topic says: counted, not blamed.
                events = await self.unverified.reject(
                    conn, exc.kind, str(exc), payload, topic_kind=RECORDS, gw=topic_gw, now=now
                )
            return IngestResult(Outcome.REJECTED, exc.gw, anomalies=events, rejection=exc)
        async with self.engine.begin() as conn:
            row = await gateways.lock(conn, verified.gw)
            assert row is not None  # gateways are never deleted
            # Under the lock a key rotation takes too: a batch verified just before one commits cannot slip past it.
            retired = await self._signer_refusal(conn, verified, payload, now)
            if retired is not None:
                return retired
            if row.revoked:
                revoked = BatchRejectedError(
                    f"batch from revoked gateway {verified.gw}: kept as evidence, not counted",
                    kind=AnomalyKind.REVOKED_GATEWAY,
                    gw=verified.gw,
                )
                event = await anomalies.store(conn, revoked.kind, str(revoked), now, payload=payload, gw=verified.gw)
                return IngestResult(Outcome.REJECTED, verified.gw, anomalies=(event,), rejection=revoked)
            applied = await ledger.apply(conn, verified, row, now, payload)
            counts = await ledger.confirmed_counts(conn, applied.certs) if applied.certs else {}
        progress = tuple(
            CertProgressPayload(cert_no=no, confirmed=n, quantity=q) for no, (n, q) in sorted(counts.items())
        )
        ack = None
        # After a fork the ack names the platform's own head, which the gateway cannot match: that is how a
        # gateway restored from a backup learns that it is frozen.
        if applied.outcome in (Outcome.APPLIED, Outcome.DUPLICATE, Outcome.FORK):
            ack = sign(Ack(gw=applied.gw, seq=applied.seq, head=applied.head, at=now), self.issuer)
        return IngestResult(
            applied.outcome,
            applied.gw,
            seq=applied.seq,
            head=applied.head,
            ack=ack,
            stored=applied.stored,
            anomalies=tuple(applied.anomalies),
            progress=progress,
        )

    async def _verify(self, payload: bytes, topic_gw: str | None) -> VerifiedBatch:
        batch = parse_batch(payload, topic_gw)
        async with self.engine.connect() as conn:
            row = await gateways.find(conn, batch.gw)
            if row is None:
                raise BatchRejectedError(
                    f"batch from unknown gateway {batch.gw}; register its key first",
                    kind=AnomalyKind.UNKNOWN_GATEWAY,
                    gw=batch.gw,
                )
            signer = await gateways.key_by_kid(conn, checkpoint_kid(batch), batch.gw)
        # A kid the gateway never had: verify with its current key, which refuses the signature.
        return verify_batch(batch, signer.key if signer is not None else PublicKey(bytes(row.public_key)))

    async def _signer_refusal(
        self, conn: AsyncConnection, verified: VerifiedBatch, payload: bytes, now: int
    ) -> IngestResult | None:
        """A batch whose checkpoint a key signed outside its seqs (a retired key after its rotation or anything
        but a resend, a new key before it) is refused, and stored as an anomaly: its signature verified, so these
        are the gateway's words."""
        signer = await gateways.key_by_kid(conn, verified.signer_kid, verified.gw)
        if signer is None:
            return None
        problem = await gateways.checkpoint_refusal(conn, signer, verified.last_seq, verified.checkpoint.head)
        if problem is None:
            return None
        kind = AnomalyKind.RETIRED_KEY if signer.to_seq is not None else AnomalyKind.BAD_SIGNATURE
        refused = BatchRejectedError(
            f"batch up to seq {verified.last_seq} refused: {problem}", kind=kind, gw=verified.gw, seq=verified.last_seq
        )
        seen = select(anomaly_table.c.id).where(
            anomaly_table.c.kind == kind.value, anomaly_table.c.gw == verified.gw,
            anomaly_table.c.seq == verified.last_seq, anomaly_table.c.message == str(refused),  # names the key
        )  # fmt: skip
        if (await conn.execute(seen.limit(1))).first() is not None:  # the gateway resends it: flagged once
            return IngestResult(Outcome.REJECTED, verified.gw, rejection=refused)
        event = await anomalies.store(
            conn, kind, str(refused), now, payload=payload, gw=verified.gw, seq=verified.last_seq
        )
        log.warning("gateway %s: %s", verified.gw, refused)
        return IngestResult(Outcome.REJECTED, verified.gw, anomalies=(event,), rejection=refused)
