"""Leases: disjoint slot ranges of a certificate, each signed for one gateway's key."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import certificates
from cloud_bridge.certificates import Status
from cloud_bridge.errors import ConflictError, GatewayRevokedError, InvalidRequestError, NoSlotsLeftError, NotFoundError
from cloud_bridge.store.schema import leases, slot_holds
from wire.keys import PublicKey, SigningKey
from wire.tokens import Lease, LeaseBundle, sign

log = logging.getLogger(__name__)

LEASE_ID_PREFIX = "L"
LEASE_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32: no look-alike letters on a label
LEASE_ID_RANDOM_CHARS = 9
MAX_LEASE_SLOTS = 1_000_000


class LeaseState:
    """Where a lease is in its life."""

    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"


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
    valid_s: int,
    issuer: SigningKey,
    now: int,
) -> tuple[Lease, bytes, bytes]:
    """Allocate and sign a lease of up to `slots` slots; return the lease, its token and the bundle bytes."""
    if not 1 <= slots <= MAX_LEASE_SLOTS:
        raise InvalidRequestError(f"slots {slots} must lie between 1 and {MAX_LEASE_SLOTS}", field="slots")
    if valid_s <= 0:
        raise InvalidRequestError(f"valid_s {valid_s} must be a positive number of seconds", field="valid_s")
    if gateway_row.revoked:
        raise GatewayRevokedError(f"gateway {gateway_row.gw} is revoked and gets no leases", gw=gateway_row.gw)
    # The lock on the certificate row serialises allocations, so two leases never share a slot.
    cert = await certificates.get(conn, cert_no, lock=True)
    if cert.status != Status.APPROVED:
        raise ConflictError(f"certificate {cert_no} is {cert.status}; leases come only from an approved certificate")
    if now >= cert.exp:
        raise ConflictError(f"certificate {cert_no} expired at {cert.exp}; apply for a new certificate")
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
