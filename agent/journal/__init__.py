"""The agent's write-ahead journal: leases, slot reservations and the hash chain the platform verifies."""

from __future__ import annotations

from agent.journal.core import DEFAULT_MIN_FREE_BYTES, RESTARTED_REASON, Journal
from agent.journal.models import Attempt, AttemptState, Counts, StoredLease
from agent.journal.schema import SCHEMA_VERSION

__all__ = [
    "DEFAULT_MIN_FREE_BYTES",
    "RESTARTED_REASON",
    "SCHEMA_VERSION",
    "Attempt",
    "AttemptState",
    "Counts",
    "Journal",
    "StoredLease",
]
