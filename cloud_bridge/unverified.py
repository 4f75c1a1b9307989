"""Payloads on a gateway's topics that prove nothing: counted per topic, summarised at most once per interval.

A topic name is not a signature: any client of the broker can publish on `rebadge/v1/gw/X/records`. A payload
that does not verify as X's own words (undecodable, unsigned, signed by another key, records that do not chain to
the head X signed) is therefore never stored as evidence against X. It is counted in memory per (topic kind,
gateway of the topic), and at most one short summary per topic per interval is stored, unattributed, with the
payload's size, hash and a bounded prefix, never the payload. A flood costs a counter, not a row per message.

Each process counts for itself; with several workers a topic gets at most one summary per worker per interval.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge.anomalies import AnomalyEvent, AnomalyKind
from cloud_bridge.anomalies import store as store_anomaly

log = logging.getLogger(__name__)

SUMMARY_INTERVAL_S = 60.0
MAX_TOPICS = 10_000  # (kind, gateway) pairs counted apart; past that, topics share one bucket
MAX_SUMMARIES_PER_INTERVAL = 100  # stored over all topics: names made up by the flood cannot fill the table
EVIDENCE_PREFIX_BYTES = 64
LOG_EVERY = 1000
MAX_REASON_CHARS = 200
OTHER_TOPICS = "*"  # the bucket of topics past MAX_TOPICS
NO_GATEWAY = "-"  # payloads that came without a gateway's topic

RECORDS = "records"
UNEXPECTED = "unexpected"  # a topic the worker does not serve


@dataclass
class _Topic:
    total: int = 0
    unsummarised: int = 0
    summarised_at: float | None = None


class UnverifiedTraffic:
    """Counts of unverified payloads per (topic kind, gateway), and the decision when to store a summary."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        interval_s: float = SUMMARY_INTERVAL_S,
        max_topics: int = MAX_TOPICS,
        max_summaries: int = MAX_SUMMARIES_PER_INTERVAL,
    ) -> None:
        self._clock = clock
        self.interval_s = interval_s
        self._max_topics = max_topics
        self._max_summaries = max_summaries
        self._topics: dict[tuple[str, str], _Topic] = {}
        self._window = (clock(), 0)  # (start, summaries stored since)

    def counts(self) -> dict[tuple[str, str], int]:
        """Unverified payloads seen per (topic kind, gateway of the topic) since start."""
        return {key: topic.total for key, topic in self._topics.items()}

    @property
    def total(self) -> int:
        """Unverified payloads seen since start, on every topic."""
        return sum(topic.total for topic in self._topics.values())

    def count(self, topic_kind: str, gw: str | None) -> None:
        """Count one unverified payload where no summary is kept (a request gets a refusal instead)."""
        self._counted(topic_kind, gw)

    async def reject(
        self,
        conn: AsyncConnection,
        kind: AnomalyKind,
        reason: str,
        payload: bytes,
        *,
        topic_kind: str,
        gw: str | None,
        now: int,
    ) -> tuple[AnomalyEvent, ...]:
        """Count one unverified payload; store and return its topic's summary if one is due."""
        topic = self._counted(topic_kind, gw)
        topic.unsummarised += 1
        if not self._summary_due(topic):
            return ()
        message = _summary(topic_kind, gw, topic.unsummarised, reason, payload)
        topic.unsummarised, topic.summarised_at = 0, self._clock()
        event = await store_anomaly(conn, kind, message, now, payload=payload[:EVIDENCE_PREFIX_BYTES])
        return (event,)

    def _counted(self, topic_kind: str, gw: str | None) -> _Topic:
        topic = self._topic(topic_kind, gw)
        topic.total += 1
        # A flood must not become a log flood either: the first of a topic, then every LOG_EVERY-th.
        if topic.total == 1 or topic.total % LOG_EVERY == 0:
            log.warning("%d unverified payloads on %s topic(s) of gateway %s so far", topic.total, topic_kind, gw)
        return topic

    def _topic(self, topic_kind: str, gw: str | None) -> _Topic:
        key = (topic_kind, gw or NO_GATEWAY)
        topic = self._topics.get(key)
        if topic is None:
            if len(self._topics) >= self._max_topics:
                key = (topic_kind, OTHER_TOPICS)
            topic = self._topics.setdefault(key, _Topic())
        return topic

    def _summary_due(self, topic: _Topic) -> bool:
        now = self._clock()
        if topic.summarised_at is not None and now - topic.summarised_at < self.interval_s:
            return False
        start, stored = self._window
        if now - start >= self.interval_s:
            start, stored = now, 0
        if stored >= self._max_summaries:
            self._window = (start, stored)
            return False
        self._window = (start, stored + 1)
        return True


def _summary(topic_kind: str, gw: str | None, n: int, reason: str, payload: bytes) -> str:
    where = f"the {topic_kind} topic of gateway {gw}" if gw else f"a {topic_kind} topic"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    digest = hashlib.sha256(payload).hexdigest()[:16]
    return (
        f"{n} unverified payload{'s' if n > 1 else ''} on {where} since its last summary, not attributed to the "
        f"gateway (a topic name proves nothing); the latest: {reason} ({len(payload)} bytes, sha256 {digest}...)"
    )
