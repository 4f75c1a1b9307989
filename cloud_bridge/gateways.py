"""Gateways: registration of their public keys (the gw id is the hex of the key's kid) and revocation."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.errors import NotFoundError
from cloud_bridge.store.schema import gateway_heads, gateways
from wire.keys import PublicKey
from wire.records import GENESIS

log = logging.getLogger(__name__)


def gw_id(key: PublicKey) -> str:
    """The gateway id of a gateway key, as in topics and records."""
    return key.kid.hex()


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


async def revoke(conn: AsyncConnection, gw: str, now: int) -> None:
    """Revoke a gateway: it gets no more leases and its batches are kept as anomalies, not counted."""
    await get(conn, gw)
    await conn.execute(update(gateways).where(gateways.c.gw == gw).values(revoked=True, revoked_at=now))
    log.warning("revoked gateway %s", gw)
