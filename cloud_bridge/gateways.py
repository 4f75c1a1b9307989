"""Gateways: registration of their public keys, their key history (key rotation) and revocation.

A gateway's id is the hex kid of the key it was registered with, and stays its id when a rotation gives it a new key
(docs/enrolment.md, "Key rotation"): `gateways.public_key` is the current key, `gateway_keys` every key it has had.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import accounts
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.store.schema import gateway_events, gateway_heads, gateway_keys, gateways, records
from wire.keys import PublicKey, kid_of
from wire.records import GENESIS

log = logging.getLogger(__name__)


def gw_id(key: PublicKey) -> str:
    """The gateway id a gateway registered with this (first) key gets, as in topics and records."""
    return key.kid.hex()


_READ = (
    select(gateways, gateway_heads.c.seq, gateway_heads.c.head)
    .join(gateway_heads, gateway_heads.c.gw == gateways.c.gw)
    .where(gateways.c.gw == bindparam("gw"))
)
_LOCK = _READ.with_for_update(of=gateway_heads)


async def lock(conn: AsyncConnection, gw: str) -> Row[Any] | None:
    """The gateway with its stored head (seq, head), the head row locked for the transaction; None if unknown.

    Everything that changes what a gateway's leases hold (ingest, close, write-off, freeze, lease issue,
    activation, key rotation) takes this lock first, then the certificate's.
    """
    row = (await conn.execute(_LOCK, {"gw": gw})).first()
    if row is None or conn.dialect.name != "postgresql":
        return row  # SQLite: BEGIN IMMEDIATE, nothing changed since this transaction began
    # After waiting for the lock PostgreSQL re-reads only the locked head row; the gateway's row may still be as
    # it was before a freeze or a key rotation that committed meanwhile. Read it again now that the lock is held.
    return (await conn.execute(_READ, {"gw": gw})).first()


async def find(conn: AsyncConnection, gw: str) -> Row[Any] | None:
    """The gateway row, or None."""
    return (await conn.execute(select(gateways).where(gateways.c.gw == gw))).first()


async def get(conn: AsyncConnection, gw: str) -> Row[Any]:
    """The gateway row; NotFoundError names the id."""
    row = await find(conn, gw)
    if row is None:
        raise NotFoundError(f"gateway {gw!r} is not registered; register its public key first", what="gateway", key=gw)
    return row


async def register(conn: AsyncConnection, key: PublicKey, name: str, now: int, *, org_id: int | None = None) -> str:
    """Register `key` to factory `org_id` (idempotent: a known key keeps its name, factory and revocation).

    A gateway's current key after a rotation names that gateway; a key a rotation retired is refused. A gateway
    of no factory leases no factory's certificate.
    """
    owner = await key_owner(conn, key)
    if owner is not None:
        if owner.to_seq is not None:
            raise ConflictError(
                f"key {key.kid.hex()} was retired from gateway {owner.gw} by a key rotation at seq {owner.to_seq}; "
                "use the gateway's current key"
            )
        return owner.gw
    gw = gw_id(key)
    await conn.execute(
        gateways.insert().values(gw=gw, public_key=key.raw, name=name, org_id=org_id, revoked=False, registered_at=now)
    )
    await conn.execute(gateway_heads.insert().values(gw=gw, seq=0, head=GENESIS, updated_at=now))
    await conn.execute(
        gateway_keys.insert().values(kid=key.kid.hex(), gw=gw, public_key=key.raw, from_seq=0, introduced_at=now)
    )
    log.info("registered gateway %s (%s)", gw, name or "no name")
    return gw


# -- the key history ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayKey:
    """One of a gateway's keys: it may sign checkpoints of seqs [from_seq, to_seq] (to_seq None: current)."""

    gw: str
    key: PublicKey
    from_seq: int
    to_seq: int | None

    def refusal(self, seq: int) -> str | None:
        """Why this key may not sign a checkpoint (or request) at journal seq `seq`; None if it may."""
        if self.to_seq is not None and seq > self.to_seq:
            return (
                f"key {self.key.kid.hex()} of gateway {self.gw} was retired by a key rotation at seq {self.to_seq} "
                f"and may not sign seq {seq}"
            )
        if seq < self.from_seq:
            return (
                f"key {self.key.kid.hex()} of gateway {self.gw} signs from seq {self.from_seq} on, not the history "
                f"before it (seq {seq})"
            )
        return None


async def checkpoint_refusal(conn: AsyncConnection, signer: GatewayKey, seq: int, head: bytes) -> str | None:
    """Why `signer` may not sign a checkpoint of journal seq `seq` with this head; None if it may.

    A retired key's seqs were all on the platform when the rotation was accepted (it takes place at the stored
    head), so what a retired key may still sign is a resend of exactly those records: any other history under it
    (a fork, a rewrite by whoever kept the old key) is refused as the retired key's, and never freezes the gateway.
    """
    problem = signer.refusal(seq)
    if problem is not None or signer.to_seq is None:
        return problem
    stored = await conn.execute(select(records.c.digest).where(records.c.gw == signer.gw, records.c.seq == seq))
    digest = stored.scalar_one_or_none()
    if digest is not None and bytes(digest) == head:
        return None
    return (
        f"key {signer.key.kid.hex()} of gateway {signer.gw} was retired by a key rotation at seq {signer.to_seq}; "
        f"it may only resend the records the platform holds, and seq {seq} with this head is not one of them"
    )


def _history_key(row: Row[Any]) -> GatewayKey:
    to_seq = None if row.to_seq is None else int(row.to_seq)
    return GatewayKey(str(row.gw), PublicKey(bytes(row.public_key)), int(row.from_seq), to_seq)


async def key_owner(conn: AsyncConnection, key: PublicKey) -> GatewayKey | None:
    """The gateway this key is (or was) a key of, or None."""
    row = (await conn.execute(select(gateway_keys).where(gateway_keys.c.public_key == key.raw))).first()
    if row is not None:
        return _history_key(row)
    current = (await conn.execute(select(gateways.c.gw).where(gateways.c.public_key == key.raw))).first()
    return None if current is None else GatewayKey(str(current.gw), key, 0, None)


async def key_by_kid(conn: AsyncConnection, kid: bytes, gw: str | None = None) -> GatewayKey | None:
    """The key with this kid (of gateway `gw`, when given), current or retired; None if unknown."""
    query = select(gateway_keys).where(gateway_keys.c.kid == kid.hex())
    row = (await conn.execute(query)).first()
    if row is not None:
        return _history_key(row) if gw is None or row.gw == gw else None
    # A gateway registered before the key history (or written by hand) has only its row: its first key.
    gateway = await find(conn, gw or kid.hex())
    if gateway is None or kid_of(bytes(gateway.public_key)) != kid:
        return None
    return GatewayKey(str(gateway.gw), PublicKey(bytes(gateway.public_key)), 0, None)


async def keys(conn: AsyncConnection, gw: str) -> list[Row[Any]]:
    """The gateway's key history, oldest first."""
    query = select(gateway_keys).where(gateway_keys.c.gw == gw).order_by(gateway_keys.c.from_seq)
    return list((await conn.execute(query)).all())


async def rotate_key(
    conn: AsyncConnection, gw: str, old: PublicKey, new: PublicKey, seq: int, introduction: bytes, now: int
) -> bool:
    """Retire `old` after journal seq `seq` and make `new` the gateway's key from seq+1 (caller holds the lock);
    False, changing nothing, when `old` is not the gateway's current key."""
    retired = await conn.execute(
        update(gateway_keys)
        .where(gateway_keys.c.kid == old.kid.hex(), gateway_keys.c.to_seq.is_(None))
        .values(to_seq=seq, retired_at=now)
    )
    if retired.rowcount == 0:
        if await keys(conn, gw):  # a history in which `old` is not current
            return False
        # registered before the key history
        await conn.execute(
            gateway_keys.insert().values(
                kid=old.kid.hex(), gw=gw, public_key=old.raw, from_seq=0, to_seq=seq, introduced_at=now,
                retired_at=now,
            )
        )  # fmt: skip
    await conn.execute(
        gateway_keys.insert().values(
            kid=new.kid.hex(), gw=gw, public_key=new.raw, from_seq=seq + 1, introduced_at=now, introduction=introduction
        )
    )
    await conn.execute(update(gateways).where(gateways.c.gw == gw).values(public_key=new.raw))
    await record_event(
        conn, gw, EventKind.KEY_ROTATED, now, seq=seq, actor=f"gateway {gw}",
        reason=f"key {old.kid.hex()} retired after seq {seq}; key {new.kid.hex()} signs from seq {seq + 1}",
    )  # fmt: skip
    log.warning("gateway %s: key %s retired after seq %d, key %s introduced", gw, old.kid.hex(), seq, new.kid.hex())
    return True


class EventKind(StrEnum):
    """What the gateway's audit history records."""

    ENROLLED = "enrolled"
    RENEWED = "renewed"  # a new client certificate over the gateway's mTLS session
    FROZEN = "frozen"
    REINSTATED = "reinstated"
    WRITTEN_OFF = "written_off"
    KEY_ROTATED = "key_rotated"  # the old key introduced a new one (seq: the last seq the old key may sign)


async def record_event(
    conn: AsyncConnection, gw: str, kind: EventKind, now: int, *, seq: int | None = None, lease_id: str | None = None,
    actor: str = "", reason: str = "",
) -> None:  # fmt: skip
    """Add one entry to the gateway's audit history."""
    await conn.execute(
        gateway_events.insert().values(
            gw=gw, kind=kind.value, seq=seq, lease_id=lease_id, actor=actor, reason=reason, at=now
        )
    )


async def history(conn: AsyncConnection, gw: str) -> list[Row[Any]]:
    """The gateway's audit history, oldest first."""
    rows = await conn.execute(select(gateway_events).where(gateway_events.c.gw == gw).order_by(gateway_events.c.id))
    return list(rows.all())


async def revoke(conn: AsyncConnection, gw: str, now: int) -> None:
    """Revoke a gateway: it gets no more leases and its batches are kept as anomalies, not counted."""
    await get(conn, gw)
    await conn.execute(update(gateways).where(gateways.c.gw == gw).values(revoked=True, revoked_at=now))
    log.warning("revoked gateway %s", gw)


async def register_as(
    conn: AsyncConnection, actor: Actor, key: PublicKey, name: str, now: int, *, org_id: int | None = None
) -> str:
    """Register a gateway key to the actor's factory (an admin names it); a key of another factory is refused.

    An admin naming the factory of a gateway that has none (registered by the platform itself, or, before gateways
    had to belong to a factory, to the admin's own platform organisation) gives it that factory.
    """
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    if len(name) > 128:
        raise InvalidRequestError(f"gateway name is {len(name)} characters; use at most 128", field="name")
    factory = await accounts.factory_of(conn, actor, org_id, "the gateway")
    owner = await key_owner(conn, key)
    if owner is None:
        return await register(conn, key, name, now, org_id=factory)
    row = await get(conn, owner.gw)
    gw = await register(conn, key, name, now)  # refuses a retired key
    unowned = row.org_id is None or (await accounts.get_org(conn, row.org_id)).kind != accounts.OrgKind.FACTORY
    if unowned and actor.role == Role.ADMIN:
        await conn.execute(update(gateways).where(gateways.c.gw == gw).values(org_id=factory))
        log.info("gateway %s given to factory %d by %s", gw, factory, actor.name)
    elif row.org_id != factory:
        if actor.role == Role.ADMIN:  # staff see every organisation: the answer may name it
            raise ConflictError(
                f"gateway {gw} belongs to organisation {row.org_id}, not {factory}; a gateway stays with its factory"
            )
        raise ConflictError(  # the same answer whoever holds the key
            f"gateway key {key.kid.hex()} cannot be registered to your organisation; make a new gateway key"
        )
    return gw


async def get_visible(conn: AsyncConnection, actor: Actor, gw: str) -> Row[Any]:
    """A gateway the actor may see; NotFoundError otherwise."""
    row = await find(conn, gw)
    if row is None or not (actor.platform_staff or row.org_id == actor.org_id):
        raise NotFoundError(f"gateway {gw!r} is not registered in your organisation", what="gateway", key=gw)
    return row


async def revoke_as(conn: AsyncConnection, actor: Actor, gw: str, now: int) -> None:
    """Revoke one of the actor's organisation's gateways (admins and auditors: any)."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN)
    await get_visible(conn, actor, gw)
    await revoke(conn, gw, now)


async def list_visible(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Gateways with their acked heads, as far as the actor may see them."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    query = select(gateways, gateway_heads.c.seq).join(gateway_heads).order_by(gateways.c.registered_at)
    if not actor.platform_staff:
        query = query.where(gateways.c.org_id == actor.org_id)
    return list((await conn.execute(query)).all())
