"""Enrolment over HTTP: a one-time token and a CSR become a registered gateway and a client certificate, or nothing."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cloud_bridge.ca import CA_CERT_FILE, CA_KEY_FILE
from cloud_bridge.enrolment import REFUSED
from cloud_bridge.platform import Platform
from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire import x509 as wx
from wire.keys import SigningKey


async def token(w: World, role: str = "factory_admin", **body: Any) -> str:
    made = await w.ok(role, "POST", "/enrolment-tokens", {"line": "hall2-line3", "valid_s": 600} | body)
    return str(made["token"])


async def gateway_ids(w: World) -> set[str]:
    return {g["gw"] for g in await w.ok("admin", "GET", "/gateways")}


async def test_enrolment_registers_the_gateway_and_signs_its_key(
    world: World, platform: Platform, tmp_path: Path
) -> None:
    key = SigningKey.generate()
    r = await world.call(
        "anonymous", "POST", "/enrol", {"token": await token(world), "csr": wx.gateway_csr(key).decode()}
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["gw"] == key.kid.hex()
    cert = x509.load_pem_x509_certificate(done["certificate"].encode())
    ca = x509.load_pem_x509_certificate(done["ca_certificate"].encode())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == key.kid.hex()
    public = cert.public_key()
    assert isinstance(public, Ed25519PublicKey)
    assert public.public_bytes_raw() == key.public.raw
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 6 * 86400 < lifetime.total_seconds() < 8 * 86400
    mine = await world.ok("technician", "GET", "/gateways")
    assert [(g["gw"], g["name"]) for g in mine if g["gw"] == key.kid.hex()] == [(key.kid.hex(), "hall2-line3")]
    history = await world.ok("factory_admin", "GET", f"/gateways/{key.kid.hex()}/history")
    assert [e["kind"] for e in history] == ["enrolled"]
    for name in (CA_KEY_FILE, CA_CERT_FILE):
        assert stat.S_IMODE((tmp_path / "cloud" / name).stat().st_mode) == 0o600


async def test_a_token_is_shown_once_and_stored_hashed(world: World, platform: Platform) -> None:
    from sqlalchemy import select  # noqa: PLC0415

    from cloud_bridge.store.schema import enrolment_tokens  # noqa: PLC0415

    secret = await token(world)
    async with platform.engine.connect() as conn:
        stored = (await conn.execute(select(enrolment_tokens))).all()
    assert len(stored) == 1
    assert secret.encode() not in repr(stored[0]).encode()


async def _refused(w: World, body: dict[str, str], status: int = 403) -> str:
    before = await gateway_ids(w)
    r = await w.call("anonymous", "POST", "/enrol", body)
    assert r.status_code == status, r.text
    assert await gateway_ids(w) == before
    return str(r.json()["detail"])


async def test_reused_token_is_refused_and_registers_nothing(world: World) -> None:
    t = await token(world)
    await world.ok("anonymous", "POST", "/enrol", {"token": t, "csr": wx.gateway_csr(SigningKey.generate()).decode()})
    assert await _refused(world, {"token": t, "csr": wx.gateway_csr(SigningKey.generate()).decode()}) == REFUSED


async def test_unknown_and_expired_tokens_read_the_same(world: World, platform: Platform) -> None:
    csr = wx.gateway_csr(SigningKey.generate()).decode()
    assert await _refused(world, {"token": "rbe_" + "A" * 43, "csr": csr}) == REFUSED
    t = await token(world, valid_s=60)
    later = platform.now() + 61
    platform._clock = lambda: later
    assert await _refused(world, {"token": t, "csr": csr}) == REFUSED


async def test_a_bad_csr_leaves_the_token_unused(world: World) -> None:
    t = await token(world)
    key, other = SigningKey.generate(), SigningKey.generate()
    wrong_cn = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, other.kid.hex())]))
        .sign(Ed25519PrivateKey.from_private_bytes(key.seed), None)
        .public_bytes(Encoding.PEM)
        .decode()
    )
    assert "not the gateway id" in await _refused(world, {"token": t, "csr": wrong_cn}, 422)
    assert "PEM" in await _refused(world, {"token": t, "csr": "junk"}, 422)
    await world.ok("anonymous", "POST", "/enrol", {"token": t, "csr": wx.gateway_csr(key).decode()})


async def test_a_key_of_another_factory_is_refused_and_the_token_kept(world: World) -> None:
    key = SigningKey.generate()
    await world.ok("rival", "POST", "/gateways", {"public_key": key.public.raw.hex()})
    t = await token(world)
    r = await world.call("anonymous", "POST", "/enrol", {"token": t, "csr": wx.gateway_csr(key).decode()})
    assert r.status_code == 409
    await world.ok("anonymous", "POST", "/enrol", {"token": t, "csr": wx.gateway_csr(SigningKey.generate()).decode()})


async def test_a_revoked_gateway_cannot_enrol_again(world: World) -> None:
    key = SigningKey.generate()
    await world.ok("anonymous", "POST", "/enrol", {"token": await token(world), "csr": wx.gateway_csr(key).decode()})
    await world.ok("factory_admin", "POST", f"/gateways/{key.kid.hex()}/revoke")
    r = await world.call(
        "anonymous", "POST", "/enrol", {"token": await token(world), "csr": wx.gateway_csr(key).decode()}
    )
    assert r.status_code == 409


@pytest.mark.parametrize("body", [{"valid_s": 10}, {"valid_s": 31 * 86400}, {"line": "x" * 129}])
async def test_token_bounds(world: World, body: dict[str, Any]) -> None:
    r = await world.call("factory_admin", "POST", "/enrolment-tokens", {"valid_s": 600} | body)
    assert r.status_code == 422


async def test_an_admin_names_the_factory(world: World) -> None:
    assert (await world.call("admin", "POST", "/enrolment-tokens", {"valid_s": 600})).status_code == 422
    assert (
        await world.call("admin", "POST", "/enrolment-tokens", {"valid_s": 600, "org_id": world.org["brand"]})
    ).status_code == 422
    made = await world.ok("admin", "POST", "/enrolment-tokens", {"valid_s": 600, "org_id": world.org["factory"]})
    assert made["org_id"] == world.org["factory"]
