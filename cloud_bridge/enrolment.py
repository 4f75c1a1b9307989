"""Gateway enrolment: one-time tokens a factory admin makes, exchanged with a gateway's CSR for a client certificate.

The token is the only credential of `enrol`, so every refusal of a token (unknown, used, expired) reads the same.
Consuming the token, registering the gateway and its key to the token's organisation and signing its certificate
happen in one transaction: a refusal anywhere leaves nothing behind.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import accounts, gateways
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.ca import CertificateAuthority
from cloud_bridge.errors import ConflictError, InvalidRequestError, PermissionDeniedError
from cloud_bridge.store.schema import enrolment_tokens
from wire import x509 as wx
from wire.errors import MalformedError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "rbe_"  # noqa: S105 - a prefix, not a secret
TOKEN_RANDOM_BYTES = 32
MIN_VALID_S = 60
MAX_VALID_S = 30 * 86400
REFUSED = "enrolment token is unknown, used or expired; ask your factory admin for a new one"


@dataclass(frozen=True)
class Enrolled:
    """What a gateway gets back: its id, its client certificate and the CA that signed it (PEM)."""

    gw: str
    certificate: bytes
    ca_certificate: bytes
    not_after: int


async def create_token(
    conn: AsyncConnection, actor: Actor, line: str, valid_s: int, now: int, *, org_id: int | None = None
) -> tuple[str, int]:
    """Make a one-time enrolment token for a factory (optionally naming its line); return it and its expiry."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN)
    if not MIN_VALID_S <= valid_s <= MAX_VALID_S:
        raise InvalidRequestError(f"valid_s {valid_s} must be {MIN_VALID_S} to {MAX_VALID_S}", field="valid_s")
    if len(line) > 128:
        raise InvalidRequestError(f"line name is {len(line)} characters; use at most 128", field="line")
    owner = await accounts.factory_of(conn, actor, org_id, "the enrolled gateways")
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    expires_at = now + valid_s
    await conn.execute(
        enrolment_tokens.insert().values(
            token_hash=accounts.key_hash(token), org_id=owner, line=line, created_by=actor.account_id,
            created_at=now, expires_at=expires_at,
        )
    )  # fmt: skip
    log.info("enrolment token made for organisation %s (line %r) by %s", owner, line, actor.name)
    return token, expires_at


async def _consume(conn: AsyncConnection, token: str, now: int) -> tuple[int, int, str]:
    query = select(enrolment_tokens).where(enrolment_tokens.c.token_hash == accounts.key_hash(token))
    row = (await conn.execute(query.with_for_update())).first()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise PermissionDeniedError(REFUSED)
    # The compare-and-set makes two exchanges racing on one token end with one winner.
    done = await conn.execute(
        update(enrolment_tokens)
        .where(enrolment_tokens.c.id == row.id, enrolment_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    if done.rowcount != 1:
        raise PermissionDeniedError(REFUSED)
    return int(row.id), int(row.org_id), str(row.line)


async def enrol(
    conn: AsyncConnection, token: str, csr: bytes, *, ca: CertificateAuthority, cert_valid_s: int, now: int
) -> Enrolled:
    """Exchange a token and a gateway's CSR for a client certificate; register the gateway to the token's factory."""
    token_id, org_id, line = await _consume(conn, token, now)
    try:
        _, key = wx.read_gateway_csr(csr)
        owner = await gateways.key_owner(conn, key)  # a rotated gateway's current key keeps its gateway id
        wx.check_gateway_csr(csr, owner.gw if owner is not None else None)
    except MalformedError as exc:
        raise InvalidRequestError(str(exc), field="csr") from exc
    enroller = Actor(Role.TECHNICIAN, org_id, name=f"enrolment token {token_id}")
    gw = await gateways.register_as(conn, enroller, key, line, now)
    row = await gateways.get(conn, gw)
    if row.revoked:
        raise ConflictError(f"gateway {gw} is revoked and cannot enrol again; make a new gateway key")
    await conn.execute(update(enrolment_tokens).where(enrolment_tokens.c.id == token_id).values(gw=gw))
    await gateways.record_event(conn, gw, gateways.EventKind.ENROLLED, now, actor=enroller.name, reason=line)
    cert = ca.issue_gateway(gw, key, cert_valid_s, now)
    log.info("enrolled gateway %s for organisation %s (line %r)", gw, org_id, line)
    return Enrolled(gw, wx.pem(cert), ca.cert_pem, int(cert.not_valid_after_utc.timestamp()))
