"""What the journal costs per unit on the line: reserve + confirm, against one bare SQLite INSERT transaction.

Run: `python benchmarks/bench_journal.py [--units N] [--open-records N] [--dir DIR]` (DIR: put the files on the
disk you care about).
Every figure is measured in the same run on the same disk: WAL with synchronous=FULL throughout, so each
commit waits for fsync. A unit is two journal transactions (reserve, then confirm), each writing one record.
The series run round-robin, one step each in turn, so that a busy disk slows all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite
from common import BENCH_CERT_NO, BENCH_ISSUER, BENCH_LEASE_ID, bench_tokens

from agent.journal import Journal
from wire.keys import SigningKey
from wire.records import Record, RecordKind
from wire.tokens import Grant, sign

ISSUER = BENCH_ISSUER
GATEWAY = SigningKey(bytes([2]) * 32)
OLD, NEW = "aaaaaaaa", "bbbbbbbb"
BODY = bytes(190)  # about the size of one record's CBOR
PREFILLED = 20_000
WARMUP = 20
OPEN_RECORDS = 200_000
OPEN_RUNS = 3


def real_grant(sn: str) -> Callable[[str, int], bytes]:
    return lambda lease_id, slot: sign(Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW, iat=0), GATEWAY)


def fixed_grant(_lease_id: str, _slot: int) -> bytes:
    return b"g" * 120


class JournalSeries:
    """A journal of its own; `step` times one unit: reserve, then confirm."""

    def __init__(self, path: Path, units: int, *, signed: bool, prefill: int = 0) -> None:
        self.path, self.units, self.signed, self.prefill = path, units, signed, prefill
        self.journal: Journal | None = None
        self.done = 0

    async def open(self) -> None:
        journal = await Journal.open(self.path, "bench", min_free_bytes=0)
        await journal.add_lease(
            *bench_tokens(GATEWAY, self.units + self.prefill + 1, protocols=("wifi",), old=OLD, new=NEW)
        )
        await journal.close()
        if self.prefill:
            _prefill(self.path, self.prefill)
        self.journal = await Journal.open(self.path, "bench", min_free_bytes=0)

    async def step(self) -> float:
        assert self.journal is not None
        sn = f"SN{self.prefill + self.done:07d}"
        self.done += 1
        sign_grant = real_grant(sn) if self.signed else fixed_grant
        start = time.perf_counter()
        attempt = await self.journal.reserve(BENCH_CERT_NO, sn, OLD, NEW, "wifi", sign_grant)
        assert attempt is not None
        await self.journal.confirm(attempt.id)
        return time.perf_counter() - start

    async def close(self) -> None:
        if self.journal is not None:
            await self.journal.close()


def _prefill(path: Path, n: int) -> None:
    """N confirmed slots written straight into the attempts table, to see whether finding a slot slows down."""
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO attempts (lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant_token,"
            " reserved_at, changed_at) VALUES ('BL1', 'B1', ?, ?, ?, ?, 'wifi', 'confirmed', x'00', 0, 0)",
            ((slot, f"SN{slot:07d}", OLD, NEW) for slot in range(n)),
        )


CREATE_T = "CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB NOT NULL, digest BLOB NOT NULL)"


class BareSeries:
    """BEGIN; INSERT one record-sized row; COMMIT with the sqlite3 module on the calling thread."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.execute(CREATE_T)
        self.seq = 0

    async def step(self) -> float:
        self.seq += 1
        start = time.perf_counter()
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute("INSERT INTO t VALUES (?, ?, ?)", (self.seq, BODY, BODY[:32]))
        self.db.execute("COMMIT")
        return time.perf_counter() - start

    async def close(self) -> None:
        self.db.close()


class AioBareSeries:
    """The same transaction through aiosqlite: three awaits, each a hop to its thread and back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: aiosqlite.Connection | None = None
        self.seq = 0

    async def open(self) -> None:
        self.db = await aiosqlite.connect(self.path, isolation_level=None)
        await self.db.execute("PRAGMA journal_mode = WAL")
        await self.db.execute("PRAGMA synchronous = FULL")
        await self.db.execute(CREATE_T)

    async def step(self) -> float:
        assert self.db is not None
        self.seq += 1
        start = time.perf_counter()
        await self.db.execute("BEGIN IMMEDIATE")
        await self.db.execute("INSERT INTO t VALUES (?, ?, ?)", (self.seq, BODY, BODY[:32]))
        await self.db.execute("COMMIT")
        return time.perf_counter() - start

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()


def _retained_records(path: Path, n: int) -> None:
    """N records chained after the journal's head, written straight into the file as if none had been acked."""
    with sqlite3.connect(path) as db:
        head_seq, prev = db.execute("SELECT head_seq, head_digest FROM chain").fetchone()
        rows = []
        for seq in range(head_seq + 1, head_seq + n + 1):
            record = Record(
                gw="bench", seq=seq, prev=prev, kind=RecordKind.CONFIRMED, lease_id=BENCH_LEASE_ID, slot=seq,
                sn=f"SN{seq:07d}", old_pid=OLD, new_pid=NEW, radio="wifi", at=seq, reason="",
            )  # fmt: skip
            body = record.to_cbor()
            prev = hashlib.sha256(body).digest()
            rows.append((seq, body, prev))
        db.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
        db.execute("UPDATE chain SET head_seq = ?, head_digest = ?", (head_seq + n, prev))


async def bench_open(root: Path, n: int) -> list[float]:
    """Seconds per `Journal.open` of a journal retaining `n` records."""
    path = root / "open.sqlite"
    journal = await Journal.open(path, "bench", min_free_bytes=0)
    await journal.close()
    _retained_records(path, n)
    times = []
    for _ in range(OPEN_RUNS):
        start = time.perf_counter()
        journal = await Journal.open(path, "bench", min_free_bytes=0)
        times.append(time.perf_counter() - start)
        await journal.close()
    return times


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=500, help="measured units (and bare transactions) per row")
    parser.add_argument("--open-records", type=int, default=OPEN_RECORDS, help="records retained for the open test")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        total = WARMUP + args.units
        aio = AioBareSeries(root / "aio-bare.sqlite")
        await aio.open()
        series: list[tuple[str, BareSeries | AioBareSeries | JournalSeries]] = [
            ("bare sqlite3 INSERT transaction", BareSeries(root / "bare.sqlite")),
            ("bare aiosqlite INSERT transaction", aio),
            ("journal reserve+confirm, fixed grant", JournalSeries(root / "j1.sqlite", total, signed=False)),
            ("journal reserve+confirm, Ed25519 grant", JournalSeries(root / "j2.sqlite", total, signed=True)),
            (
                f"  same, {PREFILLED:,} slots confirmed before",
                JournalSeries(root / "j3.sqlite", total, signed=True, prefill=PREFILLED),
            ),
        ]
        for _, s in series:
            if isinstance(s, JournalSeries):
                await s.open()
        times: dict[str, list[float]] = {name: [] for name, _ in series}
        # Round-robin, one step of each series at a time, so that all of them meet the same disk weather.
        for i in range(total):
            for name, s in series:
                took = await s.step()
                if i >= WARMUP:
                    times[name].append(took)
        for _, s in series:
            await s.close()
        opens = await bench_open(root, args.open_records) if args.open_records else []
    bare = statistics.median(times[series[0][0]])
    print(f"{'what':42} {'n':>5} {'median ms':>10} {'p95 ms':>8} {'x bare':>7}")
    for name, row in times.items():
        median = statistics.median(row)
        print(f"{name:42} {len(row):5d} {median * 1e3:10.3f} {p95(row) * 1e3:8.3f} {median / bare:7.1f}")
    if opens:
        best = min(opens)
        print(
            f"journal open, {args.open_records:,} retained records: best of {len(opens)} {best:.2f} s"
            f" ({best / args.open_records * 1e6:.1f} us per record)"
        )


if __name__ == "__main__":
    asyncio.run(main())
