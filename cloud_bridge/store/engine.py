"""The database engine: SQLite through aiosqlite by default, PostgreSQL through asyncpg by URL; migrations at open."""

from __future__ import annotations

import functools
import logging
import re
import socket
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud_bridge.errors import ConfigError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 10


# user:password@ in a URL, for showing a URL that did not parse without its password.
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")


def sqlite_url(path: Path) -> str:
    """The async URL of a SQLite file."""
    return f"sqlite+aiosqlite:///{path}"


def async_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs too, choosing the async driver for them."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        shown = _PASSWORD_IN_URL.sub(r"\1***@", url)  # a password in it is never echoed
        raise ConfigError(
            f"database URL {shown!r} is not a URL; use sqlite:///FILE or postgresql://USER@HOST/DB"
        ) from exc
    drivers = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg"}
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    if parsed.drivername not in drivers.values():
        shown = parsed.render_as_string(hide_password=True)
        raise ConfigError(
            f"database URL {shown!r} uses {parsed.drivername!r}; use sqlite:///FILE or postgresql://USER@HOST/DB"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any, *, foreign_keys: bool = True) -> None:
    # Take transactions into our own hands: pysqlite's implicit BEGIN would defer the write lock, so two
    # writers could both read a gateway head and then deadlock upgrading; BEGIN IMMEDIATE serialises them.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        f"foreign_keys={'ON' if foreign_keys else 'OFF'}",
        f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
    ):
        cur.execute(f"PRAGMA {pragma}")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine for `url` with the settings the ledger relies on (SQLite foreign keys off only to migrate)."""
    url = async_url(url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", functools.partial(_sqlite_pragmas, foreign_keys=foreign_keys))
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=PG_POOL_SIZE, pool_pre_ping=True)


def shown_url(url: str) -> str:
    """`url` with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return _PASSWORD_IN_URL.sub(r"\1***@", url)


def _why_not(exc: BaseException, url: str, setting: str) -> str:
    """The driver's reason in one line (SQLAlchemy wraps it; a refused TCP connect arrives as an OSError) and what
    to do."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, ConnectionRefusedError):
        return f"nothing accepts connections there; start the database server, or correct {setting}"
    if isinstance(cause, socket.gaierror):
        return f"its host is not found ({cause.strerror}); correct the host in {setting}"
    lines = str(cause).strip().splitlines()
    reason = lines[0] if lines else type(cause).__name__
    if url.startswith("sqlite"):
        return f"{reason}; its folder must exist and be writable by this user, or correct {setting}"
    return f"{reason}; correct {setting}, or create the database or role it names"


async def check_reachable(url: str, setting: str) -> None:
    """Connect once, so a wrong URL or a server that is down is told in one line naming `setting`."""
    engine = create_engine(url)
    try:
        async with engine.connect():
            pass
    except (OSError, DBAPIError) as exc:
        raise ConfigError(
            f"cannot open the database {shown_url(url)} ({setting}): {_why_not(exc, url, setting)}"
        ) from exc
    finally:
        await engine.dispose()


def _upgrade(connection: Connection, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` (the newest by default) on a connection of its own.

    SQLite alters a table by copying it and dropping the old one, which enforced foreign keys would refuse
    while other tables point at it; so migrations run with them off, and are checked afterwards.
    """
    engine = create_engine(url, foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
            if engine.dialect.name == "sqlite":
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise ConfigError(f"database has {len(broken)} rows with broken references after migrating")
    finally:
        await engine.dispose()
    log.info("database schema is at revision %s", revision)
