"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from cloud_bridge.accounts import OrgKind, Role
from cloud_bridge.activation import Verdict
from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.certificates import PROTOCOLS
from cloud_bridge.enrolment import MAX_VALID_S as MAX_TOKEN_VALID_S
from cloud_bridge.enrolment import MIN_VALID_S as MIN_TOKEN_VALID_S
from wire.ids import Pid, Sn

HEX_KEY_PATTERN = r"^[0-9a-fA-F]{64}$"
B64_PATTERN = r"^[A-Za-z0-9+/=_-]*$"


# Control characters but tab and line breaks: PostgreSQL refuses NUL in text outright (the request would end in a
# server error there and be stored on SQLite), and the rest (terminal escapes) would come back in the CLI's output.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Body(BaseModel):
    """A request body: unknown fields are refused, and so is text with control characters, in any field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _plain_text(cls, value: Any, info: ValidationInfo) -> Any:
        for text in value if isinstance(value, list | tuple) else (value,):
            if isinstance(text, str) and (found := CONTROL_CHARS.search(text)):
                raise ValueError(
                    f"{info.field_name} holds the control character U+{ord(found.group()):04X} at position "
                    f"{found.start()}; send plain text (tabs and line breaks are fine)"
                )
        return value


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(frozen=True)


class Problem(Out):
    """An error: what went wrong and, when known, which field."""

    detail: str
    field: str | None = None


class OrgIn(Body):
    name: str = Field(min_length=1, max_length=128)
    kind: OrgKind


class OrgOut(Out):
    id: int
    name: str
    kind: OrgKind


class AccountIn(Body):
    org_id: int = Field(ge=1, le=2**31 - 1)
    name: str = Field(min_length=1, max_length=128)
    role: Role


class AccountCreated(Out):
    id: int
    api_key: str = Field(description="Shown this once; the platform keeps only its hash.")


class AccountOut(Out):
    id: int
    org_id: int
    name: str
    role: Role
    key_prefix: str
    disabled: bool


class Me(Out):
    account_id: int | None
    org_id: int | None
    name: str
    role: Role


class ApplicationIn(Body):
    original_pid: Pid
    new_pid: Pid
    quantity: int = Field(ge=1, le=10_000_000)
    reason: str = Field(min_length=1, max_length=1000)
    protocols: list[str] = Field(default=["wifi"], min_length=1, max_length=len(PROTOCOLS))
    valid_days: int = Field(default=30, ge=1, le=366)


class AuditIn(Body):
    approve: bool
    comment: str = Field(default="", max_length=1000)


class RevokeIn(Body):
    comment: str = Field(min_length=1, max_length=1000)


class CertificateOut(Out):
    """One line of the credential list."""

    cert_no: str
    original_pid: str
    new_pid: str
    replaced: int = Field(description="Confirmed by verified gateway records.")
    activated: int
    stale_held: int = Field(
        default=0, description="Slots still held by leases that expired with no report from their gateway since."
    )
    quantity: int
    status: str
    applicant: str
    factory: str
    reason: str
    audit_comment: str
    nbf: int | None
    exp: int | None
    token: str | None = Field(default=None, description="The signed certificate, base64, once approved.")


class LeaseIn(Body):
    gateway_key: str = Field(pattern=HEX_KEY_PATTERN, description="The gateway's Ed25519 public key, hex.")
    slots: int = Field(ge=1, le=10_000_000)
    valid_s: int | None = Field(default=None, ge=60, le=366 * 86400)


class LeaseOut(Out):
    lease_id: str
    cert_no: str
    gw: str
    slot_lo: int
    slot_hi: int
    exp: int
    state: str


class LeaseIssued(LeaseOut):
    bundle: str = Field(description="The lease file (base64): load it with `rebadge agent load-lease FILE`.")


class ReleaseIn(Body):
    release: str = Field(min_length=1, max_length=4096, pattern=B64_PATTERN, description="Signed release, base64.")


class ReleaseOut(Out):
    code: str
    message: str
    returned: int


class GatewayIn(Body):
    public_key: str = Field(pattern=HEX_KEY_PATTERN)
    name: str = Field(default="", max_length=128)
    org_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Admins only, and then required: the gateway's factory."
    )


class EnrolmentTokenIn(Body):
    line: str = Field(default="", max_length=128, description="The line's name; the enrolled gateway takes it.")
    valid_s: int = Field(default=86400, ge=MIN_TOKEN_VALID_S, le=MAX_TOKEN_VALID_S)
    org_id: int | None = Field(default=None, ge=1, le=2**31 - 1, description="Admins only: the factory.")


class EnrolmentTokenOut(Out):
    token: str = Field(description="Shown this once; the platform keeps only its hash. Used once.")
    org_id: int
    line: str
    expires_at: int


class EnrolIn(Body):
    token: str = Field(min_length=1, max_length=128)
    csr: str = Field(min_length=1, max_length=8192, description="PEM CSR signed by the gateway key, CN = gw id.")


class EnrolOut(Out):
    gw: str
    certificate: str = Field(description="PEM client certificate for the broker's mTLS.")
    ca_certificate: str = Field(description="PEM certificate of the CA the broker trusts.")
    not_after: int


class GatewayOut(Out):
    gw: str
    name: str
    public_key: str
    revoked: bool
    acked_seq: int


class AnomalyOut(Out):
    id: int
    kind: AnomalyKind
    message: str
    at: int
    gw: str | None
    seq: int | None
    cert_no: str | None
    lease_id: str | None
    slot: int | None
    sn: str | None


class ActivationIn(Body):
    sn: Sn
    pid: Pid
    receipt: str = Field(min_length=1, max_length=4096, pattern=B64_PATTERN, description="The grant, base64.")


class ActivationOut(Out):
    verdict: Verdict
    message: str
    cert_no: str | None
    lease_id: str | None
    slot: int | None
