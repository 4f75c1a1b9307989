"""Enrolment raced and bent, over HTTP on SQLite and PostgreSQL: one token exchanged twice at once, one key enrolled
twice at once, and CSRs asking for more than a gateway id."""

from __future__ import annotations

import asyncio

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_enrolment import gateway_ids, token
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire import x509 as wx
from wire.keys import SigningKey


async def test_one_token_exchanged_twice_at_once_enrols_one_gateway(world: World) -> None:
    t = await token(world)
    keys = [SigningKey.generate() for _ in range(4)]
    before = await gateway_ids(world)
    answers = await asyncio.gather(
        *(world.call("anonymous", "POST", "/enrol", {"token": t, "csr": wx.gateway_csr(k).decode()}) for k in keys)
    )
    assert sorted(r.status_code for r in answers) == [200, 403, 403, 403], [r.text for r in answers]
    (won,) = [r.json()["gw"] for r in answers if r.status_code == 200]
    assert await gateway_ids(world) - before == {won}


async def test_one_key_enrolled_twice_at_once_is_one_gateway_and_loses_no_token(world: World) -> None:
    key = SigningKey.generate()  # a flaky gateway retrying with a second token while the first is in flight
    tokens = [await token(world), await token(world)]
    body = {"csr": wx.gateway_csr(key).decode()}
    answers = await asyncio.gather(*(world.call("anonymous", "POST", "/enrol", body | {"token": t}) for t in tokens))
    assert 200 in [r.status_code for r in answers], [r.text for r in answers]
    for t, r in zip(tokens, answers, strict=True):
        if r.status_code != 200:  # PostgreSQL: the loser of the insert race is told to try again, its token kept
            assert r.status_code == 409, r.text
            assert "try again" in r.json()["detail"]
            await world.ok("anonymous", "POST", "/enrol", body | {"token": t})
    assert await gateway_ids(world) >= {key.kid.hex()}
    history = await world.ok("factory_admin", "GET", f"/gateways/{key.kid.hex()}/history")
    assert [e["kind"] for e in history] == ["enrolled", "enrolled"]


@pytest.mark.parametrize("db_url", [None])  # no race here: SQLite only
async def test_a_csr_asking_for_names_and_uses_gets_a_plain_client_certificate_for_its_id(world: World) -> None:
    key = SigningKey.generate()
    asking = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.COMMON_NAME, key.kid.hex()),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "platform"),
        ]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("platform.example"), x509.DNSName("*")]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(Ed25519PrivateKey.from_private_bytes(key.seed), None)
        .public_bytes(Encoding.PEM)
    )  # fmt: skip
    done = await world.ok("anonymous", "POST", "/enrol", {"token": await token(world), "csr": asking.decode()})
    cert = x509.load_pem_x509_certificate(done["certificate"].encode())
    assert cert.subject.rfc4514_string() == f"CN={key.kid.hex()}"
    assert x509.SubjectAlternativeName not in [e.value.__class__ for e in cert.extensions]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]
