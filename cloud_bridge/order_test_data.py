"""An order's test data: one row per unit its certificate's ledger confirmed, as CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Row, and_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import orders
from cloud_bridge.accounts import Actor
from cloud_bridge.order_states import TEST_DATA_OPEN, OrderState, describe
from cloud_bridge.orders import OrderRefusedError
from cloud_bridge.store.schema import activations, certificates, confirmations
from wire.times import utc_iso

COLUMNS = ("sn", "old_pid", "new_pid", "gateway", "lease_id", "slot", "seq", "rebadged_at", "activated_at")


@dataclass(frozen=True)
class UnitRow:
    """One rebadged unit: SN, PIDs, the gateway and slot that spent it, when (gateway clock) and when it went live."""

    sn: str
    old_pid: str
    new_pid: str
    gateway: str
    lease_id: str
    slot: int
    seq: int
    rebadged_at: str  # ISO 8601, UTC: the time the gateway's record carries
    activated_at: str | None  # ISO 8601, UTC, platform clock; None until the device activated in the field


async def units(conn: AsyncConnection, actor: Actor, order_no: str) -> tuple[Row[Any], list[UnitRow]]:
    """The order and its units: exactly the confirmations of the certificate linked to it, by slot.

    Only the ordering organisation and the platform's order staff read it (others: not found), and only once the
    project manager published it.
    """
    row = await orders.get(conn, actor, order_no)
    if row.state not in TEST_DATA_OPEN or row.cert_no is None:
        allowed = orders.open_actions(row)
        raise OrderRefusedError(
            f"order {order_no} is {row.state}: its test data is downloadable once the project manager published it "
            f"(states {', '.join(sorted(TEST_DATA_OPEN))}); allowed now: {describe(allowed)}",
            order_no=order_no,
            state=OrderState(row.state),
            allowed=allowed,
        )
    query = (
        select(confirmations, certificates.c.original_pid, certificates.c.new_pid, activations.c.at.label("live_at"))
        .join(certificates, certificates.c.cert_no == confirmations.c.cert_no)
        .outerjoin(
            activations,
            and_(
                activations.c.lease_id == confirmations.c.lease_id,
                activations.c.slot == confirmations.c.slot,
                activations.c.sn == confirmations.c.sn,
            ),
        )
        .where(confirmations.c.cert_no == row.cert_no)
        .order_by(confirmations.c.slot)
    )
    # PIDs from the certificate: the ledger counts a record only when it rebadges exactly as its certificate says.
    found = [
        UnitRow(
            sn=r.sn,
            old_pid=r.original_pid,
            new_pid=r.new_pid,
            gateway=r.gw,
            lease_id=r.lease_id,
            slot=r.slot,
            seq=r.seq,
            rebadged_at=utc_iso(r.at),
            activated_at=None if r.live_at is None else utc_iso(r.live_at),
        )
        for r in await conn.execute(query)
    ]
    return row, found


def to_csv(rows: list[UnitRow]) -> str:
    """The units as CSV with a header line (SNs, PIDs and gateway ids never start with a formula character)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for unit in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(unit).items()})
    return out.getvalue()


def to_json(rows: list[UnitRow]) -> str:
    """The units as a JSON array of objects with the CSV's columns."""
    return json.dumps([asdict(unit) for unit in rows], indent=1) + "\n"
