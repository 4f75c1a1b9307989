"""A factory with products ready for certificates, made through the API's own functions (demo, benchmarks, tests).

The goods of the demo and the tests carry fixed PIDs, so their products are registered under those PIDs
(`products.create_with_pid`); everywhere else the platform draws each PID itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import products
from cloud_bridge.accounts import SYSTEM, OrgKind, create_org
from cloud_bridge.errors import ConflictError
from cloud_bridge.products import PID_LENGTH, Protocol, Spec, Stage
from cloud_bridge.store.schema import organisations
from cloud_bridge.store.schema import products as product_table

_TO_MASS = (Stage.DEVELOPMENT, Stage.TRIAL, Stage.MASS)


async def factory_with_products(conn: AsyncConnection, name: str, pids: Sequence[str], now: int) -> int:
    """The factory organisation `name` (created if absent) owning `pids` in mass production; return its id."""
    row = (await conn.execute(select(organisations).where(organisations.c.name == name))).first()
    org_id = int(row.id) if row else await create_org(conn, SYSTEM, name, OrgKind.FACTORY, now)
    for pid in pids:
        await _in_mass_production(conn, org_id, pid, now)
    return org_id


async def _in_mass_production(conn: AsyncConnection, org_id: int, pid: str, now: int) -> None:
    row = (await conn.execute(select(product_table).where(product_table.c.pid == pid))).first()
    if row is None:
        protocol = Protocol.WIFI if len(pid) == PID_LENGTH[Protocol.WIFI] else Protocol.BLE
        await products.create_with_pid(conn, pid, org_id, Spec(name=pid, model_no=pid, protocol=protocol), now)
    elif row.org_id != org_id:
        raise ConflictError(f"product {pid} belongs to another organisation than {org_id}")
    stage = Stage(row.stage) if row else Stage.DEVELOPMENT
    for later in _TO_MASS[_TO_MASS.index(stage) + 1 :]:
        await products.set_stage(conn, SYSTEM, pid, later, now)
