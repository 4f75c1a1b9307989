"""Helpers for the platform tests: a gateway journal built with real keys, and platforms on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from cloud_bridge.platform import Platform
from wire.keys import SigningKey
from wire.lease_request import SignedRequest, new_nonce
from wire.records import GENESIS, Batch, Record, RecordKind, close_record
from wire.tokens import Checkpoint, sign

PG_ADMIN_URL = os.environ.get("REBADGE_TEST_PG", "postgresql://postgres@127.0.0.1/postgres")
PG_CONNECT_TIMEOUT_S = 3.0
OLD_PID = "abcd1234"
NEW_PID = "wxyz5678"
T0 = 1_800_000_000
R = TypeVar("R", bound=SignedRequest)


class Journal:
    """A gateway's hash-chained journal, built in the test with the gateway's real key."""

    def __init__(self, key: SigningKey | None = None, *, old_pid: str = OLD_PID, new_pid: str = NEW_PID) -> None:
        self.key = key or SigningKey.generate()
        self.old_pid = old_pid
        self.new_pid = new_pid
        self.gw = self.key.kid.hex()
        self.records: list[Record] = []

    @property
    def head(self) -> bytes:
        """Digest of the newest record (GENESIS when empty)."""
        return self.records[-1].digest() if self.records else GENESIS

    def add(
        self,
        lease_id: str,
        slot: int,
        sn: str,
        kind: RecordKind = RecordKind.CONFIRMED,
        *,
        old_pid: str | None = None,
        new_pid: str | None = None,
    ) -> Record:
        """Append one record linked to the head."""
        rec = Record(
            gw=self.gw,
            seq=len(self.records) + 1,
            prev=self.head,
            kind=kind,
            lease_id=lease_id,
            slot=slot,
            sn=sn,
            old_pid=old_pid or self.old_pid,
            new_pid=new_pid or self.new_pid,
            radio="wifi",
            at=T0 + len(self.records),
        )
        self.records.append(rec)
        return rec

    def close(self, lease_id: str, slot_hi: int) -> Record:
        """Append the record that closes a lease: no record on it after this one counts."""
        rec = close_record(
            self.gw, len(self.records) + 1, self.head, lease_id=lease_id, slot_hi=slot_hi, old_pid=self.old_pid,
            new_pid=self.new_pid, at=T0 + len(self.records), reason="closed in a test",
        )  # fmt: skip
        self.records.append(rec)
        return rec

    def request(self, payload_cls: type[R], *, at: int = T0, key: SigningKey | None = None, **fields: Any) -> bytes:
        """A signed gateway request (lease or release) with a fresh nonce."""
        return sign(
            payload_cls(id="r-" + secrets.token_hex(4), gw=self.gw, nonce=new_nonce(), at=at, **fields), key or self.key
        )

    def confirm(self, lease_id: str, slot: int, sn: str) -> None:
        """The records of one successful rebadge: reserved, then confirmed."""
        self.add(lease_id, slot, sn, RecordKind.RESERVED)
        self.add(lease_id, slot, sn, RecordKind.CONFIRMED)

    def batch(self, from_seq: int = 1, to_seq: int | None = None, *, key: SigningKey | None = None) -> bytes:
        """Records from_seq..to_seq (default: to the head) as a `records` payload with a signed checkpoint."""
        chosen = self.records[from_seq - 1 : to_seq]
        last = chosen[-1]
        checkpoint = Checkpoint(gw=self.gw, seq=last.seq, head=last.digest(), at=T0)
        return Batch(
            gw=self.gw,
            from_seq=from_seq,
            records=[r.to_cbor() for r in chosen],
            checkpoint=sign(checkpoint, key or self.key),
        ).to_cbor()


async def _pg_admin() -> asyncpg.Connection:
    async with asyncio.timeout(PG_CONNECT_TIMEOUT_S):
        return await asyncpg.connect(PG_ADMIN_URL)


async def _pg_create(name: str) -> None:
    conn = await _pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _pg_drop(name: str) -> None:
    conn = await _pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_url(name: str) -> str:
    """The URL of database `name` on the test server."""
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _sync(coro: Coroutine[Any, Any, None]) -> None:
    # A thread of its own, so the test's event loop (set up around sync fixtures too) is never touched.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session", name="pg_run")
def fixture_pg_run() -> str:
    """A prefix for this run's databases; skips when the PostgreSQL server is unreachable."""
    prefix = f"rebadge_test_{secrets.token_hex(4)}"
    try:
        _sync(_pg_create(prefix + "_probe"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} is unreachable ({exc}); set REBADGE_TEST_PG to run these tests")
    _sync(_pg_drop(prefix + "_probe"))
    return prefix


@pytest.fixture(name="pg_database")
def fixture_pg_database(pg_run: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped after it."""
    name = f"{pg_run}_{secrets.token_hex(3)}"
    _sync(_pg_create(name))
    yield pg_url(name)
    _sync(_pg_drop(name))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], name="db_url")
def fixture_db_url(request: pytest.FixtureRequest) -> str | None:
    """None for SQLite in the data dir, or the URL of a fresh PostgreSQL database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database"))
    return None


@pytest.fixture(name="platform")
async def fixture_platform(db_url: str | None, tmp_path: Path) -> AsyncIterator[Platform]:
    """A platform on a fresh SQLite file or a fresh PostgreSQL database."""
    p = await Platform.open(tmp_path / "cloud", db_url=db_url)
    yield p
    await p.close()


def test_journal_links_records() -> None:
    j = Journal()
    j.confirm("L1", 0, "SN0001")
    assert j.records[1].prev == j.records[0].digest()
    assert j.records[0].prev == GENESIS
