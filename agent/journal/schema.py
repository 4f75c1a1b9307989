"""The journal's tables, and the migrations that bring an older file up to date (`PRAGMA user_version`).

Each migration runs in its own transaction; a migration that fails leaves the file at the version before it.
The statements of a released version never change: stored old journals (tests/data/) are built from them.
"""

from __future__ import annotations

import logging
import sqlite3

import aiosqlite

from agent.errors import JournalCorruptError, JournalError

log = logging.getLogger(__name__)

# v1: the chain (head and last retired record), the records, leases and attempts.
V1: tuple[str, ...] = (
    """CREATE TABLE chain (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        gw TEXT,
        head_seq INTEGER NOT NULL,
        head_digest BLOB NOT NULL,
        retired_seq INTEGER NOT NULL,
        retired_digest BLOB NOT NULL
    )""",
    "INSERT INTO chain VALUES (1, NULL, 0, zeroblob(32), 0, zeroblob(32))",
    """CREATE TABLE records (
        seq INTEGER PRIMARY KEY,
        body BLOB NOT NULL,
        digest BLOB NOT NULL
    )""",
    """CREATE TABLE leases (
        lease_id TEXT PRIMARY KEY,
        cert_no TEXT NOT NULL,
        original_pid TEXT NOT NULL,
        new_pid TEXT NOT NULL,
        slot_lo INTEGER NOT NULL,
        slot_hi INTEGER NOT NULL,
        exp INTEGER NOT NULL,
        gateway_kid BLOB NOT NULL,
        lease_token BLOB NOT NULL,
        cert_token BLOB NOT NULL,
        CHECK (0 <= slot_lo AND slot_lo < slot_hi)
    )""",
    "CREATE INDEX leases_cert ON leases (cert_no, slot_lo)",
    """CREATE TABLE attempts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lease_id TEXT NOT NULL REFERENCES leases (lease_id),
        cert_no TEXT NOT NULL,
        slot INTEGER NOT NULL,
        sn TEXT NOT NULL,
        old_pid TEXT NOT NULL,
        new_pid TEXT NOT NULL,
        radio TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('reserved', 'confirmed', 'released', 'in_doubt')),
        grant_token BLOB NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        reserved_at INTEGER NOT NULL,
        changed_at INTEGER NOT NULL
    )""",
    "CREATE INDEX attempts_slot ON attempts (lease_id, slot)",
    "CREATE INDEX attempts_sn ON attempts (sn, state)",
    "CREATE INDEX attempts_cert ON attempts (cert_no, state)",
)

# v2: the database itself refuses a second live attempt on one slot (v1 relied on the code alone), a partial
# index finds released slots for reuse without scanning every attempt, and refusals are kept so that progress
# counts them (v1 did not record refusals at all).
V2: tuple[str, ...] = (
    "DROP INDEX attempts_slot",
    """CREATE UNIQUE INDEX attempts_live_slot ON attempts (lease_id, slot)
        WHERE state IN ('reserved', 'confirmed', 'in_doubt')""",
    "CREATE INDEX attempts_released_slot ON attempts (lease_id, slot) WHERE state = 'released'",
    """CREATE TABLE refusals (
        id INTEGER PRIMARY KEY,
        cert_no TEXT NOT NULL,
        sn TEXT NOT NULL,
        reason TEXT NOT NULL,
        at INTEGER NOT NULL
    )""",
    "CREATE INDEX refusals_cert ON refusals (cert_no)",
)

# v3: a lease can be closed by this gateway (the seq of its `closed` record, when and why), and the platform's
# acks are remembered: the time of the newest one applied (older ones are replays), and whether an ack showed that
# the platform holds another chain than ours, which freezes the gateway until a later ack matches our chain.
V3: tuple[str, ...] = (
    "ALTER TABLE leases ADD COLUMN closed_seq INTEGER",
    "ALTER TABLE leases ADD COLUMN closed_at INTEGER",
    "ALTER TABLE leases ADD COLUMN closed_reason TEXT",
    """CREATE TABLE acks (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_at INTEGER NOT NULL,
        frozen_ack_at INTEGER,
        frozen_seq INTEGER,
        frozen_head BLOB,
        frozen_since INTEGER,
        frozen_reason TEXT
    )""",
    "INSERT INTO acks VALUES (1, 0, NULL, NULL, NULL, NULL, NULL)",
)

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, V1), (2, V2), (3, V3))
SCHEMA_VERSION = MIGRATIONS[-1][0]

# The exact text of the partial index's WHERE: queries must repeat it word for word for SQLite to use the index.
LIVE_SQL = "state IN ('reserved', 'confirmed', 'in_doubt')"


async def user_version(db: aiosqlite.Connection) -> int:
    """The schema version written in the file (0 for a new file)."""
    rows = list(await db.execute_fetchall("PRAGMA user_version"))
    return int(rows[0][0])


async def migrate(db: aiosqlite.Connection, path: str) -> int:
    """Bring the file at `path` to SCHEMA_VERSION, one transaction per step; return the version it had."""
    found = await user_version(db)
    if found > SCHEMA_VERSION:
        raise JournalError(
            f"journal {path} has schema v{found}, newer than this agent's v{SCHEMA_VERSION}; "
            "upgrade the agent (a downgrade would lose records)"
        )
    for version, statements in MIGRATIONS:
        if found >= version:
            continue
        log.info("journal %s: migrating schema to v%d", path, version)
        await _apply(db, path, version, statements)
    return found


async def _apply(db: aiosqlite.Connection, path: str, version: int, statements: tuple[str, ...]) -> None:
    await db.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            await db.execute(statement)
        # user_version lives in the file header and is written inside this transaction.
        await db.execute(f"PRAGMA user_version = {version:d}")
        await db.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        await db.execute("ROLLBACK")
        raise JournalCorruptError(
            f"journal {path} cannot be migrated to schema v{version}: {exc}; refusing to start. "
            "Restore the journal from the platform or contact support",
            seq=None,
        ) from exc
    except BaseException:
        await db.execute("ROLLBACK")
        raise
