"""What the journal hands out: attempt states, stored leases, attempts and per-certificate counts."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class AttemptState(StrEnum):
    """Where one reservation of one slot stands."""

    RESERVED = "reserved"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    IN_DOUBT = "in_doubt"


# States that hold their slot: the slot cannot be handed out again while an attempt is in one of these.
LIVE_STATES = frozenset({AttemptState.RESERVED, AttemptState.CONFIRMED, AttemptState.IN_DOUBT})
# States whose outcome is not known yet: an SN with one of these must be settled before it is tried again.
OPEN_STATES = frozenset({AttemptState.RESERVED, AttemptState.IN_DOUBT})


@dataclass(frozen=True)
class StoredLease:
    """A lease this gateway holds, with the exact tokens it came in."""

    lease_id: str
    cert_no: str
    original_pid: str
    new_pid: str
    slot_lo: int
    slot_hi: int
    exp: int
    gateway_kid: bytes
    lease_token: bytes
    cert_token: bytes

    @property
    def size(self) -> int:
        """How many slots the lease holds."""
        return self.slot_hi - self.slot_lo


@dataclass(frozen=True)
class Attempt:
    """One reservation of one slot for one SN; `at` is when its state last changed."""

    id: int
    lease_id: str
    cert_no: str
    slot: int
    sn: str
    old_pid: str
    new_pid: str
    radio: str
    state: AttemptState
    grant: bytes
    reason: str
    at: int


@dataclass(frozen=True)
class Counts:
    """A certificate's progress on this gateway; lease_size and remaining count unexpired leases only."""

    cert_no: str
    confirmed: int
    in_doubt: int
    refused: int
    lease_size: int
    remaining: int


LEASE_COLUMNS = "lease_id, cert_no, original_pid, new_pid, slot_lo, slot_hi, exp, gateway_kid, lease_token, cert_token"
ATTEMPT_COLUMNS = "id, lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant_token, reason, changed_at"


def lease_from_row(row: Any) -> StoredLease:
    """A StoredLease from a row selected with LEASE_COLUMNS."""
    lease_id, cert_no, original_pid, new_pid, lo, hi, exp, kid, lease_token, cert_token = row
    return StoredLease(
        lease_id=lease_id, cert_no=cert_no, original_pid=original_pid, new_pid=new_pid, slot_lo=lo, slot_hi=hi,
        exp=exp, gateway_kid=bytes(kid), lease_token=bytes(lease_token), cert_token=bytes(cert_token),
    )  # fmt: skip


def attempt_from_row(row: Any) -> Attempt:
    """An Attempt from a row selected with ATTEMPT_COLUMNS."""
    id_, lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant, reason, at = row
    return Attempt(
        id=id_, lease_id=lease_id, cert_no=cert_no, slot=slot, sn=sn, old_pid=old_pid, new_pid=new_pid,
        radio=radio, state=AttemptState(state), grant=bytes(grant), reason=reason, at=at,
    )  # fmt: skip
