"""One BLE connection to one device: request fragments written to our write characteristic, answer fragments
notified on our notify characteristic and reassembled, every wait bounded.

`sent` on an error says whether the device may hold the whole request: it becomes True when the write of the
request's last fragment begins. A device acts only on a whole message, so a link lost earlier leaves nothing
applied, and the line may release the slot.
"""

from __future__ import annotations

import asyncio
import logging

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakError

from agent.errors import DeviceTimeoutError, LinkLostError, ProtocolError, RadioError
from agent.radios.base import DeviceLink
from wire import fragments
from wire.errors import FrameError

log = logging.getLogger(__name__)

# What bleak and its D-Bus transport raise when a GATT operation or the link fails.
BLEAK_IO_ERRORS = (BleakError, EOFError, OSError)
# Bound on subscribing to the notify characteristic.
SUBSCRIBE_TIMEOUT_S = 5.0
# Bound on a disconnect; a link that does not close in time is left to the stack.
DISCONNECT_TIMEOUT_S = 5.0
# Notifications held before the link reads them; more than a whole answer with every fragment repeated.
NOTIFY_QUEUE_MAX = 4 * fragments.MAX_FRAGMENTS


class Inbox:
    """Where bleak's callbacks leave notifications and the news of a lost link (None), read by one exchange."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=NOTIFY_QUEUE_MAX)
        self.lost = False
        self.overflow = 0

    def on_notify(self, _char: BleakGATTCharacteristic, data: bytearray) -> None:
        """bleak's notification callback."""
        if self.queue.full():
            self.overflow += 1
            return
        self.queue.put_nowait(bytes(data))

    def on_disconnect(self, _client: BleakClient) -> None:
        """bleak's disconnected callback: the link dropped without our asking."""
        self.lost = True
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    def drain(self) -> None:
        """Drop what earlier exchanges left unread; the news of a lost link stays in `lost`."""
        while not self.queue.empty():
            self.queue.get_nowait()


class BleLink(DeviceLink):
    """An open GATT connection speaking the device protocol in fragments."""

    def __init__(self, sn: str, client: BleakClient, inbox: Inbox, *, fragment_timeout_s: float) -> None:
        super().__init__(sn)
        self.client = client
        self.address = client.address
        self.fragment_timeout_s = fragment_timeout_s
        self.stale = 0
        self._inbox = inbox
        self._lock = asyncio.Lock()
        self._msg = 0
        self._closed = False
        self._write_char: BleakGATTCharacteristic | None = None
        self.payload = fragments.MIN_PAYLOAD

    async def start(self) -> None:
        """Find our characteristics, size fragments to the link, and subscribe to answers."""
        try:
            services = self.client.services
        except BleakError as exc:
            raise ProtocolError(f"BLE {self.address}: services unknown after connecting ({exc})", sn=self.sn) from exc
        write = services.get_characteristic(fragments.WRITE_CHAR_UUID)
        notify = services.get_characteristic(fragments.NOTIFY_CHAR_UUID)
        if write is None or notify is None:
            raise ProtocolError(f"BLE {self.address} lacks the rebadge GATT service {fragments.SERVICE_UUID}")
        self._write_char = write
        # The write characteristic reports the negotiated MTU - 3 (bleak's mtu_size is a fixed 23 on BlueZ).
        self.payload = fragments.payload_for_mtu(write.max_write_without_response_size + fragments.ATT_HEADER_BYTES)
        try:
            async with asyncio.timeout(SUBSCRIBE_TIMEOUT_S):
                await self.client.start_notify(notify, self._inbox.on_notify)
        except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
            raise LinkLostError(f"BLE {self.address}: cannot subscribe to answers: {exc!r}", sn=self.sn) from exc
        log.debug("BLE %s at %s: %d-byte fragments", self.sn, self.address, self.payload)

    async def exchange(self, request: bytes, timeout: float) -> bytes:
        """Send one request in fragments and return the reassembled answer."""
        async with self._lock:
            return await self._exchange(request, timeout)

    async def _exchange(self, request: bytes, timeout: float) -> bytes:
        if self._closed or self._inbox.lost or self._write_char is None:
            raise LinkLostError(f"BLE link to {self.sn} is down", sn=self.sn)
        self._msg = (self._msg + 1) % 256
        msg = self._msg
        try:
            frags = fragments.split(request, msg, self.payload)
        except ValueError as exc:
            raise ProtocolError(f"request for BLE device {self.sn} cannot be sent: {exc}", sn=self.sn) from exc
        self._inbox.drain()
        sent = False
        try:
            async with asyncio.timeout(timeout):
                for index, raw in enumerate(frags):
                    sent = index == len(frags) - 1
                    await self._write(self._write_char, raw, sent=sent)
                return await self._answer(msg)
        except RadioError:
            raise
        except TimeoutError as exc:
            if self._inbox.lost:
                raise LinkLostError(f"BLE link to {self.sn} lost", sn=self.sn, sent=sent) from exc
            what = "answer" if sent else "accept the request"
            raise DeviceTimeoutError(
                f"BLE device {self.sn} did not {what} within {timeout:g} s", sn=self.sn, sent=sent
            ) from exc

    async def _write(self, char: BleakGATTCharacteristic, raw: bytes, *, sent: bool) -> None:
        try:
            # With response: each fragment is acknowledged, so a lost link shows at the fragment it cut.
            await self.client.write_gatt_char(char, raw, response=True)
        except BLEAK_IO_ERRORS as exc:
            if self._inbox.lost or not self.client.is_connected:
                raise LinkLostError(f"BLE link to {self.sn} lost while sending: {exc}", sn=self.sn, sent=sent) from exc
            raise RadioError(f"BLE write to {self.sn} failed: {exc}", sn=self.sn, sent=sent) from exc

    async def _answer(self, msg: int) -> bytes:
        reassembler = fragments.Reassembler()
        while True:
            raw = await self._next(started=reassembler.in_progress is not None)
            try:
                if fragments.parse(raw).msg != msg:
                    # Left over from an earlier request that timed out: not ours.
                    self.stale += 1
                    continue
                done = reassembler.feed(raw)
            except FrameError as exc:
                raise ProtocolError(f"BLE device {self.sn} sent a broken answer: {exc}", sn=self.sn, sent=True) from exc
            if done is not None:
                return done[1]

    async def _next(self, *, started: bool) -> bytes:
        """The next notification; once an answer has begun, each fragment must follow within the fragment timeout."""
        try:
            if started:
                async with asyncio.timeout(self.fragment_timeout_s):
                    raw = await self._inbox.queue.get()
            else:
                raw = await self._inbox.queue.get()
        except TimeoutError as exc:
            raise DeviceTimeoutError(
                f"BLE device {self.sn}: answer stalled, no fragment for {self.fragment_timeout_s:g} s",
                sn=self.sn,
                sent=True,
            ) from exc
        if raw is None:
            raise LinkLostError(f"BLE link to {self.sn} lost while waiting for the answer", sn=self.sn, sent=True)
        return raw

    async def close(self) -> None:
        """Disconnect; a failure to do so is logged, never raised."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await self.client.disconnect()
        except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
            log.warning("BLE %s at %s: disconnect failed: %r", self.sn, self.address, exc)
