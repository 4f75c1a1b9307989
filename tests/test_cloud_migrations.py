"""Alembic migrations carry a database with data from the first schema to the newest, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from cloud_bridge.platform import DB_FILE, Platform
from cloud_bridge.store.engine import create_engine, migrate, sqlite_url
from cloud_bridge.store.schema import certificates, leases
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    NEW_PID,
    OLD_PID,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
)

FIRST = "0001"


async def test_first_schema_with_data_migrates_to_newest(db_url: str | None, tmp_path: Path) -> None:
    data_dir = tmp_path / "cloud"
    url = db_url or sqlite_url(data_dir / DB_FILE)
    data_dir.mkdir(mode=0o700)
    await migrate(url, FIRST)
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO certificates (cert_no, factory, original_pid, new_pid, quantity, protocols, reason, "
                "applicant, status, audit_comment, auditor, valid_s, created_at) VALUES "
                f"('RC000001', 'F1', '{OLD_PID}', '{NEW_PID}', 7, 'wifi', '', '', 'approved', '', '', 60, 1)"
            )
        )
        await conn.execute(
            text("INSERT INTO gateways (gw, public_key, name, revoked, registered_at) VALUES ('g1', :k, '', false, 1)"),
            {"k": bytes(32)},
        )
        await conn.execute(
            text(
                "INSERT INTO leases (lease_id, cert_no, gw, slot_lo, slot_hi, exp, token, state, issued_at) "
                "VALUES ('L1', 'RC000001', 'g1', 0, 7, 99, :t, 'active', 1)"
            ),
            {"t": b"token"},
        )
        await conn.execute(
            text(
                "INSERT INTO confirmations (lease_id, slot, cert_no, sn, gw, seq, at) "
                "VALUES ('L1', 3, 'RC000001', 'SN0003', 'g1', 2, 1)"
            )
        )
    await engine.dispose()
    platform = await Platform.open(data_dir, db_url=db_url)
    try:
        async with platform.engine.connect() as conn:
            cert = (await conn.execute(select(certificates))).one()
            lease = (await conn.execute(select(leases))).one()
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        assert (cert.cert_no, cert.quantity, cert.org_id) == ("RC000001", 7, None)
        assert (lease.lease_id, lease.slot_hi, lease.closed_seq) == ("L1", 7, None)
        assert version != FIRST
        assert await platform.confirmed_count("RC000001") == 1  # counters built from the stored confirmations
    finally:
        await platform.close()
