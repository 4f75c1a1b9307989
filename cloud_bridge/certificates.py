"""Replacement certificates: application, approval (which signs the certificate token), rejection, revocation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import products
from cloud_bridge.accounts import Actor, OrgKind, Role, get_org, org_named
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


async def _store_application(
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
    applicant: str,
    org_id: int,
    original_org_id: int,
    new_org_id: int,
) -> str:
    """Store an application (pending audit) with its readers; return its certificate number."""
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
            original_org_id=original_org_id,
            new_org_id=new_org_id,
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


async def _approve(
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


async def _decide(conn: AsyncConnection, cert_no: str, status: str, now: int, *, auditor: str, comment: str) -> None:
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


@dataclass(frozen=True)
class Application:
    """What an applicant asks for; the same fields whether a factory applies or platform staff issue directly."""

    original_pid: str
    new_pid: str
    quantity: int
    reason: str
    protocols: Sequence[str] = ("wifi",)
    valid_s: int = 30 * 86400


def _manages(factory_id: int, product: Row[Any], field: str) -> bool:
    # The one place that decides which products a factory may name. Goods become (new_pid) its own products or those
    # it manages for a customer who redeemed one of its OEM links; they start from (original_pid) its own products
    # only, so a factory cannot move a customer's goods to another brand.
    if field == "new_pid":
        return products.may_manage(factory_id, product)
    return bool(product.org_id == factory_id)


async def _product_of(conn: AsyncConnection, factory_id: int, pid: str, whose: str, field: str) -> Row[Any]:
    row = (await conn.execute(select(product_table).where(product_table.c.pid == pid))).first()
    # The same answer whether another organisation has it or not.
    if row is None or not _manages(factory_id, row, field):
        raise NotFoundError(f"{field} {pid!r} is not a product of {whose}", what="product", key=pid)
    return row


async def _file(
    conn: AsyncConnection, factory: Row[Any], whose: str, app: Application, *, applicant: str, now: int
) -> str:
    """Check an application for `factory` against every rule and store it; return its certificate number."""
    if factory.kind != OrgKind.FACTORY:
        raise ConflictError(f"organisation {factory.name} is a {factory.kind}; only a factory can hold a certificate")
    check_request(app.original_pid, app.new_pid, app.quantity, app.protocols)
    if not 1 <= len(app.reason) <= 1000:
        raise InvalidRequestError("reason must be 1 to 1000 characters: say why the PIDs are replaced", field="reason")
    original = await _product_of(conn, factory.id, app.original_pid, whose, "original_pid")
    if original.stage not in products.PRODUCING:
        raise ConflictError(
            f"product {app.original_pid} is in {original.stage}; a certificate needs trial or mass production "
            "(complete development first)"
        )
    new = await _product_of(conn, factory.id, app.new_pid, whose, "new_pid")
    return await _store_application(
        conn,
        factory=str(factory.name)[:64],
        original_pid=app.original_pid,
        new_pid=app.new_pid,
        quantity=app.quantity,
        protocols=app.protocols,
        valid_s=app.valid_s,
        now=now,
        reason=app.reason,
        applicant=applicant,
        org_id=int(factory.id),
        original_org_id=int(original.org_id),
        new_org_id=int(new.org_id),
    )


async def apply_as(conn: AsyncConnection, actor: Actor, app: Application, *, now: int) -> str:
    """A factory admin applies for a certificate: both PIDs its own products, the original in production."""
    actor.require(Role.FACTORY_ADMIN)
    factory = await get_org(conn, actor.org_id or 0)
    return await _file(conn, factory, "your organisation", app, applicant=actor.name, now=now)


async def issue_as(
    conn: AsyncConnection, actor: Actor, factory_name: str, app: Application, *, issuer: SigningKey, now: int
) -> tuple[Certificate, bytes]:
    """Platform staff apply for a factory and approve at once (no separate audit), under the same rules."""
    actor.require(Role.ADMIN, Role.AUDITOR)
    factory = await org_named(conn, factory_name)
    cert_no = await _file(conn, factory, f"organisation {factory.name}", app, applicant=actor.name, now=now)
    return await _approve(conn, cert_no, issuer, now, auditor=actor.name, comment="issued directly, without audit")


async def audit(
    conn: AsyncConnection, actor: Actor, cert_no: str, *, approve_it: bool, comment: str, issuer: SigningKey, now: int
) -> None:
    """An auditor approves (which signs the certificate) or rejects a pending application."""
    actor.require(Role.AUDITOR)
    if approve_it:
        await _approve(conn, cert_no, issuer, now, auditor=actor.name, comment=comment)
    else:
        if not comment:
            raise InvalidRequestError("a rejection needs a comment that tells the applicant why", field="comment")
        await _decide(conn, cert_no, Status.REJECTED, now, auditor=actor.name, comment=comment)


async def revoke(conn: AsyncConnection, actor: Actor, cert_no: str, *, comment: str, now: int) -> None:
    """Revoke an approved certificate: no more leases; its active leases end (their slots stay spent)."""
    actor.require(Role.AUDITOR, Role.ADMIN)
    await _decide(conn, cert_no, Status.REVOKED, now, auditor=actor.name, comment=comment)
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
    # Readers were fixed at application: the applicant and the owners of both products then. Whoever registers
    # one of those PIDs later reads nothing.
    if actor.platform_staff:
        return query
    me = actor.org_id
    return query.where(
        or_(certificates.c.org_id == me, certificates.c.original_org_id == me, certificates.c.new_org_id == me)
    )


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
