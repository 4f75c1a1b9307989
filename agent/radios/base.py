"""The radio contract. A driver finds a device by SN and exchanges device-protocol messages with it.

The line (agent/line.py) only sees `Radio` and `DeviceLink`; a test passes a driver wired to simulated goods.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent.errors import ProtocolError
from wire import device
from wire.errors import MalformedError

INFO_TIMEOUT = 5.0
REBADGE_TIMEOUT = 10.0


class DeviceLink(abc.ABC):
    """An open connection to one device; `info` and `rebadge` are built on `exchange`."""

    _ids = itertools.count(1)

    def __init__(self, sn: str) -> None:
        self.sn = sn

    @abc.abstractmethod
    async def exchange(self, request: bytes, timeout: float) -> bytes:
        """Send one request and return the device's answer.

        Raises DeviceTimeoutError, LinkLostError or ProtocolError; each says through `sent` whether the
        request may have reached the device.
        """

    async def info(self, timeout: float = INFO_TIMEOUT) -> device.InfoResponse:
        """Ask the device who it is."""
        req = device.InfoRequest(id=next(self._ids) % 2**32)
        answer = await self.exchange(req.to_cbor(), timeout)
        try:
            resp = device.decode_info(answer)
        except MalformedError as exc:
            raise ProtocolError(f"device {self.sn} sent a bad info answer: {exc}", sn=self.sn) from exc
        self._check_id(req.id, resp.id, sent=False)
        return resp

    async def rebadge(self, lease: bytes, grant: bytes, timeout: float = REBADGE_TIMEOUT) -> device.RebadgeResponse:
        """Send lease and grant; the device verifies both and answers with a status."""
        req = device.RebadgeRequest(id=next(self._ids) % 2**32, lease=lease, grant=grant)
        answer = await self.exchange(req.to_cbor(), timeout)
        try:
            resp = device.decode_rebadge(answer)
        except MalformedError as exc:
            raise ProtocolError(f"device {self.sn} sent a bad rebadge answer: {exc}", sn=self.sn, sent=True) from exc
        self._check_id(req.id, resp.id, sent=True)
        return resp

    def _check_id(self, sent_id: int, got_id: int, *, sent: bool) -> None:
        if sent_id != got_id:
            raise ProtocolError(
                f"device {self.sn} answered request {got_id} to request {sent_id}", sn=self.sn, sent=sent
            )

    async def close(self) -> None:  # noqa: B027 - drivers with nothing to close need not override
        """Release the connection."""


class Radio(abc.ABC):
    """One radio of the gateway; started once, used by many scans at a time."""

    kind: device.Radio

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Bring the radio up (open sockets, start the coordinator)."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Bring the radio down; cancels nothing of the caller's."""

    @abc.abstractmethod
    async def open(self, sn: str, timeout: float) -> DeviceLink:
        """Find the device with this SN and connect to it; DeviceNotFoundError when none answers in time."""

    @asynccontextmanager
    async def connect(self, sn: str, timeout: float) -> AsyncIterator[DeviceLink]:
        """`open` as a context manager that always closes the link."""
        link = await self.open(sn, timeout)
        try:
            yield link
        finally:
            await link.close()

    async def knows(self, sn: str) -> bool:
        """Whether this radio has seen the device recently (lets the line try the likely radio first)."""
        return False
