"""Anomalies: what the ledger refuses or flags, stored as evidence and published for dashboards."""

from __future__ import annotations

import logging
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.accounts import Actor, Role
from cloud_bridge.store.schema import anomalies, certificates, gateways

log = logging.getLogger(__name__)

MAX_EVIDENCE_BYTES = 256 * 1024


class AnomalyKind(StrEnum):
    """What went wrong; the first group refuses a whole batch, the second flags one record."""

    MALFORMED = "malformed"
    UNKNOWN_GATEWAY = "unknown_gateway"
    REVOKED_GATEWAY = "revoked_gateway"
    BAD_SIGNATURE = "bad_signature"
    RETIRED_KEY = "retired_key"  # signed by a key a rotation retired, for what comes after its last seq
    TOPIC_MISMATCH = "topic_mismatch"
    BROKEN_CHAIN = "broken_chain"
    FORK = "fork"
    UNKNOWN_LEASE = "unknown_lease"
    FOREIGN_LEASE = "foreign_lease"
    SLOT_OUTSIDE_LEASE = "slot_outside_lease"
    FROZEN_GATEWAY = "frozen_gateway"  # records of a gateway frozen by a fork, at or after the fork's seq
    AFTER_LEASE_END = "after_lease_end"  # a record on a lease after its close or write-off
    RETURNED_SLOT = "returned_slot"  # a slot its ended lease no longer holds
    RELEASE_AFTER_CONFIRM = "release_after_confirm"  # a confirmed slot is final
    PID_MISMATCH = "pid_mismatch"
    DUPLICATE_SLOT = "duplicate_slot"
    SN_REBADGED_TWICE = "sn_rebadged_twice"
    SPENT_SLOT_ACTIVATION = "spent_slot_activation"
    UNHELD_SLOT_ACTIVATION = "unheld_slot_activation"  # a receipt for a slot its lease no longer holds


class AnomalyEvent(BaseModel):
    """One anomaly as JSON on the anomalies topic and in the API."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: int
    kind: AnomalyKind
    message: str
    at: int
    gw: str | None = None
    seq: int | None = None
    cert_no: str | None = None
    lease_id: str | None = None
    slot: int | None = None
    sn: str | None = None


async def store(
    conn: AsyncConnection,
    kind: AnomalyKind,
    message: str,
    now: int,
    *,
    payload: bytes | None = None,
    gw: str | None = None,
    seq: int | None = None,
    cert_no: str | None = None,
    lease_id: str | None = None,
    slot: int | None = None,
    sn: str | None = None,
) -> AnomalyEvent:
    """Store one anomaly and return it as it will be published."""
    fields = {"gw": gw, "seq": seq, "cert_no": cert_no, "lease_id": lease_id, "slot": slot, "sn": sn}
    evidence = payload[:MAX_EVIDENCE_BYTES] if payload is not None else None
    result = await conn.execute(
        anomalies.insert()
        .values(kind=kind.value, message=message, at=now, payload=evidence, **fields)
        .returning(anomalies.c.id)
    )
    event = AnomalyEvent(id=result.scalar_one(), kind=kind, message=message, at=now, **fields)
    log.warning("anomaly %s: %s (gateway %s, SN %s)", kind.value, message, gw, sn)
    return event


async def list_visible(
    conn: AsyncConnection, actor: Actor, *, kind: AnomalyKind | None = None, gw: str | None = None, limit: int = 100
) -> list[AnomalyEvent]:
    """Newest anomalies first: all for platform staff; a factory's own gateways' and certificates' for its admin."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN)
    query = select(anomalies).order_by(anomalies.c.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(anomalies.c.kind == kind.value)
    if gw is not None:
        query = query.where(anomalies.c.gw == gw)
    if not actor.platform_staff:
        own_gws = select(gateways.c.gw).where(gateways.c.org_id == actor.org_id)
        own_certs = select(certificates.c.cert_no).where(certificates.c.org_id == actor.org_id)
        query = query.where(or_(anomalies.c.gw.in_(own_gws), anomalies.c.cert_no.in_(own_certs)))
    rows = await conn.execute(query)
    return [
        AnomalyEvent(
            id=r.id,
            kind=AnomalyKind(r.kind),
            message=r.message,
            at=r.at,
            gw=r.gw,
            seq=r.seq,
            cert_no=r.cert_no,
            lease_id=r.lease_id,
            slot=r.slot,
            sn=r.sn,
        )
        for r in rows
    ]
