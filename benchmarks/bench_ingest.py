"""Platform ingest rate in records/s: full verification against raw inserts of the same rows, in the same run.

Run: `python benchmarks/bench_ingest.py [--gateways 8] [--records 2000] [--batch 100] [--backends sqlite,postgres]
[--pg-url postgresql://postgres@127.0.0.1/postgres] [--write docs/benchmarks.md]`.

"verified" is `Platform.ingest` on each `records` payload, as the MQTT worker calls it: strict decode of the batch and
every record, the checkpoint's signature, the chain, the compare-and-set on the gateway's head, the lease and slot
checks of every confirmed record, and the inserts. "raw" inserts exactly the rows the ledger would store (records,
confirmations, the head update), one transaction per batch, with nothing decoded or checked. Workers are separate
processes (verification is CPU-bound Python), each with its own engine, each taking half of the gateways; a run's
rate is all records over the wall time from a common start. MQTT is not in the loop: this is the ledger's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from common import machine, write_section
from sqlalchemy import update

from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import confirmations, gateway_heads, records
from wire.keys import SigningKey
from wire.records import GENESIS, Batch, Record, RecordKind
from wire.tokens import Checkpoint, sign

OLD, NEW = "aaaaaaaa", "bbbbbbbb"
T0 = 1_800_000_000


@dataclass(frozen=True)
class Work:
    """One worker's share: per batch, the payload and the rows a raw insert writes."""

    payloads: list[bytes]
    rows: list[tuple[str, int, bytes, list[dict[str, Any]], list[dict[str, Any]]]]  # gw, seq, head, records, conf.


def journal(key: SigningKey, lease_id: str, cert_no: str, slots: range, batch: int) -> Work:
    """A gateway's journal of reserve + confirm per slot, cut into batches with signed checkpoints."""
    gw = key.kid.hex()
    recs: list[Record] = []
    head = GENESIS
    for slot in slots:
        for kind in (RecordKind.RESERVED, RecordKind.CONFIRMED):
            rec = Record(gw=gw, seq=len(recs) + 1, prev=head, kind=kind, lease_id=lease_id, slot=slot,
                         sn=f"SN{slot:08d}", old_pid=OLD, new_pid=NEW, radio="wifi", at=T0 + len(recs))  # fmt: skip
            recs.append(rec)
            head = rec.digest()
    payloads, rows = [], []
    for start in range(0, len(recs), batch):
        chunk = recs[start : start + batch]
        last = chunk[-1]
        cp = sign(Checkpoint(gw=gw, seq=last.seq, head=last.digest(), at=T0), key)
        payloads.append(
            Batch(gw=gw, from_seq=chunk[0].seq, records=[r.to_cbor() for r in chunk], checkpoint=cp).to_cbor()
        )
        record_rows = [
            {
                "gw": gw,
                "seq": r.seq,
                "digest": r.digest(),
                "body": r.to_cbor(),
                "kind": r.kind.value,
                "lease_id": r.lease_id,
                "slot": r.slot,
                "sn": r.sn,
                "old_pid": r.old_pid,
                "new_pid": r.new_pid,
                "at": r.at,
                "counted": r.kind == RecordKind.CONFIRMED,
                "received_at": T0,
            }
            for r in chunk
        ]
        conf_rows = [
            {"lease_id": r.lease_id, "slot": r.slot, "cert_no": cert_no, "sn": r.sn, "gw": gw, "seq": r.seq, "at": r.at}
            for r in chunk
            if r.kind == RecordKind.CONFIRMED
        ]
        rows.append((gw, last.seq, last.digest(), record_rows, conf_rows))
    return Work(payloads, rows)


async def prepare(data_dir: Path, db_url: str | None, gateways: int, per_gateway: int, batch: int) -> list[Work]:
    """A fresh platform with one certificate and one lease per gateway; each gateway's journal as batches."""
    platform = await Platform.open(data_dir, db_url=db_url)
    try:
        slots = per_gateway // 2
        cert, _ = await platform.issue_certificate(factory="bench", original_pid=OLD, new_pid=NEW,
                                                   quantity=gateways * slots)  # fmt: skip
        work = []
        for _ in range(gateways):
            key = SigningKey.generate()
            lease, _, _ = await platform.issue_lease(cert.cert_no, key.public, slots)
            work.append(journal(key, lease.lease_id, cert.cert_no, range(lease.slot_lo, lease.slot_hi), batch))
        return work
    finally:
        await platform.close()


async def _verified(platform: Platform, work: list[Work]) -> None:
    for w in work:
        for payload in w.payloads:
            result = await platform.ingest(payload)
            assert result.outcome == "applied", result


async def _raw(platform: Platform, work: list[Work]) -> None:
    for w in work:
        for gw, seq, head, record_rows, conf_rows in w.rows:
            async with platform.engine.begin() as conn:
                await conn.execute(records.insert(), record_rows)
                if conf_rows:
                    await conn.execute(confirmations.insert(), conf_rows)
                await conn.execute(update(gateway_heads).where(gateway_heads.c.gw == gw).values(seq=seq, head=head))


def worker(mode: str, data_dir: Path, db_url: str | None, work: list[Work], barrier: Any, out: Any) -> None:
    """One worker process: open the platform, wait for the others, ingest its share, report its end time."""

    async def main() -> None:
        platform = await Platform.open(data_dir, db_url=db_url)
        try:
            await asyncio.to_thread(barrier.wait)
            await (_verified if mode == "verified" else _raw)(platform, work)
            out.put(time.perf_counter())
        finally:
            await platform.close()

    asyncio.run(main())


async def _pg_database(admin_url: str) -> str:
    name = f"rebadge_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_url.rsplit("/", 1)[0] + "/" + name


async def _pg_drop(admin_url: str, url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def run(backend: str, mode: str, workers: int, args: argparse.Namespace, tmp: Path) -> float:
    """Records/s for one configuration, on a fresh database."""
    data_dir = tmp / f"{backend}-{mode}-{workers}"
    db_url = asyncio.run(_pg_database(args.pg_url)) if backend == "postgres" else None
    try:
        work = asyncio.run(prepare(data_dir, db_url, args.gateways, args.records, args.batch))
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(workers + 1), ctx.Queue()
        shares = [work[i::workers] for i in range(workers)]
        procs = [ctx.Process(target=worker, args=(mode, data_dir, db_url, s, barrier, out)) for s in shares]
        for p in procs:
            p.start()
        barrier.wait()
        start = time.perf_counter()
        ends = [out.get() for _ in procs]
        for p in procs:
            p.join()
            assert p.exitcode == 0, f"a {mode} worker failed"
        total = sum(len(r[3]) for w in work for r in w.rows)
        return float(total / (max(ends) - start))
    finally:
        if db_url is not None:
            asyncio.run(_pg_drop(args.pg_url, db_url))


def main() -> None:
    """Measure every configuration and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=8)
    parser.add_argument("--records", type=int, default=2000, help="records per gateway (two per rebadge)")
    parser.add_argument("--batch", type=int, default=100, help="records per batch")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1/postgres")
    parser.add_argument("--write", type=Path, help="put the table under '## Platform ingest' in this file")
    args = parser.parse_args()
    lines = [
        f"`python benchmarks/bench_ingest.py`: {args.gateways} gateways x {args.records} records, {args.batch} per "
        f"batch, records/s; {machine()}.",
        "",
        "| backend | workers | raw | verified | verified / raw |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines))
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            for workers in (1, 2):
                raw = run(backend, "raw", workers, args, Path(tmp))
                verified = run(backend, "verified", workers, args, Path(tmp))
                lines.append(f"| {backend} | {workers} | {raw:,.0f} | {verified:,.0f} | {verified / raw:.2f} |")
                print(lines[-1], flush=True)
    if args.write is not None:
        write_section(args.write, "## Platform ingest", lines)


if __name__ == "__main__":
    main()
