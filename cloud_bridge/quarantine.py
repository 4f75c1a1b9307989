"""A fork quarantines: a gateway whose journal forked is frozen until an admin reinstates it, with a reason.

Frozen: no new leases, no spend at or after the fork's seq counts, its grants activate only where the ledger
holds their confirmation from before the fork. Reinstating moves the platform's records from the fork point on
aside (kept as evidence, still read for which slots were used), so the gateway's own branch can continue, and
writes off the gateway's open leases: the gateway starts again on fresh leases.
"""

from __future__ import annotations

import logging

from sqlalchemy import BigInteger, delete, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import gateways, leases
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.leases import LeaseState
from cloud_bridge.store.schema import forked_records, gateway_heads, records
from cloud_bridge.store.schema import gateways as gateway_table
from cloud_bridge.store.schema import leases as lease_table
from wire.records import GENESIS

log = logging.getLogger(__name__)


async def freeze(conn: AsyncConnection, gw: str, seq: int, now: int, why: str) -> bool:
    """Freeze a gateway (locked by the caller) from `seq` on; True if it was not frozen before."""
    row = (await conn.execute(select(gateway_table.c.frozen_seq).where(gateway_table.c.gw == gw))).one()
    if row.frozen_seq is not None and row.frozen_seq <= seq:
        return False
    await conn.execute(update(gateway_table).where(gateway_table.c.gw == gw).values(frozen_at=now, frozen_seq=seq))
    await gateways.record_event(conn, gw, gateways.EventKind.FROZEN, now, seq=seq, reason=why)
    log.warning("gateway %s frozen from seq %d: %s", gw, seq, why)
    return True


async def reinstate(conn: AsyncConnection, actor: Actor, gw: str, reason: str, now: int) -> int:
    """Lift a gateway's freeze; return the seq its chain continues after (the last record before the fork)."""
    actor.require(Role.ADMIN)
    if not reason.strip():
        raise InvalidRequestError("reinstating a gateway needs a reason, kept for audit", field="reason")
    head = await gateways.lock(conn, gw)
    if head is None:
        raise NotFoundError(f"gateway {gw!r} is not registered", what="gateway", key=gw)
    if head.frozen_seq is None:
        raise ConflictError(f"gateway {gw} is not frozen; there is nothing to reinstate")
    fork_seq = int(head.frozen_seq)
    base = fork_seq - 1
    # The gateway's branch reuses the seqs after `base`: ending its leases there makes every record of that branch
    # on them come after their end.
    for lease in (
        await conn.execute(select(lease_table).where(lease_table.c.gw == gw, lease_table.c.state == LeaseState.ACTIVE))
    ).all():
        await leases.end(
            conn, lease, LeaseState.WRITTEN_OFF, now, closed_seq=base, actor=actor.name,
            reason=f"gateway reinstated after its journal forked at seq {fork_seq}: {reason}",
        )  # fmt: skip
    await _move_branch_aside(conn, gw, fork_seq, now)
    digest = (
        await conn.execute(select(records.c.digest).where(records.c.gw == gw, records.c.seq == base))
    ).scalar_one_or_none()
    await conn.execute(
        update(gateway_heads)
        .where(gateway_heads.c.gw == gw)
        .values(seq=base, head=bytes(digest) if digest is not None else GENESIS, updated_at=now)
    )
    await conn.execute(update(gateway_table).where(gateway_table.c.gw == gw).values(frozen_at=None, frozen_seq=None))
    await gateways.record_event(conn, gw, gateways.EventKind.REINSTATED, now, seq=base, actor=actor.name, reason=reason)
    log.warning("gateway %s reinstated by %s at seq %d: %s", gw, actor.name, base, reason)
    return base


async def _move_branch_aside(conn: AsyncConnection, gw: str, fork_seq: int, now: int) -> None:
    branch = records.c.gw == gw, records.c.seq >= fork_seq
    columns = ("gw", "seq", "digest", "body", "kind", "lease_id", "slot", "sn", "counted")
    moved = select(*(records.c[c] for c in columns), literal(now, BigInteger)).where(*branch)
    await conn.execute(insert(forked_records).from_select([*columns, "forked_at"], moved))
    await conn.execute(delete(records).where(*branch))
