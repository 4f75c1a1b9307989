"""The gateway's Ed25519 identity: created on first run in a 0700 directory, kept in a 0600 file."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from agent.errors import IdentityError
from wire.keys import KEY_BYTES, PublicKey, SigningKey

log = logging.getLogger(__name__)

KEY_FILE = "gateway.key"
DIR_MODE = 0o700
FILE_MODE = 0o600


def _check_mode(path: Path, allowed: int, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & ~allowed:
        raise IdentityError(
            f"{what} {path} has mode {mode:04o}, which lets other users read it; "
            f"run: chmod {allowed:o} {path}  (it must be {allowed:04o} or stricter)"
        )


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state directory 0700 if missing; refuse one that others can read."""
    state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _check_mode(state_dir, DIR_MODE, "state directory")
    return state_dir


class GatewayIdentity:
    """The gateway key; its kid in hex is the gateway id used in topics and records."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key

    @property
    def public(self) -> PublicKey:
        """The public half, which leases name."""
        return self.key.public

    @property
    def gw(self) -> str:
        """The gateway id: hex of the key id."""
        return self.key.kid.hex()

    @classmethod
    def load_or_create(cls, state_dir: Path) -> GatewayIdentity:
        """The key in `state_dir`, created on first run; a key file readable by others is refused."""
        ensure_state_dir(state_dir)
        path = state_dir / KEY_FILE
        if not path.exists():
            key = SigningKey.generate()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
            with os.fdopen(fd, "wb") as f:
                f.write(key.seed)
                f.flush()
                os.fsync(f.fileno())
            log.info("created gateway key %s (gateway id %s)", path, key.kid.hex())
            return cls(key)
        _check_mode(path, FILE_MODE, "gateway key file")
        seed = path.read_bytes()
        if len(seed) != KEY_BYTES:
            raise IdentityError(
                f"gateway key file {path} holds {len(seed)} bytes, not a {KEY_BYTES}-byte Ed25519 key; "
                "restore it from backup or move it away to enrol a new gateway"
            )
        return cls(SigningKey(seed))
