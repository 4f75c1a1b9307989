"""The issuer key: a raw 32-byte Ed25519 seed in a 0600 file inside the 0700 data directory."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from cloud_bridge.errors import ConfigError
from durable.dirs import UnusableDirectoryError, make_private_dir
from durable.files import create_exclusively
from wire.keys import KEY_BYTES, SigningKey

log = logging.getLogger(__name__)

KEY_FILE = "issuer.key"
DIR_MODE = 0o700
FILE_MODE = 0o600


def check_mode(path: Path, allowed: int, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~allowed:
        raise ConfigError(
            f"{what} {path} has mode {mode:04o}, which lets other users read it; run: chmod {allowed:o} {path}"
        )


def ensure_data_dir(data_dir: Path) -> Path:
    """Create the data directory 0700 if missing; refuse one that others can read or this user cannot write."""
    try:
        make_private_dir(data_dir, DIR_MODE, "--data-dir / REBADGE_DATA_DIR")
    except UnusableDirectoryError as exc:
        raise ConfigError(str(exc)) from exc
    check_mode(data_dir, DIR_MODE, "data directory")
    return data_dir


def load_or_create(data_dir: Path) -> SigningKey:
    """The issuer key in `data_dir`, created on first use; a key file readable by others is refused."""
    path = ensure_data_dir(data_dir) / KEY_FILE
    if not path.exists():
        key = SigningKey.generate()
        create_exclusively(path, key.seed, FILE_MODE)
        log.info("created issuer key %s (kid %s)", path, key.kid.hex())
        return key
    check_mode(path, FILE_MODE, "issuer key file")
    seed = path.read_bytes()
    if len(seed) != KEY_BYTES:
        raise ConfigError(
            f"issuer key file {path} holds {len(seed)} bytes, not a {KEY_BYTES}-byte Ed25519 seed; "
            "restore it from backup"
        )
    return SigningKey(seed)
