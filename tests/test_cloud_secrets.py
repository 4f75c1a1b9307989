"""The platform's secrets: the first admin's API key written once to `<data dir>/admin-key` (0600) by `cloud init`
(or the first serve), never printed or logged, and `rebadge cloud admin-key` giving the same account a new key there
(the old one stops working); a database password never echoed in an error."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from cloud_bridge import accounts
from cloud_bridge.admin_key import bootstrap_admin_key, renew_admin_key
from cloud_bridge.errors import AuthenticationError
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import accounts as account_table
from rebadge.cli import main
from tests.test_cloud_helpers import fixture_db_url, fixture_pg_database, fixture_pg_run  # noqa: F401  (fixtures)


def cloud(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["cloud", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def who(data: Path, api_key: str) -> accounts.Actor:
    async def check() -> accounts.Actor:
        p = await Platform.open(data)
        try:
            return await p.authenticate(api_key)
        finally:
            await p.close()

    return asyncio.run(check())


def test_init_writes_the_key_once_and_admin_key_renews_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    data = tmp_path / "cloud"
    key_file = data / "admin-key"
    code, out, err = cloud("init", "--data-dir", str(data))
    assert code == 0, err
    assert len(out.strip()) == 64  # stdout is the issuer key alone, as provisioning/install.sh reads it
    assert err == f"first admin API key written to {key_file} (0600); 'rebadge cloud admin-key' renews it\n"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_text().strip()
    admin = who(data, first)
    assert (admin.name, admin.role) == ("first admin", accounts.Role.ADMIN)
    assert cloud("init", "--data-dir", str(data))[1:] == (out, "")  # again: nothing new, the file as it was
    assert key_file.read_text().strip() == first

    code, out, err = cloud("admin-key", "--data-dir", str(data))
    assert code == 0, err
    assert out == f"new API key of the first admin written to {key_file} (0600); the old key no longer works\n"
    second = key_file.read_text().strip()
    assert second != first
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert who(data, second).account_id == admin.account_id
    with pytest.raises(AuthenticationError):
        who(data, first)
    for key in (first, second):
        assert key not in out + err
        assert key not in caplog.text


def test_admin_key_on_a_platform_with_no_accounts_makes_the_first_admin(tmp_path: Path) -> None:
    data = tmp_path / "cloud"

    async def bare() -> None:  # a platform opened by another command before any account existed
        await (await Platform.open(data)).close()

    asyncio.run(bare())
    code, out, _ = cloud("admin-key", "--data-dir", str(data))
    assert code == 0
    assert who(data, (data / "admin-key").read_text().strip()).name == "first admin"
    assert "admin-key" in out


def test_a_database_password_is_never_echoed(tmp_path: Path) -> None:
    for url in (
        "mysql://ops:hunter2@db.lan/rebadge",
        "postgresql://ops:hunter2@db.lan:notaport/rebadge",
        "x://:hunter2@",
    ):
        code, out, err = cloud("status", "--data-dir", str(tmp_path / "cloud"), "--db-url", url)
        assert code == 1, url
        assert "database URL" in err or "database error" in err, err
        assert "hunter2" not in out + err, err


RACING_RENEWALS = 4


async def test_renewals_at_once_leave_the_file_with_the_one_key_that_works(db_url: str | None, tmp_path: Path) -> None:
    """Renewals racing on one database (each through its own Platform, as separate commands would): however they
    interleave, the file ends holding the key the first admin has, and the key before them is refused."""
    data = tmp_path / "cloud"
    platform = await Platform.open(data, db_url=db_url)
    others = [await Platform.open(data, db_url=db_url) for _ in range(RACING_RENEWALS)]
    try:
        assert await bootstrap_admin_key(platform, data) == data / "admin-key"
        for _ in range(3):
            before = (data / "admin-key").read_text().strip()
            await asyncio.gather(*(renew_admin_key(p, data) for p in others))
            final = (data / "admin-key").read_text().strip()
            assert (await platform.authenticate(final)).name == "first admin"
            with pytest.raises(AuthenticationError):
                await platform.authenticate(before)
    finally:
        for p in [platform, *others]:
            await p.close()


async def test_first_starts_at_once_make_one_first_admin(db_url: str | None, tmp_path: Path) -> None:
    """`serve` started several times at once on a new database (each its own Platform): one first admin."""
    platforms = [await Platform.open(tmp_path / "cloud", db_url=db_url) for _ in range(RACING_RENEWALS)]
    try:
        keys = await asyncio.gather(*(p.bootstrap_admin() for p in platforms))
        made = [k for k in keys if k is not None]
        assert len(made) == 1, keys
        assert (await platforms[0].authenticate(made[0])).name == "first admin"
        async with platforms[0].engine.connect() as conn:
            assert (await conn.execute(select(func.count()).select_from(account_table))).scalar_one() == 1
    finally:
        for p in platforms:
            await p.close()
