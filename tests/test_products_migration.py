"""Migration 0008 carries products registered by PID alone into configured products, their PIDs recorded as issued."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from cloud_bridge import products
from cloud_bridge.accounts import SYSTEM
from cloud_bridge.errors import ConflictError
from cloud_bridge.platform import DB_FILE, Platform
from cloud_bridge.products import Protocol, Spec
from cloud_bridge.store.engine import create_engine, migrate, sqlite_url
from cloud_bridge.store.schema import issued_pids
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
)

BEFORE = "0006"


async def test_products_before_0008_are_filled_in_and_their_pids_stay_issued(
    db_url: str | None, tmp_path: Path
) -> None:
    data_dir = tmp_path / "cloud"
    data_dir.mkdir(mode=0o700)
    url = db_url or sqlite_url(data_dir / DB_FILE)
    await migrate(url, BEFORE)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO organisations (id, name, kind, created_at) VALUES (7, 'F', 'factory', 1)"))
        for pid in ("abcd1234", "abcdefgh12345678"):
            await conn.execute(
                text(
                    "INSERT INTO products (pid, org_id, name, stage, created_at, updated_at) "
                    f"VALUES ('{pid}', 7, 'lamp', 'mass', 5, 5)"
                )
            )
    await engine.dispose()
    platform = await Platform.open(data_dir, db_url=db_url)
    try:
        rows = {r.pid: r for r in await platform.run(products.list_visible, SYSTEM)}
        short, wifi = rows["abcd1234"], rows["abcdefgh12345678"]
        assert (short.protocol, wifi.protocol) == ("ble", "wifi")
        assert products.spec_of(short) == Spec(name="lamp", model_no="abcd1234", protocol=Protocol.BLE)
        assert (short.data_owner, short.managed_by, short.stage) == (7, None, "mass")
        async with platform.engine.connect() as conn:
            issued = {r.pid: r.issued_at for r in (await conn.execute(select(issued_pids))).all()}
        assert issued == {"abcd1234": 5, "abcdefgh12345678": 5}
        spec = Spec(name="x", model_no="x", protocol=Protocol.BLE)
        with pytest.raises(ConflictError, match="was issued before"):
            await platform.run(products.create_with_pid, "abcd1234", 7, spec, platform.now())
    finally:
        await platform.close()
