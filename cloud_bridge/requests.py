"""Gateways' requests over MQTT: a lease (`req/lease`) and the release of a lease's unused slots (`req/release`)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import certificates, gateways, leases
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import CloudError, ConflictError, InvalidRequestError, NoSlotsLeftError, NotFoundError
from cloud_bridge.leases import LeasePolicy, LeaseState
from wire.errors import MalformedError, TokenError, WireError
from wire.keys import KeyRing, PublicKey, SigningKey
from wire.lease_request import (
    AnswerCode,
    LeaseAnswer,
    Release,
    ReleaseAnswer,
    lease_request_from_cbor,
    release_request_from_cbor,
)
from wire.tokens import verify

log = logging.getLogger(__name__)

MAX_ID_CHARS = 64


def _code_of(exc: CloudError) -> AnswerCode:
    if isinstance(exc, NoSlotsLeftError):
        return AnswerCode.NO_SLOTS
    if isinstance(exc, NotFoundError):
        return AnswerCode.NOT_FOUND
    if isinstance(exc, InvalidRequestError):
        return AnswerCode.MALFORMED
    return AnswerCode.REFUSED


async def _gateway(conn: AsyncConnection, gw: str) -> Row[Any]:
    row = await gateways.find(conn, gw)
    if row is None:
        raise NotFoundError(f"gateway {gw} is not registered; enrol it on the platform first", what="gateway", key=gw)
    if row.revoked:
        raise ConflictError(f"gateway {gw} is revoked")
    return row


async def answer_lease(
    conn: AsyncConnection, gw: str, payload: bytes, *, policy: LeasePolicy, issuer: SigningKey, now: int
) -> LeaseAnswer:
    """Answer a gateway's lease request; refusals are answers too, never exceptions."""
    try:
        request = lease_request_from_cbor(payload)
    except WireError as exc:
        return LeaseAnswer(id="", code=AnswerCode.MALFORMED, message=str(exc)[:500])
    try:
        row = await _gateway(conn, gw)
    except NotFoundError as exc:
        return LeaseAnswer(id=request.id, code=AnswerCode.UNKNOWN_GATEWAY, message=str(exc))
    except CloudError as exc:
        return LeaseAnswer(id=request.id, code=AnswerCode.REFUSED, message=str(exc))
    try:
        cert = await certificates.get(conn, request.cert_no)
        if row.org_id is not None and cert.org_id is not None and cert.org_id != row.org_id:
            raise NotFoundError(f"certificate {request.cert_no!r} does not exist", what="certificate", key=cert.cert_no)
        lease, _, bundle = await leases.issue(
            conn,
            request.cert_no,
            PublicKey(bytes(row.public_key)),
            row,
            request.slots,
            valid_s=request.valid_s,
            policy=policy,
            issuer=issuer,
            now=now,
        )
    except CloudError as exc:
        return LeaseAnswer(id=request.id, code=_code_of(exc), message=str(exc)[:500])
    message = f"lease {lease.lease_id}: slots [{lease.slot_lo}, {lease.slot_hi}) of {lease.cert_no}"
    return LeaseAnswer(id=request.id, code=AnswerCode.OK, message=message, bundle=bundle)


async def answer_release(conn: AsyncConnection, gw: str, payload: bytes, *, now: int) -> ReleaseAnswer:
    """Take back a lease's unused slots once its gateway's journal is stored up to the release's seq."""
    try:
        request = release_request_from_cbor(payload)
    except WireError as exc:
        return ReleaseAnswer(id="", code=AnswerCode.MALFORMED, message=str(exc)[:500])
    try:
        row = await _gateway(conn, gw)
    except NotFoundError as exc:
        return ReleaseAnswer(id=request.id, code=AnswerCode.UNKNOWN_GATEWAY, message=str(exc))
    except CloudError as exc:
        return ReleaseAnswer(id=request.id, code=AnswerCode.REFUSED, message=str(exc))
    try:
        release = verify(request.release, Release, KeyRing([PublicKey(bytes(row.public_key))]))
    except TokenError as exc:
        return ReleaseAnswer(id=request.id, code=AnswerCode.BAD_SIGNATURE, message=str(exc)[:500])
    except MalformedError as exc:
        return ReleaseAnswer(id=request.id, code=AnswerCode.MALFORMED, message=str(exc)[:500])
    return await _release(conn, request.id, gw, release, now)


async def _release(conn: AsyncConnection, request_id: str, gw: str, release: Release, now: int) -> ReleaseAnswer:
    try:
        lease = await leases.get(conn, release.lease_id)
    except NotFoundError as exc:
        return ReleaseAnswer(id=request_id, code=AnswerCode.NOT_FOUND, message=str(exc))
    if lease.gw != gw:
        return ReleaseAnswer(id=request_id, code=AnswerCode.NOT_FOUND, message=f"lease {lease.lease_id} is not yours")
    if lease.state != LeaseState.ACTIVE:
        return ReleaseAnswer(id=request_id, code=AnswerCode.OK, message=f"lease {lease.lease_id} already {lease.state}")
    stored = await leases.stored_seq(conn, gw)
    if stored < release.seq:
        return ReleaseAnswer(
            id=request_id,
            code=AnswerCode.PENDING,
            message=f"the platform has your journal up to seq {stored}, the release names seq {release.seq}; "
            "send the records first, then the release again",
        )
    returned = await leases.end(conn, lease, LeaseState.RELEASED, now, release_seq=release.seq)
    return ReleaseAnswer(id=request_id, code=AnswerCode.OK, message=f"{returned} slots returned", returned=returned)


async def release_as(conn: AsyncConnection, actor: Actor, lease_id: str, token: bytes, *, now: int) -> ReleaseAnswer:
    """A person hands in a gateway's signed release over HTTP (an air-gapped line)."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    lease = await leases.get(conn, lease_id)
    await certificates.credentials(conn, actor, lease.cert_no)  # NotFoundError unless the actor may see it
    row = await gateways.get(conn, lease.gw)
    try:
        release = verify(token, Release, KeyRing([PublicKey(bytes(row.public_key))]))
    except (TokenError, MalformedError) as exc:
        raise InvalidRequestError(f"release is not signed by the lease's gateway: {exc}", field="release") from exc
    if release.lease_id != lease_id:
        raise InvalidRequestError(f"release names lease {release.lease_id}, not {lease_id}", field="release")
    return await _release(conn, "", str(lease.gw), release, now)
