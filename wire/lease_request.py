"""A gateway's signed requests over MQTT (`req/lease`, `req/release`, `req/renew`) and the platform's answers.

A request is a COSE_Sign1 token signed by the gateway's key (a topic name is never proof of who sent it). It
names its gateway, carries a fresh 16-byte nonce and the gateway's clock; the platform refuses a request whose
time lies outside `REQUEST_WINDOW_S` of its own clock, and a nonce it has seen in that window (a replay).
Answers are deterministic CBOR maps. `id` correlates an answer with its request (MQTT 5 correlation data is
echoed too, where the broker has it).

A release does not hand slots back by itself: the lease ends by the gateway's `closed` record in its own journal
chain, and slots come back when the platform has ingested the chain up to it. The release names that record's seq
and asks the platform to say how many slots came back.

A renewal carries a new CSR of the gateway's own key; the answer holds a new client certificate (PEM) for the broker.
"""

from __future__ import annotations

import secrets
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, Strict

from wire.cbor import dumps
from wire.ids import CertNo, LeaseId
from wire.strict import decode_model
from wire.tokens import MAX_TOKEN_BYTES, UINT32_END, Kind, Payload

LEASE_OP = "lease"
RELEASE_OP = "release"
RENEW_OP = "renew"
ROTATE_OP = "rotate"  # the request is a wire.key_rotation.KeyIntroduction, the answer a RenewAnswer
# A PEM CSR of an Ed25519 key with one CN is about 300 bytes; its certificate about 700.
MAX_CSR_BYTES = 4096
MAX_CERTIFICATE_BYTES = 8192
NONCE_BYTES = 16
# How far a request's time may lie from the platform's clock; nonces are remembered this long on either side.
REQUEST_WINDOW_S = 300


def new_nonce() -> bytes:
    """A fresh random nonce for one request."""
    return secrets.token_bytes(NONCE_BYTES)


class SignedRequest(Payload):
    """What every gateway request carries: its id, its gateway, a nonce and the gateway's time."""

    id: str = Field(alias="id", min_length=1, max_length=64)
    gw: str = Field(alias="gw", min_length=1, max_length=64)
    nonce: bytes = Field(alias="n", min_length=NONCE_BYTES, max_length=NONCE_BYTES)
    at: int = Field(alias="at", ge=0, lt=UINT32_END)


class LeaseRequest(SignedRequest):
    """Ask for up to `slots` slots of a certificate (the platform may grant fewer, up to its policy maximum)."""

    KIND: ClassVar[Kind] = Kind.LEASE_REQUEST
    cert_no: CertNo = Field(alias="c")
    slots: int = Field(alias="s", ge=1, le=10_000_000)
    valid_s: int | None = Field(default=None, alias="v", ge=60, le=366 * 86400)


class Release(SignedRequest):
    """Ask what came back of a lease the gateway closed: `seq` is the seq of its `closed` record for the lease."""

    KIND: ClassVar[Kind] = Kind.RELEASE
    lease_id: LeaseId = Field(alias="l")
    seq: int = Field(alias="seq", ge=1)


class RenewRequest(SignedRequest):
    """Ask for a new client certificate: `csr` is a PEM CSR signed by the gateway key, CN = the gateway id."""

    KIND: ClassVar[Kind] = Kind.RENEW_REQUEST
    csr: bytes = Field(alias="csr", min_length=1, max_length=MAX_CSR_BYTES)


class _Cbor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR."""
        return dumps(self.model_dump(mode="python", exclude_none=True))


class AnswerCode(StrEnum):
    """How a request ended."""

    OK = "ok"
    NO_SLOTS = "no_slots"  # every slot is leased or spent
    NOT_FOUND = "not_found"  # no such certificate or lease (for this gateway)
    REFUSED = "refused"  # certificate not approved or expired, gateway revoked, another organisation's
    PENDING = "pending"  # release: the platform has not yet ingested the journal up to the close; resend later
    MALFORMED = "malformed"
    UNKNOWN_GATEWAY = "unknown_gateway"
    BAD_SIGNATURE = "bad_signature"  # not signed by the gateway's key, or unsigned
    REPLAYED = "replayed"  # a nonce seen before, or a time outside the window (check the gateway's clock)
    FROZEN = "frozen"  # the gateway's journal forked (restored from a backup?); an admin must reinstate it
    RETIRED_KEY = "retired_key"  # signed by a key a rotation retired (docs/enrolment.md, "Key rotation")
    ERROR = "error"  # the platform could not answer now; resend later


class LeaseAnswer(_Cbor):
    """The answer on `res/lease`: with `ok`, `bundle` is a lease file (wire.tokens.LeaseBundle CBOR)."""

    id: str = Field(max_length=64)
    code: Annotated[AnswerCode, Strict(False)]
    message: str = Field(default="", max_length=500)
    bundle: bytes | None = Field(default=None, max_length=2 * MAX_TOKEN_BYTES + 64)

    @property
    def ok(self) -> bool:
        """Whether a lease came back."""
        return self.code == AnswerCode.OK


class ReleaseAnswer(_Cbor):
    """The answer on `res/release`: how many slots came back to the certificate when the close was ingested."""

    id: str = Field(max_length=64)
    code: Annotated[AnswerCode, Strict(False)]
    message: str = Field(default="", max_length=500)
    returned: int = Field(default=0, ge=0)


class RenewAnswer(_Cbor):
    """The answer on `res/renew`: with `ok`, `certificate` is the new client certificate (PEM), until `not_after`."""

    id: str = Field(max_length=64)
    code: Annotated[AnswerCode, Strict(False)]
    message: str = Field(default="", max_length=500)
    certificate: bytes | None = Field(default=None, max_length=MAX_CERTIFICATE_BYTES)
    not_after: int | None = Field(default=None, ge=0)

    @property
    def ok(self) -> bool:
        """Whether a certificate came back."""
        return self.code == AnswerCode.OK


def renew_answer_from_cbor(data: bytes) -> RenewAnswer:
    """Strictly decode a renewal answer."""
    return decode_model(data, RenewAnswer, "renew answer")


def lease_answer_from_cbor(data: bytes) -> LeaseAnswer:
    """Strictly decode a lease answer."""
    return decode_model(data, LeaseAnswer, "lease answer")


def release_answer_from_cbor(data: bytes) -> ReleaseAnswer:
    """Strictly decode a release answer."""
    return decode_model(data, ReleaseAnswer, "release answer")
