"""Who may order: enterprise certification of an organisation, and buyer or R&D grants of accounts per product."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import products
from cloud_bridge.accounts import Actor, OrgKind, Role, get_org
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError
from cloud_bridge.store.schema import accounts, enterprise_certifications, order_grants
from cloud_bridge.store.schema import products as product_table

log = logging.getLogger(__name__)

ORG_ADMINS = (Role.FACTORY_ADMIN, Role.CUSTOMER)  # the admins of a factory and of a brand
# Platform roles that read every organisation's orders and grants.
ORDER_STAFF = (Role.ADMIN, Role.AUDITOR, Role.BUSINESS_MANAGER, Role.PROJECT_MANAGER)


class GrantKind(StrEnum):
    """What a grant lets an account order for one product."""

    BUYER = "buyer"  # purchasing staff: bulk orders and value-added services, in trial and mass production
    RND = "rnd"  # R&D staff: also R&D products and debugging modules while the product is in development


def is_order_staff(actor: Actor) -> bool:
    """Platform roles that read every organisation's orders."""
    return actor.role in ORDER_STAFF


def may_order_for(org_id: int, product: Row[Any]) -> bool:
    """Whether organisation `org_id` may order `product`: its own, or a customer's it manages (an OEM link's copy).

    The one place the purchase module decides it, on the products module's own rule.
    """
    return products.may_manage(org_id, product)


async def orderable_product(conn: AsyncConnection, org_id: int, pid: str) -> Row[Any]:
    """The product if `org_id` may order it; NotFoundError otherwise (others' products are not revealed)."""
    row = (await conn.execute(select(product_table).where(product_table.c.pid == pid))).first()
    if row is None or not may_order_for(org_id, row):
        raise NotFoundError(f"product {pid!r} is not one your organisation may order", what="product", key=pid)
    return row


async def certify(conn: AsyncConnection, actor: Actor, org_id: int, note: str, now: int) -> None:
    """A platform admin records that an organisation passed enterprise certification."""
    actor.require(Role.ADMIN)
    org = await get_org(conn, org_id)
    if org.kind == OrgKind.PLATFORM:
        raise InvalidRequestError(f"organisation {org.name} is the platform; it does not order", field="org_id")
    if len(note) > 1000:
        raise InvalidRequestError("note must be at most 1000 characters", field="note")
    if await is_certified(conn, org_id):
        raise ConflictError(f"organisation {org.name} is certified already")
    await conn.execute(
        enterprise_certifications.insert().values(org_id=org_id, certified_by=actor.name, note=note, certified_at=now)
    )
    log.info("organisation %d certified by %s", org_id, actor.name)


async def withdraw_certification(conn: AsyncConnection, actor: Actor, org_id: int) -> None:
    """A platform admin withdraws a certification: the organisation submits no new orders (open ones go on)."""
    actor.require(Role.ADMIN)
    org = await get_org(conn, org_id)
    gone = await conn.execute(delete(enterprise_certifications).where(enterprise_certifications.c.org_id == org_id))
    if gone.rowcount == 0:
        raise ConflictError(f"organisation {org.name} is not certified; nothing to withdraw")
    log.info("certification of organisation %d withdrawn by %s", org_id, actor.name)


async def is_certified(conn: AsyncConnection, org_id: int) -> bool:
    """Whether the organisation passed enterprise certification."""
    query = select(enterprise_certifications.c.org_id).where(enterprise_certifications.c.org_id == org_id)
    return (await conn.execute(query)).first() is not None


async def certifications(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Certified organisations: all for order staff, otherwise the actor's own (if certified)."""
    query = select(enterprise_certifications).order_by(enterprise_certifications.c.org_id)
    if not is_order_staff(actor):
        query = query.where(enterprise_certifications.c.org_id == actor.org_id)
    return list((await conn.execute(query)).all())


async def _grantable_account(conn: AsyncConnection, actor: Actor, account_id: int, kind: GrantKind) -> Row[Any]:
    actor.require(*ORG_ADMINS)
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None or row.org_id != actor.org_id:
        raise NotFoundError(
            f"account {account_id} is not an account of your organisation", what="account", key=str(account_id)
        )
    if row.disabled:
        raise ConflictError(f"account {account_id} is disabled; enable it or grant another account")
    if kind == GrantKind.BUYER and row.role != Role.BUYER:
        raise InvalidRequestError(
            f"account {account_id} has role {row.role}; the buyer grant goes to accounts of role buyer "
            "(create one with POST /v1/accounts), or grant rnd to R&D staff",
            field="kind",
        )
    return row


async def grant(conn: AsyncConnection, actor: Actor, account_id: int, pid: str, kind: GrantKind, now: int) -> None:
    """An admin of the ordering organisation lets one of its accounts order one product (buyer or R&D)."""
    await _grantable_account(conn, actor, account_id, kind)
    assert actor.org_id is not None  # an organisation admin
    await orderable_product(conn, actor.org_id, pid)
    if await has_grant(conn, account_id, pid, (kind,)):
        raise ConflictError(f"account {account_id} already holds the {kind.value} grant for product {pid}")
    await conn.execute(
        order_grants.insert().values(
            account_id=account_id, pid=pid, kind=kind.value, granted_by=actor.name, granted_at=now
        )
    )
    log.info("account %d granted %s for product %s by %s", account_id, kind.value, pid, actor.name)


async def revoke_grant(conn: AsyncConnection, actor: Actor, account_id: int, pid: str, kind: GrantKind) -> None:
    """An admin of the organisation takes a grant back: the account orders that product no more."""
    actor.require(*ORG_ADMINS)
    owned = select(accounts.c.id).where(accounts.c.id == account_id, accounts.c.org_id == actor.org_id)
    gone = await conn.execute(
        delete(order_grants).where(
            order_grants.c.account_id == account_id,
            order_grants.c.pid == pid,
            order_grants.c.kind == kind.value,
            order_grants.c.account_id.in_(owned.scalar_subquery()),
        )
    )
    if gone.rowcount == 0:
        raise NotFoundError(
            f"account {account_id} of your organisation holds no {kind.value} grant for product {pid}",
            what="grant",
            key=f"{account_id}/{pid}/{kind.value}",
        )


async def has_grant(conn: AsyncConnection, account_id: int, pid: str, kinds: tuple[GrantKind, ...]) -> bool:
    """Whether the account holds one of `kinds` for the product."""
    query = select(order_grants.c.kind).where(
        order_grants.c.account_id == account_id,
        order_grants.c.pid == pid,
        order_grants.c.kind.in_([k.value for k in kinds]),
    )
    return (await conn.execute(query.limit(1))).first() is not None


async def grants_of(conn: AsyncConnection, account_id: int, pid: str) -> set[GrantKind]:
    """The grant kinds the account holds for the product."""
    query = select(order_grants.c.kind).where(order_grants.c.account_id == account_id, order_grants.c.pid == pid)
    return {GrantKind(r.kind) for r in await conn.execute(query)}


async def list_grants(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Grants: all for order staff, the organisation's for its admins, an account's own otherwise."""
    query = select(order_grants, accounts.c.org_id).join(accounts, accounts.c.id == order_grants.c.account_id)
    if actor.role in ORG_ADMINS:
        query = query.where(accounts.c.org_id == actor.org_id)
    elif not is_order_staff(actor):
        query = query.where(order_grants.c.account_id == actor.account_id)
    query = query.order_by(order_grants.c.account_id, order_grants.c.pid, order_grants.c.kind)
    return list((await conn.execute(query)).all())
