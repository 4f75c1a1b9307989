"""What dashboards read, kept while the broker is away: scan events in a bounded queue, and the latest retained
message per topic (progress, health, Home Assistant discovery)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from agent.uplink.records import wait_event

log = logging.getLogger(__name__)

PublishEvent = Callable[[bytes], Awaitable[None]]
PublishRetained = Callable[[str, bytes], Awaitable[None]]
# A warning per dropped event would flood the log during a long outage; say it at the first drop and every Nth.
DROP_LOG_EVERY = 100


class Outbox:
    """Events queue up to `max_events` (oldest dropped, counted); retained topics keep only their latest payload."""

    def __init__(self, max_events: int, idle_check_s: float) -> None:
        self._max_events = max_events
        self._idle_check = idle_check_s
        self._events: deque[tuple[int, bytes]] = deque()
        self._numbered = 0
        self._retained: dict[str, bytes] = {}
        self._dirty: dict[str, None] = {}  # an ordered set: topics whose latest payload is not out yet
        self._wake = asyncio.Event()
        self.dropped_events = 0

    @property
    def queued_events(self) -> int:
        """Events waiting for the broker."""
        return len(self._events)

    def add_event(self, payload: bytes) -> None:
        """Queue one event; past the bound the oldest goes, with a counted warning."""
        if len(self._events) >= self._max_events:
            self._events.popleft()
            self.dropped_events += 1
            if self.dropped_events % DROP_LOG_EVERY == 1:
                log.warning(
                    "uplink: broker away and %d scan events queued; dropped the oldest (%d dropped so far)",
                    self._max_events, self.dropped_events,
                )  # fmt: skip
        self._numbered += 1
        self._events.append((self._numbered, payload))
        self._wake.set()

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Make `payload` the latest for `topic`; an older one not yet out is replaced, never sent."""
        self._retained[topic] = payload
        self._dirty[topic] = None
        self._wake.set()

    def resend_retained(self, prefix: str) -> int:
        """Send the kept payloads of topics under `prefix` again; how many there are."""
        again = [topic for topic in self._retained if topic.startswith(prefix)]
        self._dirty.update(dict.fromkeys(again))
        self._wake.set()
        return len(again)

    def has_retained(self, topic: str) -> bool:
        """Whether a payload for `topic` is kept."""
        return topic in self._retained

    async def run(self, publish_event: PublishEvent, publish_retained: PublishRetained) -> None:
        """Flush over one connection, then keep flushing what comes; every retained topic is sent again first,
        since a broker without persistence forgets them."""
        self._dirty = dict.fromkeys(self._retained)
        while True:
            self._wake.clear()
            await self._flush_events(publish_event)
            await self._flush_retained(publish_retained)
            await wait_event(self._wake, self._idle_check)

    async def _flush_events(self, publish_event: PublishEvent) -> None:
        while self._events:
            number, payload = self._events[0]
            await publish_event(payload)
            # The queue may have dropped this event while it was being sent; only remove it if it is still first.
            if self._events and self._events[0][0] == number:
                self._events.popleft()

    async def _flush_retained(self, publish_retained: PublishRetained) -> None:
        while self._dirty:
            topic = next(iter(self._dirty))
            payload = self._retained[topic]
            await publish_retained(topic, payload)
            if self._retained[topic] is payload:
                self._dirty.pop(topic, None)
