"""Key rotation on the platform: a gateway's old key introduces its new one (`req/rotate`).

The introduction (wire.key_rotation) names the journal head where the old key stops. It is accepted only at the
platform's stored head, with no lease of the old key still active, in one transaction under the gateway's head lock
(the lock ingest takes too): the old key is retired after that seq, the new one signs from the next, and the answer
carries a client certificate for the new key. docs/enrolment.md, "Key rotation".
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import gateways
from cloud_bridge.ca import CertificateAuthority
from cloud_bridge.leases import LeaseState
from cloud_bridge.requests import MAX_MESSAGE, RequestRefusedError, certificate_request
from cloud_bridge.store.schema import leases
from wire import x509 as wx
from wire.errors import MalformedError, TokenError
from wire.key_rotation import KeyIntroduction, check_possession
from wire.keys import PublicKey
from wire.lease_request import AnswerCode, RenewAnswer
from wire.times import utc_iso
from wire.tokens import HDR_KID, peek_header

log = logging.getLogger(__name__)


async def answer_rotate(
    conn: AsyncConnection, gw: str, payload: bytes, *, ca: CertificateAuthority | None, cert_valid_s: int, now: int
) -> RenewAnswer:
    """Accept a key introduction signed by the gateway's current key, or say why not; refusals are answers."""
    intro = await certificate_request(conn, gw, payload, KeyIntroduction, "key rotation", now)
    if isinstance(intro, RenewAnswer):
        return intro
    try:
        new = await _accept(conn, gw, intro, payload, now)
    except RequestRefusedError as exc:
        log.warning("gateway %s: key introduction %s refused (%s): %s", gw, intro.id, exc.code, exc)
        return RenewAnswer(id=intro.id, code=exc.code, message=str(exc)[:MAX_MESSAGE])
    message = f"key {new.kid.hex()} signs gateway {gw}'s journal from seq {intro.seq + 1}"
    if ca is None:
        return RenewAnswer(id=intro.id, code=AnswerCode.OK, message=message + " (this platform has no CA)")
    cert = ca.issue_gateway(gw, new, cert_valid_s, now)
    not_after = int(cert.not_valid_after_utc.timestamp())
    return RenewAnswer(
        id=intro.id, code=AnswerCode.OK, message=f"{message}; client certificate until {utc_iso(not_after)}",
        certificate=wx.pem(cert), not_after=not_after,
    )  # fmt: skip


def _refused(code: AnswerCode, message: str) -> RequestRefusedError:
    return RequestRefusedError(message, code=code)


async def _accept(conn: AsyncConnection, gw: str, intro: KeyIntroduction, payload: bytes, now: int) -> PublicKey:
    row = await gateways.lock(conn, gw)  # as it is once locked, after any rotation that committed meanwhile
    assert row is not None  # verified_request found it; gateways are never deleted
    old = PublicKey(bytes(row.public_key))
    if old.kid != peek_header(payload)[HDR_KID]:
        raise _refused(
            AnswerCode.RETIRED_KEY,
            f"the introduction is signed by a key another introduction retired meanwhile; gateway {gw}'s key is now "
            f"{old.kid.hex()}",
        )
    if row.frozen_at is not None:
        raise _refused(
            AnswerCode.FROZEN,
            f"gateway {gw} is frozen (its journal forked at seq {row.frozen_seq}); a platform admin must reinstate "
            "it before its key can change",
        )
    try:
        new = check_possession(intro, old.kid)
        csr_key = wx.check_gateway_csr(intro.csr, gw)
    except TokenError as exc:
        raise _refused(AnswerCode.BAD_SIGNATURE, str(exc)) from exc
    except MalformedError as exc:
        raise _refused(AnswerCode.MALFORMED, str(exc)) from exc
    if csr_key != new:
        raise _refused(AnswerCode.MALFORMED, "the introduction's csr is not of its new key; make the csr with it")
    owner = await gateways.key_owner(conn, new)
    if owner is not None:
        raise _refused(AnswerCode.REFUSED, f"key {new.kid.hex()} is already a key of a gateway; make a new key")
    _check_head(gw, row, intro)
    active = await _active_leases(conn, gw)
    if active:
        raise _refused(
            AnswerCode.REFUSED,
            f"gateway {gw} still holds active leases bound to its old key ({', '.join(active[:5])}); close them "
            "first ('rebadge agent rotate-key' does), or have them written off",
        )
    if not await gateways.rotate_key(conn, gw, old, new, intro.seq, payload, now):
        raise _refused(AnswerCode.RETIRED_KEY, f"key {old.kid.hex()} is no longer gateway {gw}'s current key")
    return new


def _check_head(gw: str, row: Row[Any], intro: KeyIntroduction) -> None:
    stored_seq, stored_head = int(row.seq), bytes(row.head)
    if stored_seq < intro.seq:
        raise _refused(
            AnswerCode.PENDING,
            f"the platform has gateway {gw}'s journal up to seq {stored_seq}, not yet up to seq {intro.seq}; send the "
            "records, then introduce the key again",
        )
    if stored_seq > intro.seq or stored_head != intro.head:
        raise _refused(
            AnswerCode.REFUSED,
            f"the introduction names seq {intro.seq} with another head than the platform's (seq {stored_seq}); "
            "introduce the key at the journal's acked head",
        )


async def _active_leases(conn: AsyncConnection, gw: str) -> list[str]:
    query = select(leases.c.lease_id).where(leases.c.gw == gw, leases.c.state == LeaseState.ACTIVE.value)
    return [str(r) for r in (await conn.execute(query.order_by(leases.c.lease_id))).scalars()]
