"""Activation in the field: a device presents its SN, PID and receipt (the grant); each slot activates once."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import anomalies, certificates, gateways, leases
from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.errors import NotFoundError
from cloud_bridge.leases import LeaseState
from cloud_bridge.store.schema import activations, confirmations, records
from cloud_bridge.store.schema import certificates as cert_table
from wire.errors import MalformedError, TokenError
from wire.keys import KeyRing
from wire.records import RecordKind
from wire.tokens import HDR_KID, Grant, peek_header, verify

log = logging.getLogger(__name__)


class Verdict(StrEnum):
    """The platform's answer to an activation."""

    ACTIVATED = "activated"
    ALREADY_ACTIVATED = "already_activated"  # the same device again: fine
    SPENT_SLOT = "spent_slot"  # another device already activated with this slot
    NOT_HELD = "not_held"  # the lease no longer holds the slot (closed, written off, frozen) and never confirmed it
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


async def _verified_grant(conn: AsyncConnection, receipt: bytes) -> tuple[Grant, gateways.GatewayKey] | Activation:
    try:
        kid = peek_header(receipt).get(HDR_KID)
    except MalformedError as exc:
        return _invalid(f"receipt is malformed: {exc}")
    if not isinstance(kid, bytes):
        return _invalid("receipt names no gateway key")
    # Any key the gateway has had: a receipt its old key signed before a key rotation is still its receipt.
    signer = await gateways.key_by_kid(conn, kid)
    if signer is None:
        return _invalid(f"receipt is signed by gateway key {kid.hex()}, which the platform does not know")
    try:
        grant = verify(receipt, Grant, KeyRing([signer.key]))
    except (TokenError, MalformedError) as exc:
        return _invalid(f"receipt does not verify: {exc}")
    return grant, signer


async def activate(conn: AsyncConnection, sn: str, pid: str, receipt: bytes, now: int) -> Activation:
    """Check a device's receipt and record its activation: each (certificate, slot) and each SN once, and only
    for the lease that held the slot when it was spent."""
    checked = await _verified_grant(conn, receipt)
    if isinstance(checked, Activation):
        return checked
    grant, signer = checked
    gw = signer.gw
    if grant.sn != sn or grant.new_pid != pid:
        return _invalid(f"receipt is for SN {grant.sn} and PID {grant.new_pid}, not SN {sn} and PID {pid}")
    lease = await _lease_of(conn, grant, signer, pid)
    if isinstance(lease, Activation):
        return lease
    # The gateway's lock orders this with its ingest, closes and write-offs; the certificate's with every other
    # activation of the certificate (the same order as lease issue, so no deadlock).
    gateway = await gateways.lock(conn, gw)
    await certificates.get(conn, lease.cert_no, lock=True)
    lease = await leases.get(conn, grant.lease_id)  # again, under the locks: a close may have just ended it
    held = await _held_for(conn, grant, lease, gateway)
    if isinstance(held, str):
        event = await _flag(conn, AnomalyKind.UNHELD_SLOT_ACTIVATION, held, grant, gw, lease.cert_no, now)
        return Activation(
            Verdict.NOT_HELD, held, cert_no=lease.cert_no, lease_id=grant.lease_id, slot=grant.slot, anomaly=event
        )
    return await _record(conn, grant, str(lease.cert_no), pid, gw, now)


async def _lease_of(
    conn: AsyncConnection, grant: Grant, signer: gateways.GatewayKey, pid: str
) -> Row[Any] | Activation:
    try:
        lease = await leases.get(conn, grant.lease_id)
    except NotFoundError:
        return _invalid(f"receipt names lease {grant.lease_id}, which the platform never issued")
    if lease.gw != signer.gw or not lease.slot_lo <= grant.slot < lease.slot_hi:
        return _invalid(f"receipt's slot {grant.slot} is not in lease {lease.lease_id} of gateway {signer.gw}")
    bound = leases.bound_key(lease)
    if bound != signer.key:  # a key rotation: each key spends only the leases bound to it, as devices check
        return _invalid(
            f"receipt is signed by key {signer.key.kid.hex()} of gateway {signer.gw}, but lease {lease.lease_id} "
            f"is bound to its key {bound.kid.hex()}"
        )
    cert = (await conn.execute(select(cert_table).where(cert_table.c.cert_no == lease.cert_no))).one()
    if cert.new_pid != pid or grant.slot >= cert.quantity:
        return _invalid(f"lease {lease.lease_id} gives PID {cert.new_pid}, not {pid}")
    return lease


async def _held_for(conn: AsyncConnection, grant: Grant, lease: Row[Any], gateway: Row[Any] | None) -> bool | str:
    """True if the lease spent this slot on this SN; else why not (a message)."""
    where = f"slot {grant.slot} of {lease.cert_no} (lease {lease.lease_id})"
    confirmed = (
        await conn.execute(
            select(confirmations.c.lease_id, confirmations.c.sn).where(
                confirmations.c.cert_no == lease.cert_no, confirmations.c.slot == grant.slot
            )
        )
    ).first()
    if confirmed is not None:
        if (confirmed.lease_id, confirmed.sn) == (grant.lease_id, grant.sn):
            return True
        return f"{where} was confirmed for SN {confirmed.sn} in lease {confirmed.lease_id}, not for SN {grant.sn}"
    if gateway is None or gateway.revoked or gateway.frozen_seq is not None:
        state = "frozen after its journal forked" if gateway is not None and not gateway.revoked else "revoked"
        return f"gateway {lease.gw} is {state} and its journal never confirmed SN {grant.sn} in {where}"
    if lease.state == LeaseState.ACTIVE:
        return True  # the lease still holds its whole range; the journal may reach the platform later
    if lease.state == LeaseState.CLOSED and await _kept_for(conn, grant, lease):
        return True
    return f"{where} went back to the certificate when the lease was {lease.state.replace('_', ' ')}"


async def _kept_for(conn: AsyncConnection, grant: Grant, lease: Row[Any]) -> bool:
    """A closed lease kept this slot (in doubt) and its gateway's newest record of the slot names this SN."""
    holds = await leases.held_ranges(conn, {lease.lease_id})
    if not any(lo <= grant.slot < hi for lo, hi in holds[lease.lease_id]):
        return False
    newest = (
        await conn.execute(
            select(records.c.sn)
            .where(records.c.lease_id == lease.lease_id, records.c.gw == lease.gw, records.c.slot == grant.slot)
            .where(records.c.kind != RecordKind.CLOSED, records.c.seq <= lease.closed_seq)  # nothing after the close
            .order_by(records.c.seq.desc())
            .limit(1)
        )
    ).first()
    return newest is not None and newest.sn == grant.sn


async def _record(conn: AsyncConnection, grant: Grant, cert_no: str, pid: str, gw: str, now: int) -> Activation:
    done = functools.partial(Activation, cert_no=cert_no, lease_id=grant.lease_id, slot=grant.slot)
    slot_row = (
        await conn.execute(
            select(activations.c.sn, activations.c.lease_id).where(
                and_(activations.c.cert_no == cert_no, activations.c.slot == grant.slot)
            )
        )
    ).first()
    if slot_row is not None and (slot_row.sn, slot_row.lease_id) == (grant.sn, grant.lease_id):
        return done(Verdict.ALREADY_ACTIVATED, f"SN {grant.sn} is already active")
    if slot_row is not None:
        message = f"slot {grant.slot} of {cert_no} was already activated by SN {slot_row.sn}"
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
