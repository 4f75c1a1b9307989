"""The gateway's Ed25519 identity: created on first run in a 0700 directory, kept in a 0600 file.

The gateway id is the kid of the key the gateway was first made with, and stays its id across key rotations: once a
rotation begins, `gateway.id` holds it, and `gateway.key` may hold a later key (docs/enrolment.md, "Key rotation").
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from agent.errors import ConfigError, IdentityError
from durable.dirs import UnusableDirectoryError, make_private_dir
from durable.files import create_exclusively, write_atomically
from wire.errors import MalformedError
from wire.ids import GW_ID
from wire.keys import KEY_BYTES, PublicKey, SigningKey

log = logging.getLogger(__name__)

KEY_FILE = "gateway.key"
NEXT_KEY_FILE = "gateway.key.next"  # a new key that a rotation has not switched to yet
GATEWAY_ID_FILE = "gateway.id"
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
    """Create the state directory 0700 if missing; refuse one that others can read or this user cannot write."""
    try:
        make_private_dir(state_dir, DIR_MODE, "gateway.state_dir")
    except UnusableDirectoryError as exc:
        raise ConfigError(str(exc)) from exc
    _check_mode(state_dir, DIR_MODE, "state directory")
    return state_dir


def read_key(path: Path, what: str = "gateway key file") -> SigningKey:
    """A raw Ed25519 seed from a 0600 file; IdentityError names the file and what to do."""
    _check_mode(path, FILE_MODE, what)
    seed = path.read_bytes()
    if len(seed) != KEY_BYTES:
        raise IdentityError(
            f"{what} {path} holds {len(seed)} bytes, not a {KEY_BYTES}-byte Ed25519 key; "
            "restore it from backup or move it away to enrol a new gateway"
        )
    return SigningKey(seed)


def new_key_file(path: Path) -> SigningKey:
    """Make a fresh key in a new 0600 file (never over an existing one)."""
    key = SigningKey.generate()
    create_exclusively(path, key.seed, FILE_MODE)
    return key


def read_gateway_id(state_dir: Path) -> str | None:
    """The gateway id `gateway.id` holds, or None when it does not exist (the id is then the key's kid)."""
    path = state_dir / GATEWAY_ID_FILE
    if not path.exists():
        return None
    text = path.read_text().strip()
    try:
        return GW_ID.check(text, "gateway id")
    except MalformedError as exc:
        raise IdentityError(f"{path}: {exc}; restore the file from backup (it names this gateway for life)") from exc


def write_gateway_id(state_dir: Path, gw: str) -> None:
    """Keep the gateway id in `gateway.id` (before a rotation makes it differ from the key's kid)."""
    if read_gateway_id(state_dir) != gw:
        write_atomically(state_dir / GATEWAY_ID_FILE, f"{gw}\n".encode(), FILE_MODE)


class GatewayIdentity:
    """The gateway key and the gateway id (in topics and records): the kid of its first key."""

    def __init__(self, key: SigningKey, gw: str | None = None) -> None:
        self.key = key
        self.gw = gw or key.kid.hex()

    @property
    def public(self) -> PublicKey:
        """The public half, which leases name."""
        return self.key.public

    @classmethod
    def load_existing(cls, state_dir: Path) -> GatewayIdentity | None:
        """The key in `state_dir` if there is one (None: no key yet); creates nothing, for commands that only read."""
        if not (state_dir / KEY_FILE).exists():
            return None
        _check_mode(state_dir, DIR_MODE, "state directory")
        return cls(read_key(state_dir / KEY_FILE), read_gateway_id(state_dir))

    @classmethod
    def load_or_create(cls, state_dir: Path) -> GatewayIdentity:
        """The key in `state_dir`, created on first run; a key file readable by others is refused."""
        ensure_state_dir(state_dir)
        path = state_dir / KEY_FILE
        gw = read_gateway_id(state_dir)
        if not path.exists():
            if gw is not None:
                raise IdentityError(
                    f"{path} is missing but {state_dir / GATEWAY_ID_FILE} names gateway {gw}: restore the key from "
                    "backup, or move gateway.id away too to make and enrol a new gateway"
                )
            key = new_key_file(path)
            log.info("created gateway key %s (gateway id %s)", path, key.kid.hex())
            return cls(key)
        return cls(read_key(path), gw)
