"""Replacement certificates: application, approval (which signs the certificate token), rejection, revocation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import products
from cloud_bridge.accounts import Actor, Role, get_org
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.store.queries import confirmed_per_cert
from cloud_bridge.store.schema import activations, certificates, leases
from cloud_bridge.store.schema import products as product_table
from wire.errors import MalformedError
from wire.ids import SHORT_PID_LEN, check_pid
from wire.keys import SigningKey
from wire.tokens import Certificate, sign, token_hash

log = logging.getLogger(__name__)

PROTOCOLS = ("wifi", "ble", "zigbee")
SHORT_PID_PROTOCOLS = ("ble", "zigbee")  # their PIDs are 8 characters
MAX_QUANTITY = 10_000_000
CERT_PREFIX = "RC"


class Status:
    """Audit status of a certificate, as the credential list shows it."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    REVOKED = "revoked"


def check_request(original_pid: str, new_pid: str, quantity: int, protocols: Sequence[str]) -> tuple[str, ...]:
    """Validate an application's fields; return the protocols in canonical order."""
    for field, value in (("original_pid", original_pid), ("new_pid", new_pid)):
        try:
            check_pid(value, field)
        except MalformedError as exc:
            raise InvalidRequestError(str(exc), field=field) from exc
    if original_pid == new_pid:
        raise InvalidRequestError(f"new_pid {new_pid!r} equals original_pid; choose a different PID", field="new_pid")
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidRequestError(f"quantity {quantity} must lie between 1 and {MAX_QUANTITY}", field="quantity")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise InvalidRequestError(
            f"protocols {list(protocols)!r}: use one or more of {', '.join(PROTOCOLS)}", field="protocols"
        )
    short = [p for p in protocols if p in SHORT_PID_PROTOCOLS]
    if short and (len(original_pid) != SHORT_PID_LEN or len(new_pid) != SHORT_PID_LEN):
        raise InvalidRequestError(
            f"{' and '.join(short)} carry 8-character PIDs; original_pid and new_pid must both be 8 characters",
            field="protocols",
        )
    return tuple(p for p in PROTOCOLS if p in protocols)


async def apply(
    conn: AsyncConnection,
    *,
    factory: str,
    original_pid: str,
    new_pid: str,
    quantity: int,
    protocols: Sequence[str],
    valid_s: int,
    now: int,
    reason: str = "",
    applicant: str = "",
    org_id: int | None = None,
) -> str:
    """Store an application (pending audit); return its certificate number."""
    protos = check_request(original_pid, new_pid, quantity, protocols)
    if not 1 <= len(factory) <= 64:
        raise InvalidRequestError(f"factory {factory!r} must be 1 to 64 characters", field="factory")
    if valid_s <= 0:
        raise InvalidRequestError(f"valid_s {valid_s} must be a positive number of seconds", field="valid_s")
    result = await conn.execute(
        certificates.insert()
        .values(
            factory=factory,
            original_pid=original_pid,
            new_pid=new_pid,
            quantity=quantity,
            protocols=",".join(protos),
            reason=reason,
            applicant=applicant,
            org_id=org_id,
            status=Status.PENDING,
            valid_s=valid_s,
            created_at=now,
        )
        .returning(certificates.c.id)
    )
    cert_id = result.scalar_one()
    cert_no = f"{CERT_PREFIX}{cert_id:06d}"
    await conn.execute(update(certificates).where(certificates.c.id == cert_id).values(cert_no=cert_no))
    log.info("certificate %s applied for: %s -> %s x %d", cert_no, original_pid, new_pid, quantity)
    return cert_no


async def get(conn: AsyncConnection, cert_no: str, *, lock: bool = False) -> Row[Any]:
    """The certificate row (locked for update when asked); NotFoundError names the number."""
    query = select(certificates).where(certificates.c.cert_no == cert_no)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFoundError(f"certificate {cert_no!r} does not exist", what="certificate", key=cert_no)
    return row


async def approve(
    conn: AsyncConnection, cert_no: str, issuer: SigningKey, now: int, *, auditor: str = "", comment: str = ""
) -> tuple[Certificate, bytes]:
    """Approve a pending application: sign the certificate, valid from now for its requested time."""
    row = await get(conn, cert_no, lock=True)
    if row.status != Status.PENDING:
        raise ConflictError(f"certificate {cert_no} is {row.status}, only a pending application can be approved")
    try:
        cert = Certificate(
            cert_no=cert_no,
            factory=row.factory,
            original_pid=row.original_pid,
            new_pid=row.new_pid,
            quantity=row.quantity,
            protocols=tuple(row.protocols.split(",")),
            nbf=now,
            exp=now + row.valid_s,
        )
    except ValidationError as exc:
        raise InvalidRequestError(f"certificate {cert_no} cannot be signed: {exc}", field="certificate") from exc
    token = sign(cert, issuer)
    await conn.execute(
        update(certificates)
        .where(certificates.c.cert_no == cert_no)
        .values(
            status=Status.APPROVED,
            nbf=cert.nbf,
            exp=cert.exp,
            token=token,
            token_hash=token_hash(token),
            issuer_kid=issuer.kid.hex(),
            auditor=auditor,
            audit_comment=comment,
            decided_at=now,
        )
    )
    log.info("certificate %s approved by %s", cert_no, auditor or "the platform")
    return cert, token


async def decide(conn: AsyncConnection, cert_no: str, status: str, now: int, *, auditor: str, comment: str) -> None:
    """Reject a pending application or revoke an approved certificate."""
    row = await get(conn, cert_no, lock=True)
    allowed = {Status.REJECTED: Status.PENDING, Status.REVOKED: Status.APPROVED}
    if allowed.get(status) != row.status:
        raise ConflictError(f"certificate {cert_no} is {row.status}; it cannot become {status}")
    await conn.execute(
        update(certificates)
        .where(certificates.c.cert_no == cert_no)
        .values(status=status, auditor=auditor, audit_comment=comment, decided_at=now)
    )
    log.info("certificate %s %s by %s", cert_no, status, auditor)


def certificate_of(row: Row[Any]) -> Certificate:
    """The signed certificate's payload from its stored row."""
    return Certificate(
        cert_no=row.cert_no,
        factory=row.factory,
        original_pid=row.original_pid,
        new_pid=row.new_pid,
        quantity=row.quantity,
        protocols=tuple(row.protocols.split(",")),
        nbf=row.nbf,
        exp=row.exp,
    )


async def apply_as(
    conn: AsyncConnection,
    actor: Actor,
    *,
    original_pid: str,
    new_pid: str,
    quantity: int,
    reason: str,
    protocols: Sequence[str],
    valid_s: int,
    now: int,
) -> str:
    """A factory admin applies for a certificate for a product of theirs in trial or mass production."""
    actor.require(Role.FACTORY_ADMIN)
    product = await products.get(conn, actor, original_pid)
    if product.org_id != actor.org_id:
        raise NotFoundError(f"product {original_pid!r} is not one of yours", what="product", key=original_pid)
    if product.stage not in products.PRODUCING:
        raise ConflictError(
            f"product {original_pid} is in {product.stage}; a certificate needs trial or mass production "
            "(complete development first)"
        )
    if not 1 <= len(reason) <= 1000:
        raise InvalidRequestError("reason must be 1 to 1000 characters: say why the PIDs are replaced", field="reason")
    factory = await _org_name(conn, actor)
    return await apply(
        conn,
        factory=factory,
        original_pid=original_pid,
        new_pid=new_pid,
        quantity=quantity,
        protocols=protocols,
        valid_s=valid_s,
        now=now,
        reason=reason,
        applicant=actor.name,
        org_id=actor.org_id,
    )


async def _org_name(conn: AsyncConnection, actor: Actor) -> str:
    return str((await get_org(conn, actor.org_id or 0)).name)[:64]


async def audit(
    conn: AsyncConnection, actor: Actor, cert_no: str, *, approve_it: bool, comment: str, issuer: SigningKey, now: int
) -> None:
    """An auditor approves (which signs the certificate) or rejects a pending application."""
    actor.require(Role.AUDITOR)
    if approve_it:
        await approve(conn, cert_no, issuer, now, auditor=actor.name, comment=comment)
    else:
        if not comment:
            raise InvalidRequestError("a rejection needs a comment that tells the applicant why", field="comment")
        await decide(conn, cert_no, Status.REJECTED, now, auditor=actor.name, comment=comment)


async def revoke(conn: AsyncConnection, actor: Actor, cert_no: str, *, comment: str, now: int) -> None:
    """Revoke an approved certificate: no more leases; its active leases end (their slots stay spent)."""
    actor.require(Role.AUDITOR, Role.ADMIN)
    await decide(conn, cert_no, Status.REVOKED, now, auditor=actor.name, comment=comment)
    await conn.execute(
        update(leases)
        .where(leases.c.cert_no == cert_no, leases.c.state == "active")
        .values(state="revoked", ended_at=now)
    )


def _credential_query() -> Select[Any]:
    confirmed = confirmed_per_cert()
    activated = select(activations.c.cert_no, func.count().label("n")).group_by(activations.c.cert_no).subquery()
    return (
        select(
            certificates,
            func.coalesce(confirmed.c.n, 0).label("replaced"),
            func.coalesce(activated.c.n, 0).label("activated"),
        )
        .outerjoin(confirmed, confirmed.c.cert_no == certificates.c.cert_no)
        .outerjoin(activated, activated.c.cert_no == certificates.c.cert_no)
        .order_by(certificates.c.id)
    )


def _scoped(query: Select[Any], actor: Actor) -> Select[Any]:
    if actor.platform_staff:
        return query
    if actor.role == Role.CUSTOMER:  # a brand owner sees the certificates that give goods its PIDs
        own = select(product_table.c.pid).where(product_table.c.org_id == actor.org_id)
        return query.where(or_(certificates.c.new_pid.in_(own), certificates.c.org_id == actor.org_id))
    return query.where(certificates.c.org_id == actor.org_id)


async def credentials(conn: AsyncConnection, actor: Actor, cert_no: str | None = None) -> list[Row[Any]]:
    """The credential list: each certificate with replaced (verified) and activated counts."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN, Role.TECHNICIAN, Role.CUSTOMER)
    query = _scoped(_credential_query(), actor)
    if cert_no is not None:
        query = query.where(certificates.c.cert_no == cert_no)
    rows = list((await conn.execute(query)).all())
    if cert_no is not None and not rows:
        raise NotFoundError(f"certificate {cert_no!r} does not exist or is not yours", what="certificate", key=cert_no)
    return rows
