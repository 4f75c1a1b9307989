"""Opening a journal file: its permissions, the connection's pragmas, integrity, migrations and the chain check."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import aiosqlite

from agent.errors import JournalCorruptError, JournalError
from agent.journal import queries as q
from agent.journal import schema
from agent.journal.chain import RESTORE_HINT, ChainState, ChainVerifier, broken
from agent.journal.models import StoredLease, lease_from_row

log = logging.getLogger(__name__)

VERIFY_CHUNK = 2000


def prepare_files(path: Path) -> None:
    """The state directory 0700 and the database file 0600, before SQLite creates anything."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
        os.chmod(path.parent, 0o700)  # mkdir's mode passes through the umask
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    if path.stat().st_mode & 0o077:
        log.warning("journal %s was readable by others; setting it to 0600", path)
        os.chmod(path, 0o600)


async def load(db: aiosqlite.Connection, path: Path, gw: str) -> tuple[ChainState, list[StoredLease]]:
    """Configure the connection, check the file, migrate it, check the chain; return the chain and the leases."""
    mode = next(iter(await db.execute_fetchall("PRAGMA journal_mode = WAL")))[0]
    if mode != "wal":
        raise JournalError(f"journal {path} cannot use WAL (journal_mode is {mode!r}); put it on a local disk")
    await db.execute("PRAGMA synchronous = FULL")
    await db.execute("PRAGMA foreign_keys = ON")
    problems = [row[0] for row in await db.execute_fetchall("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise JournalCorruptError(
            f"journal {path} fails SQLite's integrity check ({'; '.join(problems[:3])}); {RESTORE_HINT}", seq=None
        )
    await schema.migrate(db, str(path))
    chain = await read_chain(db)
    if chain.gw is None:
        await db.execute(q.SET_GW, (gw,))
    elif chain.gw != gw:
        raise JournalError(
            f"journal {path} belongs to gateway {chain.gw!r}, not {gw!r}; use that gateway's identity or another file"
        )
    await verify_records(db, gw, chain)
    leases = [lease_from_row(row) for row in await db.execute_fetchall(q.ALL_LEASES)]
    return chain, leases


async def read_chain(db: aiosqlite.Connection) -> ChainState:
    rows = list(await db.execute_fetchall(q.READ_CHAIN))
    if len(rows) != 1:
        raise JournalCorruptError(f"journal chain row is missing or doubled; {RESTORE_HINT}", seq=None)
    gw, head_seq, head_digest, retired_seq, retired_digest = rows[0]
    return ChainState(gw, head_seq, bytes(head_digest), retired_seq, bytes(retired_digest))


async def verify_records(db: aiosqlite.Connection, gw: str, chain: ChainState) -> None:
    """Check every retained record against the one before it, from the last retired digest to the head."""
    stale = list(await db.execute_fetchall(q.STALE_RECORD, (chain.retired_seq,)))
    if stale[0][0] is not None:
        raise broken(stale[0][0], f"record seq {stale[0][0]} was retired already but is still stored")
    verifier = ChainVerifier(gw, chain)
    after = chain.retired_seq
    while True:
        rows = list(await db.execute_fetchall(q.VERIFY_RECORDS, (after, VERIFY_CHUNK)))
        if not rows:
            break
        verifier.feed((seq, bytes(body), bytes(digest)) for seq, body, digest in rows)
        after = rows[-1][0]
    verifier.finish()


def open_error(path: Path, exc: sqlite3.Error) -> JournalError:
    if getattr(exc, "sqlite_errorname", "") in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return JournalCorruptError(f"journal {path} is not a usable database ({exc}); {RESTORE_HINT}", seq=None)
    return JournalError(f"cannot open journal {path}: {exc}")
