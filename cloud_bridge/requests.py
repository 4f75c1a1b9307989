"""Gateways' signed requests over MQTT: a lease (`req/lease`), what came back of a closed lease (`req/release`) and a
new client certificate (`req/renew`).

A request is a COSE_Sign1 token signed by the gateway's key; a topic name is never proof of who sent it. Its time
must lie within `REQUEST_WINDOW_S` of the platform's clock and its nonce must be new in that window.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from sqlalchemy import Row, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import anomalies, certificates, gateways, leases
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.ca import CertificateAuthority
from cloud_bridge.errors import (
    CloudError,
    GatewayFrozenError,
    InvalidRequestError,
    NoSlotsLeftError,
    NotFoundError,
)
from cloud_bridge.leases import LeasePolicy, LeaseState
from cloud_bridge.store.schema import request_nonces
from wire import x509 as wx
from wire.errors import MalformedError, TokenError, WireError
from wire.keys import KeyRing, SigningKey
from wire.lease_request import (
    REQUEST_WINDOW_S,
    AnswerCode,
    LeaseAnswer,
    LeaseRequest,
    Release,
    ReleaseAnswer,
    RenewAnswer,
    RenewRequest,
    SignedRequest,
)
from wire.times import utc_iso
from wire.tokens import HDR_KID, peek_header, verify

log = logging.getLogger(__name__)

R = TypeVar("R", bound=SignedRequest)
MAX_MESSAGE = 500


class RequestRefusedError(CloudError):
    """A request that gets a refusal before it is looked at: `code` is the answer's code, `id` its id if known."""

    def __init__(self, message: str, *, code: AnswerCode, request_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


def _code_of(exc: CloudError) -> AnswerCode:
    if isinstance(exc, NoSlotsLeftError):
        return AnswerCode.NO_SLOTS
    if isinstance(exc, GatewayFrozenError):
        return AnswerCode.FROZEN
    if isinstance(exc, NotFoundError):
        return AnswerCode.NOT_FOUND
    if isinstance(exc, InvalidRequestError):
        return AnswerCode.MALFORMED
    return AnswerCode.REFUSED


async def _gateway(conn: AsyncConnection, gw: str) -> Row[Any]:
    row = await gateways.find(conn, gw)
    if row is None:
        raise RequestRefusedError(
            f"gateway {gw} is not registered; enrol it on the platform first", code=AnswerCode.UNKNOWN_GATEWAY
        )
    if row.revoked:
        raise RequestRefusedError(f"gateway {gw} is revoked", code=AnswerCode.REFUSED)
    return row


async def verified_request(conn: AsyncConnection, topic_gw: str, token: bytes, cls: type[R], now: int) -> R:
    """Verify a gateway's signed request: its key, its topic, its time and a fresh nonce (stored here)."""
    request, _ = await verified_with_signer(conn, topic_gw, token, cls, now)
    return request


async def verified_with_signer(
    conn: AsyncConnection, topic_gw: str, token: bytes, cls: type[R], now: int
) -> tuple[R, gateways.GatewayKey]:
    """`verified_request`, with the gateway key that signed the request."""
    try:
        kid = peek_header(token).get(HDR_KID)
    except MalformedError as exc:
        raise RequestRefusedError(
            f"request is not a signed token ({exc}); sign requests with the gateway key", code=AnswerCode.BAD_SIGNATURE
        ) from exc
    row = await gateways.find(conn, topic_gw)
    if row is None:
        raise RequestRefusedError(
            f"gateway {topic_gw} is not registered; enrol it on the platform first", code=AnswerCode.UNKNOWN_GATEWAY
        )
    signer = await gateways.key_by_kid(conn, kid, topic_gw) if isinstance(kid, bytes) else None
    if signer is None:
        raise RequestRefusedError(
            f"request on gateway {topic_gw}'s topic is not signed by that gateway's key", code=AnswerCode.BAD_SIGNATURE
        )
    try:
        request = verify(token, cls, KeyRing([signer.key]))
    except TokenError as exc:
        raise RequestRefusedError(str(exc), code=AnswerCode.BAD_SIGNATURE) from exc
    except MalformedError as exc:
        raise RequestRefusedError(str(exc), code=AnswerCode.MALFORMED) from exc
    if request.gw != topic_gw:
        raise RequestRefusedError(
            f"request names gateway {request.gw!r} on gateway {topic_gw}'s topic",
            code=AnswerCode.BAD_SIGNATURE,
            request_id=request.id,
        )
    if signer.to_seq is not None:  # verified with the retired key itself: evidence that it is still in use
        await _retired(conn, signer, token, request.id, now)
    await _fresh(conn, request, now)
    # Revocation is checked only once the request is known to be the gateway's own: what a revoked gateway is
    # refused may be stored as evidence against it, which a forgery on its topic must never be.
    try:
        await _gateway(conn, topic_gw)
    except RequestRefusedError as exc:
        raise RequestRefusedError(str(exc), code=exc.code, request_id=request.id) from exc
    return request, signer


async def _retired(conn: AsyncConnection, signer: gateways.GatewayKey, token: bytes, request_id: str, now: int) -> None:
    message = (
        f"request signed by key {signer.key.kid.hex()}, which a key rotation retired after seq {signer.to_seq}; "
        "sign with the gateway's current key (if that key is lost or stolen, revoke the gateway)"
    )
    await anomalies.store(conn, AnomalyKind.RETIRED_KEY, message, now, payload=token, gw=signer.gw)
    log.warning("gateway %s: %s", signer.gw, message)
    raise RequestRefusedError(message, code=AnswerCode.RETIRED_KEY, request_id=request_id)


async def _fresh(conn: AsyncConnection, request: SignedRequest, now: int) -> None:
    if abs(request.at - now) > REQUEST_WINDOW_S:
        raise RequestRefusedError(
            f"request time {utc_iso(request.at)} is {request.at - now:+d} s from the platform's clock {utc_iso(now)}, "
            f"outside the "
            f"{REQUEST_WINDOW_S} s window; set the gateway's clock (NTP) and send it again",
            code=AnswerCode.REPLAYED,
            request_id=request.id,
        )
    try:
        async with conn.begin_nested():
            await conn.execute(request_nonces.insert().values(gw=request.gw, nonce=request.nonce, at=now))
    except IntegrityError as exc:
        raise RequestRefusedError(
            "request's nonce was seen before: a replay, refused; a new request needs a fresh nonce",
            code=AnswerCode.REPLAYED,
            request_id=request.id,
        ) from exc


async def prune_nonces(conn: AsyncConnection, now: int) -> int:
    """Forget nonces of requests too old to be accepted anyway; return how many."""
    result = await conn.execute(delete(request_nonces).where(request_nonces.c.at < now - 2 * REQUEST_WINDOW_S))
    return int(result.rowcount)


async def answer_lease(
    conn: AsyncConnection, gw: str, payload: bytes, *, policy: LeasePolicy, issuer: SigningKey, now: int
) -> LeaseAnswer:
    """Answer a gateway's signed lease request; refusals are answers too, never exceptions."""
    try:
        request, signer = await verified_with_signer(conn, gw, payload, LeaseRequest, now)
    except RequestRefusedError as exc:
        return LeaseAnswer(id=exc.request_id, code=exc.code, message=str(exc)[:MAX_MESSAGE])
    except WireError as exc:
        return LeaseAnswer(id="", code=AnswerCode.MALFORMED, message=str(exc)[:MAX_MESSAGE])
    try:
        row = await _gateway(conn, gw)
        cert = await certificates.get(conn, request.cert_no)
        if cert.org_id != row.org_id:  # the same answer as for a certificate that does not exist
            raise NotFoundError(f"certificate {request.cert_no!r} does not exist", what="certificate", key="")
        # Bound to the key that signed the request, not the row's key read now: a rotation committed since the
        # request was verified makes leases.issue refuse it under the gateway lock, instead of leasing to the new key.
        lease, _, bundle = await leases.issue(
            conn,
            request.cert_no,
            signer.key,
            request.slots,
            valid_s=request.valid_s,
            policy=policy,
            issuer=issuer,
            now=now,
        )
    except RequestRefusedError as exc:
        return LeaseAnswer(id=request.id, code=exc.code, message=str(exc)[:MAX_MESSAGE])
    except CloudError as exc:
        return LeaseAnswer(id=request.id, code=_code_of(exc), message=str(exc)[:MAX_MESSAGE])
    message = f"lease {lease.lease_id}: slots [{lease.slot_lo}, {lease.slot_hi}) of {lease.cert_no}"
    return LeaseAnswer(id=request.id, code=AnswerCode.OK, message=message, bundle=bundle)


async def answer_release(conn: AsyncConnection, gw: str, payload: bytes, *, now: int) -> ReleaseAnswer:
    """Say what came back of a lease the gateway closed in its chain, once the platform has ingested the close."""
    try:
        release = await verified_request(conn, gw, payload, Release, now)
    except RequestRefusedError as exc:
        return ReleaseAnswer(id=exc.request_id, code=exc.code, message=str(exc)[:MAX_MESSAGE])
    except WireError as exc:
        return ReleaseAnswer(id="", code=AnswerCode.MALFORMED, message=str(exc)[:MAX_MESSAGE])
    return await _release(conn, release.id, gw, release)


async def _release(conn: AsyncConnection, request_id: str, gw: str, release: Release) -> ReleaseAnswer:
    lease = await leases.find(conn, release.lease_id)
    if lease is None or lease.gw != gw:
        message = f"lease {release.lease_id!r} is not a lease of gateway {gw}"
        return ReleaseAnswer(id=request_id, code=AnswerCode.NOT_FOUND, message=message)
    if lease.state == LeaseState.CLOSED and lease.closed_seq == release.seq:
        returned = int(lease.returned or 0)
        return ReleaseAnswer(
            id=request_id, code=AnswerCode.OK, message=f"lease {lease.lease_id} closed: {returned} slots returned",
            returned=returned,
        )  # fmt: skip
    if lease.state != LeaseState.ACTIVE:
        message = f"lease {lease.lease_id} is {lease.state.replace('_', ' ')}"
        if lease.closed_seq is not None:
            message += f" at seq {lease.closed_seq}, not at seq {release.seq}"
        return ReleaseAnswer(id=request_id, code=AnswerCode.REFUSED, message=message)
    stored = await leases.stored_seq(conn, gw)
    if stored >= release.seq:
        return ReleaseAnswer(
            id=request_id,
            code=AnswerCode.REFUSED,
            message=f"your record at seq {release.seq} does not close lease {lease.lease_id}; nothing returned",
        )
    return ReleaseAnswer(
        id=request_id,
        code=AnswerCode.PENDING,
        message=f"the platform has your journal up to seq {stored}; the close is at seq {release.seq}. "
        "Slots come back when the records up to it arrive; ask again then",
    )


async def release_as(conn: AsyncConnection, actor: Actor, lease_id: str, token: bytes, *, now: int) -> ReleaseAnswer:
    """A person hands in a gateway's signed release over HTTP (an air-gapped line) to learn what came back."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.TECHNICIAN)
    lease = await leases.visible(conn, actor, lease_id)
    try:
        release = await verified_request(conn, str(lease.gw), token, Release, now)
    except RequestRefusedError as exc:
        raise InvalidRequestError(
            f"release is not a fresh request signed by the lease's gateway: {exc}", field="release"
        ) from exc
    if release.lease_id != lease_id:
        raise InvalidRequestError(f"release names lease {release.lease_id}, not {lease_id}", field="release")
    return await _release(conn, "", str(lease.gw), release)


async def certificate_request(
    conn: AsyncConnection, gw: str, payload: bytes, cls: type[R], what: str, now: int
) -> R | RenewAnswer:
    """A verified request whose answer is a client certificate, or its refusal as that answer; a revoked
    gateway's is stored as an anomaly (not renewing, and no new key, is how its access ends)."""
    try:
        return await verified_request(conn, gw, payload, cls, now)
    except RequestRefusedError as exc:
        if exc.code is AnswerCode.REFUSED:
            message = f"{what} refused: {exc}"
            await anomalies.store(conn, AnomalyKind.REVOKED_GATEWAY, message, now, payload=payload, gw=gw)
            log.warning("gateway %s: %s", gw, message)
        return RenewAnswer(id=exc.request_id, code=exc.code, message=str(exc)[:MAX_MESSAGE])
    except WireError as exc:
        return RenewAnswer(id="", code=AnswerCode.MALFORMED, message=str(exc)[:MAX_MESSAGE])


async def answer_renew(
    conn: AsyncConnection, gw: str, payload: bytes, *, ca: CertificateAuthority, cert_valid_s: int, now: int
) -> RenewAnswer:
    """A new client certificate for the gateway's own key; a revoked gateway is refused and an anomaly stored."""
    request = await certificate_request(conn, gw, payload, RenewRequest, "renewal", now)
    if isinstance(request, RenewAnswer):
        return request
    row = await _gateway(conn, gw)
    try:
        _, key = wx.read_gateway_csr(request.csr)
        if key.raw != bytes(row.public_key):
            message = f"the csr's key is not gateway {gw}'s key; a renewal keeps the key (rotate-key changes it)"
            return RenewAnswer(id=request.id, code=AnswerCode.MALFORMED, message=message)
        wx.check_gateway_csr(request.csr, gw)
    except MalformedError as exc:
        return RenewAnswer(id=request.id, code=AnswerCode.MALFORMED, message=str(exc)[:MAX_MESSAGE])
    cert = ca.issue_gateway(gw, key, cert_valid_s, now)
    not_after = int(cert.not_valid_after_utc.timestamp())
    until = utc_iso(not_after)
    await gateways.record_event(
        conn, gw, gateways.EventKind.RENEWED, now, actor=f"gateway {gw}", reason=f"client certificate until {until}"
    )
    log.info("renewed the client certificate of gateway %s until %s", gw, until)
    return RenewAnswer(
        id=request.id, code=AnswerCode.OK, message=f"client certificate until {until}", certificate=wx.pem(cert),
        not_after=not_after,
    )  # fmt: skip
