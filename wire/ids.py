"""The IDs everything is keyed by, each with one pattern and one length: PID, SN, gateway id, certificate number,
lease id. Wire models, the platform's HTTP validation and its store all take them from here."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo, WithJsonSchema

from wire.errors import MalformedError
from wire.keys import KID_BYTES

SHORT_PID_LEN = 8
PID_ALPHABET = string.digits + string.ascii_lowercase  # what PID matches, and what the platform draws from
PID_LENGTHS = (SHORT_PID_LEN, 16)
SN_MAX_CHARS = 28
GW_ID_CHARS = 2 * KID_BYTES  # the hex of the gateway key's kid
CERT_NO_MAX_CHARS = 12
LEASE_ID_MAX_CHARS = 10  # the platform's lease ids are 'L' and 9 base32 characters


@dataclass(frozen=True)
class IdKind:
    """One kind of ID: its name in messages, its pattern, and how to say what it should look like."""

    name: str
    pattern: str  # a Python regular expression, matched whole
    rule: str

    def check(self, value: str, field: str) -> str:
        """Return `value` if it is an ID of this kind; MalformedError names the field and the value."""
        if not re.fullmatch(self.pattern, value):
            raise MalformedError(f"{field} {value!r} is not a {self.name}: use {self.rule}", field=field)
        return value

    def validator(self, default_field: str) -> AfterValidator:
        """A pydantic validator running this check; its messages name the model's field."""

        def check(value: str, info: ValidationInfo) -> str:
            return self.check(value, info.field_name or default_field)

        return AfterValidator(check)

    def json_schema(self) -> WithJsonSchema:
        """The pattern for JSON schema (OpenAPI): the same one the check uses."""
        return WithJsonSchema({"type": "string", "pattern": f"^(?:{self.pattern})$", "description": f"A {self.name}."})


PID = IdKind("product ID", r"[0-9a-z]{8}|[0-9a-z]{16}", "8 or 16 characters of 0-9 and a-z")
SN = IdKind(
    "serial number",
    rf"[0-9A-Za-z][0-9A-Za-z._-]{{3,{SN_MAX_CHARS - 1}}}",
    f"4 to {SN_MAX_CHARS} letters, digits, '.', '_' or '-'",
)
GW_ID = IdKind("gateway id", rf"[0-9a-f]{{{GW_ID_CHARS}}}", f"the {GW_ID_CHARS} lowercase hex digits of its key's kid")
CERT_NO = IdKind(
    "certificate number",
    rf"[0-9A-Za-z][0-9A-Za-z._-]{{0,{CERT_NO_MAX_CHARS - 1}}}",
    f"1 to {CERT_NO_MAX_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit",
)
LEASE_ID = IdKind(
    "lease id",
    rf"[0-9A-Za-z][0-9A-Za-z._-]{{0,{LEASE_ID_MAX_CHARS - 1}}}",
    f"1 to {LEASE_ID_MAX_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit",
)


def check_pid(value: str, field: str = "pid") -> str:
    """Return `value` if it is a PID: 8 or 16 characters of [0-9a-z]."""
    return PID.check(value, field)


def check_sn(value: str, field: str = "sn") -> str:
    """Return `value` if it is a serial number: 4-28 of [0-9A-Za-z._-], starting with a letter or digit."""
    return SN.check(value, field)


Pid = Annotated[str, PID.validator("pid"), PID.json_schema()]
Sn = Annotated[str, SN.validator("sn"), SN.json_schema()]
GatewayId = Annotated[str, GW_ID.validator("gw"), GW_ID.json_schema()]
CertNo = Annotated[str, CERT_NO.validator("cert_no"), CERT_NO.json_schema()]
LeaseId = Annotated[str, LEASE_ID.validator("lease_id"), LEASE_ID.json_schema()]
