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
    closed_seq: int | None = None  # seq of this gateway's `closed` record for the lease; None while open
    closed_at: int | None = None
    closed_reason: str = ""

    @property
    def size(self) -> int:
        """How many slots the lease holds."""
        return self.slot_hi - self.slot_lo

    @property
    def closed(self) -> bool:
        """Whether this gateway closed the lease (it spends nothing more on it)."""
        return self.closed_seq is not None


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
class LeaseClose:
    """A lease this gateway closed: the seq of its `closed` record, and the attempts left in doubt for good."""

    lease: StoredLease
    seq: int
    at: int
    reason: str
    in_doubt: tuple[Attempt, ...]
    new: bool  # False when the lease was closed already (nothing written this time)


FROZEN_MESSAGE = "this gateway's journal was restored from a backup; the platform has frozen it"
FROZEN_ADVICE = (
    "ask a platform admin to reinstate the gateway; until an ack newer than the one that froze it matches this "
    "journal, nothing is rebadged and nothing new is written"
)


@dataclass(frozen=True)
class Freeze:
    """A signed ack showed that the platform holds another chain than ours: the gateway writes nothing new."""

    ack_seq: int
    ack_head: bytes
    ack_at: int  # the `at` of the ack that froze it; only a later ack that matches our chain lifts it
    since: int  # our clock when it froze
    reason: str

    @property
    def message(self) -> str:
        """What a person is told: what happened and what to do."""
        return f"{FROZEN_MESSAGE}; {FROZEN_ADVICE}"

    def as_dict(self) -> dict[str, object]:
        """For health and status (JSON)."""
        return {
            "ack_seq": self.ack_seq, "ack_head": self.ack_head.hex(), "ack_at": self.ack_at, "since": self.since,
            "reason": self.reason, "message": self.message,
        }  # fmt: skip


class AckOutcome(StrEnum):
    """What one verified ack did to the journal."""

    RETIRED = "retired"  # it matched our chain and retired records
    UNCHANGED = "unchanged"  # it matched (or named a seq retired already): nothing to do
    REPLAYED = "replayed"  # older than the newest ack applied: ignored
    FROZE = "froze"  # it names a seq past our head or another digest: the gateway is frozen now
    STILL_FROZEN = "still_frozen"  # frozen, and this ack does not lift it
    LIFTED = "lifted"  # a later ack matches our chain again: the freeze is lifted (and records retired)


@dataclass(frozen=True)
class AckResult:
    """The outcome of one ack, and how many records it retired."""

    outcome: AckOutcome
    retired: int = 0


@dataclass(frozen=True)
class Counts:
    """A certificate's progress on this gateway; lease_size and remaining count usable leases only (not expired,
    not closed, not expiring within the clock margin)."""

    cert_no: str
    confirmed: int
    in_doubt: int
    refused: int
    lease_size: int
    remaining: int


LEASE_COLUMNS = "lease_id, cert_no, original_pid, new_pid, slot_lo, slot_hi, exp, gateway_kid, lease_token, cert_token"
LEASE_READ_COLUMNS = f"{LEASE_COLUMNS}, closed_seq, closed_at, closed_reason"
ATTEMPT_COLUMNS = "id, lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant_token, reason, changed_at"


def lease_from_row(row: Any) -> StoredLease:
    """A StoredLease from a row selected with LEASE_READ_COLUMNS."""
    lease_id, cert_no, original_pid, new_pid, lo, hi, exp, kid, lease_token, cert_token, closed_seq, closed_at, why = (
        row
    )
    return StoredLease(
        lease_id=lease_id, cert_no=cert_no, original_pid=original_pid, new_pid=new_pid, slot_lo=lo, slot_hi=hi,
        exp=exp, gateway_kid=bytes(kid), lease_token=bytes(lease_token), cert_token=bytes(cert_token),
        closed_seq=closed_seq, closed_at=closed_at, closed_reason=why or "",
    )  # fmt: skip


def freeze_from_row(row: Any) -> Freeze | None:
    """The freeze from the acks row (last_at, frozen_ack_at, frozen_seq, frozen_head, frozen_since, frozen_reason)."""
    _, ack_at, seq, head, since, reason = row
    if ack_at is None:
        return None
    return Freeze(ack_seq=seq, ack_head=bytes(head), ack_at=ack_at, since=since, reason=reason or "")


def attempt_from_row(row: Any) -> Attempt:
    """An Attempt from a row selected with ATTEMPT_COLUMNS."""
    id_, lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant, reason, at = row
    return Attempt(
        id=id_, lease_id=lease_id, cert_no=cert_no, slot=slot, sn=sn, old_pid=old_pid, new_pid=new_pid,
        radio=radio, state=AttemptState(state), grant=bytes(grant), reason=reason, at=at,
    )  # fmt: skip
