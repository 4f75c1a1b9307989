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

from cloud_bridge import anomalies, quarantine
from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.errors import CloudError
from cloud_bridge.leases import LeaseState, held_ranges
from cloud_bridge.leases import end as end_lease
from cloud_bridge.store.queries import confirmed_per_cert
from cloud_bridge.store.schema import anomalies as anomaly_table
from cloud_bridge.store.schema import cert_counts, certificates, confirmations, gateway_heads, leases, records
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
    returned: dict[str, int] = field(default_factory=dict)  # lease id -> slots its close gave back


class HeadMovedError(CloudError):
    """The head changed under the compare-and-set (only without a row lock); the caller retries."""


# Statements of the hot path, built once: building a SQLAlchemy construct per batch costs more than running it.
# Expanding bind parameters take the IN lists; the compiled form is cached per dialect.
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
# Keyed by certificate: a slot is confirmed once per certificate, whichever lease held it.
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
            confirmations.c.cert_no.in_(bindparam("certs", expanding=True)),
            confirmations.c.slot.in_(bindparam("slots", expanding=True)),
        ),
        select(*_CONFIRMED_COLUMNS).where(
            confirmations.c.cert_no.in_(bindparam("certs", expanding=True)),
            confirmations.c.sn.in_(bindparam("sns", expanding=True)),
        ),
    ),
    "postgresql": text(
        _PG_PROBE.format(a="slot_certs", b="slot_nos", b_type="INTEGER", x="cert_no", y="slot")
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


async def apply(conn: AsyncConnection, batch: VerifiedBatch, head: Row[Any], now: int, payload: bytes) -> Applied:
    """Apply a verified batch against the gateway's stored head, locked by `gateways.lock` in this transaction."""
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
    await _store(conn, batch, start, now, result, head)
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
        message = (
            f"gateway {batch.gw} forked its journal at seq {seq}: {why}; restored from a backup? It is frozen: no "
            "leases and no spends from that seq on until a platform admin reinstates it"
        )
        result.anomalies.append(
            await anomalies.store(conn, AnomalyKind.FORK, message, now, payload=payload, gw=batch.gw, seq=seq)
        )
    await quarantine.freeze(conn, batch.gw, seq, now, why)


async def _store(
    conn: AsyncConnection, batch: VerifiedBatch, start: int, now: int, result: Applied, gw: Row[Any]
) -> None:
    """Store the new records in order; a `closed` record ends its lease before the records after it are checked."""
    frozen_seq = None if gw.frozen_seq is None else int(gw.frozen_seq)
    segment_start = start
    for i in range(start, len(batch.records)):
        if batch.records[i].kind == RecordKind.CLOSED:
            await _store_segment(conn, batch, range(segment_start, i + 1), now, result, frozen_seq)
            await _close(conn, batch.records[i], now, result, frozen_seq)
            segment_start = i + 1
    if segment_start < len(batch.records):
        await _store_segment(conn, batch, range(segment_start, len(batch.records)), now, result, frozen_seq)
    if frozen_seq is not None and batch.last_seq >= frozen_seq:
        first = max(frozen_seq, batch.from_seq + start)
        result.anomalies.append(
            await anomalies.store(
                conn, AnomalyKind.FROZEN_GATEWAY,
                f"gateway {batch.gw} is frozen from seq {frozen_seq}: records {first}..{batch.last_seq} are kept "
                "as evidence and count for nothing until an admin reinstates it",
                now, gw=batch.gw, seq=first,
            )
        )  # fmt: skip


async def _store_segment(
    conn: AsyncConnection, batch: VerifiedBatch, new: range, now: int, result: Applied, frozen_seq: int | None
) -> None:
    checked = [batch.records[i] for i in new if batch.records[i].kind in _CHECKED_KINDS]
    checker = await _Checker.load(conn, batch.gw, checked, frozen_seq)
    rows = []
    for i in new:
        rec = batch.records[i]
        counted = False
        if rec.kind in _CHECKED_KINDS:
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
    result.stored += len(rows)
    result.certs |= checker.certs


async def _close(conn: AsyncConnection, rec: Record, now: int, result: Applied, frozen_seq: int | None) -> None:
    """The gateway's chain closes a lease at `rec.seq`: its unspent slots go back to the certificate."""
    row = (await conn.execute(select(leases).where(leases.c.lease_id == rec.lease_id))).first()
    problem: str | None = None
    if row is None or row.gw != rec.gw:
        problem = f"{_where(rec)} closes a lease this gateway does not hold"
    elif frozen_seq is not None and rec.seq >= frozen_seq:
        return  # counted for nothing, as the batch's frozen-gateway anomaly says
    elif row.state != LeaseState.ACTIVE:
        if row.state == LeaseState.CLOSED:
            problem = f"{_where(rec)} closes lease {rec.lease_id} again; it was closed at seq {row.closed_seq}"
        else:
            return  # written off or revoked before the gateway's own close arrived: nothing left to return
    if problem is not None:
        result.anomalies.append(
            await anomalies.store(
                conn, AnomalyKind.UNKNOWN_LEASE, problem, now, gw=rec.gw, seq=rec.seq, lease_id=rec.lease_id
            )
        )
        return
    assert row is not None
    result.returned[rec.lease_id] = await end_lease(conn, row, LeaseState.CLOSED, now, closed_seq=rec.seq)
    result.certs.add(str(row.cert_no))


# Records checked against the ledger: a confirmation counts or is flagged, a release must not follow a
# confirmation. Reservations and doubts spend nothing on the platform; they only keep slots at a close.
_CHECKED_KINDS = frozenset({RecordKind.CONFIRMED, RecordKind.RELEASED})


class _LeaseView(NamedTuple):
    """The lease columns the checks read, as a plain tuple (a Row's attribute lookup costs more)."""

    lease_id: str
    cert_no: str
    gw: str
    slot_lo: int
    slot_hi: int
    state: str
    closed_seq: int | None
    original_pid: str
    new_pid: str


class _Checker:
    """Decides whether each record may stand and whether a confirmation counts, from the ledger it touches."""

    def __init__(
        self,
        gw: str,
        lease_rows: dict[str, _LeaseView],
        held: dict[str, list[tuple[int, int]]],
        slots: dict[tuple[str, int], tuple[str, str]],
        sns: dict[tuple[str, str], tuple[str, int]],
        frozen_seq: int | None,
    ) -> None:
        self.gw = gw
        self.leases = lease_rows
        self.held = held  # lease -> ranges it still holds, for leases that ended
        self.slots = slots  # (cert, slot) -> (lease, sn) already confirmed
        self.sns = sns  # (cert, sn) -> (lease, slot) already confirmed
        self.frozen_seq = frozen_seq
        self.new_confirmations: list[dict[str, object]] = []
        self.certs: set[str] = set()

    @classmethod
    async def load(cls, conn: AsyncConnection, gw: str, checked: list[Record], frozen_seq: int | None) -> _Checker:
        if not checked:
            return cls(gw, {}, {}, {}, {}, frozen_seq)
        lease_ids = sorted({r.lease_id for r in checked})
        lease_rows = await conn.execute(_LEASES, {"lease_ids": lease_ids})
        by_id = {r.lease_id: _LeaseView(*(r._mapping[f] for f in _LeaseView._fields)) for r in lease_rows}
        ended = {r.lease_id for r in by_id.values() if r.state != LeaseState.ACTIVE}
        held = await held_ranges(conn, ended) if ended else {}
        known = [r for r in checked if r.lease_id in by_id]
        slot_keys = {(by_id[r.lease_id].cert_no, r.slot) for r in known}
        sn_keys = {(by_id[r.lease_id].cert_no, r.sn) for r in known}
        params = {
            "certs": sorted({c for c, _ in slot_keys}),
            "slots": sorted({s for _, s in slot_keys}),
            "sns": sorted({sn for _, sn in sn_keys}),
            "slot_certs": [cert for cert, _ in sorted(slot_keys)],
            "slot_nos": [slot for _, slot in sorted(slot_keys)],
            "sn_certs": [cert for cert, _ in sorted(sn_keys)],
            "sn_sns": [sn for _, sn in sorted(sn_keys)],
        }
        holders: dict[tuple[str, int], tuple[str, str]] = {}
        sns: dict[tuple[str, str], tuple[str, int]] = {}
        if known:
            for r in await conn.execute(_HOLDERS[conn.dialect.name], params):
                if (r.cert_no, r.slot) in slot_keys:
                    holders[(r.cert_no, r.slot)] = (r.lease_id, r.sn)
                if (r.cert_no, r.sn) in sn_keys:
                    sns[(r.cert_no, r.sn)] = (r.lease_id, r.slot)
        return cls(gw, by_id, held, holders, sns, frozen_seq)

    async def check(self, conn: AsyncConnection, rec: Record, now: int, result: Applied) -> bool:
        """Whether `rec` adds a confirmation; flags an anomaly when a record must not stand."""
        lease = self.leases.get(rec.lease_id)
        if self.frozen_seq is not None and rec.seq >= self.frozen_seq:
            return False  # flagged once for the whole batch
        if rec.kind == RecordKind.CONFIRMED and lease is not None:
            holder = self.slots.get((lease.cert_no, rec.slot))
            if holder == (rec.lease_id, rec.sn):
                return False  # the same SN confirmed again in the same slot: counted once already
        if rec.kind == RecordKind.RELEASED:
            problem = self._slot_problem(rec, lease) if lease is not None and lease.gw == self.gw else None
        else:
            problem = self._lease_problem(rec, lease) or self._slot_problem(rec, lease)
        if problem is not None:
            kind, message = problem
            result.anomalies.append(
                await anomalies.store(
                    conn, kind, message, now, gw=rec.gw, seq=rec.seq, cert_no=lease.cert_no if lease else None,
                    lease_id=rec.lease_id, slot=rec.slot, sn=rec.sn,
                )
            )  # fmt: skip
            return False
        if rec.kind != RecordKind.CONFIRMED:
            return False
        assert lease is not None  # _lease_problem flags a missing lease
        self.slots[(lease.cert_no, rec.slot)] = (rec.lease_id, rec.sn)
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
        ended = self._ended_problem(rec, lease)
        if ended is not None:
            return ended
        if (rec.old_pid, rec.new_pid) != (lease.original_pid, lease.new_pid):
            return (
                AnomalyKind.PID_MISMATCH,
                f"{_where(rec)} rebadges {rec.old_pid} -> {rec.new_pid}, not as its certificate says",
            )
        return None

    def _ended_problem(self, rec: Record, lease: _LeaseView) -> tuple[AnomalyKind, str] | None:
        if lease.closed_seq is not None and rec.seq > lease.closed_seq:
            ended = "closed" if lease.state == LeaseState.CLOSED else lease.state.replace("_", " ")
            return (
                AnomalyKind.AFTER_LEASE_END,
                f"{_where(rec)} comes after the lease was {ended} at seq {lease.closed_seq}; it counts for nothing",
            )
        if lease.lease_id in self.held and not any(lo <= rec.slot < hi for lo, hi in self.held[lease.lease_id]):
            return (
                AnomalyKind.RETURNED_SLOT,
                f"{_where(rec)}: the lease is {lease.state.replace('_', ' ')} and this slot went back to the "
                "certificate",
            )
        return None

    def _slot_problem(self, rec: Record, lease: _LeaseView | None) -> tuple[AnomalyKind, str] | None:
        if lease is None or rec.kind not in (RecordKind.RELEASED, RecordKind.CONFIRMED):
            return None
        holder = self.slots.get((lease.cert_no, rec.slot))
        if rec.kind == RecordKind.RELEASED:
            if holder is None or holder[0] != rec.lease_id:
                return None
            return (
                AnomalyKind.RELEASE_AFTER_CONFIRM,
                f"{_where(rec)} releases a slot confirmed for SN {holder[1]}; a confirmed slot is final and "
                "nothing is returned",
            )
        if holder is not None:
            return (
                AnomalyKind.DUPLICATE_SLOT,
                f"{_where(rec)}: slot {rec.slot} of {lease.cert_no} was already confirmed for SN {holder[1]} "
                f"in lease {holder[0]}",
            )
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
