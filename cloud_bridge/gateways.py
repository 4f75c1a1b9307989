"""Gateways: registration of their public keys (the gw id is the hex of the key's kid) and revocation."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.store.schema import gateway_events, gateway_heads, gateways
from wire.keys import PublicKey
from wire.records import GENESIS

log = logging.getLogger(__name__)


def gw_id(key: PublicKey) -> str:
    """The gateway id of a gateway key, as in topics and records."""
    return key.kid.hex()


_LOCK = (
    select(gateways, gateway_heads.c.seq, gateway_heads.c.head)
    .join(gateway_heads, gateway_heads.c.gw == gateways.c.gw)
    .where(gateways.c.gw == bindparam("gw"))
    .with_for_update(of=gateway_heads)
)


async def lock(conn: AsyncConnection, gw: str) -> Row[Any] | None:
    """The gateway with its stored head (seq, head), the head row locked for the transaction; None if unknown.

    Everything that changes what a gateway's leases hold (ingest, close, write-off, freeze, lease issue,
    activation) takes this lock first, then the certificate's.
    """
    return (await conn.execute(_LOCK, {"gw": gw})).first()


async def find(conn: AsyncConnection, gw: str) -> Row[Any] | None:
    """The gateway row, or None."""
    return (await conn.execute(select(gateways).where(gateways.c.gw == gw))).first()


async def get(conn: AsyncConnection, gw: str) -> Row[Any]:
    """The gateway row; NotFoundError names the id."""
    row = await find(conn, gw)
    if row is None:
        raise NotFoundError(f"gateway {gw!r} is not registered; register its public key first", what="gateway", key=gw)
    return row


async def register(conn: AsyncConnection, key: PublicKey, name: str, now: int) -> str:
    """Register `key` (idempotent: a known key keeps its name and revocation); return its gateway id."""
    gw = gw_id(key)
    if await find(conn, gw) is not None:
        return gw
    await conn.execute(gateways.insert().values(gw=gw, public_key=key.raw, name=name, revoked=False, registered_at=now))
    await conn.execute(gateway_heads.insert().values(gw=gw, seq=0, head=GENESIS, updated_at=now))
    log.info("registered gateway %s (%s)", gw, name or "no name")
    return gw


class EventKind(StrEnum):
    """What the gateway's audit history records."""

    ENROLLED = "enrolled"
    RENEWED = "renewed"  # a new client certificate over the gateway's mTLS session
    FROZEN = "frozen"
    REINSTATED = "reinstated"
    WRITTEN_OFF = "written_off"


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


async def register_as(conn: AsyncConnection, actor: Actor, key: PublicKey, name: str, now: int) -> str:
    """Register a gateway key for the actor's organisation; a key of another organisation is refused."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    if len(name) > 128:
        raise InvalidRequestError(f"gateway name is {len(name)} characters; use at most 128", field="name")
    gw = gw_id(key)
    row = await find(conn, gw)
    if row is not None:
        if row.org_id != actor.org_id and actor.role != Role.ADMIN:  # the same answer whoever holds the key
            raise ConflictError(f"gateway key {gw} cannot be registered to your organisation; make a new gateway key")
        return gw
    await register(conn, key, name, now)
    if actor.org_id is not None:
        await conn.execute(update(gateways).where(gateways.c.gw == gw).values(org_id=actor.org_id))
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
