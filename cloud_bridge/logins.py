"""The console's logins: a password per account (scrypt, from the standard library) and server-side sessions.

A session is a random token in an HttpOnly cookie, stored only as its SHA-256 with the account, a CSRF token and an
expiry; logging out deletes the row, so a copied cookie stops working at once. A disabled account's sessions end
with it: every request looks the account up again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.accounts import MAY_CREATE, Actor, Role, actor_of
from cloud_bridge.errors import AuthenticationError, ConflictError, InvalidRequestError, PermissionDeniedError
from cloud_bridge.store.schema import accounts, console_sessions

log = logging.getLogger(__name__)

# scrypt at n = 2^14, r = 8: 16 MiB and some 50 ms per guess (RFC 7914's interactive figure).
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 256
SESSION_TOKEN_BYTES = 32
SESSION_VALID_S = 8 * 3600  # one shift; then log in again
BAD_LOGIN = "user name or password is wrong (or the account is disabled); try again or ask your administrator"
# Checked against when the user name matches no account, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = ""


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$hash` (base64) of `password` with a fresh salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ("scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), base64.b64encode(salt).decode(),
         base64.b64encode(digest).decode())
    )  # fmt: skip


def password_matches(password: str, stored: str) -> bool:
    """Whether `password` is the one `stored` was made from (False for a hash in another format)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
        return False
    n, r, p = (int(x) for x in parts[1:4])
    digest = _scrypt(password, base64.b64decode(parts[4]), n, r, p)
    return hmac.compare_digest(digest, base64.b64decode(parts[5]))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r, dklen=HASH_BYTES)


def check_password_rules(password: str) -> None:
    """Refuse a password too short or too long, naming the limits."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise InvalidRequestError(
            f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters (got {len(password)}); "
            "a few unrelated words make a good one",
            field="password",
        )


async def set_password(conn: AsyncConnection, actor: Actor, account_id: int, password: str) -> None:
    """Give an account its console password: admins for anyone, an organisation's admin for its accounts."""
    row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).first()
    if row is None:
        raise InvalidRequestError(f"account {account_id} does not exist", field="account")
    own_org = actor.org_id == row.org_id and Role(row.role) in MAY_CREATE.get(actor.role, set())
    if actor.role != Role.ADMIN and not own_org and actor.account_id != account_id:
        raise PermissionDeniedError(f"role {actor.role.value} may not set the password of account {account_id}")
    check_password_rules(password)
    namesake = await conn.execute(
        select(accounts.c.id).where(
            accounts.c.name == row.name, accounts.c.id != account_id, accounts.c.password_hash.is_not(None)
        )
    )
    if namesake.first() is not None:
        raise ConflictError(
            f"another account named {row.name!r} logs in to the console already; user names must be unique, "
            "so create this account under another name"
        )
    await conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(password_hash=hash_password(password))
    )
    await conn.execute(delete(console_sessions).where(console_sessions.c.account_id == account_id))
    log.info("console password of account %d set; its sessions ended", account_id)


@dataclass(frozen=True)
class Session:
    """A logged-in console user: who, and the CSRF token their forms carry."""

    actor: Actor
    csrf: str
    expires_at: int


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def log_in(conn: AsyncConnection, name: str, password: str, now: int) -> tuple[str, Session]:
    """A new session for the account `name` with this password: (cookie token, session); else AuthenticationError."""
    row = (
        await conn.execute(select(accounts).where(accounts.c.name == name, accounts.c.password_hash.is_not(None)))
    ).first()
    matches = password_matches(password, row.password_hash if row is not None else _dummy_hash())
    if row is None or not matches or row.disabled:
        log.info("console login refused for user name %r", name[:64])
        raise AuthenticationError(BAD_LOGIN)
    await conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
    token, csrf = secrets.token_urlsafe(SESSION_TOKEN_BYTES), secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    expires_at = now + SESSION_VALID_S
    await conn.execute(
        console_sessions.insert().values(
            token_hash=_token_hash(token), account_id=row.id, csrf=csrf, created_at=now, expires_at=expires_at
        )
    )
    log.info("account %d (%s) logged in to the console", row.id, row.name)
    return token, Session(actor_of(row), csrf, expires_at)


def _dummy_hash() -> str:
    global _DUMMY_HASH  # noqa: PLW0603 - made once, on the first unknown user name
    if not _DUMMY_HASH:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


async def session_of(conn: AsyncConnection, token: str | None, now: int) -> Session:
    """The live session of a cookie token; AuthenticationError when it is missing, ended, expired or disabled."""
    if not token:
        raise AuthenticationError("you are not logged in; log in to the console")
    query = (
        select(console_sessions.c.csrf, console_sessions.c.expires_at, accounts)
        .join(accounts, accounts.c.id == console_sessions.c.account_id)
        .where(console_sessions.c.token_hash == _token_hash(token))
    )
    row: Row[Any] | None = (await conn.execute(query)).first()
    if row is None or row.expires_at <= now or row.disabled:
        raise AuthenticationError("your session has ended (logged out, expired or disabled); log in again")
    return Session(actor_of(row), row.csrf, int(row.expires_at))


async def log_out(conn: AsyncConnection, token: str | None) -> None:
    """End the session of a cookie token (nothing when there is none)."""
    if token:
        await conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == _token_hash(token)))
