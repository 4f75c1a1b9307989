"""A gateway's lease and release requests over MQTT (`req/lease`, `req/release`) and the platform's answers.

Requests and answers are deterministic CBOR maps. `id` correlates an answer with its request (MQTT 5 correlation
data is echoed too, where the broker has it). A release is a token signed by the gateway's key: it hands slots
back, so nobody else may send it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, Strict

from wire.cbor import dumps
from wire.strict import decode_model
from wire.tokens import MAX_TOKEN_BYTES, Kind, Payload

LEASE_OP = "lease"
RELEASE_OP = "release"


class _Cbor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR."""
        return dumps(self.model_dump(mode="python", exclude_none=True))


class LeaseRequest(_Cbor):
    """Ask for up to `slots` slots of a certificate (the platform may grant fewer, up to its policy maximum)."""

    id: str = Field(min_length=1, max_length=64)
    cert_no: str = Field(min_length=1, max_length=12)
    slots: int = Field(ge=1, le=10_000_000)
    valid_s: int | None = Field(default=None, ge=60, le=366 * 86400)


class Release(Payload):
    """A gateway's signed statement that it will use no more slots of a lease; `seq` is its journal head then."""

    KIND: ClassVar[Kind] = Kind.RELEASE
    lease_id: str = Field(alias="l", min_length=1, max_length=10)
    seq: int = Field(alias="seq", ge=0)
    at: int = Field(alias="at", ge=0)


class ReleaseRequest(_Cbor):
    """Hand back the unused slots of a lease: `release` is a Release token signed by the gateway."""

    id: str = Field(min_length=1, max_length=64)
    release: bytes = Field(min_length=1, max_length=MAX_TOKEN_BYTES)


class AnswerCode(StrEnum):
    """How a request ended."""

    OK = "ok"
    NO_SLOTS = "no_slots"  # every slot is leased or spent
    NOT_FOUND = "not_found"  # no such certificate or lease (for this gateway)
    REFUSED = "refused"  # certificate not approved or expired, gateway revoked, another organisation's
    PENDING = "pending"  # release: the platform has not yet acked the journal up to the release's seq; resend later
    MALFORMED = "malformed"
    UNKNOWN_GATEWAY = "unknown_gateway"
    BAD_SIGNATURE = "bad_signature"
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
    """The answer on `res/release`: how many slots came back to the certificate."""

    id: str = Field(max_length=64)
    code: Annotated[AnswerCode, Strict(False)]
    message: str = Field(default="", max_length=500)
    returned: int = Field(default=0, ge=0)


def lease_request_from_cbor(data: bytes) -> LeaseRequest:
    """Strictly decode a lease request."""
    return decode_model(data, LeaseRequest, "lease request")


def release_request_from_cbor(data: bytes) -> ReleaseRequest:
    """Strictly decode a release request."""
    return decode_model(data, ReleaseRequest, "release request")


def lease_answer_from_cbor(data: bytes) -> LeaseAnswer:
    """Strictly decode a lease answer."""
    return decode_model(data, LeaseAnswer, "lease answer")


def release_answer_from_cbor(data: bytes) -> ReleaseAnswer:
    """Strictly decode a release answer."""
    return decode_model(data, ReleaseAnswer, "release answer")
