"""The database engine: SQLite through aiosqlite by default, PostgreSQL through asyncpg by URL; migrations at open."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud_bridge.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 10


def sqlite_url(path: Path) -> str:
    """The async URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs too, choosing the async driver for them."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(
            f"database URL {url!r} is not a URL; use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from exc
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    if parsed.drivername not in drivers.values():
        raise ConfigError(
            f"database URL {url!r} uses {parsed.drivername!r}; use sqlite:///FILE or postgresql://USER@HOST/DB"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Take transactions into our own hands: pysqlite's implicit BEGIN would defer the write lock, so two
    # writers could both read a gateway head and then deadlock upgrading; BEGIN IMMEDIATE serialises them.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        "foreign_keys=ON",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url` with the settings the ledger relies on."""
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=PG_POOL_SIZE, pool_pre_ping=True)


def _upgrade(connection: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest Alembic revision."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
    log.info("database schema is at the newest revision")
