"""The verified ledger: compare-and-set of a gateway's head in one transaction, and the checks that decide counts."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import Executable, Insert, Row, and_, bindparam, func, select, text, union_all, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import anomalies
from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.errors import CloudError
from cloud_bridge.leases import LeaseState, held_ranges
from cloud_bridge.store.queries import confirmed_per_cert
from cloud_bridge.store.schema import anomalies as anomaly_table
from cloud_bridge.store.schema import cert_counts, certificates, confirmations, gateway_heads, gateways, leases, records
from cloud_bridge.verify import VerifiedBatch
from wire.records import Record, RecordKind

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """What a batch did to the ledger."""

    APPLIED = "applied"  # new records stored, head advanced
    DUPLICATE = "duplicate"  # every record already stored with the same digest
    WAITING = "waiting"  # starts past the stored head: the gateway resends from its acked seq
    FORK = "fork"  # a stored seq with another digest
    REJECTED = "rejected"  # malformed, forged, unknown or revoked gateway


@dataclass
class Applied:
    """The ledger's answer to one batch, inside its transaction."""

    outcome: Outcome
    gw: str
    seq: int
    head: bytes
    stored: int = 0
    anomalies: list[AnomalyEvent] = field(default_factory=list)
    certs: set[str] = field(default_factory=set)


class HeadMovedError(CloudError):
    """The head changed under the compare-and-set (only without a row lock); the caller retries."""


# Statements of the hot path, built once: building a SQLAlchemy construct per batch costs more than running it.
# Expanding bind parameters take the IN lists; the compiled form is cached per dialect.
_LOCK_GATEWAY = (
    select(gateways, gateway_heads.c.seq, gateway_heads.c.head)
    .join(gateway_heads, gateway_heads.c.gw == gateways.c.gw)
    .where(gateways.c.gw == bindparam("gw"))
    .with_for_update(of=gateway_heads)
)
_MOVE_HEAD = (
    update(gateway_heads)
    .where(and_(gateway_heads.c.gw == bindparam("b_gw"), gateway_heads.c.seq == bindparam("b_seq")))
    .values(seq=bindparam("seq"), head=bindparam("head"), updated_at=bindparam("updated_at"))
)
_STORED_DIGESTS = select(records.c.seq, records.c.digest).where(
    and_(records.c.gw == bindparam("gw"), records.c.seq >= bindparam("lo"), records.c.seq <= bindparam("hi"))
)
_LEASES = (
    select(leases, certificates.c.original_pid, certificates.c.new_pid)
    .join(certificates, certificates.c.cert_no == leases.c.cert_no)
    .where(leases.c.lease_id.in_(bindparam("lease_ids", expanding=True)))
)
_CONFIRMED_COLUMNS = (confirmations.c.cert_no, confirmations.c.sn, confirmations.c.lease_id, confirmations.c.slot)
# Who holds these slots, and where these SNs were confirmed, in one round trip. SQLite: two index-friendly
# halves (an OR of both, or a row-value IN, makes it scan the table). PostgreSQL: one index probe per key through
# LATERAL (OFFSET 0 keeps it from being flattened): with an IN list, or before the first ANALYZE of a young table,
# its planner reads every confirmation of the certificate and filters, a cost that grows with the ledger.
_PG_PROBE = (
    "SELECT c.cert_no, c.sn, c.lease_id, c.slot FROM unnest(CAST(:{a} AS VARCHAR[]), CAST(:{b} AS {b_type}[]))"
    " AS k({x}, {y}) CROSS JOIN LATERAL (SELECT x.cert_no, x.sn, x.lease_id, x.slot FROM confirmations x"
    " WHERE x.{x} = k.{x} AND x.{y} = k.{y} OFFSET 0) AS c"
)
_HOLDERS: dict[str, Executable] = {
    "sqlite": union_all(
        select(*_CONFIRMED_COLUMNS).where(
            confirmations.c.lease_id.in_(bindparam("lease_ids", expanding=True)),
            confirmations.c.slot.in_(bindparam("slots", expanding=True)),
        ),
        select(*_CONFIRMED_COLUMNS).where(
            confirmations.c.cert_no.in_(bindparam("certs", expanding=True)),
            confirmations.c.sn.in_(bindparam("sns", expanding=True)),
        ),
    ),
    "postgresql": text(
        _PG_PROBE.format(a="slot_leases", b="slot_nos", b_type="INTEGER", x="lease_id", y="slot")
        + " UNION ALL "
        + _PG_PROBE.format(a="sn_certs", b="sn_sns", b_type="VARCHAR", x="cert_no", y="sn")
    ),
}
_COUNTED = confirmed_per_cert()
_CONFIRMED_COUNTS = (
    select(certificates.c.cert_no, certificates.c.quantity, func.coalesce(_COUNTED.c.n, 0))
    .outerjoin(_COUNTED, _COUNTED.c.cert_no == certificates.c.cert_no)
    .where(certificates.c.cert_no.in_(bindparam("certs", expanding=True)))
)


def _count_upsert(dialect: str) -> Insert:
    stmt = (sqlite_insert if dialect == "sqlite" else pg_insert)(cert_counts)
    return stmt.on_conflict_do_update(
        index_elements=[cert_counts.c.cert_no, cert_counts.c.gw],
        set_={"confirmed": cert_counts.c.confirmed + stmt.excluded.confirmed},
    )


_COUNT_UPSERT = {"sqlite": _count_upsert("sqlite"), "postgresql": _count_upsert("postgresql")}


async def lock_gateway(conn: AsyncConnection, gw: str) -> Row[Any] | None:
    """The gateway with its stored head (seq, head), the head row locked for the transaction; None if unknown."""
    return (await conn.execute(_LOCK_GATEWAY, {"gw": gw})).first()


async def apply(conn: AsyncConnection, batch: VerifiedBatch, head: Row[Any], now: int, payload: bytes) -> Applied:
    """Apply a verified batch against the gateway's stored head, locked by `lock_gateway` in this transaction."""
    stored_seq, stored_head = int(head.seq), bytes(head.head)
    result = Applied(Outcome.WAITING, batch.gw, stored_seq, stored_head)
    if batch.from_seq > stored_seq + 1:
        log.info("gateway %s: batch from seq %d waits for seq %d", batch.gw, batch.from_seq, stored_seq + 1)
        return result
    start = await _overlap_start(conn, batch, stored_seq, stored_head, now, payload, result)
    if start is None:
        return result
    if start >= len(batch.records):
        result.outcome = Outcome.DUPLICATE
        return result
    await _store(conn, batch, start, now, result)
    moved = await conn.execute(
        _MOVE_HEAD,
        {"b_gw": batch.gw, "b_seq": stored_seq, "seq": batch.last_seq, "head": batch.digests[-1], "updated_at": now},
    )
    if moved.rowcount != 1:
        raise HeadMovedError(f"gateway {batch.gw} head moved during ingest")
    result.outcome, result.seq, result.head = Outcome.APPLIED, batch.last_seq, batch.digests[-1]
    return result


async def _overlap_start(
    conn: AsyncConnection,
    batch: VerifiedBatch,
    stored_seq: int,
    stored_head: bytes,
    now: int,
    payload: bytes,
    result: Applied,
) -> int | None:
    """Index of the first new record, or None after flagging a fork."""
    if batch.from_seq == stored_seq + 1:
        if batch.records[0].prev == stored_head:
            return 0
        await _fork(conn, batch, stored_seq, "its first record does not link to the stored head", now, payload, result)
        return None
    overlap_hi = min(batch.last_seq, stored_seq)
    rows = await conn.execute(_STORED_DIGESTS, {"gw": batch.gw, "lo": batch.from_seq, "hi": overlap_hi})
    stored = {int(r.seq): bytes(r.digest) for r in rows}
    for seq in range(batch.from_seq, overlap_hi + 1):
        if stored.get(seq) != batch.digests[seq - batch.from_seq]:
            await _fork(conn, batch, seq, "a stored record has another digest", now, payload, result)
            return None
    return overlap_hi + 1 - batch.from_seq


async def _fork(
    conn: AsyncConnection, batch: VerifiedBatch, seq: int, why: str, now: int, payload: bytes, result: Applied
) -> None:
    result.outcome = Outcome.FORK
    seen = await conn.execute(
        select(func.count()).where(
            and_(
                anomaly_table.c.kind == AnomalyKind.FORK.value,
                anomaly_table.c.gw == batch.gw,
                anomaly_table.c.seq == seq,
            )
        )
    )
    if seen.scalar_one() == 0:  # a forked gateway resends the same batch; flag it once
        message = f"gateway {batch.gw} forked its journal at seq {seq}: {why}; restored from a backup?"
        result.anomalies.append(
            await anomalies.store(conn, AnomalyKind.FORK, message, now, payload=payload, gw=batch.gw, seq=seq)
        )


async def _store(conn: AsyncConnection, batch: VerifiedBatch, start: int, now: int, result: Applied) -> None:
    new = range(start, len(batch.records))
    confirmed = [batch.records[i] for i in new if batch.records[i].kind == RecordKind.CONFIRMED]
    checker = await _Checker.load(conn, batch.gw, confirmed)
    rows = []
    for i in new:
        rec = batch.records[i]
        counted = False
        if rec.kind == RecordKind.CONFIRMED:
            counted = await checker.check(conn, rec, now, result)
        rows.append(
            {
                "gw": rec.gw,
                "seq": rec.seq,
                "digest": batch.digests[i],
                "body": batch.bodies[i],
                "kind": rec.kind.value,
                "lease_id": rec.lease_id,
                "slot": rec.slot,
                "sn": rec.sn,
                "old_pid": rec.old_pid,
                "new_pid": rec.new_pid,
                "at": rec.at,
                "counted": counted,
                "received_at": now,
            }
        )
    await conn.execute(records.insert(), rows)
    if checker.new_confirmations:
        await conn.execute(confirmations.insert(), checker.new_confirmations)
        await _count(conn, batch.gw, Counter(str(c["cert_no"]) for c in checker.new_confirmations))
    result.stored = len(rows)
    result.certs |= checker.certs


class _LeaseView(NamedTuple):
    """The lease columns the checks read, as a plain tuple (a Row's attribute lookup costs more)."""

    lease_id: str
    cert_no: str
    gw: str
    slot_lo: int
    slot_hi: int
    state: str
    original_pid: str
    new_pid: str


class _Checker:
    """Decides whether each confirmed record counts, from the leases and confirmations it touches."""

    def __init__(
        self,
        gw: str,
        held: dict[str, list[tuple[int, int]]],
        lease_rows: dict[str, _LeaseView],
        slots: dict[tuple[str, int], str],
        sns: dict[tuple[str, str], tuple[str, int]],
    ) -> None:
        self.gw = gw
        self.held = held  # lease -> ranges it still holds, for leases that ended and returned slots
        self.leases = lease_rows
        self.slots = slots  # (lease, slot) -> sn already confirmed
        self.sns = sns  # (cert, sn) -> (lease, slot) already confirmed
        self.new_confirmations: list[dict[str, object]] = []
        self.certs: set[str] = set()

    @classmethod
    async def load(cls, conn: AsyncConnection, gw: str, confirmed: list[Record]) -> _Checker:
        if not confirmed:
            return cls(gw, {}, {}, {}, {})
        lease_ids = sorted({r.lease_id for r in confirmed})
        lease_rows = await conn.execute(_LEASES, {"lease_ids": lease_ids})
        by_id = {r.lease_id: _LeaseView(*(r._mapping[f] for f in _LeaseView._fields)) for r in lease_rows}
        ended = {r.lease_id for r in by_id.values() if r.state in LeaseState.ENDED_WITH_RETURN}
        held = await held_ranges(conn, ended) if ended else {}
        slot_keys = {(r.lease_id, r.slot) for r in confirmed}
        sn_keys = {(by_id[r.lease_id].cert_no, r.sn) for r in confirmed if r.lease_id in by_id}
        params = {
            "lease_ids": lease_ids,
            "slots": sorted({r.slot for r in confirmed}),
            "certs": sorted({c for c, _ in sn_keys}),
            "sns": sorted({r.sn for r in confirmed}),
            "slot_leases": [lease for lease, _ in sorted(slot_keys)],
            "slot_nos": [slot for _, slot in sorted(slot_keys)],
            "sn_certs": [cert for cert, _ in sorted(sn_keys)],
            "sn_sns": [sn for _, sn in sorted(sn_keys)],
        }
        holders: dict[tuple[str, int], str] = {}
        sns: dict[tuple[str, str], tuple[str, int]] = {}
        for r in await conn.execute(_HOLDERS[conn.dialect.name], params):
            if (r.lease_id, r.slot) in slot_keys:
                holders[(r.lease_id, r.slot)] = r.sn
            if (r.cert_no, r.sn) in sn_keys:
                sns[(r.cert_no, r.sn)] = (r.lease_id, r.slot)
        return cls(gw, held, by_id, holders, sns)

    async def check(self, conn: AsyncConnection, rec: Record, now: int, result: Applied) -> bool:
        """Whether `rec` adds a confirmation; flags an anomaly when it must not count."""
        lease = self.leases.get(rec.lease_id)
        if lease is not None and self.slots.get((rec.lease_id, rec.slot)) == rec.sn:
            return False  # the same SN confirmed again in the same slot: counted once already
        problem = self._lease_problem(rec, lease) or self._slot_problem(rec, lease)
        if problem is not None:
            kind, message = problem
            cert_no = lease.cert_no if lease is not None else None
            result.anomalies.append(
                await anomalies.store(
                    conn,
                    kind,
                    message,
                    now,
                    gw=rec.gw,
                    seq=rec.seq,
                    cert_no=cert_no,
                    lease_id=rec.lease_id,
                    slot=rec.slot,
                    sn=rec.sn,
                )
            )
            return False
        assert lease is not None  # _lease_problem flags a missing lease
        self.slots[(rec.lease_id, rec.slot)] = rec.sn
        self.sns[(lease.cert_no, rec.sn)] = (rec.lease_id, rec.slot)
        self.new_confirmations.append(
            {
                "lease_id": rec.lease_id,
                "slot": rec.slot,
                "cert_no": lease.cert_no,
                "sn": rec.sn,
                "gw": rec.gw,
                "seq": rec.seq,
                "at": rec.at,
            }
        )
        self.certs.add(lease.cert_no)
        return True

    def _lease_problem(self, rec: Record, lease: _LeaseView | None) -> tuple[AnomalyKind, str] | None:
        if lease is None:
            return AnomalyKind.UNKNOWN_LEASE, f"{_where(rec)} names a lease the platform never issued"
        if lease.gw != self.gw:
            return AnomalyKind.FOREIGN_LEASE, f"{_where(rec)} uses a lease issued to gateway {lease.gw}"
        if not lease.slot_lo <= rec.slot < lease.slot_hi:
            return (
                AnomalyKind.SLOT_OUTSIDE_LEASE,
                f"{_where(rec)}: the lease holds slots [{lease.slot_lo}, {lease.slot_hi})",
            )
        if lease.lease_id in self.held and not any(lo <= rec.slot < hi for lo, hi in self.held[lease.lease_id]):
            return (
                AnomalyKind.RETURNED_SLOT,
                f"{_where(rec)}: the lease {lease.state} and this slot went back to the certificate",
            )
        if (rec.old_pid, rec.new_pid) != (lease.original_pid, lease.new_pid):
            return (
                AnomalyKind.PID_MISMATCH,
                f"{_where(rec)} rebadges {rec.old_pid} -> {rec.new_pid}, not as its certificate says",
            )
        return None

    def _slot_problem(self, rec: Record, lease: _LeaseView | None) -> tuple[AnomalyKind, str] | None:
        if lease is None:
            return None
        holder = self.slots.get((rec.lease_id, rec.slot))
        if holder is not None:
            return AnomalyKind.DUPLICATE_SLOT, f"{_where(rec)}: the slot was already confirmed for SN {holder}"
        other = self.sns.get((lease.cert_no, rec.sn))
        if other is not None:
            return AnomalyKind.SN_REBADGED_TWICE, (
                f"{_where(rec)}: SN {rec.sn} was already rebadged under {lease.cert_no} "
                f"in lease {other[0]} slot {other[1]}"
            )
        return None


def _where(rec: Record) -> str:
    return f"record {rec.seq} (SN {rec.sn}, lease {rec.lease_id}, slot {rec.slot})"


async def _count(conn: AsyncConnection, gw: str, added: Counter[str]) -> None:
    rows = [{"cert_no": cert_no, "gw": gw, "confirmed": n} for cert_no, n in sorted(added.items())]
    await conn.execute(_COUNT_UPSERT[conn.dialect.name], rows)


async def confirmed_counts(conn: AsyncConnection, cert_nos: set[str]) -> dict[str, tuple[int, int]]:
    """cert_no -> (confirmed, quantity) for the named certificates."""
    if not cert_nos:
        return {}
    rows = await conn.execute(_CONFIRMED_COUNTS, {"certs": sorted(cert_nos)})
    return {r[0]: (int(r[2]), int(r[1])) for r in rows}
