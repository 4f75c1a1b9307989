"""When to try again: capped exponential backoff with jitter, starting over after a session that stayed healthy."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

# Doubling stops growing here so a long outage cannot overflow the float.
MAX_DOUBLINGS = 32
# A session that lasted this long was healthy: the next outage starts from the shortest delay again.
HEALTHY_AFTER_S = 30.0


class ReconnectPolicy:
    """Delays in [cap/2, cap], cap doubling from `min_s` per failure up to `max_s`, so clients do not return in step.

    `connected()` marks a session up; the next `next_delay()` starts from `min_s` again only when that session
    lasted `healthy_after_s`, so a broker that accepts and drops at once is not hammered at the shortest delay.
    """

    def __init__(
        self, min_s: float, max_s: float, *, healthy_after_s: float = HEALTHY_AFTER_S,
        rng: Callable[[], float] = random.random, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if not 0 < min_s <= max_s:
            raise ValueError(f"reconnect delays need 0 < min_s ({min_s}) <= max_s ({max_s})")
        self.min_s = min_s
        self.max_s = max_s
        self.healthy_after_s = healthy_after_s
        self._rng = rng
        self._clock = clock
        self._failures = 0
        self._up_since: float | None = None

    @property
    def reset_delay_max_s(self) -> float:
        """The longest first delay after a reset (a healthy session, or a fresh policy)."""
        return self.min_s

    def connected(self) -> None:
        """A session is up; how long it lasts decides whether the next outage starts over."""
        self._up_since = self._clock()

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        if self._up_since is not None and self._clock() - self._up_since >= self.healthy_after_s:
            self._failures = 0
        self._up_since = None
        cap = min(self.max_s, self.min_s * 2.0 ** min(self._failures, MAX_DOUBLINGS))
        self._failures += 1
        return cap / 2 + self._rng() * cap / 2

    def reset(self) -> None:
        """Start from `min_s` again now (an answer that worked, for callers without sessions)."""
        self._failures = 0
        self._up_since = None
