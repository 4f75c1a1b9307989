"""Gateway identity and lease checks: each bad lease is refused with its own reason."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from agent.certs.identity import KEY_FILE, GatewayIdentity
from agent.certs.leases import check_bundle, check_lease
from agent.errors import IdentityError, LeaseError
from tests.helpers import Issuer
from wire.keys import SigningKey
from wire.tokens import Grant, LeaseBundle, sign


def test_identity_created_once_with_strict_modes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = GatewayIdentity.load_or_create(state)
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / KEY_FILE).stat().st_mode & 0o777) == 0o600
    again = GatewayIdentity.load_or_create(state)
    assert again.gw == first.gw == first.key.kid.hex()


def test_identity_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    GatewayIdentity.load_or_create(tmp_path / "s")
    os.chmod(tmp_path / "s" / KEY_FILE, 0o644)
    with pytest.raises(IdentityError, match=r"mode 0644.*chmod 600"):
        GatewayIdentity.load_or_create(tmp_path / "s")


def test_identity_refuses_a_loose_state_dir(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir(mode=0o755)
    os.chmod(tmp_path / "s", 0o755)
    with pytest.raises(IdentityError, match="state directory"):
        GatewayIdentity.load_or_create(tmp_path / "s")


def test_identity_refuses_a_truncated_key(tmp_path: Path) -> None:
    GatewayIdentity.load_or_create(tmp_path / "s")
    (tmp_path / "s" / KEY_FILE).write_bytes(b"short")
    with pytest.raises(IdentityError, match="5 bytes"):
        GatewayIdentity.load_or_create(tmp_path / "s")


GW = SigningKey.generate()


def test_good_lease_passes() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate(10)
    lease, lt = issuer.lease(cert, ct, GW.public, 0, 10)
    checked = check_lease(lt, ct, issuer.ring, GW.public, time.time())
    assert checked.lease == lease
    assert checked.cert == cert


def _reason(lease_token: bytes, cert_token: bytes, issuer: Issuer, now: float | None = None) -> str:
    with pytest.raises(LeaseError) as err:
        check_lease(lease_token, cert_token, issuer.ring, GW.public, time.time() if now is None else now)
    return err.value.reason


def test_forged_lease_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate()
    _, lt = issuer.lease(cert, ct, GW.public)
    forged = bytearray(lt)
    forged[-5] ^= 0x01  # inside the signature
    assert _reason(bytes(forged), ct, issuer) == "bad_signature"


def test_lease_signed_by_an_unknown_key_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate()
    _, lt = issuer.lease(cert, ct, GW.public, signer=SigningKey.generate())
    assert _reason(lt, ct, issuer) == "unknown_key"


def test_another_gateways_lease_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate()
    _, lt = issuer.lease(cert, ct, SigningKey.generate().public)
    assert _reason(lt, ct, issuer) == "wrong_gateway"


def test_expired_lease_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate()
    _, lt = issuer.lease(cert, ct, GW.public, exp=int(time.time()) - 1)
    assert _reason(lt, ct, issuer) == "expired"


def test_certificate_not_yet_valid_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate(nbf=int(time.time()) + 3600)
    _, lt = issuer.lease(cert, ct, GW.public)
    assert _reason(lt, ct, issuer) == "not_yet_valid"


def test_lease_with_another_certificate_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate()
    _, other_ct = issuer.certificate(cert_no="RC000002")
    _, lt = issuer.lease(cert, ct, GW.public)
    assert _reason(lt, other_ct, issuer) == "certificate_mismatch"


def test_lease_beyond_its_certificate_is_refused() -> None:
    issuer = Issuer()
    cert, ct = issuer.certificate(5)
    _, lt = issuer.lease(cert, ct, GW.public, 0, 6)
    assert _reason(lt, ct, issuer) == "certificate_mismatch"


def test_a_grant_offered_as_a_lease_is_refused() -> None:
    issuer = Issuer()
    _, ct = issuer.certificate()
    grant = sign(Grant(lease_id="L1", slot=0, sn="SN0001", new_pid="brand001", iat=0), issuer.key)
    assert _reason(grant, ct, issuer) == "wrong_kind"


def test_bundle_garbage_is_malformed() -> None:
    issuer = Issuer()
    with pytest.raises(LeaseError) as err:
        check_bundle(b"\xa1junk", issuer.ring, GW.public, time.time())
    assert err.value.reason == "malformed"
    cert, ct = issuer.certificate()
    _, lt = issuer.lease(cert, ct, GW.public)
    good = LeaseBundle(lease=lt, certificate=ct).to_cbor()
    assert check_bundle(good, issuer.ring, GW.public, time.time()).lease.lease_id == "L0001"
