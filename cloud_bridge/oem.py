"""OEM links: a factory invites a customer to a copy of one of its products, which the factory then manages.

A link is a one-time bearer token (256 random bits); the platform keeps only its SHA-256, as for enrolment tokens,
so neither a database reader nor a restored backup can redeem one. The redeemer is an authenticated customer
account, so refusals may say why (used, expired) without helping anyone guess: a guess needs the token itself.
Consuming the link and creating the product happen in one transaction: a refusal anywhere leaves nothing behind.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import accounts, products
from cloud_bridge.accounts import Actor, OrgKind, Role
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from cloud_bridge.products import FirmwareKind, Service, Stage
from cloud_bridge.store.schema import oem_links

log = logging.getLogger(__name__)

TOKEN_PREFIX = "rbo_"  # noqa: S105 - a prefix, not a secret
TOKEN_RANDOM_BYTES = 32
MIN_VALID_S = 60
MAX_VALID_S = 30 * 86400
DEFAULT_VALID_S = 7 * 86400
UNKNOWN = "this OEM link is unknown; check that it was copied whole, or ask the factory for a new one"


@dataclass(frozen=True)
class Redemption:
    """What the customer chooses when redeeming: the new product's name and model number, and which of the
    factory product's services it enables (None: all of them)."""

    name: str
    model_no: str
    services: Collection[Service] | None = None


def _when(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def link_refusal(row: Row[Any], factory_kind: str) -> str | None:
    """Why the product cannot be shared by an OEM link, or None when it can (the API and the console ask this)."""
    if factory_kind != OrgKind.FACTORY.value:
        return f"product {row.pid} belongs to a {factory_kind}; only a factory's product has OEM links"
    if row.stage != Stage.MASS.value:
        return f"product {row.pid} is in {products.STAGE_NAMES[Stage(row.stage)]}; an OEM link needs mass production"
    if row.firmware != FirmwareKind.OEM.value:
        return f"product {row.pid} runs {row.firmware} firmware; an OEM link needs the platform's own (oem) firmware"
    if row.managed_by is not None:
        return f"product {row.pid} is itself a copy from an OEM link; links are made from the original"
    return None


def _check_linkable(row: Row[Any], factory_kind: str) -> None:
    """Refuse a product that cannot be shared by an OEM link, saying why."""
    if (why := link_refusal(row, factory_kind)) is not None:
        raise ConflictError(why)


async def create_link(
    conn: AsyncConnection, actor: Actor, pid: str, now: int, *, valid_s: int = DEFAULT_VALID_S
) -> tuple[str, int]:
    """A factory admin makes a one-time OEM link for its product; return the token and its expiry."""
    actor.require(Role.FACTORY_ADMIN)
    if not MIN_VALID_S <= valid_s <= MAX_VALID_S:
        raise InvalidRequestError(f"valid_s {valid_s} must be {MIN_VALID_S} to {MAX_VALID_S}", field="valid_s")
    row = await products.get(conn, actor, pid)
    if row.org_id != actor.org_id:
        raise PermissionDeniedError(f"product {pid} is managed, not owned, by your organisation; its owner decides")
    _check_linkable(row, (await accounts.get_org(conn, int(row.org_id))).kind)
    token = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_RANDOM_BYTES)
    expires_at = now + valid_s
    await conn.execute(
        oem_links.insert().values(
            token_hash=accounts.key_hash(token), pid=pid, org_id=row.org_id, created_by=actor.account_id,
            created_at=now, expires_at=expires_at,
        )
    )  # fmt: skip
    log.info("OEM link made for product %s by %s, expiring %s", pid, actor.name, _when(expires_at))
    return token, expires_at


async def _consume(conn: AsyncConnection, actor: Actor, token: str, now: int) -> Row[Any]:
    """The link, marked used by the actor, if the actor may redeem it now; each refusal says why."""
    query = select(oem_links).where(oem_links.c.token_hash == accounts.key_hash(token))
    row = (await conn.execute(query.with_for_update())).first()
    if row is None:
        raise NotFoundError(UNKNOWN, what="oem link", key="token")
    if row.org_id == actor.org_id:
        raise PermissionDeniedError("this OEM link was made by your own organisation; send it to your customer")
    if actor.role != Role.CUSTOMER:
        raise PermissionDeniedError(
            f"only a customer account of a brand organisation can redeem an OEM link; yours is {actor.role.value}"
        )
    customer = await accounts.get_org(conn, actor.org_id or 0)
    if customer.kind != OrgKind.BRAND.value:
        raise PermissionDeniedError(f"organisation {customer.name} is a {customer.kind}; OEM links are for brands")
    if row.used_at is not None:
        raise ConflictError(f"this OEM link was used on {_when(row.used_at)}; ask the factory for a new one")
    if row.expires_at <= now:
        raise ConflictError(f"this OEM link expired on {_when(row.expires_at)}; ask the factory for a new one")
    # The compare-and-set makes two redemptions racing on one link end with one winner.
    done = await conn.execute(
        update(oem_links)
        .where(oem_links.c.id == row.id, oem_links.c.used_at.is_(None))
        .values(used_at=now, used_by=actor.account_id)
    )
    if done.rowcount != 1:
        raise ConflictError("this OEM link was used meanwhile; ask the factory for a new one")
    return row


def _services(source: frozenset[Service], wanted: Collection[Service] | None) -> frozenset[Service]:
    if wanted is None:
        return source
    if extra := sorted(set(wanted) - source):
        offered = ", ".join(sorted(source)) or "none"
        raise InvalidRequestError(
            f"service {extra[0]} is not enabled on the factory's product; choose among: {offered}", field="services"
        )
    return frozenset(wanted)


async def redeem(conn: AsyncConnection, actor: Actor, token: str, choice: Redemption, now: int) -> str:
    """A customer redeems an OEM link: a new product of theirs, configured as the factory's; return its PID."""
    link = await _consume(conn, actor, token, now)
    source = await products.stored(conn, link.pid)
    _check_linkable(source, (await accounts.get_org(conn, int(link.org_id))).kind)  # still true, or nothing happens
    spec = products.spec_of(source)
    spec = replace(spec, name=choice.name, model_no=choice.model_no, services=_services(spec.services, choice.services))
    owner = int(actor.org_id or 0)
    # The finished goods' data is the customer's whatever the firmware: oem firmware carries the customer's PID
    # in the module; custom firmware is the customer's by default; general (mcu) firmware only when the MCU carries
    # the customer's PID, which the line checks on every unit before it spends a slot (agent/line.py).
    pid = await products.create_copy(conn, source, owner, spec, now, managed_by=int(link.org_id), data_owner=owner)
    await conn.execute(update(oem_links).where(oem_links.c.id == link.id).values(new_pid=pid))
    log.info("OEM link %d of %s redeemed by %s: product %s", link.id, link.pid, actor.name, pid)
    return pid


async def links_of(conn: AsyncConnection, actor: Actor, pid: str) -> list[Row[Any]]:
    """The OEM links made for a product (never their tokens), for its owning factory's admins and platform staff."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN)
    row = await products.get(conn, actor, pid)
    if not actor.platform_staff and row.org_id != actor.org_id:
        raise PermissionDeniedError(f"product {pid} is managed, not owned, by your organisation; its owner decides")
    query = select(oem_links).where(oem_links.c.pid == pid).order_by(oem_links.c.id)
    return list((await conn.execute(query)).all())
