"""Alembic environment: runs on the connection the platform hands over, or on `sqlalchemy.url` from the CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from cloud_bridge.store.schema import metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Migrate online, on the given connection or a new one."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.connect() as conn:
        _run(conn)
        conn.commit()
    engine.dispose()


main()
