"""Product IDs and serial numbers: the two strings everything else is keyed by."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from wire.errors import MalformedError

PID_RE = re.compile(r"[0-9a-z]{8}|[0-9a-z]{16}")
SN_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{3,27}")
SHORT_PID_LEN = 8


def check_pid(value: str, field: str = "pid") -> str:
    """Return `value` if it is a PID: 8 or 16 characters of [0-9a-z]."""
    if not PID_RE.fullmatch(value):
        raise MalformedError(
            f"{field} {value!r} is not a product ID: use 8 or 16 characters of 0-9 and a-z", field=field
        )
    return value


def check_sn(value: str, field: str = "sn") -> str:
    """Return `value` if it is a serial number: 4-28 of [0-9A-Za-z._-], starting with a letter or digit."""
    if not SN_RE.fullmatch(value):
        raise MalformedError(
            f"{field} {value!r} is not a serial number: use 4 to 28 letters, digits, '.', '_' or '-'",
            field=field,
        )
    return value


Pid = Annotated[str, AfterValidator(check_pid)]
Sn = Annotated[str, AfterValidator(check_sn)]
