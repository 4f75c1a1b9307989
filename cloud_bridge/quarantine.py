"""A fork quarantines: a gateway whose journal forked is frozen until an admin reinstates it, with a reason.

Frozen: no new leases, no spend at or after the fork's seq counts, its grants activate only where the ledger
holds their confirmation from before the fork. Reinstating moves the platform's records from the fork point on
aside (kept as evidence, still read for which slots were used), so the gateway's own branch can continue, and
writes off the gateway's open leases: the gateway starts again on fresh leases.
"""

from __future__ import annotations

import logging
from typing import Any

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


async def due_acks(conn: AsyncConnection) -> list[tuple[str, int, bytes]]:
    """(gw, seq, head) of chains an admin rebased, whose new head no ack has told the gateway yet; marks them told."""
    rows = (
        await conn.execute(
            select(gateway_heads.c.gw, gateway_heads.c.seq, gateway_heads.c.head)
            .where(gateway_heads.c.ack_due.is_(True))
            .with_for_update()
        )
    ).all()
    if rows:
        await conn.execute(
            update(gateway_heads).where(gateway_heads.c.gw.in_([r.gw for r in rows])).values(ack_due=False)
        )
    return [(str(r.gw), int(r.seq), bytes(r.head)) for r in rows]


async def freeze(conn: AsyncConnection, gw: str, seq: int, now: int, why: str) -> bool:
    """Freeze a gateway (locked by the caller) from `seq` on; True if it was not frozen before."""
    row = (await conn.execute(select(gateway_table.c.frozen_seq).where(gateway_table.c.gw == gw))).one()
    if row.frozen_seq is not None and row.frozen_seq <= seq:
        return False
    await conn.execute(update(gateway_table).where(gateway_table.c.gw == gw).values(frozen_at=now, frozen_seq=seq))
    await gateways.record_event(conn, gw, gateways.EventKind.FROZEN, now, seq=seq, reason=why)
    log.warning("gateway %s frozen from seq %d: %s", gw, seq, why)
    return True


async def reinstate(
    conn: AsyncConnection, actor: Actor, gw: str, reason: str, now: int, *, seq: int | None = None
) -> int:
    """Lift a gateway's freeze, or rebase a gateway that stopped because its journal is behind (`seq`: the head
    `rebadge agent status` shows there); return the seq its chain continues after."""
    actor.require(Role.ADMIN)
    if not reason.strip():
        raise InvalidRequestError("reinstating a gateway needs a reason, kept for audit", field="reason")
    head = await gateways.lock(conn, gw)
    if head is None:
        raise NotFoundError(f"gateway {gw!r} is not registered", what="gateway", key=gw)
    base = _base(head, seq)
    fork_seq = base + 1
    # The gateway's branch reuses the seqs after `base`: ending its leases there makes every record of that branch
    # on them come after their end.
    why = f"gateway reinstated after its journal forked at seq {fork_seq}: {reason}"
    for lease in (
        await conn.execute(select(lease_table).where(lease_table.c.gw == gw, lease_table.c.state == LeaseState.ACTIVE))
    ).all():
        await leases.end(conn, lease, LeaseState.WRITTEN_OFF, now, closed_seq=base, actor=actor.name, reason=why)
        await gateways.record_event(
            conn, gw, gateways.EventKind.WRITTEN_OFF, now, seq=base, lease_id=lease.lease_id, actor=actor.name,
            reason=why,
        )  # fmt: skip
    await _move_branch_aside(conn, gw, fork_seq, now)
    digest = (
        await conn.execute(select(records.c.digest).where(records.c.gw == gw, records.c.seq == base))
    ).scalar_one_or_none()
    await conn.execute(
        update(gateway_heads)
        .where(gateway_heads.c.gw == gw)
        .values(seq=base, head=bytes(digest) if digest is not None else GENESIS, updated_at=now, ack_due=True)
    )
    await conn.execute(update(gateway_table).where(gateway_table.c.gw == gw).values(frozen_at=None, frozen_seq=None))
    await gateways.record_event(conn, gw, gateways.EventKind.REINSTATED, now, seq=base, actor=actor.name, reason=reason)
    log.warning("gateway %s reinstated by %s at seq %d: %s", gw, actor.name, base, reason)
    return base


def _base(head: Any, seq: int | None) -> int:
    """The last seq both chains share: before the fork, or the gateway's own head if the admin names it."""
    if seq is not None and not 0 <= seq < int(head.seq):
        raise InvalidRequestError(
            f"seq {seq} must lie below the platform's head seq {head.seq} of gateway {head.gw}; "
            "use the head seq `rebadge agent status` shows on the restored gateway",
            field="seq",
        )
    if head.frozen_seq is not None:
        return min(int(head.frozen_seq) - 1, seq if seq is not None else int(head.frozen_seq) - 1)
    if seq is None:
        raise ConflictError(
            f"gateway {head.gw} is not frozen; if its journal was restored and it stopped, name the head seq it "
            "holds (rebadge agent status) to rebase it there"
        )
    return seq


async def _move_branch_aside(conn: AsyncConnection, gw: str, fork_seq: int, now: int) -> None:
    branch = records.c.gw == gw, records.c.seq >= fork_seq
    columns = ("gw", "seq", "digest", "body", "kind", "lease_id", "slot", "sn", "counted")
    moved = select(*(records.c[c] for c in columns), literal(now, BigInteger)).where(*branch)
    await conn.execute(insert(forked_records).from_select([*columns, "forked_at"], moved))
    await conn.execute(delete(records).where(*branch))
