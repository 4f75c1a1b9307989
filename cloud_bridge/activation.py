"""Activation in the field: a device presents its SN, PID and receipt (the grant); each slot activates once."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import anomalies, gateways, leases
from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.errors import NotFoundError
from cloud_bridge.store.schema import activations, certificates, confirmations
from wire.errors import MalformedError, TokenError
from wire.keys import KeyRing, PublicKey
from wire.tokens import HDR_KID, Grant, peek_header, verify

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """The platform's answer to an activation."""

    ACTIVATED = "activated"
    ALREADY_ACTIVATED = "already_activated"  # the same device again: fine
    SPENT_SLOT = "spent_slot"  # another device already activated with this slot
    SN_ALREADY_ACTIVATED = "sn_already_activated"  # this SN activated under another slot of the certificate
    INVALID_RECEIPT = "invalid_receipt"  # forged, unknown gateway, wrong SN or PID, slot outside the lease


@dataclass(frozen=True)
class Activation:
    """An activation's outcome; `anomaly` is set when it was flagged."""

    verdict: Verdict
    message: str
    cert_no: str | None = None
    lease_id: str | None = None
    slot: int | None = None
    anomaly: AnomalyEvent | None = None

    @property
    def accepted(self) -> bool:
        """Whether the device may go live."""
        return self.verdict in (Verdict.ACTIVATED, Verdict.ALREADY_ACTIVATED)


def _invalid(message: str) -> Activation:
    return Activation(Verdict.INVALID_RECEIPT, message)


async def _verified_grant(conn: AsyncConnection, receipt: bytes) -> tuple[Grant, str] | Activation:
    try:
        kid = peek_header(receipt).get(HDR_KID)
    except MalformedError as exc:
        return _invalid(f"receipt is malformed: {exc}")
    if not isinstance(kid, bytes):
        return _invalid("receipt names no gateway key")
    row = await gateways.find(conn, kid.hex())
    if row is None:
        return _invalid(f"receipt is signed by gateway {kid.hex()}, which the platform does not know")
    try:
        grant = verify(receipt, Grant, KeyRing([PublicKey(bytes(row.public_key))]))
    except (TokenError, MalformedError) as exc:
        return _invalid(f"receipt does not verify: {exc}")
    return grant, str(row.gw)


async def activate(conn: AsyncConnection, sn: str, pid: str, receipt: bytes, now: int) -> Activation:
    """Check a device's receipt and record its activation, once per (lease, slot) and once per SN and certificate."""
    checked = await _verified_grant(conn, receipt)
    if isinstance(checked, Activation):
        return checked
    grant, gw = checked
    if grant.sn != sn or grant.new_pid != pid:
        return _invalid(f"receipt is for SN {grant.sn} and PID {grant.new_pid}, not SN {sn} and PID {pid}")
    cert_no = await _lease_check(conn, grant, gw, pid)
    if isinstance(cert_no, Activation):
        return cert_no
    return await _record(conn, grant, cert_no, pid, gw, now)


async def _lease_check(conn: AsyncConnection, grant: Grant, gw: str, pid: str) -> str | Activation:
    try:
        lease = await leases.get(conn, grant.lease_id)
    except NotFoundError:
        return _invalid(f"receipt names lease {grant.lease_id}, which the platform never issued")
    if lease.gw != gw or not lease.slot_lo <= grant.slot < lease.slot_hi:
        return _invalid(f"receipt's slot {grant.slot} is not in lease {lease.lease_id} of gateway {gw}")
    cert = (await conn.execute(select(certificates).where(certificates.c.cert_no == lease.cert_no))).one()
    if cert.new_pid != pid:
        return _invalid(f"lease {lease.lease_id} gives PID {cert.new_pid}, not {pid}")
    if (await gateways.get(conn, gw)).revoked and not await _confirmed(conn, grant):
        return _invalid(f"gateway {gw} is revoked and its journal never confirmed SN {grant.sn} in this slot")
    return str(cert.cert_no)


async def _confirmed(conn: AsyncConnection, grant: Grant) -> bool:
    row = await conn.execute(
        select(confirmations.c.sn).where(
            and_(confirmations.c.lease_id == grant.lease_id, confirmations.c.slot == grant.slot)
        )
    )
    found = row.first()
    return found is not None and found.sn == grant.sn


async def _record(conn: AsyncConnection, grant: Grant, cert_no: str, pid: str, gw: str, now: int) -> Activation:
    done = functools.partial(Activation, cert_no=cert_no, lease_id=grant.lease_id, slot=grant.slot)
    slot_row = (
        await conn.execute(
            select(activations.c.sn).where(
                and_(activations.c.lease_id == grant.lease_id, activations.c.slot == grant.slot)
            )
        )
    ).first()
    if slot_row is not None and slot_row.sn == grant.sn:
        return done(Verdict.ALREADY_ACTIVATED, f"SN {grant.sn} is already active")
    if slot_row is not None:
        message = f"slot {grant.slot} of lease {grant.lease_id} was already activated by SN {slot_row.sn}"
        event = await _flag(conn, AnomalyKind.SPENT_SLOT_ACTIVATION, message, grant, gw, cert_no, now)
        return done(Verdict.SPENT_SLOT, message, anomaly=event)
    sn_row = (
        await conn.execute(
            select(activations.c.lease_id, activations.c.slot).where(
                and_(activations.c.cert_no == cert_no, activations.c.sn == grant.sn)
            )
        )
    ).first()
    if sn_row is not None:
        message = f"SN {grant.sn} already activated under {cert_no} with lease {sn_row.lease_id} slot {sn_row.slot}"
        event = await _flag(conn, AnomalyKind.SN_REBADGED_TWICE, message, grant, gw, cert_no, now)
        return done(Verdict.SN_ALREADY_ACTIVATED, message, anomaly=event)
    await conn.execute(
        activations.insert().values(
            lease_id=grant.lease_id, slot=grant.slot, cert_no=cert_no, sn=grant.sn, pid=pid, at=now
        )
    )
    log.info("SN %s activated with %s slot %d of lease %s", grant.sn, cert_no, grant.slot, grant.lease_id)
    return done(Verdict.ACTIVATED, f"SN {grant.sn} activated")


async def _flag(
    conn: AsyncConnection, kind: AnomalyKind, message: str, grant: Grant, gw: str, cert_no: str, now: int
) -> AnomalyEvent:
    return await anomalies.store(
        conn, kind, message, now, gw=gw, cert_no=cert_no, lease_id=grant.lease_id, slot=grant.slot, sn=grant.sn
    )
