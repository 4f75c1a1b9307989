"""Wi-Fi discovery: a UDP listener keeps who announced itself where, and lets a scan wait for one SN."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from wire.announce import Announce, parse_announce
from wire.errors import MalformedError

log = logging.getLogger(__name__)

# A line sees thousands of goods a day; past this many entries, stale ones are dropped.
MAX_SIGHTINGS = 10_000
# A rogue sender must not flood the log: warn on the first malformed datagram and then every this many.
MALFORMED_LOG_EVERY = 1000


@dataclass(frozen=True)
class Sighting:
    """The last announcement of one device: where to reach it and what PID it claimed."""

    sn: str
    pid: str
    ip: str
    port: int
    version: str
    last_seen: float


class DeviceTable:
    """SN -> last sighting, with waiters for SNs not seen yet."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.malformed = 0
        self.announcements = 0
        self._clock = clock
        self._seen: dict[str, Sighting] = {}
        self._waiters: dict[str, set[asyncio.Future[Sighting]]] = {}
        self.closed = False

    def update(self, ann: Announce) -> None:
        """Record an announcement and wake whoever waits for its SN."""
        self.announcements += 1
        seen = Sighting(ann.sn, ann.pid, ann.ip, ann.port, ann.version, self._clock())
        if ann.sn not in self._seen:
            log.debug("discovery: device %s (pid %s) at %s:%d", ann.sn, ann.pid, ann.ip, ann.port)
        self._seen[ann.sn] = seen
        if len(self._seen) > MAX_SIGHTINGS:
            self._prune()
        for fut in self._waiters.pop(ann.sn, set()):
            if not fut.done():
                fut.set_result(seen)

    def reject(self, data: bytes, source: object, exc: MalformedError) -> None:
        """Count a datagram that is not an announcement."""
        self.malformed += 1
        if self.malformed % MALFORMED_LOG_EVERY == 1:
            log.warning(
                "discovery: ignored malformed announcement #%d (%d bytes) from %s: %s",
                self.malformed,
                len(data),
                source,
                exc,
            )

    def fresh(self, sn: str) -> Sighting | None:
        """The device's sighting if it announced itself within the TTL."""
        seen = self._seen.get(sn)
        if seen is None or self._clock() - seen.last_seen > self.ttl_s:
            return None
        return seen

    def forget(self, sn: str) -> None:
        """Drop a sighting that proved wrong (the device moved or restarted on another port)."""
        self._seen.pop(sn, None)

    def sightings(self) -> list[Sighting]:
        """Every device announced within the TTL."""
        now = self._clock()
        return [s for s in self._seen.values() if now - s.last_seen <= self.ttl_s]

    async def wait_for(self, sn: str) -> Sighting:
        """The device's fresh sighting, waiting for its next announcement if needed (the caller bounds the wait)."""
        seen = self.fresh(sn)
        if seen is not None:
            return seen
        if self.closed:
            raise ConnectionAbortedError("discovery is stopped")
        fut: asyncio.Future[Sighting] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(sn, set())
        waiters.add(fut)
        try:
            return await fut
        finally:
            waiters.discard(fut)
            if not waiters and self._waiters.get(sn) is waiters:
                del self._waiters[sn]

    def close(self) -> None:
        """Fail every waiter: discovery is going down."""
        self.closed = True
        for waiters in self._waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(ConnectionAbortedError("discovery stopped"))
        self._waiters.clear()

    def _prune(self) -> None:
        now = self._clock()
        for sn in [sn for sn, s in self._seen.items() if now - s.last_seen > self.ttl_s]:
            del self._seen[sn]


class DiscoveryProtocol(asyncio.DatagramProtocol):
    """Feeds UDP announcements into a DeviceTable; anything malformed is counted, never raised."""

    def __init__(self, table: DeviceTable) -> None:
        self.table = table
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        """The socket is closed (the port is free again)."""
        if not self.lost.done():
            self.lost.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        """Parse one datagram as an announcement."""
        try:
            ann = parse_announce(data)
        except MalformedError as exc:
            self.table.reject(data, addr, exc)
            return
        self.table.update(ann)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on the socket; the listener carries on."""
        log.warning("discovery: socket error %s", exc)
