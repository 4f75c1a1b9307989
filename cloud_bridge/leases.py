"""Leases: disjoint slot ranges of a certificate, each signed for one gateway's key."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import certificates, gateways
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.certificates import Status
from cloud_bridge.errors import (
    ConflictError,
    GatewayFrozenError,
    GatewayRevokedError,
    InvalidRequestError,
    NoSlotsLeftError,
    NotFoundError,
)
from cloud_bridge.store.schema import (
    activations,
    confirmations,
    forked_records,
    gateway_heads,
    leases,
    records,
    slot_holds,
)
from wire.keys import PublicKey, SigningKey
from wire.records import RecordKind
from wire.times import utc_iso
from wire.tokens import Lease, LeaseBundle, decode_payload, sign, sign1_payload

log = logging.getLogger(__name__)

LEASE_ID_PREFIX = "L"
LEASE_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no look-alike letters on a label
LEASE_ID_RANDOM_CHARS = 9
MAX_LEASE_SLOTS = 1_000_000


class LeaseState(StrEnum):
    """Where a lease is in its life. Expiry is not a state: it stops new spends and returns nothing."""

    ACTIVE = "active"
    CLOSED = "closed"  # its gateway's chain closed it; the unspent slots went back to the certificate
    WRITTEN_OFF = "written_off"  # an auditor or admin gave up on its gateway; only confirmed slots stay spent
    REVOKED = "revoked"  # its certificate was revoked; slots stay spent


@dataclass(frozen=True)
class LeasePolicy:
    """How big and how long leases are."""

    max_slots: int = 10_000
    valid_s: int = 86_400


def new_lease_id() -> str:
    """A fresh lease id: 'L' and 9 random base32 characters (10 in all, the lease token's limit)."""
    return LEASE_ID_PREFIX + "".join(secrets.choice(LEASE_ID_ALPHABET) for _ in range(LEASE_ID_RANDOM_CHARS))


def free_runs(holds: list[tuple[int, int]], quantity: int) -> list[tuple[int, int]]:
    """The free ranges [lo, hi) of [0, quantity) around the held ones, lowest first."""
    runs: list[tuple[int, int]] = []
    cursor = 0
    for lo, hi in sorted(holds):
        if lo > cursor:
            runs.append((cursor, lo))
        cursor = max(cursor, hi)
    if cursor < quantity:
        runs.append((cursor, quantity))
    return runs


def pick_range(runs: list[tuple[int, int]], slots: int) -> tuple[int, int] | None:
    """The lowest free run that fits `slots` whole, else the largest run (a smaller lease), else None."""
    for lo, hi in runs:
        if hi - lo >= slots:
            return lo, lo + slots
    if not runs:
        return None
    lo, hi = max(runs, key=lambda r: r[1] - r[0])
    return lo, hi


async def holds_of(conn: AsyncConnection, cert_no: str) -> list[tuple[int, int]]:
    """The held ranges of a certificate."""
    rows = await conn.execute(select(slot_holds.c.lo, slot_holds.c.hi).where(slot_holds.c.cert_no == cert_no))
    return [(r.lo, r.hi) for r in rows]


async def issue(
    conn: AsyncConnection,
    cert_no: str,
    gateway: PublicKey,
    slots: int,
    *,
    valid_s: int | None,
    policy: LeasePolicy,
    issuer: SigningKey,
    now: int,
) -> tuple[Lease, bytes, bytes]:
    """Allocate and sign a lease of up to `slots` slots (at most the policy's); return lease, token, bundle bytes."""
    if not 1 <= slots <= MAX_LEASE_SLOTS:
        raise InvalidRequestError(f"slots {slots} must lie between 1 and {MAX_LEASE_SLOTS}", field="slots")
    valid_s = policy.valid_s if valid_s is None else valid_s
    if valid_s <= 0:
        raise InvalidRequestError(f"valid_s {valid_s} must be a positive number of seconds", field="valid_s")
    slots = min(slots, policy.max_slots)
    # Locks in one order everywhere (gateway, then certificate): a fork cannot freeze the gateway half-way
    # through, and the certificate lock serialises allocations with closes and write-offs, so no slot is held twice.
    owner = await gateways.key_owner(conn, gateway)
    gw = gateways.gw_id(gateway) if owner is None else owner.gw
    gateway_row = await gateways.lock(conn, gw)
    if gateway_row is None:
        raise NotFoundError(f"gateway {gw} is not registered; enrol it first", what="gateway", key=gw)
    if bytes(gateway_row.public_key) != gateway.raw:  # under the lock a rotation takes too
        raise ConflictError(
            f"key {gateway.kid.hex()} of gateway {gw} was retired by a key rotation; leases are bound to the "
            "gateway's current key"
        )
    if gateway_row.revoked:
        raise GatewayRevokedError(f"gateway {gateway_row.gw} is revoked and gets no leases", gw=gateway_row.gw)
    if gateway_row.frozen_at is not None:
        raise GatewayFrozenError(
            f"gateway {gateway_row.gw} is frozen: its journal forked at seq {gateway_row.frozen_seq} (restored from "
            "a backup?); it gets no leases until a platform admin reinstates it",
            gw=gateway_row.gw,
        )
    cert = await certificates.get(conn, cert_no, lock=True)
    if cert.org_id != gateway_row.org_id:  # a gateway spends only its own factory's certificates
        raise ConflictError(
            f"certificate {cert_no} is not a certificate of gateway {gw}'s factory; lease it to a gateway of the "
            "factory that applied for it"
        )
    if cert.status != Status.APPROVED:
        raise ConflictError(f"certificate {cert_no} is {cert.status}; leases come only from an approved certificate")
    if now >= cert.exp:
        raise ConflictError(f"certificate {cert_no} expired at {utc_iso(cert.exp)}; apply for a new certificate")
    picked = pick_range(free_runs(await holds_of(conn, cert_no), cert.quantity), slots)
    if picked is None:
        raise NoSlotsLeftError(
            f"certificate {cert_no} has no slots left: all {cert.quantity} are leased or spent; "
            "wait for a gateway to close a lease, or apply for a new certificate",
            cert_no=cert_no,
        )
    lease = Lease(
        lease_id=new_lease_id(),
        cert_no=cert_no,
        cert_hash=cert.token_hash,
        original_pid=cert.original_pid,
        new_pid=cert.new_pid,
        gateway_key=gateway.raw,
        gateway_kid=gateway.kid,
        slot_lo=picked[0],
        slot_hi=picked[1],
        exp=min(now + valid_s, cert.exp),
    )
    token = sign(lease, issuer)
    await conn.execute(
        leases.insert().values(
            lease_id=lease.lease_id,
            cert_no=cert_no,
            gw=gateway_row.gw,
            slot_lo=lease.slot_lo,
            slot_hi=lease.slot_hi,
            exp=lease.exp,
            token=token,
            state=LeaseState.ACTIVE,
            issued_at=now,
        )
    )
    await conn.execute(
        slot_holds.insert().values(cert_no=cert_no, lease_id=lease.lease_id, lo=lease.slot_lo, hi=lease.slot_hi)
    )
    log.info(
        "lease %s: %s slots [%d, %d) for gateway %s",
        lease.lease_id,
        cert_no,
        lease.slot_lo,
        lease.slot_hi,
        gateway_row.gw,
    )
    bundle = LeaseBundle(lease=token, certificate=cert.token).to_cbor()
    return lease, token, bundle


async def find(conn: AsyncConnection, lease_id: str) -> Row[Any] | None:
    """The lease row, or None."""
    return (await conn.execute(select(leases).where(leases.c.lease_id == lease_id))).first()


async def visible(conn: AsyncConnection, actor: Actor, lease_id: str) -> Row[Any]:
    """A lease of a certificate the actor may see; the same NotFoundError whether it exists or not."""
    row = await find(conn, lease_id)
    if row is not None:
        try:
            await certificates.credentials(conn, actor, row.cert_no)
        except NotFoundError:
            row = None
    if row is None:
        raise NotFoundError(f"lease {lease_id!r} does not exist", what="lease", key=lease_id)
    return row


async def get(conn: AsyncConnection, lease_id: str) -> Row[Any]:
    """The lease row; NotFoundError names the id."""
    row = (await conn.execute(select(leases).where(leases.c.lease_id == lease_id))).first()
    if row is None:
        raise NotFoundError(f"lease {lease_id!r} does not exist", what="lease", key=lease_id)
    return row


def bound_key(lease: Row[Any]) -> PublicKey:
    """The gateway key a stored lease is bound to: only that key's grants spend its slots (the platform signed the
    stored token itself, so it is read without verifying again)."""
    return PublicKey(decode_payload(sign1_payload(bytes(lease.token)), Lease).gateway_key)


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted slot numbers as ranges [lo, hi)."""
    runs: list[tuple[int, int]] = []
    for slot in slots:
        if runs and runs[-1][1] == slot:
            runs[-1] = (runs[-1][0], slot + 1)
        else:
            runs.append((slot, slot + 1))
    return runs


def _newest_not_released(rows: Iterable[Any]) -> set[int]:
    newest: dict[int, str] = {}
    for r in rows:  # ordered by seq
        newest[int(r.slot)] = str(r.kind)
    return {s for s, k in newest.items() if k != RecordKind.RELEASED}


async def spent_slots(conn: AsyncConnection, lease: Row[Any], *, trust_records: bool) -> set[int]:
    """Slots of a lease the platform cannot prove unspent: confirmed or activated under it and, when the gateway's
    chain is trusted (a close), every slot whose newest record in either branch of that chain is not a release."""
    spent = {
        int(r.slot)
        for r in await conn.execute(
            select(confirmations.c.slot)
            .where(confirmations.c.lease_id == lease.lease_id)
            .union(select(activations.c.slot).where(activations.c.lease_id == lease.lease_id))
        )
    }
    if trust_records:
        for table in (records, forked_records):
            rows = await conn.execute(
                select(table.c.slot, table.c.kind)
                .where(table.c.lease_id == lease.lease_id, table.c.gw == lease.gw, table.c.kind != RecordKind.CLOSED)
                .order_by(table.c.seq)
            )
            spent |= _newest_not_released(rows)
    return {s for s in spent if lease.slot_lo <= s < lease.slot_hi}


async def end(
    conn: AsyncConnection, lease: Row[Any], state: LeaseState, now: int, *, closed_seq: int, actor: str = "",
    reason: str = "",
) -> int:  # fmt: skip
    """End an active lease, keeping only the slots that may be spent held; return how many came back.

    Call with the lease's gateway locked (ingest holds it); this locks the certificate, as lease issue does.
    """
    await certificates.get(conn, lease.cert_no, lock=True)
    kept = sorted(await spent_slots(conn, lease, trust_records=state == LeaseState.CLOSED))
    await conn.execute(delete(slot_holds).where(slot_holds.c.lease_id == lease.lease_id))
    runs = _runs(kept)
    if runs:
        await conn.execute(
            slot_holds.insert(),
            [{"cert_no": lease.cert_no, "lease_id": lease.lease_id, "lo": lo, "hi": hi} for lo, hi in runs],
        )
    returned = int(lease.slot_hi - lease.slot_lo - len(kept))
    await conn.execute(
        update(leases)
        .where(leases.c.lease_id == lease.lease_id)
        .values(
            state=state.value, ended_at=now, closed_seq=closed_seq, returned=returned, ended_by=actor or None,
            end_reason=reason or None,
        )
    )  # fmt: skip
    log.info(
        "lease %s %s at seq %d: %d slots returned to %s, %d kept",
        lease.lease_id, state.value, closed_seq, returned, lease.cert_no, len(kept),
    )  # fmt: skip
    return returned


async def write_off(conn: AsyncConnection, actor: Actor, lease_id: str, reason: str, now: int) -> int:
    """An auditor or admin gives up on a lease whose gateway never came back; return how many slots came back.

    Only slots confirmed or activated under it stay spent; no record on it after the stored head counts, and
    its other slots never activate under it.
    """
    actor.require(Role.ADMIN, Role.AUDITOR)
    if not reason.strip():
        raise InvalidRequestError("a write-off needs a reason, kept for audit", field="reason")
    gw = (await get(conn, lease_id)).gw
    head = await gateways.lock(conn, gw)
    assert head is not None  # a lease's gateway is never deleted
    lease = await get(conn, lease_id)  # again, under the lock
    if lease.state != LeaseState.ACTIVE:
        raise ConflictError(f"lease {lease_id} is {lease.state} already; there is nothing to write off")
    returned = await end(
        conn, lease, LeaseState.WRITTEN_OFF, now, closed_seq=int(head.seq), actor=actor.name, reason=reason
    )
    await gateways.record_event(
        conn, gw, gateways.EventKind.WRITTEN_OFF, now, seq=int(head.seq), lease_id=lease_id, actor=actor.name,
        reason=reason,
    )  # fmt: skip
    return returned


async def stale_holds(conn: AsyncConnection, cert_nos: Iterable[str], now: int) -> dict[str, int]:
    """cert_no -> slots still held by active leases that expired with no report from their gateway since."""
    held = func.sum(slot_holds.c.hi - slot_holds.c.lo)
    rows = await conn.execute(
        select(leases.c.cert_no, held)
        .join(slot_holds, slot_holds.c.lease_id == leases.c.lease_id)
        .join(gateway_heads, gateway_heads.c.gw == leases.c.gw)
        .where(
            leases.c.cert_no.in_(list(cert_nos)),
            leases.c.state == LeaseState.ACTIVE,
            leases.c.exp <= now,
            gateway_heads.c.updated_at < leases.c.exp,
        )
        .group_by(leases.c.cert_no)
    )
    return {str(r[0]): int(r[1]) for r in rows}


async def stored_seq(conn: AsyncConnection, gw: str) -> int:
    """The gateway's journal seq the platform has verified and stored."""
    row = (await conn.execute(select(gateway_heads.c.seq).where(gateway_heads.c.gw == gw))).first()
    return int(row.seq) if row else 0


async def held_ranges(conn: AsyncConnection, lease_ids: set[str]) -> dict[str, list[tuple[int, int]]]:
    """lease id -> the ranges it still holds."""
    rows = await conn.execute(
        select(slot_holds.c.lease_id, slot_holds.c.lo, slot_holds.c.hi).where(slot_holds.c.lease_id.in_(lease_ids))
    )
    held: dict[str, list[tuple[int, int]]] = {lid: [] for lid in lease_ids}
    for r in rows:
        held[r.lease_id].append((r.lo, r.hi))
    return held


async def issue_as(
    conn: AsyncConnection,
    actor: Actor,
    cert_no: str,
    gateway: PublicKey,
    slots: int,
    *,
    valid_s: int | None,
    policy: LeasePolicy,
    issuer: SigningKey,
    now: int,
) -> tuple[Lease, bytes, bytes]:
    """A factory admin or technician leases slots of one of their certificates to one of their gateways."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    await certificates.credentials(conn, actor, cert_no)  # NotFoundError unless the actor may see it
    # An admin's new gateway joins the certificate's factory; anyone else's joins their own.
    factory = (await certificates.get(conn, cert_no)).org_id if actor.role == Role.ADMIN else None
    await gateways.register_as(conn, actor, gateway, "", now, org_id=factory)
    return await issue(conn, cert_no, gateway, slots, valid_s=valid_s, policy=policy, issuer=issuer, now=now)


async def list_for(conn: AsyncConnection, actor: Actor, cert_no: str) -> list[Row[Any]]:
    """The leases of a certificate the actor may see."""
    await certificates.credentials(conn, actor, cert_no)
    rows = await conn.execute(select(leases).where(leases.c.cert_no == cert_no).order_by(leases.c.issued_at))
    return list(rows.all())
