"""The simulated air: which BLE goods are in range, what adapters the gateway has, and what radio time costs.

Every delay the air imposes goes through `Air.elapse` (or an advertisement's delivery) and is added to
`radio_time_s`, so a benchmark can compare a unit's wall time with the time the radio itself took.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bleak.exc import BleakError

if TYPE_CHECKING:
    from simulator.ble.peripheral import Peripheral

DEFAULT_ADAPTER = "hci0"


@dataclass(frozen=True)
class Latency:
    """Delays of the simulated air, in seconds; all zero by default so tests run fast."""

    connect_s: float = 0.0
    fragment_min_s: float = 0.0
    fragment_max_s: float = 0.0
    advertise_s: float = 0.0

    @classmethod
    def realistic(cls) -> Latency:
        """About 1 s to connect, one fragment per 7.5-30 ms connection interval, 100 ms until first heard."""
        return cls(connect_s=1.0, fragment_min_s=0.0075, fragment_max_s=0.030, advertise_s=0.1)


class Listener(Protocol):
    """A running scanner, as the air sees it."""

    adapter: str

    def hear(self, peripheral: Peripheral) -> None:
        """Take one advertisement of `peripheral`."""


class Air:
    """The goods in range of the gateway's adapters, and the clock of their radio."""

    def __init__(
        self, latency: Latency | None = None, *, adapters: Iterable[str] = (DEFAULT_ADAPTER,), seed: int = 0
    ) -> None:
        self.latency = latency or Latency()
        self.adapters = frozenset(adapters)
        self.radio_time_s = 0.0
        self.connect_attempts = 0
        self._rng = random.Random(seed)
        self._peripherals: dict[str, Peripheral] = {}
        self._listeners: dict[Listener, set[asyncio.TimerHandle]] = {}
        self._heard: dict[Listener, set[str]] = {}
        self._addresses = itertools.count(1)

    def new_address(self) -> str:
        """A fresh public device address."""
        n = next(self._addresses)
        return f"C0:DE:00:00:{n >> 8 & 0xFF:02X}:{n & 0xFF:02X}"

    def add(self, peripheral: Peripheral) -> None:
        """Bring a peripheral into range; running scanners hear it after `advertise_s`."""
        self._peripherals[peripheral.address] = peripheral
        self.advertise(peripheral)

    def remove(self, address: str) -> None:
        """Take a peripheral out of range; a connection to it is lost."""
        peripheral = self._peripherals.pop(address, None)
        if peripheral is not None:
            peripheral.drop_link()

    def peripheral(self, address: str) -> Peripheral | None:
        """The peripheral at `address`, if in range."""
        return self._peripherals.get(address)

    @property
    def peripherals(self) -> list[Peripheral]:
        """Every peripheral in range."""
        return list(self._peripherals.values())

    def check_adapter(self, adapter: str) -> None:
        """Raise as BlueZ does when the gateway has no such adapter."""
        if adapter not in self.adapters:
            have = ", ".join(sorted(self.adapters)) or "none"
            raise BleakError(f"Bluetooth adapter {adapter} not found (this gateway has: {have})")

    async def elapse(self, seconds: float) -> None:
        """Spend `seconds` of radio time."""
        if seconds > 0:
            self.radio_time_s += seconds
            await asyncio.sleep(seconds)

    def fragment_time(self) -> float:
        """The air time of one fragment: one connection interval."""
        lo, hi = self.latency.fragment_min_s, self.latency.fragment_max_s
        return self._rng.uniform(lo, hi) if hi > 0 else 0.0

    def listen(self, listener: Listener) -> None:
        """A scanner starts: it hears everything in range after `advertise_s`."""
        self._listeners[listener] = set()
        self._heard[listener] = set()
        for peripheral in self._peripherals.values():
            self._schedule(listener, peripheral)

    def unlisten(self, listener: Listener) -> None:
        """A scanner stops: advertisements on their way to it are dropped."""
        for handle in self._listeners.pop(listener, set()):
            handle.cancel()
        self._heard.pop(listener, None)

    def advertise(self, peripheral: Peripheral) -> None:
        """`peripheral` advertises (again, e.g. with a new PID) to every running scanner."""
        for listener in self._listeners:
            self._schedule(listener, peripheral)

    def _schedule(self, listener: Listener, peripheral: Peripheral) -> None:
        if listener.adapter not in self.adapters:
            return
        delay = self.latency.advertise_s
        handles = self._listeners[listener]
        handle: asyncio.TimerHandle | None = None

        def deliver() -> None:
            handles.discard(handle)
            if self._peripherals.get(peripheral.address) is peripheral and listener in self._listeners:
                heard = self._heard[listener]
                if peripheral.address not in heard:
                    # Only the first hearing is waited for; a later advertisement (a new PID) is not.
                    heard.add(peripheral.address)
                    self.radio_time_s += delay
                listener.hear(peripheral)

        handle = asyncio.get_running_loop().call_later(delay, deliver)
        handles.add(handle)
