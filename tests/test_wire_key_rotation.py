"""The key introduction on the wire: signed by the old key, counter-signed by the new one, strictly decoded."""

from __future__ import annotations

import pytest

from wire import x509 as wx
from wire.errors import BadSignatureError, MalformedError, TokenError
from wire.key_rotation import KeyIntroduction, KeyPossession, check_possession, possession
from wire.keys import KeyRing, SigningKey
from wire.lease_request import new_nonce
from wire.tokens import sign, verify

GW = "00112233aabbccdd"
HEAD = bytes(range(32))


def _intro(old: SigningKey, new: SigningKey, *, pop: bytes | None = None, **fields: object) -> KeyIntroduction:
    values: dict[str, object] = {
        "id": "rotate-1", "gw": GW, "nonce": new_nonce(), "at": 1_800_000_000, "new_key": new.public.raw, "seq": 7,
        "head": HEAD, "csr": wx.gateway_csr(new, GW),
        "possession": pop or possession(new, gw=GW, old_kid=old.kid, seq=7, head=HEAD),
    }  # fmt: skip
    values.update(fields)
    return KeyIntroduction(**values)  # type: ignore[arg-type]


def test_an_introduction_round_trips_and_names_its_new_key() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    token = sign(_intro(old, new), old)
    decoded = verify(token, KeyIntroduction, KeyRing([old.public]))
    assert check_possession(decoded, old.kid) == new.public
    assert wx.check_gateway_csr(decoded.csr, GW) == new.public
    with pytest.raises(TokenError):  # the new key cannot sign the introduction of itself
        verify(sign(_intro(old, new), new), KeyIntroduction, KeyRing([old.public]))


def test_a_possession_signed_by_another_key_is_refused() -> None:
    old, new, other = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    forged = possession(other, gw=GW, old_kid=old.kid, seq=7, head=HEAD)
    with pytest.raises(BadSignatureError, match="possession is not signed by its new key"):
        check_possession(_intro(old, new, pop=forged), old.kid)


@pytest.mark.parametrize(
    ("what", "proof"),
    [
        ("another gateway", {"gw": "ffffffffffffffff"}),
        ("another seq", {"seq": 8}),
        ("another head", {"head": bytes(32)}),
        ("another old key", {"old_kid": bytes(8)}),
    ],
)
def test_a_possession_for_another_introduction_is_refused(what: str, proof: dict[str, object]) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    values: dict[str, object] = {"gw": GW, "old_kid": old.kid, "seq": 7, "head": HEAD} | proof
    pop = sign(KeyPossession(**values), new)  # type: ignore[arg-type]
    with pytest.raises(MalformedError, match="possession names") as caught:
        check_possession(_intro(old, new, pop=pop), old.kid)
    assert caught.value.field == "pop", what


def test_introducing_the_signing_key_itself_is_refused() -> None:
    old = SigningKey.generate()
    with pytest.raises(MalformedError, match="new key is the key that signs it"):
        check_possession(_intro(old, old), old.kid)


@pytest.mark.parametrize(
    ("field", "value"),
    [("new_key", bytes(31)), ("head", bytes(31)), ("seq", -1), ("csr", b""), ("possession", b"")],
)
def test_bad_fields_are_refused_by_name(field: str, value: object) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    values = _intro(old, new).model_dump() | {field: value}
    with pytest.raises(ValueError, match=field):
        KeyIntroduction(**values)


def test_unknown_fields_are_refused_when_decoding() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    intro = _intro(old, new)

    class Extended(KeyIntroduction):
        extra: int = 1

    token = sign(Extended(**intro.model_dump()), old)
    with pytest.raises(MalformedError, match="extra"):
        verify(token, KeyIntroduction, KeyRing([old.public]))
