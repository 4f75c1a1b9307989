"""Products and their lifecycle: development -> trial production -> mass production (enough for certificates)."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.accounts import Actor, Role, get_org
from cloud_bridge.errors import ConflictError, InvalidRequestError, NotFoundError, PermissionDeniedError
from cloud_bridge.store.schema import products
from wire.errors import MalformedError
from wire.ids import check_pid

log = logging.getLogger(__name__)

OWNER_ROLES = (Role.FACTORY_ADMIN, Role.CUSTOMER)


class Stage(StrEnum):
    """Where a product is in its life; certificates need trial or mass production."""

    DEVELOPMENT = "development"
    TRIAL = "trial"
    MASS = "mass"


# Trial production can go back to development to change settings (as the purchase module allows); mass is final.
NEXT_STAGES = {Stage.DEVELOPMENT: {Stage.TRIAL}, Stage.TRIAL: {Stage.MASS, Stage.DEVELOPMENT}, Stage.MASS: set()}
PRODUCING = (Stage.TRIAL, Stage.MASS)


async def create(
    conn: AsyncConnection, actor: Actor, pid: str, name: str, now: int, *, org_id: int | None = None
) -> None:
    """Create a product in development, owned by the actor's organisation (admins name the organisation)."""
    actor.require(Role.ADMIN, *OWNER_ROLES)
    owner = org_id if actor.role == Role.ADMIN and org_id is not None else actor.org_id
    if owner is None:
        raise InvalidRequestError("an admin must name the organisation that owns the product", field="org_id")
    await get_org(conn, owner)
    try:
        check_pid(pid)
    except MalformedError as exc:
        raise InvalidRequestError(str(exc), field="pid") from exc
    if not 1 <= len(name) <= 128:
        raise InvalidRequestError(f"product name {name!r} must be 1 to 128 characters", field="name")
    if (await conn.execute(select(products.c.pid).where(products.c.pid == pid))).first() is not None:
        # PIDs are one namespace for every organisation: a taken one cannot be hidden from someone trying to take
        # it, but the answer is the same whoever holds it and names no one.
        raise ConflictError(f"PID {pid} cannot be used for a new product; choose another PID")
    await conn.execute(
        products.insert().values(
            pid=pid, org_id=owner, name=name, stage=Stage.DEVELOPMENT.value, created_at=now, updated_at=now
        )
    )
    log.info("product %s (%s) created for organisation %d", pid, name, owner)


async def get(conn: AsyncConnection, actor: Actor, pid: str) -> Row[Any]:
    """A product the actor may see; NotFoundError otherwise (other organisations' products are not revealed)."""
    row = (await conn.execute(select(products).where(products.c.pid == pid))).first()
    if row is None or not (actor.platform_staff or row.org_id == actor.org_id):
        raise NotFoundError(f"product {pid!r} does not exist in your organisation", what="product", key=pid)
    return row


async def set_stage(conn: AsyncConnection, actor: Actor, pid: str, stage: Stage, now: int) -> Row[Any]:
    """Move a product to its next stage."""
    actor.require(Role.ADMIN, *OWNER_ROLES)
    row = await get(conn, actor, pid)
    if actor.role != Role.ADMIN and row.org_id != actor.org_id:
        raise PermissionDeniedError(f"product {pid} belongs to another organisation")
    current = Stage(row.stage)
    if stage not in NEXT_STAGES[current]:
        nexts = ", ".join(sorted(s.value for s in NEXT_STAGES[current])) or "none (mass production is final)"
        raise ConflictError(f"product {pid} is in {current.value}; it can move to: {nexts}")
    await conn.execute(update(products).where(products.c.pid == pid).values(stage=stage.value, updated_at=now))
    log.info("product %s: %s -> %s", pid, current.value, stage.value)
    return await get(conn, actor, pid)


async def list_visible(conn: AsyncConnection, actor: Actor) -> list[Row[Any]]:
    """Products the actor may see; buyers see only those in trial or mass production."""
    query = select(products).order_by(products.c.pid)
    if not actor.platform_staff:
        query = query.where(products.c.org_id == actor.org_id)
    if actor.role == Role.BUYER:
        query = query.where(products.c.stage.in_([s.value for s in PRODUCING]))
    return list((await conn.execute(query)).all())
