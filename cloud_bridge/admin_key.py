"""The first admin's API key, kept in a 0600 file in the data dir: never printed, so never in a log or journald."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import accounts
from cloud_bridge.platform import Platform
from durable.files import write_atomically

ADMIN_KEY_FILE = "admin-key"
ADMIN_KEY_MODE = 0o600


def write_admin_key(data_dir: Path, api_key: str) -> Path:
    """Write the key to `<data_dir>/admin-key` (0600, replacing an older one); return the file's path."""
    path = data_dir / ADMIN_KEY_FILE
    write_atomically(path, f"{api_key}\n".encode(), ADMIN_KEY_MODE)
    return path


# The file is written inside the transaction that stores the key's hash: two renewals at once take the account's
# row one after the other, so the file ends with the key that committed last. Should the commit fail after the
# write, the file holds a key that never worked and the old one still does: the command says so; run it again.


async def bootstrap_admin_key(platform: Platform, data_dir: Path) -> Path | None:
    """On a platform with no accounts: make the first admin, its key in the file; the file's path (else None)."""

    async def op(conn: AsyncConnection) -> Path | None:
        key = await accounts.bootstrap_admin(conn, platform.now())
        return None if key is None else write_admin_key(data_dir, key)

    return await platform.run(op)


async def renew_admin_key(platform: Platform, data_dir: Path) -> Path:
    """A new key for the first admin (made if missing) in the file; the old key stops working. The file's path."""

    async def op(conn: AsyncConnection) -> Path:
        return write_admin_key(data_dir, await accounts.renew_bootstrap_admin_key(conn, platform.now()))

    return await platform.run(op)
