"""Organisations, accounts and roles; API keys are random and stored only as their SHA-256."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.errors import (
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from cloud_bridge.store.schema import accounts, organisations

log = logging.getLogger(__name__)

KEY_PREFIX = "rbk_"
KEY_RANDOM_BYTES = 32
SHOWN_KEY_CHARS = 12
PLATFORM_ORG = "platform"
BOOTSTRAP_ADMIN = "first admin"  # the account a new platform makes; `rebadge cloud admin-key` renews its key


class Role(StrEnum):
    """What an account may do; the first two are platform staff."""

    ADMIN = "admin"
    AUDITOR = "auditor"
    FACTORY_ADMIN = "factory_admin"
    TECHNICIAN = "technician"
    CUSTOMER = "customer"  # a brand owner: sees the certificates that give goods its PIDs
    BUYER = "buyer"
    # Platform staff of the purchase module (docs/orders.md): they move orders along, and see no certificates.
    BUSINESS_MANAGER = "business_manager"  # prices, contracts, payments, invoices
    PROJECT_MANAGER = "project_manager"  # software versions, production, shipping, test data


class OrgKind(StrEnum):
    """Who an organisation is."""

    PLATFORM = "platform"
    FACTORY = "factory"
    BRAND = "brand"


ROLES_OF_KIND = {
    OrgKind.PLATFORM: {Role.ADMIN, Role.AUDITOR, Role.BUSINESS_MANAGER, Role.PROJECT_MANAGER},
    OrgKind.FACTORY: {Role.FACTORY_ADMIN, Role.TECHNICIAN, Role.BUYER},
    OrgKind.BRAND: {Role.CUSTOMER, Role.BUYER},
}
# Which roles an account may create, inside its own organisation (admins: anywhere).
MAY_CREATE = {
    Role.FACTORY_ADMIN: {Role.TECHNICIAN, Role.BUYER, Role.FACTORY_ADMIN},
    Role.CUSTOMER: {Role.BUYER, Role.CUSTOMER},
}


@dataclass(frozen=True)
class Actor:
    """Who is asking: an account's role and organisation (org None: the platform itself, e.g. the CLI)."""

    role: Role
    org_id: int | None
    account_id: int | None = None
    name: str = "platform"

    @property
    def platform_staff(self) -> bool:
        """Admins and auditors see every organisation's data."""
        return self.role in (Role.ADMIN, Role.AUDITOR)

    def require(self, *roles: Role) -> None:
        """Refuse unless the actor has one of `roles`."""
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDeniedError(f"role {self.role.value} may not do this; it needs one of: {allowed}")


SYSTEM = Actor(Role.ADMIN, None)


def key_hash(api_key: str) -> bytes:
    """How an API key is stored: its SHA-256 (the key is 256 random bits, so no slow hash is needed)."""
    return hashlib.sha256(api_key.encode()).digest()


def new_api_key() -> str:
    """A fresh API key."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


async def create_org(conn: AsyncConnection, actor: Actor, name: str, kind: OrgKind, now: int) -> int:
    """Create an organisation (admins only); return its id."""
    actor.require(Role.ADMIN)
    if not 1 <= len(name) <= 128:
        raise InvalidRequestError(f"organisation name {name!r} must be 1 to 128 characters", field="name")
    try:
        async with conn.begin_nested():
            result = await conn.execute(
                organisations.insert().values(name=name, kind=kind.value, created_at=now).returning(organisations.c.id)
            )
    except IntegrityError as exc:
        raise ConflictError(f"an organisation named {name!r} exists already; choose another name") from exc
    return int(result.scalar_one())


async def get_org(conn: AsyncConnection, org_id: int) -> Row[Any]:
    """The organisation row; NotFoundError names the id."""
    row = (await conn.execute(select(organisations).where(organisations.c.id == org_id))).first()
    if row is None:
        raise NotFoundError(f"organisation {org_id} does not exist", what="organisation", key=str(org_id))
    return row


async def factory_of(conn: AsyncConnection, actor: Actor, org_id: int | None, what: str) -> int:
    """The factory `what` belongs to: the one an admin names, else the actor's own (only factories hold those roles)."""
    if actor.role != Role.ADMIN:
        if org_id is not None and org_id != actor.org_id:
            raise PermissionDeniedError(f"only a platform admin names the factory ({org_id}) {what} belongs to")
        assert actor.org_id is not None  # every account but the platform's own admins is in an organisation
        return actor.org_id
    if org_id is None:
        raise InvalidRequestError(f"an admin must name the factory {what} belongs to", field="org_id")
    if (await get_org(conn, org_id)).kind != OrgKind.FACTORY.value:
        raise InvalidRequestError(f"organisation {org_id} is not a factory; name a factory for {what}", field="org_id")
    return org_id


async def org_named(conn: AsyncConnection, name: str) -> Row[Any]:
    """The organisation called `name`; NotFoundError names it."""
    row = (await conn.execute(select(organisations).where(organisations.c.name == name))).first()
    if row is None:
        raise NotFoundError(f"organisation {name!r} does not exist", what="organisation", key=name)
    return row


async def list_orgs(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Every organisation (staff), or the actor's own."""
    query = select(organisations).order_by(organisations.c.id)
    if not actor.platform_staff:
        query = query.where(organisations.c.id == actor.org_id)
    return list((await conn.execute(query)).all())


async def create_account(
    conn: AsyncConnection, actor: Actor, org_id: int, name: str, role: Role, now: int
) -> tuple[int, str]:
    """Create an account; return its id and its API key (shown this once, stored hashed)."""
    if actor.role != Role.ADMIN and (actor.org_id != org_id or role not in MAY_CREATE.get(actor.role, set())):
        raise PermissionDeniedError(f"role {actor.role.value} may not create a {role.value} account here")
    org = await get_org(conn, org_id)
    if role not in ROLES_OF_KIND[OrgKind(org.kind)]:
        raise InvalidRequestError(
            f"role {role.value} does not belong in a {org.kind} organisation; "
            f"use one of: {', '.join(sorted(r.value for r in ROLES_OF_KIND[OrgKind(org.kind)]))}",
            field="role",
        )
    if not 1 <= len(name) <= 128:
        raise InvalidRequestError(f"account name {name!r} must be 1 to 128 characters", field="name")
    api_key = new_api_key()
    result = await conn.execute(
        accounts.insert()
        .values(
            org_id=org_id,
            name=name,
            role=role.value,
            key_hash=key_hash(api_key),
            key_prefix=api_key[:SHOWN_KEY_CHARS],
            disabled=False,
            created_at=now,
        )
        .returning(accounts.c.id)
    )
    account_id = int(result.scalar_one())
    log.info("account %d (%s, %s) created in organisation %d", account_id, name, role.value, org_id)
    return account_id, api_key


async def list_accounts(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Accounts the actor may see: all for admins, their organisation's for organisation admins."""
    actor.require(Role.ADMIN, Role.FACTORY_ADMIN, Role.CUSTOMER)
    query = select(accounts).order_by(accounts.c.id)
    if actor.role != Role.ADMIN:
        query = query.where(accounts.c.org_id == actor.org_id)
    return list((await conn.execute(query)).all())


async def authenticate(conn: AsyncConnection, api_key: str | None) -> Actor:
    """The actor an API key belongs to; AuthenticationError when it matches no active account."""
    if not api_key:
        raise AuthenticationError("no API key: send it in the X-API-Key header")
    row = (await conn.execute(select(accounts).where(accounts.c.key_hash == key_hash(api_key)))).first()
    if row is None or row.disabled:
        raise AuthenticationError("this API key matches no active account; ask an administrator for a new one")
    return actor_of(row)


def actor_of(row: Row[Any]) -> Actor:
    """The actor of an account row."""
    return Actor(Role(row.role), int(row.org_id), int(row.id), str(row.name))


async def acting_as(conn: AsyncConnection, account: str) -> Actor:
    """The actor behind an active account named by its id or its name, for commands run on the platform host."""
    query = select(accounts).where(~accounts.c.disabled)
    query = query.where(accounts.c.id == int(account) if account.isdigit() else accounts.c.name == account)
    rows = (await conn.execute(query.limit(2))).all()
    if not rows:
        raise NotFoundError(f"no active account has the id or name {account!r}", what="account", key=account)
    if len(rows) > 1:
        raise InvalidRequestError(f"more than one account is named {account!r}; give its id instead", field="as")
    return actor_of(rows[0])


async def bootstrap_admin(conn: AsyncConnection, now: int) -> str | None:
    """On a platform with no accounts, create the platform organisation and a first admin; return its key.

    Two first starts racing on one PostgreSQL database make one admin: the platform organisation's row is the lock
    (a second insert of it waits for the first and fails), and the accounts are counted only under that lock.
    """
    if (await conn.execute(select(func.count()).select_from(accounts))).scalar_one() > 0:
        return None
    platform_org = select(organisations.c.id).where(organisations.c.name == PLATFORM_ORG)
    if (await conn.execute(platform_org)).first() is None:
        with contextlib.suppress(ConflictError):  # another start made it meanwhile: its row is locked below
            await create_org(conn, SYSTEM, PLATFORM_ORG, OrgKind.PLATFORM, now)
    org_id = int((await conn.execute(platform_org.with_for_update())).scalar_one())
    if (await conn.execute(select(func.count()).select_from(accounts))).scalar_one() > 0:
        return None  # the other start made the first admin while this one waited
    _, api_key = await create_account(conn, SYSTEM, org_id, BOOTSTRAP_ADMIN, Role.ADMIN, now)
    return api_key


async def renew_bootstrap_admin_key(conn: AsyncConnection, now: int) -> str:
    """A new API key for the first admin (made now on a platform with no accounts); its old key stops working."""
    made = await bootstrap_admin(conn, now)
    if made is not None:
        return made
    query = (
        select(accounts)
        .join(organisations, organisations.c.id == accounts.c.org_id)
        .where(organisations.c.name == PLATFORM_ORG, accounts.c.name == BOOTSTRAP_ADMIN, accounts.c.role == Role.ADMIN)
        .order_by(accounts.c.id)
    )
    row = (await conn.execute(query.limit(1))).first()
    if row is None:
        raise NotFoundError(
            f"this platform has no {BOOTSTRAP_ADMIN!r} admin account in its {PLATFORM_ORG!r} organisation; "
            "an admin's key is made over the API (POST /v1/accounts)",
            what="account", key=BOOTSTRAP_ADMIN,
        )  # fmt: skip
    if row.disabled:
        raise ConflictError(f"account {row.id} ({BOOTSTRAP_ADMIN}) is disabled: a new key would not let anyone in")
    api_key = new_api_key()
    await conn.execute(
        update(accounts)
        .where(accounts.c.id == row.id)
        .values(key_hash=key_hash(api_key), key_prefix=api_key[:SHOWN_KEY_CHARS])
    )
    log.info("account %d (%s): API key renewed; the old one no longer works", row.id, BOOTSTRAP_ADMIN)
    return api_key
