"""Signed tokens: sign/verify round trips, every way verify refuses a token, and peek_header's limits."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from wire.cbor import dumps
from wire.errors import BadSignatureError, MalformedError, TokenError, UnknownKeyError, WireError, WrongKindError
from wire.keys import KeyRing, SigningKey
from wire.tokens import (
    MAX_TOKEN_BYTES,
    Ack,
    Certificate,
    Checkpoint,
    Grant,
    Kind,
    Lease,
    LeaseBundle,
    Payload,
    decode_bundle,
    decode_payload,
    peek_header,
    sign,
    token_hash,
    verify,
)

ISSUER = SigningKey(bytes(range(32)))
GATEWAY = SigningKey(bytes(range(32, 64)))
RING = KeyRing([ISSUER.public])

CERT = Certificate(
    cert_no="RC000001",
    factory="Example Factory Ltd",
    original_pid="stock001",
    new_pid="brand001",
    quantity=1000,
    protocols=("wifi", "ble"),
    nbf=1,
    exp=2,
)
LEASE = Lease(
    lease_id="L0001",
    cert_no="RC000001",
    cert_hash=b"\x01" * 32,
    original_pid="stock001",
    new_pid="brand001",
    gateway_key=GATEWAY.public.raw,
    gateway_kid=GATEWAY.kid,
    slot_lo=10,
    slot_hi=110,
    exp=1767312000,
)
GRANT = Grant(lease_id="L0001", slot=7, sn="SN-2026-000123", new_pid="brand001", iat=1767312000)
CHECKPOINT = Checkpoint(gw=GATEWAY.kid.hex(), seq=3, head=b"\x02" * 32, at=5)
ACK = Ack(gw=GATEWAY.kid.hex(), seq=3, head=b"\x02" * 32, at=6)
PAYLOADS: list[Payload] = [CERT, LEASE, GRANT, CHECKPOINT, CHECKPOINT.model_copy(update={"counter": 9}), ACK]


def sign1(protected: dict[int, Any], payload: bytes, key: SigningKey = ISSUER, **changes: Any) -> bytes:
    """A COSE_Sign1 made by hand, validly signed, with any part replaced by `changes`."""
    prot = dumps(protected)
    sig = Ed25519PrivateKey.from_private_bytes(key.seed).sign(dumps(["Signature1", prot, b"", payload]))
    parts: dict[str, Any] = {"prot": prot, "unprot": {}, "payload": payload, "sig": sig, **changes}
    return dumps(cbor2.CBORTag(18, [parts["prot"], parts["unprot"], parts["payload"], parts["sig"]]))


def lease_header() -> dict[int, Any]:
    return {1: -8, 3: Kind.LEASE.value, 4: ISSUER.kid}


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda p: type(p).__name__)
def test_sign_verify_round_trip(payload: Payload) -> None:
    token = sign(payload, ISSUER)
    assert verify(token, type(payload), RING) == payload
    assert sign(payload, ISSUER) == token  # Ed25519 is deterministic, so tokens are stable bytes
    assert peek_header(token) == {1: -8, 3: payload.KIND.value, 4: ISSUER.kid}


def test_round_trip_with_a_fresh_key() -> None:
    key = SigningKey.generate()
    assert verify(sign(GRANT, key), Grant, KeyRing([key.public])) == GRANT


def test_ring_with_several_keys_picks_by_kid() -> None:
    ring = KeyRing([GATEWAY.public, ISSUER.public])
    assert verify(sign(GRANT, GATEWAY), Grant, ring) == GRANT
    assert verify(sign(LEASE, ISSUER), Lease, ring) == LEASE


def test_absent_counter_is_left_out_of_the_map() -> None:
    assert "ctr" not in cbor2.loads(CHECKPOINT.to_cbor())
    assert cbor2.loads(CHECKPOINT.model_copy(update={"counter": 0}).to_cbor())["ctr"] == 0


def test_payload_uses_the_short_keys() -> None:
    assert set(cbor2.loads(LEASE.to_cbor())) == {"id", "c", "ch", "op", "np", "gk", "gi", "lo", "hi", "x"}
    assert set(cbor2.loads(GRANT.to_cbor())) == {"l", "s", "sn", "np", "t"}
    assert set(cbor2.loads(CERT.to_cbor())) == {"no", "fac", "op", "np", "qty", "pr", "nbf", "exp"}


def test_token_hash_is_sha256_of_the_exact_bytes() -> None:
    token = sign(CERT, ISSUER)
    assert token_hash(token) == hashlib.sha256(token).digest()


def test_lease_size() -> None:
    assert LEASE.size == 100


# --- every rejection path of verify, in the order verify takes them -------------------------------------------


def test_oversize_token() -> None:
    with pytest.raises(MalformedError, match=f"over the {MAX_TOKEN_BYTES}-byte limit") as caught:
        verify(b"\x00" * (MAX_TOKEN_BYTES + 1), Lease, RING)
    assert caught.value.field == "token"


@pytest.mark.parametrize(
    ("token", "match"),
    [
        (b"", "not valid CBOR"),
        (b"\x1c", "not valid CBOR"),
        (b"\xff", "not a tagged COSE_Sign1"),
        (dumps([b"", {}, b"", b""]), "not a tagged COSE_Sign1"),
        (dumps(cbor2.CBORTag(98, [b"", {}, b"", b""])), "not a tagged COSE_Sign1"),
        (dumps(cbor2.CBORTag(18, [b"", {}, b""])), "not a COSE_Sign1 array"),
        (dumps(cbor2.CBORTag(18, {"a": 1})), "not a COSE_Sign1 array"),
        (dumps(cbor2.CBORTag(18, [dumps(lease_header()), [], b"", b""])), "not a COSE_Sign1 array"),
        (dumps(cbor2.CBORTag(18, [dumps(lease_header()), {}, None, b"\x00" * 64])), "not a COSE_Sign1 array"),
        (dumps(cbor2.CBORTag(18, [dumps(lease_header()), {}, b"", 5])), "not a COSE_Sign1 array"),
        (dumps(cbor2.CBORTag(18, [b"\x1c", {}, b"", b""])), "protected header is not valid CBOR"),
        (dumps(cbor2.CBORTag(18, [b"", {}, b"", b""])), "protected header is not valid CBOR"),
        (dumps(cbor2.CBORTag(18, [dumps([1, -8]), {}, b"", b""])), "protected header is not a map"),
    ],
)
def test_broken_envelope_is_malformed(token: bytes, match: str) -> None:
    with pytest.raises(MalformedError, match=match):
        verify(token, Lease, RING)


def test_unprotected_header_must_be_empty() -> None:
    token = sign1(lease_header(), LEASE.to_cbor(), unprot={4: ISSUER.kid})
    with pytest.raises(MalformedError, match="unprotected header is not empty"):
        verify(token, Lease, RING)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(MalformedError, match="trailing bytes"):
        verify(sign(LEASE, ISSUER) + b"\x00", Lease, RING)


def test_long_form_length_in_the_envelope_is_refused() -> None:
    token = sign(GRANT, ISSUER)
    # The protected header bstr (46 bytes) written with a 2-byte length instead of 1: same value, other bytes.
    longer = token[:2] + b"\x59\x00" + token[3:]
    assert cbor2.loads(longer).value == cbor2.loads(token).value
    with pytest.raises(MalformedError, match="deterministic"):
        verify(longer, Grant, KeyRing([ISSUER.public]))


@pytest.mark.parametrize("kid", [None, "56475aa75463474c", 5])
def test_kid_missing_or_not_bytes(kid: object) -> None:
    header = lease_header()
    del header[4]
    if kid is not None:
        header[4] = kid
    with pytest.raises(MalformedError, match="no key id") as caught:
        verify(sign1(header, LEASE.to_cbor()), Lease, RING)
    assert caught.value.field == "kid"


def test_unknown_kid_names_the_kid_and_kind() -> None:
    with pytest.raises(UnknownKeyError, match=GATEWAY.kid.hex()) as caught:
        verify(sign(LEASE, GATEWAY), Lease, RING)
    assert caught.value.kid == GATEWAY.kid
    assert caught.value.kind == Kind.LEASE.value


def test_empty_ring_knows_no_key() -> None:
    with pytest.raises(UnknownKeyError):
        verify(sign(LEASE, ISSUER), Lease, KeyRing())


@pytest.mark.parametrize("alg", [-7, -35, 5, "EdDSA", None])
def test_alg_other_than_eddsa_is_a_bad_signature(alg: object) -> None:
    header = {**lease_header(), 1: alg}
    if alg is None:
        del header[1]
    with pytest.raises(BadSignatureError, match="not EdDSA") as caught:
        verify(sign1(header, LEASE.to_cbor()), Lease, RING)
    assert caught.value.kid == ISSUER.kid


@pytest.mark.parametrize(
    ("payload", "as_cls"),
    [(CERT, Lease), (LEASE, Certificate), (ACK, Checkpoint), (LEASE, Grant)],
    ids=["cert-as-lease", "lease-as-cert", "ack-as-checkpoint", "lease-as-grant"],
)
def test_wrong_kind(payload: Payload, as_cls: type[Payload]) -> None:
    with pytest.raises(WrongKindError, match=re.escape(as_cls.KIND.value)) as caught:
        verify(sign(payload, ISSUER), as_cls, RING)
    assert caught.value.kind == as_cls.KIND.value


def test_bad_signature() -> None:
    token = bytearray(sign(LEASE, ISSUER))
    token[-10] ^= 0x40
    with pytest.raises(BadSignatureError, match="does not verify") as caught:
        verify(bytes(token), Lease, RING)
    assert caught.value.kid == ISSUER.kid


def test_signature_by_another_key_under_a_pinned_kid() -> None:
    token = sign1(lease_header(), LEASE.to_cbor(), key=GATEWAY)  # header claims the issuer's kid
    with pytest.raises(BadSignatureError):
        verify(token, Lease, RING)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"zz": 1}, "zz"),
        ({"op": "STOCK001"}, "op"),
        ({"lo": -1}, "lo"),
        ({"lo": "0"}, "lo"),
        ({"gk": b"\x00" * 31}, "gk"),
        ({"gi": b"\x00" * 9}, "gi"),
        ({"x": 2**32}, "x"),
        ({"id": "L 1"}, "id"),
    ],
)
def test_validly_signed_bad_payload_is_malformed_naming_the_field(fields: dict[str, Any], field: str) -> None:
    short = {**LEASE.model_dump(by_alias=True), **fields}
    with pytest.raises(MalformedError) as caught:
        verify(sign1(lease_header(), dumps(short)), Lease, RING)
    assert caught.value.field == field
    assert f"'{field}'" in str(caught.value)


def test_validly_signed_missing_field_is_malformed() -> None:
    short = {k: v for k, v in LEASE.model_dump(by_alias=True).items() if k != "hi"}
    with pytest.raises(MalformedError, match=r"'hi'.*got nothing"):
        verify(sign1(lease_header(), dumps(short)), Lease, RING)


def test_validly_signed_non_deterministic_payload_is_malformed() -> None:
    payload = cbor2.dumps(LEASE.model_dump(by_alias=True))  # declaration order, not sorted
    assert payload != LEASE.to_cbor()
    with pytest.raises(MalformedError, match="deterministic"):
        verify(sign1(lease_header(), payload), Lease, RING)


def test_checks_run_in_order_kid_alg_kind_signature() -> None:
    # Each token fails two checks; the first in verify's order wins.
    stranger = SigningKey(bytes(range(64, 96)))
    with pytest.raises(UnknownKeyError):
        verify(sign1({**lease_header(), 1: -7, 4: stranger.kid}, LEASE.to_cbor(), key=stranger), Lease, RING)
    with pytest.raises(BadSignatureError, match="not EdDSA"):
        verify(sign1({**lease_header(), 1: -7, 3: Kind.GRANT.value}, LEASE.to_cbor()), Lease, RING)
    bad_sig = bytearray(sign(CERT, ISSUER))
    bad_sig[-1] ^= 1
    with pytest.raises(WrongKindError):
        verify(bytes(bad_sig), Lease, RING)
    with pytest.raises(BadSignatureError):
        verify(sign1(lease_header(), b"\xa1\x61z\x01", key=GATEWAY), Lease, RING)


def test_every_single_bit_flip_is_refused() -> None:
    token = sign(GRANT, GATEWAY)
    ring = KeyRing([GATEWAY.public])
    for bit in range(len(token) * 8):
        damaged = bytearray(token)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireError):
            verify(bytes(damaged), Grant, ring)


def test_error_classes_share_the_token_root() -> None:
    for cls in (UnknownKeyError, BadSignatureError, WrongKindError):
        assert issubclass(cls, TokenError)
        assert issubclass(cls, WireError)
    assert not issubclass(MalformedError, TokenError)


# --- the protected header, decoded as strictly as a payload -----------------------------------------------------
# Each token below is validly signed over its odd header: the signature alone must not make a verifier accept.


def sign1_over(protected: bytes, payload: bytes, key: SigningKey = ISSUER) -> bytes:
    """A COSE_Sign1 validly signed over exactly these protected header bytes."""
    sig = Ed25519PrivateKey.from_private_bytes(key.seed).sign(dumps(["Signature1", protected, b"", payload]))
    return dumps(cbor2.CBORTag(18, [protected, {}, payload, sig]))


def entry(label: Any, value: Any) -> bytes:
    return dumps(label) + dumps(value)


def test_a_repeated_label_is_refused_though_cbor2_would_keep_the_last() -> None:
    # A reader that keeps the first content type sees a grant; cbor2 keeps the last and would see a lease.
    protected = b"".join(
        [
            b"\xa4",
            entry(1, -8),
            entry(3, Kind.GRANT.value),
            entry(3, Kind.LEASE.value),
            entry(4, ISSUER.kid),
        ]
    )
    assert cbor2.loads(protected) == lease_header()
    token = sign1_over(protected, LEASE.to_cbor())
    with pytest.raises(MalformedError, match="repeats a label") as caught:
        verify(token, Lease, RING)
    assert caught.value.field == "protected"


def test_a_repeated_kid_is_refused() -> None:
    protected = b"\xa4" + entry(1, -8) + entry(3, Kind.LEASE.value) + entry(4, GATEWAY.kid) + entry(4, ISSUER.kid)
    with pytest.raises(MalformedError, match="repeats a label"):
        verify(sign1_over(protected, LEASE.to_cbor()), Lease, RING)


@pytest.mark.parametrize("crit", [[3], [99], []])
def test_crit_is_refused(crit: list[int]) -> None:
    header = {**lease_header(), 2: crit}
    if 99 in crit:
        header[99] = 1
    with pytest.raises(MalformedError, match=r"crit, label 2") as caught:
        verify(sign1(header, LEASE.to_cbor()), Lease, RING)
    assert caught.value.field == "protected"


@pytest.mark.parametrize(("label", "value"), [(5, b"\x00" * 12), (6, b"\x01"), (33, b"\x30"), (-1, 1), ("exp", 0)])
def test_unknown_labels_are_refused(label: Any, value: Any) -> None:
    with pytest.raises(MalformedError, match="unknown labels") as caught:
        verify(sign1({**lease_header(), label: value}, LEASE.to_cbor()), Lease, RING)
    assert caught.value.field == "protected"


@pytest.mark.parametrize(
    "protected",
    [
        cbor2.dumps({4: ISSUER.kid, 3: Kind.LEASE.value, 1: -8}),  # labels out of order
        b"\xa3\x18\x01\x27" + entry(3, Kind.LEASE.value) + entry(4, ISSUER.kid),  # label 1 in a 2-byte head
        b"\xa3" + entry(1, -8) + b"\x03\x79\x00\x1e" + Kind.LEASE.value.encode() + entry(4, ISSUER.kid),
        b"\xbf" + entry(1, -8) + entry(3, Kind.LEASE.value) + entry(4, ISSUER.kid) + b"\xff",  # indefinite map
    ],
    ids=["unsorted", "long-label", "long-text", "indefinite"],
)
def test_a_header_not_in_deterministic_cbor_is_refused(protected: bytes) -> None:
    assert cbor2.loads(protected) == lease_header()
    with pytest.raises(MalformedError, match="deterministic") as caught:
        verify(sign1_over(protected, LEASE.to_cbor()), Lease, RING)
    assert caught.value.field == "protected"


@pytest.mark.parametrize("kid", [ISSUER.kid[:7], ISSUER.kid + b"\x00", b""])
def test_a_kid_of_the_wrong_length_is_refused(kid: bytes) -> None:
    with pytest.raises(MalformedError, match="no key id \\(kid\\) of 8 bytes") as caught:
        verify(sign1({**lease_header(), 4: kid}, LEASE.to_cbor()), Lease, KeyRing([ISSUER.public]))
    assert caught.value.field == "kid"


def test_peek_header_is_as_strict_as_verify() -> None:
    # The platform picks a gateway's key with peek_header: it must not read a header verify would refuse.
    for header in ({**lease_header(), 2: [3]}, {**lease_header(), 7: 0}, {**lease_header(), 4: b"\x01"}):
        with pytest.raises(MalformedError):
            peek_header(sign1(header, LEASE.to_cbor()))


@given(st.binary(max_size=80))
def test_any_protected_header_bytes_are_refused_or_read_strictly(protected: bytes) -> None:
    try:
        header = peek_header(sign1_over(protected, LEASE.to_cbor()))
    except MalformedError:
        return
    assert set(header) <= {1, 3, 4}
    assert dumps(header) == protected
    assert len(header[4]) == 8


@given(
    st.dictionaries(
        st.sampled_from([1, 2, 3, 4, 5, -1, 33, "kid"]),
        st.one_of(st.integers(-10, 10), st.binary(max_size=10), st.text(max_size=5), st.just(ISSUER.kid)),
        max_size=5,
    ),
    st.booleans(),
)
def test_a_header_map_is_accepted_exactly_when_it_keeps_the_rules(header: dict[Any, Any], canonical: bool) -> None:
    protected = cbor2.dumps(header, canonical=canonical)
    keeps = (
        set(header) <= {1, 3, 4}
        and isinstance(header.get(4), bytes)
        and len(header[4]) == 8
        and protected == dumps(header)
    )
    try:
        got = peek_header(sign1_over(protected, LEASE.to_cbor()))
    except MalformedError:
        assert not keeps
    else:
        assert keeps
        assert got == header


# --- peek_header ------------------------------------------------------------------------------------------------


def test_peek_header_reads_without_verifying() -> None:
    token = bytearray(sign(GRANT, GATEWAY))
    token[-1] ^= 1
    assert peek_header(bytes(token))[4] == GATEWAY.kid


def test_peek_header_limit_is_inclusive() -> None:
    header = dumps(lease_header())
    filler = MAX_TOKEN_BYTES - len(dumps(cbor2.CBORTag(18, [header, {}, b"", b"\x00" * 64])))
    payload = b"\x00" * (filler - 2)  # a longer payload also takes a 3-byte length head instead of 1
    token = dumps(cbor2.CBORTag(18, [header, {}, payload, b"\x00" * 64]))
    assert len(token) == MAX_TOKEN_BYTES
    assert peek_header(token)[3] == Kind.LEASE.value
    with pytest.raises(MalformedError, match="over the"):
        peek_header(dumps(cbor2.CBORTag(18, [header, {}, payload + b"\x00", b"\x00" * 64])))


# --- payloads and bundles ---------------------------------------------------------------------------------------


def test_decode_payload_is_strict() -> None:
    assert decode_payload(GRANT.to_cbor(), Grant) == GRANT
    with pytest.raises(MalformedError, match="grant field 'zz'"):
        decode_payload(dumps({**GRANT.model_dump(by_alias=True), "zz": 0}), Grant)


def test_certificate_protocols_are_known_radios() -> None:
    bad = {**CERT.model_dump(by_alias=True), "pr": ["wifi", "lora"]}
    with pytest.raises(MalformedError, match="pr"):
        decode_payload(dumps(bad), Certificate)


def test_bundle_round_trip_and_strictness() -> None:
    bundle = LeaseBundle(lease=sign(LEASE, ISSUER), certificate=sign(CERT, ISSUER))
    assert decode_bundle(bundle.to_cbor()) == bundle
    with pytest.raises(MalformedError, match="lease file field 'extra'"):
        decode_bundle(dumps({**bundle.model_dump(), "extra": b""}))
    with pytest.raises(MalformedError, match="lease file field 'certificate'"):
        decode_bundle(dumps({"lease": bundle.lease}))
