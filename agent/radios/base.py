"""The radio contract. A driver finds a device by SN and exchanges device-protocol messages with it.

The line (agent/line.py) only sees `Radio` and `DeviceLink`; a test passes a driver wired to simulated goods.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum

from agent.errors import ConfigError, ProtocolError, RadioStartError
from mqtt_link import ReconnectPolicy
from wire import device
from wire.errors import MalformedError

log = logging.getLogger(__name__)

INFO_TIMEOUT = 5.0
REBADGE_TIMEOUT = 10.0
# A radio whose start failed for a reason that may pass (a stick unplugged, a port still held) is started again
# after a delay that doubles from the first to the second, jittered.
START_RETRY_MIN_S = 2.0
START_RETRY_MAX_S = 60.0


class RadioState(StrEnum):
    """Where a radio is in its life cycle (shown in the agent's health)."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    RETRYING = "retrying"  # its start failed for a reason that may pass; it is started again after a backoff
    FAILED = "failed"  # its start failed for good (configuration, permissions): fix the cause and restart the agent


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
    """One radio of the gateway; started once, used by many scans at a time.

    The life cycle lives here (as zigpy's `ControllerApplication.startup()`): `start()` checks the state, runs the
    driver's `_start()`, shuts the driver down again when that fails and sorts the failure into transient or
    permanent (`start_error`); `keep_started()` retries transient failures with backoff. Drivers implement
    `_start()` and `_stop()` only.
    """

    kind: device.Radio
    state: RadioState = RadioState.STOPPED
    last_error: str = ""  # why the last start failed; empty once it runs

    @property
    def available(self) -> bool:
        """Whether scans may ask this radio: not while it starts or after its start failed (a radio that was
        never started, as in tests of the line, starts on its own where its driver can)."""
        return self.state not in (RadioState.STARTING, RadioState.RETRYING, RadioState.FAILED)

    def unavailable_reason(self) -> str:
        """Why scans do not ask this radio, for a scan's message."""
        return f"{self.kind.value}: off ({self.state.value}{': ' + self.last_error if self.last_error else ''})"

    async def start(self) -> None:
        """Bring the radio up once; RadioStartError says why not, and whether trying again may help."""
        if self.state in (RadioState.RUNNING, RadioState.STARTING):
            return
        self.state = RadioState.STARTING
        try:
            await self._start()
        except asyncio.CancelledError:
            await self._stop_after_failure()
            self.state = RadioState.STOPPED
            raise
        except Exception as exc:  # a driver fails in its own ways; each is sorted, none leaves the radio half up
            error = self.start_error(exc)
            await self._stop_after_failure()
            self.last_error = str(error)
            self.state = RadioState.FAILED if error.permanent else RadioState.RETRYING
            raise error from exc
        self.last_error = ""
        self.state = RadioState.RUNNING

    async def keep_started(
        self, policy: ReconnectPolicy | None = None, *, on_attempt: Callable[[], None] | None = None
    ) -> None:
        """Start the radio, retrying a transient failure with backoff; returns once it runs or failed for good.

        Never raises for a failed start (the message is logged and kept in `last_error` for health): one radio
        that cannot start never stops the gateway. `on_attempt` is called after each attempt.
        """
        policy = policy or ReconnectPolicy(START_RETRY_MIN_S, START_RETRY_MAX_S)
        said = ""  # the same failure again is logged quietly: one warning per cause, not one per retry
        while True:
            try:
                try:
                    await self.start()
                finally:
                    if on_attempt is not None:
                        on_attempt()
            except RadioStartError as exc:
                if exc.permanent:
                    log.error("%s; the %s radio stays off, the others run", exc, self.kind.value)  # noqa: TRY400 - a plain message, no traceback
                    return
                delay = policy.next_delay()
                log.log(
                    logging.DEBUG if str(exc) == said else logging.WARNING, "%s; trying again in %.1f s", exc, delay
                )
                said = str(exc)
                await asyncio.sleep(delay)
                continue
            log.info("%s radio running", self.kind.value)
            return

    async def stop(self) -> None:
        """Bring the radio down; cancels nothing of the caller's."""
        try:
            await self._stop()
        finally:
            self.state = RadioState.STOPPED

    def start_error(self, exc: Exception) -> RadioStartError:
        """Sort a failure of `_start()`: configuration, permission and missing libraries are permanent, the rest
        transient. Drivers that know better raise RadioStartError themselves."""
        if isinstance(exc, RadioStartError):
            return exc
        permanent = isinstance(exc, ConfigError | PermissionError | ImportError)
        return RadioStartError(f"{self.kind.value}: the radio did not start: {exc}", permanent=permanent)

    def health(self) -> dict[str, str]:
        """The radio's state for the agent's health."""
        return {"state": self.state.value, "error": self.last_error}

    async def _start(self) -> None:  # noqa: B027 - optional hook
        """The driver's step: open sockets, start the coordinator."""

    async def _stop(self) -> None:  # noqa: B027 - optional hook
        """The driver's step: close what `_start` opened; harmless when nothing is open."""

    async def _stop_after_failure(self) -> None:
        try:
            await self._stop()
        except Exception:  # the start's own error is the one worth reporting
            log.debug("%s: shutting down after a failed start failed too", self.kind.value, exc_info=True)

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
