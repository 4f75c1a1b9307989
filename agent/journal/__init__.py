"""The agent's write-ahead journal: leases, slot reservations and the hash chain the platform verifies."""

from __future__ import annotations

from agent.journal.core import CLOSED_IN_DOUBT_REASON, DEFAULT_MIN_FREE_BYTES, RESTARTED_REASON, Journal
from agent.journal.models import (
    AckOutcome,
    AckResult,
    Attempt,
    AttemptState,
    Counts,
    Freeze,
    LeaseClose,
    StoredLease,
)
from agent.journal.schema import SCHEMA_VERSION

__all__ = [
    "CLOSED_IN_DOUBT_REASON",
    "DEFAULT_MIN_FREE_BYTES",
    "RESTARTED_REASON",
    "SCHEMA_VERSION",
    "AckOutcome",
    "AckResult",
    "Attempt",
    "AttemptState",
    "Counts",
    "Freeze",
    "Journal",
    "LeaseClose",
    "StoredLease",
]
