"""BLE discovery: who advertises our service where, with what PID, and which SN each address turned out to have.

A BLE good does not advertise its SN; the radio learns it by asking `info`, and keeps address <-> SN here so
the next scan of that SN connects straight to the right device.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from wire import fragments
from wire.errors import MalformedError

log = logging.getLogger(__name__)

# A line sees thousands of goods a day; past this many entries, the longest unheard are dropped.
MAX_SIGHTINGS = 10_000
# `knows(sn)` holds while the SN's device was heard this recently.
KNOWN_TTL_S = 300.0
# A rogue advertiser must not flood the log: warn on the first malformed advertisement and then every this many.
MALFORMED_LOG_EVERY = 1000


@dataclass
class Sighting:
    """The last advertisement of one address: how to connect to it and what PID it claimed."""

    device: BLEDevice
    pid: str
    rssi: int
    first_seen: float
    last_seen: float

    @property
    def address(self) -> str:
        """The device's Bluetooth address."""
        return self.device.address


class Sightings:
    """Address -> last sighting, address <-> SN once learnt, and an event for whoever waits on news."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_address: dict[str, Sighting] = {}
        self._sn_of: dict[str, str] = {}
        self._address_of: dict[str, str] = {}
        self.malformed = 0
        self.changed = asyncio.Event()

    def heard(self, device: BLEDevice, adv: AdvertisementData) -> None:
        """bleak's detection callback: record one advertisement of our service."""
        data = adv.service_data.get(fragments.SERVICE_UUID)
        if data is None:
            return
        try:
            pid = fragments.pid_of_service_data(data)
        except MalformedError as exc:
            if self.malformed % MALFORMED_LOG_EVERY == 0:
                log.warning("BLE %s advertises bad service data (%d so far): %s", device.address, self.malformed, exc)
            self.malformed += 1
            return
        now = self._clock()
        old = self._by_address.pop(device.address, None)
        first = old.first_seen if old is not None else now
        self._by_address[device.address] = Sighting(device, pid, adv.rssi, first, now)
        if len(self._by_address) > MAX_SIGHTINGS:
            # Entries are re-inserted when heard, so the first is the longest unheard.
            self._forget(next(iter(self._by_address)))
        if old is None or old.pid != pid:
            # Only news wakes a search: a device repeating its advertisement changes no candidate.
            log.debug("BLE %s advertises PID %s (SN %s)", device.address, pid, self._sn_of.get(device.address, "?"))
            self.notify()

    def learn(self, address: str, sn: str) -> None:
        """The device at `address` said it is `sn`."""
        old_address = self._address_of.pop(sn, None)
        if old_address is not None and old_address != address:
            self._sn_of.pop(old_address, None)
        old_sn = self._sn_of.get(address)
        if old_sn is not None and old_sn != sn:
            self._address_of.pop(old_sn, None)
        self._sn_of[address] = sn
        self._address_of[sn] = address

    def sn_of(self, address: str) -> str | None:
        """The SN learnt for `address`, if any."""
        return self._sn_of.get(address)

    def knows(self, sn: str) -> bool:
        """Whether the device of `sn` is known and was heard recently."""
        address = self._address_of.get(sn)
        seen = self._by_address.get(address) if address else None
        return seen is not None and self._clock() - seen.last_seen <= KNOWN_TTL_S

    def candidates(self, sn: str, skip: Collection[str] = ()) -> list[Sighting]:
        """Addresses that may be `sn`: its known address first, then those of unknown SN, newest first."""
        mine = [s for s in self._by_address.values() if self._sn_of.get(s.address) == sn]
        unknown = [s for s in self._by_address.values() if s.address not in self._sn_of]
        unknown.sort(key=lambda s: (s.first_seen, s.last_seen), reverse=True)
        return [s for s in mine + unknown if s.address not in skip]

    def get(self, address: str) -> Sighting | None:
        """The last sighting of `address`."""
        return self._by_address.get(address)

    def all(self) -> list[Sighting]:
        """Every sighting, newest first."""
        return sorted(self._by_address.values(), key=lambda s: s.last_seen, reverse=True)

    def notify(self) -> None:
        """Wake whoever waits on `changed`; later waiters take the fresh event."""
        self.changed.set()
        self.changed = asyncio.Event()

    def _forget(self, address: str) -> None:
        self._by_address.pop(address, None)
        sn = self._sn_of.pop(address, None)
        if sn is not None:
            self._address_of.pop(sn, None)
