"""Key rotation: the gateway's old key introduces its new one (`req/rotate`), and the new key counter-signs.

The introduction is a signed request (wire.lease_request.SignedRequest) signed by the OLD key. It names the new
public key, the journal head (seq, head hash) at which the old key stops signing, a CSR of the new key (CN = the
gateway id, which stays the same), and `possession`: a token signed by the NEW key over the gateway id, the old key's
kid and that head, which proves that whoever introduces the key holds it and agrees to take over there. The answer
is a wire.lease_request.RenewAnswer carrying the new key's client certificate. docs/enrolment.md, "Key rotation".
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from wire.errors import BadSignatureError, MalformedError, TokenError
from wire.keys import KEY_BYTES, KID_BYTES, KeyRing, PublicKey, SigningKey
from wire.lease_request import SignedRequest
from wire.tokens import Kind, Payload, sign, verify

# A PEM CSR of an Ed25519 key with a 16-character CN is about 350 bytes; the possession token about 150.
MAX_INTRO_CSR_BYTES = 1024
MAX_POSSESSION_BYTES = 512
HEAD_BYTES = 32


class KeyPossession(Payload):
    """Signed by the new key: it takes over gateway `gw` from the key `old_kid` after journal seq `seq`."""

    KIND: ClassVar[Kind] = Kind.KEY_POSSESSION
    gw: str = Field(alias="gw", min_length=1, max_length=64)
    old_kid: bytes = Field(alias="ok", min_length=KID_BYTES, max_length=KID_BYTES)
    seq: int = Field(alias="seq", ge=0)
    head: bytes = Field(alias="head", min_length=HEAD_BYTES, max_length=HEAD_BYTES)


class KeyIntroduction(SignedRequest):
    """Signed by the old key: `new_key` signs gateway `gw`'s journal after seq `seq` (whose chain head is `head`)."""

    KIND: ClassVar[Kind] = Kind.KEY_INTRODUCTION
    new_key: bytes = Field(alias="nk", min_length=KEY_BYTES, max_length=KEY_BYTES)
    seq: int = Field(alias="seq", ge=0)
    head: bytes = Field(alias="head", min_length=HEAD_BYTES, max_length=HEAD_BYTES)
    csr: bytes = Field(alias="csr", min_length=1, max_length=MAX_INTRO_CSR_BYTES)
    possession: bytes = Field(alias="pop", min_length=1, max_length=MAX_POSSESSION_BYTES)


def possession(new: SigningKey, *, gw: str, old_kid: bytes, seq: int, head: bytes) -> bytes:
    """The new key's counter-signature for an introduction (its `possession` field)."""
    return sign(KeyPossession(gw=gw, old_kid=old_kid, seq=seq, head=head), new)


def check_possession(intro: KeyIntroduction, old_kid: bytes) -> PublicKey:
    """The new key, once its counter-signature verifies and names this introduction; TokenError or MalformedError."""
    new = PublicKey(intro.new_key)
    if new.kid == old_kid:
        raise MalformedError("introduction's new key is the key that signs it; make a new key", field="nk")
    try:
        proof = verify(intro.possession, KeyPossession, KeyRing([new]))
    except TokenError as exc:
        raise BadSignatureError(
            f"introduction's possession is not signed by its new key {new.kid.hex()}: {exc}", kind=exc.kind, kid=exc.kid
        ) from exc
    wanted = (intro.gw, old_kid, intro.seq, intro.head)
    if (proof.gw, proof.old_kid, proof.seq, proof.head) != wanted:
        raise MalformedError(
            f"introduction's possession names gateway {proof.gw}, key {proof.old_kid.hex()} and seq {proof.seq}, "
            f"not gateway {intro.gw}, key {old_kid.hex()} and seq {intro.seq} with this head",
            field="pop",
        )
    return new
