"""Signed tokens: COSE_Sign1 with EdDSA over Ed25519, the kind bound in the protected header.

Verification order: pick the key by kid from the pinned ring, insist on EdDSA and on the expected kind,
verify over the exact payload bytes, and only then decode the payload strictly.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import cbor2
from cwt import COSE, COSEKey
from cwt.exceptions import CWTError
from pydantic import BaseModel, ConfigDict, Field, Strict

from wire.cbor import DECODE_ERRORS, dumps
from wire.errors import BadSignatureError, MalformedError, TokenError, UnknownKeyError, WrongKindError
from wire.ids import CertNo, LeaseId, Pid, Sn
from wire.keys import KID_BYTES, KeyRing, PublicKey, SigningKey
from wire.strict import decode_model

ProtocolName = Literal["wifi", "ble", "zigbee"]
COSE_SIGN1_TAG = 18
ALG_EDDSA = -8
HDR_ALG, HDR_CRIT, HDR_CTYPE, HDR_KID = 1, 2, 3, 4
HEADER_LABELS = frozenset({HDR_ALG, HDR_CTYPE, HDR_KID})
CBOR_MAP = 5  # major type
MAX_TOKEN_BYTES = 2048
# Slots and times in a lease or grant are u32 (seconds last to 2106), which keeps both inside their size budget.
UINT32_END = 2**32


class Kind(StrEnum):
    """What a token is; its value is the COSE content type in the protected header."""

    CERTIFICATE = "application/rebadge-certificate+cbor"
    LEASE = "application/rebadge-lease+cbor"
    GRANT = "application/rebadge-grant+cbor"
    CHECKPOINT = "application/rebadge-checkpoint+cbor"
    ACK = "application/rebadge-ack+cbor"
    RELEASE = "application/rebadge-release+cbor"
    LEASE_REQUEST = "application/rebadge-lease-request+cbor"
    RENEW_REQUEST = "application/rebadge-renew-request+cbor"
    KEY_INTRODUCTION = "application/rebadge-key-introduction+cbor"  # wire.key_rotation
    KEY_POSSESSION = "application/rebadge-key-possession+cbor"
    SCAN_COMMAND = "application/rebadge-scan-command+cbor"  # wire.scan_command


class Payload(BaseModel):
    """A token payload: short CBOR keys (aliases), unknown or missing fields rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)
    KIND: ClassVar[Kind]

    def to_cbor(self) -> bytes:
        """The payload in deterministic CBOR with its short keys."""
        return dumps(self.model_dump(by_alias=True, exclude_none=True))


class Certificate(Payload):
    """A replacement certificate: the platform's approval to rebadge `quantity` units."""

    KIND: ClassVar[Kind] = Kind.CERTIFICATE
    cert_no: CertNo = Field(alias="no")
    factory: str = Field(alias="fac", min_length=1, max_length=64)
    original_pid: Pid = Field(alias="op")
    new_pid: Pid = Field(alias="np")
    quantity: int = Field(alias="qty", ge=1, le=10_000_000)
    protocols: Annotated[tuple[ProtocolName, ...], Strict(False)] = Field(alias="pr", min_length=1, max_length=3)
    nbf: int = Field(alias="nbf", ge=0)
    exp: int = Field(alias="exp", ge=0)


class Lease(Payload):
    """Slots [slot_lo, slot_hi) of a certificate, bound to one gateway's key."""

    KIND: ClassVar[Kind] = Kind.LEASE
    lease_id: LeaseId = Field(alias="id")
    cert_no: CertNo = Field(alias="c")
    cert_hash: bytes = Field(alias="ch", min_length=32, max_length=32)
    original_pid: Pid = Field(alias="op")
    new_pid: Pid = Field(alias="np")
    gateway_key: bytes = Field(alias="gk", min_length=32, max_length=32)
    gateway_kid: bytes = Field(alias="gi", min_length=KID_BYTES, max_length=KID_BYTES)
    slot_lo: int = Field(alias="lo", ge=0, lt=UINT32_END)
    slot_hi: int = Field(alias="hi", ge=1, lt=UINT32_END)
    exp: int = Field(alias="x", ge=0, lt=UINT32_END)

    @property
    def size(self) -> int:
        """How many slots the lease holds."""
        return self.slot_hi - self.slot_lo


class Grant(Payload):
    """A gateway's permission for one device (sn) to take new_pid under one slot of a lease."""

    KIND: ClassVar[Kind] = Kind.GRANT
    lease_id: LeaseId = Field(alias="l")
    slot: int = Field(alias="s", ge=0, lt=UINT32_END)
    sn: Sn = Field(alias="sn")
    new_pid: Pid = Field(alias="np")
    iat: int = Field(alias="t", ge=0, lt=UINT32_END)


class Checkpoint(Payload):
    """A gateway's signed statement of its journal head."""

    KIND: ClassVar[Kind] = Kind.CHECKPOINT
    gw: str = Field(alias="gw", min_length=1, max_length=64)
    seq: int = Field(alias="seq", ge=0)
    head: bytes = Field(alias="head", min_length=32, max_length=32)
    at: int = Field(alias="at", ge=0)
    counter: int | None = Field(default=None, alias="ctr", ge=0)


class Ack(Payload):
    """The platform's signed receipt of a gateway's journal up to `seq`."""

    KIND: ClassVar[Kind] = Kind.ACK
    gw: str = Field(alias="gw", min_length=1, max_length=64)
    seq: int = Field(alias="seq", ge=0)
    head: bytes = Field(alias="head", min_length=32, max_length=32)
    at: int = Field(alias="at", ge=0)


P = TypeVar("P", bound=Payload)

_COSE = COSE.new(deterministic_header=True)


def _cose_key(key: PublicKey | SigningKey) -> Any:
    if isinstance(key, SigningKey):
        return COSEKey.new({1: 1, -1: 6, -2: key.public.raw, -4: key.seed, 2: key.kid, 3: ALG_EDDSA})
    return COSEKey.new({1: 1, -1: 6, -2: key.raw, 2: key.kid, 3: ALG_EDDSA})


def sign(payload: Payload, key: SigningKey) -> bytes:
    """A COSE_Sign1 token of `payload`, signed with `key`; kind, alg and kid in the protected header."""
    protected = {HDR_ALG: ALG_EDDSA, HDR_CTYPE: payload.KIND.value, HDR_KID: key.kid}
    return bytes(_COSE.encode(payload.to_cbor(), _cose_key(key), protected=protected, unprotected={}))


def token_hash(token: bytes) -> bytes:
    """SHA-256 of a token's exact bytes (how a lease names its certificate)."""
    return hashlib.sha256(token).digest()


def peek_header(token: bytes) -> dict[int, Any]:
    """The protected header of a COSE_Sign1 token, decoded strictly but unverified: only to choose a key."""
    return _decode_header(_sign1_parts(token)[0])


def _decode_header(protected: bytes) -> dict[int, Any]:
    """The protected header map: deterministic, each label once, only alg, content type and an 8-byte kid.

    The signature covers these exact bytes, so a header a verifier reads differently from its signer is refused
    before any key is chosen: cbor2 keeps the last of two equal labels, and crit (label 2) would ask us to
    understand extensions we do not have.
    """
    try:
        header = cbor2.loads(protected)
    except DECODE_ERRORS as exc:
        raise MalformedError(f"token's protected header is not valid CBOR ({exc})", field="token") from exc
    if not isinstance(header, dict):
        raise MalformedError("token's protected header is not a map", field="token")
    declared = _declared_entries(protected)
    if declared is not None and declared != len(header):
        raise MalformedError("token's protected header repeats a label", field="protected")
    if HDR_CRIT in header:
        raise MalformedError(
            "token's protected header marks labels critical (crit, label 2); no extension is understood here",
            field="protected",
        )
    unknown = [label for label in header if label not in HEADER_LABELS]
    if unknown:
        raise MalformedError(
            f"token's protected header has unknown labels {unknown!r:.60}; only 1 (alg), 3 (content type) and "
            "4 (kid) are allowed",
            field="protected",
        )
    if dumps(header) != protected:
        raise MalformedError("token's protected header is not in deterministic CBOR", field="protected")
    kid = header.get(HDR_KID)
    if not isinstance(kid, bytes) or len(kid) != KID_BYTES:
        got = "nothing" if kid is None else f"{type(kid).__name__} {kid!r:.40}"
        raise MalformedError(
            f"token has no key id (kid) of {KID_BYTES} bytes in its protected header (got {got})", field="kid"
        )
    return header


def _declared_entries(data: bytes) -> int | None:
    """How many entries a CBOR map's head announces (None for anything else, left to the deterministic check)."""
    if data[0] >> 5 != CBOR_MAP:
        return None
    info = data[0] & 0x1F
    if info < 24:
        return info
    size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    return int.from_bytes(data[1 : 1 + size]) if size is not None and len(data) > size else None


def _sign1_parts(token: bytes) -> list[Any]:
    """[protected, unprotected, payload, signature] of a token whose envelope is deterministic CBOR.

    The exact bytes matter (a lease names its certificate by hash, a device compares receipts), so a token with
    trailing bytes, long-form lengths or anything in the unprotected header is refused rather than tolerated.
    """
    if len(token) > MAX_TOKEN_BYTES:
        raise MalformedError(f"token is {len(token)} bytes, over the {MAX_TOKEN_BYTES}-byte limit", field="token")
    try:
        outer = cbor2.loads(token)
    except DECODE_ERRORS as exc:
        raise MalformedError(f"token is not valid CBOR ({exc})", field="token") from exc
    if not isinstance(outer, cbor2.CBORTag) or outer.tag != COSE_SIGN1_TAG:
        raise MalformedError("token is not a tagged COSE_Sign1 (tag 18)", field="token")
    parts = outer.value
    if (
        not isinstance(parts, list | tuple)
        or len(parts) != 4
        or [type(p) for p in parts] != [bytes, dict, bytes, bytes]
    ):
        raise MalformedError(
            "token is not a COSE_Sign1 array [protected, unprotected, payload, signature]", field="token"
        )
    if parts[1]:
        raise MalformedError(
            "token's unprotected header is not empty; everything belongs in the protected one", field="token"
        )
    if dumps(cbor2.CBORTag(COSE_SIGN1_TAG, list(parts))) != token:
        raise MalformedError("token is not in deterministic CBOR or has trailing bytes", field="token")
    return list(parts)


def sign1_payload(token: bytes) -> bytes:
    """The payload bytes of a COSE_Sign1 token, unverified: only to say what a refused token claimed."""
    return bytes(_sign1_parts(token)[2])


def verify(token: bytes, cls: type[P], ring: KeyRing) -> P:
    """Verify `token` as a `cls` signed by a key in `ring`, then decode its payload strictly."""
    kind = cls.KIND.value
    header = peek_header(token)
    kid: bytes = header[HDR_KID]
    key = ring.get(kid)
    if key is None:
        raise UnknownKeyError(f"{cls.__name__.lower()} is signed by unknown key {kid.hex()}", kind=kind, kid=kid)
    if header.get(HDR_ALG) != ALG_EDDSA:
        raise BadSignatureError(f"algorithm {header.get(HDR_ALG)!r} is not EdDSA", kind=kind, kid=kid)
    if header.get(HDR_CTYPE) != kind:
        raise WrongKindError(f"expected a {kind}, got {header.get(HDR_CTYPE)!r}", kind=kind, kid=kid)
    try:
        payload = _COSE.decode(token, _cose_key(key))
    except CWTError as exc:
        raise BadSignatureError(
            f"{cls.__name__.lower()} signature does not verify with key {kid.hex()}", kind=kind, kid=kid
        ) from exc
    return decode_payload(bytes(payload), cls)


def decode_payload(data: bytes, cls: type[P]) -> P:
    """Strictly decode a payload whose signature has already been verified."""
    return decode_model(data, cls, cls.__name__.lower())


__all__ = [
    "Ack",
    "Certificate",
    "Checkpoint",
    "Grant",
    "Kind",
    "Lease",
    "LeaseBundle",
    "Payload",
    "TokenError",
    "decode_bundle",
    "sign",
    "token_hash",
    "verify",
]


class LeaseBundle(BaseModel):
    """What a lease file (or a `res/lease` answer) holds: the lease and the certificate it names."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    lease: bytes = Field(min_length=1, max_length=MAX_TOKEN_BYTES)
    certificate: bytes = Field(min_length=1, max_length=MAX_TOKEN_BYTES)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR of the bundle."""
        return dumps(self.model_dump(mode="python"))


def decode_bundle(data: bytes) -> LeaseBundle:
    """A lease file's bytes as a bundle (the tokens inside are verified by the caller)."""
    return decode_model(data, LeaseBundle, "lease file")
