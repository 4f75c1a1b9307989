"""Anomalies: what the ledger refuses or flags, stored as evidence and published for dashboards."""

from __future__ import annotations

import logging
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.store.schema import anomalies

log = logging.getLogger(__name__)

MAX_EVIDENCE_BYTES = 256 * 1024


class AnomalyKind(StrEnum):
    """What went wrong; the first group refuses a whole batch, the second flags one record."""

    MALFORMED = "malformed"
    UNKNOWN_GATEWAY = "unknown_gateway"
    REVOKED_GATEWAY = "revoked_gateway"
    BAD_SIGNATURE = "bad_signature"
    TOPIC_MISMATCH = "topic_mismatch"
    BROKEN_CHAIN = "broken_chain"
    FORK = "fork"
    UNKNOWN_LEASE = "unknown_lease"
    FOREIGN_LEASE = "foreign_lease"
    SLOT_OUTSIDE_LEASE = "slot_outside_lease"
    PID_MISMATCH = "pid_mismatch"
    DUPLICATE_SLOT = "duplicate_slot"
    SN_REBADGED_TWICE = "sn_rebadged_twice"
    SPENT_SLOT_ACTIVATION = "spent_slot_activation"


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
