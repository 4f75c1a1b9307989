"""The web console's sessions in the store, on SQLite and PostgreSQL: whatever the order of logins, logouts, new
passwords and the clock moving, a session cookie works exactly while its session is neither logged out, nor ended
by a new password of its account, nor expired, and it is always the session of the account that logged in."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge import accounts, logins
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.errors import AuthenticationError, InvalidRequestError
from cloud_bridge.platform import Platform
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    T0,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)

FAST_SCRYPT_N = 2**4  # the hash's cost, shrunk for the test as timing constants are; the stored hash names its n
PEOPLE = 2
WAITS = [0, 60, logins.SESSION_VALID_S - 1, logins.SESSION_VALID_S]
Op = tuple[str, int, int]
OPS = st.one_of(
    st.tuples(st.just("login"), st.integers(0, PEOPLE - 1), st.integers(0, 1)),  # 1: the right password
    st.tuples(st.just("logout"), st.integers(0, 20), st.just(0)),  # the n-th session issued (modulo)
    st.tuples(st.just("password"), st.integers(0, PEOPLE - 1), st.just(0)),
    st.tuples(st.just("wait"), st.sampled_from(WAITS), st.just(0)),
)


@dataclass
class Issued:
    """A cookie token the test holds, and what the model says of it."""

    token: str
    who: int
    expires_at: int
    ended: bool = False


async def _people(platform: Platform) -> list[tuple[int, str]]:
    tag = secrets.token_hex(3)  # every example makes its own accounts in the test's database
    org = await platform.run(accounts.create_org, SYSTEM, f"factory-{tag}", OrgKind.FACTORY, T0)
    made = []
    for n in range(PEOPLE):
        name = f"tech-{tag}-{n}"
        account_id, _ = await platform.run(accounts.create_account, SYSTEM, org, name, Role.TECHNICIAN, T0)
        made.append((account_id, name))
    return made


@pytest.fixture(autouse=True)
def _fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logins, "SCRYPT_N", FAST_SCRYPT_N)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=14))
async def test_a_session_works_exactly_until_logout_a_new_password_or_expiry(platform: Platform, ops: list[Op]) -> None:
    people = await _people(platform)
    passwords = [f"first password {n}!" for n in range(PEOPLE)]
    for (account_id, _), password in zip(people, passwords, strict=True):
        await platform.run(logins.set_password, SYSTEM, account_id, password)
    now, issued, version = T0, list[Issued](), [0] * PEOPLE
    for op, a, b in ops:
        if op == "login":
            name, password = people[a][1], passwords[a] if b else passwords[a] + "x"
            if b:
                token, session = await platform.run(logins.log_in, name, password, now)
                assert session.actor.account_id == people[a][0]
                issued.append(Issued(token, a, now + logins.SESSION_VALID_S))
            else:
                with pytest.raises(AuthenticationError):
                    await platform.run(logins.log_in, name, password, now)
        elif op == "logout" and issued:
            ended = issued[a % len(issued)]
            await platform.run(logins.log_out, ended.token)
            ended.ended = True
        elif op == "password":
            version[a] += 1
            passwords[a] = f"password number {version[a]} of {a}"
            await platform.run(logins.set_password, SYSTEM, people[a][0], passwords[a])
            for s in issued:
                s.ended = s.ended or s.who == a
        elif op == "wait":
            now += a
        for s in issued:
            live = not s.ended and now < s.expires_at
            try:
                session = await platform.run(logins.session_of, s.token, now)
            except AuthenticationError:
                assert not live, f"a live session of {people[s.who][1]} was refused"
            else:
                assert live, f"an ended session of {people[s.who][1]} still worked"
                assert session.actor.account_id == people[s.who][0]


async def test_a_password_out_of_bounds_is_refused_naming_the_limits(platform: Platform) -> None:
    (account_id, name), _ = await _people(platform)
    for bad in ("short", "x" * (logins.MAX_PASSWORD_CHARS + 1)):
        with pytest.raises(InvalidRequestError) as refused:
            await platform.run(logins.set_password, SYSTEM, account_id, bad)
        assert f"{logins.MIN_PASSWORD_CHARS} to {logins.MAX_PASSWORD_CHARS} characters" in str(refused.value)
    with pytest.raises(AuthenticationError):  # nothing was set: the account still has no console login
        await platform.run(logins.log_in, name, "short", T0)
