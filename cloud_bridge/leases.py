"""Leases: disjoint slot ranges of a certificate, each signed for one gateway's key."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import certificates, gateways
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.certificates import Status
from cloud_bridge.errors import ConflictError, GatewayRevokedError, InvalidRequestError, NoSlotsLeftError, NotFoundError
from cloud_bridge.store.schema import gateway_heads, leases, records, slot_holds
from wire.keys import PublicKey, SigningKey
from wire.records import RecordKind
from wire.tokens import Lease, LeaseBundle, sign

log = logging.getLogger(__name__)

LEASE_ID_PREFIX = "L"
LEASE_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no look-alike letters on a label
LEASE_ID_RANDOM_CHARS = 9
MAX_LEASE_SLOTS = 1_000_000


class LeaseState:
    """Where a lease is in its life."""

    ACTIVE = "active"
    RELEASED = "released"  # the gateway handed back its unused slots
    EXPIRED = "expired"  # past its expiry and the grace for late records; unused slots returned
    REVOKED = "revoked"  # its certificate was revoked; slots stay spent

    ENDED_WITH_RETURN = (RELEASED, EXPIRED)


@dataclass(frozen=True)
class LeasePolicy:
    """How big and how long leases are, and how long ended leases wait for late records before slots return."""

    max_slots: int = 10_000
    valid_s: int = 86_400
    return_grace_s: int = 3_600


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
    gateway_row: Row[Any],
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
    if gateway_row.revoked:
        raise GatewayRevokedError(f"gateway {gateway_row.gw} is revoked and gets no leases", gw=gateway_row.gw)
    # The lock on the certificate row serialises allocations, so two leases never share a slot.
    cert = await certificates.get(conn, cert_no, lock=True)
    if cert.status != Status.APPROVED:
        raise ConflictError(f"certificate {cert_no} is {cert.status}; leases come only from an approved certificate")
    if now >= cert.exp:
        raise ConflictError(f"certificate {cert_no} expired at {cert.exp}; apply for a new certificate")
    await expire_due(conn, now, policy.return_grace_s, cert_no)
    picked = pick_range(free_runs(await holds_of(conn, cert_no), cert.quantity), slots)
    if picked is None:
        raise NoSlotsLeftError(
            f"certificate {cert_no} has no slots left: all {cert.quantity} are leased or spent; "
            "wait for leases to be released or expire, or apply for a new certificate",
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


async def get(conn: AsyncConnection, lease_id: str) -> Row[Any]:
    """The lease row; NotFoundError names the id."""
    row = (await conn.execute(select(leases).where(leases.c.lease_id == lease_id))).first()
    if row is None:
        raise NotFoundError(f"lease {lease_id!r} does not exist", what="lease", key=lease_id)
    return row


def _runs(slots: list[int]) -> list[tuple[int, int]]:
    """Sorted slot numbers as ranges [lo, hi)."""
    runs: list[tuple[int, int]] = []
    for slot in slots:
        if runs and runs[-1][1] == slot:
            runs[-1] = (runs[-1][0], slot + 1)
        else:
            runs.append((slot, slot + 1))
    return runs


async def used_slots(conn: AsyncConnection, lease: Row[Any]) -> list[int]:
    """Slots of a lease whose newest record (from its own gateway) is not a release: reserved, in doubt or confirmed."""
    rows = await conn.execute(
        select(records.c.slot, records.c.kind)
        .where(records.c.lease_id == lease.lease_id, records.c.gw == lease.gw)
        .order_by(records.c.seq)
    )
    newest = {r.slot: r.kind for r in rows}
    return sorted(s for s, k in newest.items() if k != RecordKind.RELEASED and lease.slot_lo <= s < lease.slot_hi)


async def end(conn: AsyncConnection, lease: Row[Any], state: str, now: int, *, release_seq: int | None = None) -> int:
    """End an active lease, keeping only its used slots held; return how many slots came back."""
    used = await used_slots(conn, lease)
    await conn.execute(delete(slot_holds).where(slot_holds.c.lease_id == lease.lease_id))
    runs = _runs(used)
    if runs:
        await conn.execute(
            slot_holds.insert(),
            [{"cert_no": lease.cert_no, "lease_id": lease.lease_id, "lo": lo, "hi": hi} for lo, hi in runs],
        )
    await conn.execute(
        update(leases)
        .where(leases.c.lease_id == lease.lease_id)
        .values(state=state, ended_at=now, release_seq=release_seq)
    )
    returned = int(lease.slot_hi - lease.slot_lo - len(used))
    log.info("lease %s %s: %d slots returned to %s, %d kept", lease.lease_id, state, returned, lease.cert_no, len(used))
    return returned


async def expire_due(conn: AsyncConnection, now: int, grace_s: int, cert_no: str | None = None) -> int:
    """End the active leases past expiry plus the grace for late records; return how many ended."""
    query = select(leases).where(leases.c.state == LeaseState.ACTIVE, leases.c.exp + grace_s <= now)
    if cert_no is not None:
        query = query.where(leases.c.cert_no == cert_no)
    due = (await conn.execute(query.with_for_update())).all()
    for lease in due:
        await end(conn, lease, LeaseState.EXPIRED, now)
    return len(due)


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
    gw = await gateways.register_as(conn, actor, gateway, "", now)
    row = await gateways.get(conn, gw)
    return await issue(conn, cert_no, gateway, row, slots, valid_s=valid_s, policy=policy, issuer=issuer, now=now)


async def list_for(conn: AsyncConnection, actor: Actor, cert_no: str) -> list[Row[Any]]:
    """The leases of a certificate the actor may see."""
    await certificates.credentials(conn, actor, cert_no)
    rows = await conn.execute(select(leases).where(leases.c.cert_no == cert_no).order_by(leases.c.issued_at))
    return list(rows.all())
