"""A simulated BLE good: the reference firmware behind our GATT service, with link faults of its own.

The peripheral reassembles request fragments written to the write characteristic, hands whole requests to
`simulator.firmware.Firmware`, and notifies the answer's fragments with the request's message number.
Link faults (lost link, dropped or repeated fragments, slow notifications, failed connects) hit the messages
`BleFaults.target` names, `times` times.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from simulator.ble.air import Air
from simulator.firmware import Firmware
from wire import fragments
from wire.errors import FrameError

log = logging.getLogger(__name__)

# The most a central asks for (BlueZ's default); the link takes the smaller of both sides.
CENTRAL_MAX_ATT_MTU = 517
# A request announcing more bytes than this is a rebadge (lease + grant); `info` requests are about 12 bytes.
# The peripheral must classify a request at its first fragment to hit it with a request fault.
INFO_REQUEST_MAX_BYTES = 32
ADVERTISED_RSSI = -60


class BleFault(StrEnum):
    """Misbehaviour of a simulated BLE link."""

    NONE = "none"
    CONNECT_FAILS = "connect_fails"  # the first `times` connection attempts fail
    LINK_LOSS_IN_REQUEST = "link_loss_in_request"  # the link drops as request fragment `at_fragment` arrives
    LINK_LOSS_IN_ANSWER = "link_loss_in_answer"  # the link drops before answer fragment `at_fragment`
    DROP_REQUEST_FRAGMENT = "drop_request_fragment"  # request fragment `at_fragment` is lost in the device
    DROP_ANSWER_FRAGMENT = "drop_answer_fragment"  # answer fragment `at_fragment` is never notified
    DUPLICATE_FRAGMENTS = "duplicate_fragments"  # every fragment, both ways, arrives twice
    SLOW_NOTIFY = "slow_notify"  # every answer fragment comes `slow_s` late


@dataclass
class BleFaults:
    """Which link fault a peripheral shows: on which messages, after sparing `spare` of them, `times` times
    (None = always)."""

    kind: BleFault = BleFault.NONE
    target: Literal["rebadge", "info", "any"] = "rebadge"
    times: int | None = 1
    spare: int = 0
    at_fragment: int = 1
    slow_s: float = 0.5
    seen: int = field(default=0, init=False)
    hits: int = field(default=0, init=False)

    def take(self, kind: BleFault, *, rebadge: bool | None = None) -> bool:
        """Whether fault `kind` hits now (for a rebadge or an info message), counting it down."""
        if self.kind is not kind or (self.times is not None and self.hits >= self.times):
            return False
        if rebadge is not None and self.target != "any" and rebadge != (self.target == "rebadge"):
            return False
        self.seen += 1
        if self.seen <= self.spare:
            return False
        self.hits += 1
        return True


class Central(Protocol):
    """The client side of a connection, as the peripheral sees it."""

    def notified(self, data: bytes) -> None:
        """One notification arrived."""

    def link_lost(self) -> None:
        """The peripheral or the air dropped the link."""


class Peripheral:
    """One advertising BLE good running the reference firmware."""

    def __init__(
        self, air: Air, firmware: Firmware, *, address: str | None = None, att_mtu: int = fragments.DEFAULT_ATT_MTU,
        faults: BleFaults | None = None,
    ) -> None:  # fmt: skip
        self.air = air
        self.firmware = firmware
        self.address = address or air.new_address()
        self.att_mtu = att_mtu
        self.faults = faults or BleFaults()
        self.name = f"RB-{self.address[-5:].replace(':', '')}"
        self.connection: Connection | None = None
        self.connects = 0
        self._advertised_pid = firmware.state.pid

    @property
    def sn(self) -> str:
        """The serial number the firmware holds (not advertised)."""
        return self.firmware.state.sn

    def advertisement(self) -> AdvertisementData:
        """What a scanner receives: our service UUID and the PID in service data, as bleak reports them."""
        self._advertised_pid = self.firmware.state.pid
        return AdvertisementData(
            local_name=self.name,
            manufacturer_data={},
            service_data={fragments.SERVICE_UUID: fragments.service_data(self._advertised_pid)},
            service_uuids=[fragments.SERVICE_UUID],
            tx_power=None,
            rssi=ADVERTISED_RSSI,
            platform_data=(),
        )

    async def accept(self, central: Central) -> Connection:
        """A central connects: takes the air's connect time; fails as the faults say."""
        self.air.connect_attempts += 1
        await self.air.elapse(self.air.latency.connect_s)
        if self.air.peripheral(self.address) is not self:
            raise BleakError(f"simulated: device {self.address} was not found (out of range)")
        if self.faults.take(BleFault.CONNECT_FAILS):
            raise BleakError(f"simulated: connection to {self.address} failed to be established")
        if self.connection is not None and self.connection.open:
            raise BleakError(f"simulated: {self.address} is connected to another central")
        self.connects += 1
        self.connection = Connection(self, central, min(self.att_mtu, CENTRAL_MAX_ATT_MTU))
        return self.connection

    def drop_link(self) -> None:
        """Lose the current connection, if any (out of range, or a fault)."""
        if self.connection is not None:
            self.connection.lose()

    def pid_changed(self) -> None:
        """Advertise again when the firmware took a new PID."""
        if self.firmware.state.pid != self._advertised_pid:
            self.air.advertise(self)


class Connection:
    """The peripheral's side of one connection: reassembles requests, answers them in a worker task."""

    def __init__(self, peripheral: Peripheral, central: Central, att_mtu: int) -> None:
        self.peripheral = peripheral
        self.central = central
        self.att_mtu = att_mtu
        self.payload = fragments.payload_for_mtu(att_mtu)
        self.open = True
        self.subscribed = False
        self._reassembler = fragments.Reassembler()
        self._plan_msg: int | None = None
        self._fault = BleFault.NONE
        self._fault_at = 0
        self._requests: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self._worker = asyncio.create_task(self._serve(), name=f"ble-sim-{peripheral.address}")

    async def write(self, raw: bytes) -> None:
        """One fragment written by the central: one connection interval of air time, then the device has it."""
        await self.peripheral.air.elapse(self.peripheral.air.fragment_time())
        if not self.open:
            raise BleakError("simulated: disconnected while writing")
        self._receive(raw)
        if not self.open:
            raise BleakError("simulated: link lost while writing")

    def _receive(self, raw: bytes) -> None:
        try:
            frag = fragments.parse(raw)
        except FrameError as exc:
            log.info("ble device %s: bad fragment: %s", self.peripheral.sn, exc)
            return
        if frag.total is not None and frag.msg != self._plan_msg:
            self._plan(frag, frag.total)
        fault = self._fault if frag.msg == self._plan_msg else BleFault.NONE
        if fault is BleFault.LINK_LOSS_IN_REQUEST and frag.index == self._fault_at:
            log.info("ble device %s: link lost at request fragment %d (fault)", self.peripheral.sn, frag.index)
            self.lose()
            return
        if fault is BleFault.DROP_REQUEST_FRAGMENT and frag.index == self._fault_at:
            return
        for _ in range(2 if fault is BleFault.DUPLICATE_FRAGMENTS else 1):
            self._feed(raw)

    def _plan(self, first: fragments.Fragment, total: int) -> None:
        """Choose the fault of a new request at its first fragment, and where in the request it strikes."""
        faults = self.peripheral.faults
        rebadge = total > INFO_REQUEST_MAX_BYTES
        self._plan_msg = first.msg
        self._fault = faults.kind if faults.take(faults.kind, rebadge=rebadge) else BleFault.NONE
        payload = fragments.FIRST_HEADER.size + len(first.data)
        count = 1 if len(first.data) >= total else fragments.fragment_count(total, payload)
        self._fault_at = min(faults.at_fragment, count - 1)

    def _feed(self, raw: bytes) -> None:
        try:
            done = self._reassembler.feed(raw)
        except FrameError as exc:
            log.info("ble device %s: request dropped: %s", self.peripheral.sn, exc)
            return
        if done is not None:
            self._requests.put_nowait(done)

    async def _serve(self) -> None:
        while self.open:
            msg, request = await self._requests.get()
            fault = self._fault if msg == self._plan_msg else BleFault.NONE
            answer = await self.peripheral.firmware.handle(request)
            self.peripheral.pid_changed()
            if answer is not None:
                await self._notify(msg, answer, fault)

    async def _notify(self, msg: int, answer: bytes, fault: BleFault) -> None:
        frags = fragments.split(answer, msg, self.payload)
        at = min(self.peripheral.faults.at_fragment, len(frags) - 1)
        air = self.peripheral.air
        for index, raw in enumerate(frags):
            if fault is BleFault.LINK_LOSS_IN_ANSWER and index == at:
                log.info("ble device %s: link lost at answer fragment %d (fault)", self.peripheral.sn, index)
                self.lose()
                return
            slow = self.peripheral.faults.slow_s if fault is BleFault.SLOW_NOTIFY else 0.0
            await air.elapse(air.fragment_time() + slow)
            if not self.open:
                return
            if fault is BleFault.DROP_ANSWER_FRAGMENT and index == at:
                continue
            for _ in range(2 if fault is BleFault.DUPLICATE_FRAGMENTS else 1):
                if self.subscribed:
                    self.central.notified(raw)

    def lose(self) -> None:
        """The link drops without the central asking: the central hears of it on the next loop turn."""
        if not self.open:
            return
        self._close()
        asyncio.get_running_loop().call_soon(self.central.link_lost)

    async def close(self) -> None:
        """The central disconnects."""
        self._close()
        if self._worker is not asyncio.current_task():
            # wait() neither raises the worker's cancellation nor swallows our own.
            await asyncio.wait({self._worker})

    def _close(self) -> None:
        self.open = False
        self.subscribed = False
        if self._worker is not asyncio.current_task():
            self._worker.cancel()
