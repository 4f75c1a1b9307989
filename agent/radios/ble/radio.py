"""The BLE radio on bleak: scans for our service, finds a device by SN through `info`, connects with retries.

A BLE good advertises its PID but not its SN, so `open(sn)` connects to candidates (its known address first,
then addresses of unknown SN, newest first) and asks each `info` until one is `sn`; what it learns is kept.
Tests and the demo pass a simulated bleak backend: `BleRadio(config, backend_client=..., backend_scanner=...,
air=...)`; extra keywords go to both backends, as bleak passes them on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.client import BaseBleakClient
from bleak.backends.scanner import BaseBleakScanner
from bleak_retry_connector import establish_connection

from agent.config import BleConfig
from agent.errors import DeviceNotFoundError, RadioError
from agent.radios.base import Radio
from agent.radios.ble.discovery import Sighting, Sightings
from agent.radios.ble.link import BLEAK_IO_ERRORS, DISCONNECT_TIMEOUT_S, BleLink, Inbox
from wire import fragments
from wire.device import Radio as RadioKind

log = logging.getLogger(__name__)

# Connection attempts per candidate (bleak-retry-connector backs off between them).
CONNECT_ATTEMPTS = 3
# Bound on starting or stopping a scan.
SCANNER_TIMEOUT_S = 5.0
# Bound on the `info` that tells a candidate's SN.
PROBE_INFO_TIMEOUT_S = 5.0
# Probes of one candidate per `open`: a second chance after a broken link or answer, then it is left alone.
PROBES_PER_CANDIDATE = 2


class _TrackedClient(BleakClient):
    """A BleakClient that reports itself when created.

    establish_connection builds the client and returns it only once connected; when our timeout cuts a connect
    short, this is how the half-open client is still found and disconnected.
    """

    def __init__(self, *args: Any, on_created: Callable[[BleakClient], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        on_created(self)


class BleRadio(Radio):
    """BLE goods through bleak and bleak-retry-connector, on the adapter the config names."""

    kind = RadioKind.BLE

    def __init__(
        self,
        config: BleConfig,
        *,
        backend_client: type[BaseBleakClient] | None = None,
        backend_scanner: type[BaseBleakScanner] | None = None,
        **backend_kwargs: Any,
    ) -> None:
        self.config = config
        self.sightings = Sightings()
        self._backend_client = backend_client
        self._backend_scanner = backend_scanner
        self._backend_kwargs = backend_kwargs
        self._scanner: BleakScanner | None = None
        self._scan_users = 0
        self._scan_lock = asyncio.Lock()
        self._probing: set[str] = set()
        self._started = False

    async def _start(self) -> None:
        """Start scanning in the background, so goods are known before their SN is scanned."""
        if not self._started:
            await self._acquire_scanner()
            self._started = True

    async def _stop(self) -> None:
        """Stop the background scan."""
        if self._started:
            self._started = False
            await self._release_scanner()

    async def knows(self, sn: str) -> bool:
        """Whether the device of `sn` told us its SN before and was heard recently."""
        return self.sightings.knows(sn)

    async def open(self, sn: str, timeout: float) -> BleLink:
        """Find the device that says it is `sn` and return an open link to it, within `timeout` and scan_timeout_s."""
        timeout = min(timeout, self.config.scan_timeout_s)
        tried: dict[str, int] = {}
        failures: list[str] = []
        try:
            async with asyncio.timeout(timeout), self._scanning():
                while True:
                    changed = self.sightings.changed
                    spent = {a for a, n in tried.items() if n >= PROBES_PER_CANDIDATE}
                    candidates = self.sightings.candidates(sn, skip=spent | self._probing)
                    if not candidates:
                        await changed.wait()
                        continue
                    # Untried candidates before a second chance for one that failed.
                    candidate = min(candidates, key=lambda s: tried.get(s.address, 0))
                    tried[candidate.address] = tried.get(candidate.address, 0) + 1
                    link = await self._probe(candidate, sn, failures)
                    if link is not None:
                        return link
        except TimeoutError as exc:
            detail = "; ".join(failures) or f"{len(tried)} device(s) of our service tried"
            raise DeviceNotFoundError(
                f"no BLE device said it is {sn} within {timeout:g} s on {self.config.adapter} ({detail})", sn=sn
            ) from exc

    async def _probe(self, sighting: Sighting, sn: str, failures: list[str]) -> BleLink | None:
        """Connect to one candidate and ask its SN; the link when it is `sn`, else None."""
        self._probing.add(sighting.address)
        try:
            link = await self._connect(sighting, sn)
            try:
                info = await link.info(PROBE_INFO_TIMEOUT_S)
            except BaseException:
                await link.close()
                raise
            self.sightings.learn(sighting.address, info.sn)
            if info.sn == sn:
                log.info("BLE %s found at %s (PID %s)", sn, sighting.address, info.pid)
                return link
            await link.close()
        except RadioError as exc:
            log.info("BLE %s: candidate %s failed: %s", sn, sighting.address, exc)
            failures.append(f"{sighting.address}: {exc}")
        finally:
            self._probing.discard(sighting.address)
            self.sightings.notify()
        return None

    async def _connect(self, sighting: Sighting, sn: str) -> BleLink:
        inbox = Inbox()
        created: list[BleakClient] = []
        try:
            async with asyncio.timeout(self.config.connect_timeout_s):
                client = await establish_connection(
                    _TrackedClient,
                    sighting.device,
                    f"rebadge {sighting.address}",
                    disconnected_callback=inbox.on_disconnect,
                    max_attempts=CONNECT_ATTEMPTS,
                    services=[fragments.SERVICE_UUID],
                    on_created=created.append,
                    backend=self._backend_client,
                    bluez={"adapter": self.config.adapter},
                    **self._backend_kwargs,
                )
                link = BleLink(sn, client, inbox, fragment_timeout_s=self.config.fragment_timeout_s)
                await link.start()
                return link
        except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
            await _abandon(created)
            raise RadioError(
                f"could not connect to {sighting.address} on {self.config.adapter}: {exc or type(exc).__name__}", sn=sn
            ) from exc
        except BaseException:
            await _abandon(created)
            raise

    @asynccontextmanager
    async def _scanning(self) -> AsyncIterator[None]:
        """Keep a scan running for the duration (the background one, if started)."""
        await self._acquire_scanner()
        try:
            yield
        finally:
            await self._release_scanner()

    async def _acquire_scanner(self) -> None:
        async with self._scan_lock:
            if self._scan_users == 0:
                scanner = BleakScanner(
                    self.sightings.heard,
                    [fragments.SERVICE_UUID],
                    bluez={"adapter": self.config.adapter},
                    backend=self._backend_scanner,
                    **self._backend_kwargs,
                )
                try:
                    async with asyncio.timeout(SCANNER_TIMEOUT_S):
                        await scanner.start()
                except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
                    raise RadioError(
                        f"BLE adapter {self.config.adapter} cannot scan: {exc!r}; check that BlueZ (bluetoothd) "
                        "runs and has this adapter ('bluetoothctl list' shows them), or set ble.adapter to one it has"
                    ) from exc
                self._scanner = scanner
            self._scan_users += 1

    async def _release_scanner(self) -> None:
        async with self._scan_lock:
            self._scan_users -= 1
            scanner = self._scanner
            if self._scan_users > 0 or scanner is None:
                return
            self._scanner = None
            try:
                async with asyncio.timeout(SCANNER_TIMEOUT_S):
                    await scanner.stop()
            except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
                log.warning("BLE adapter %s: stopping the scan failed: %r", self.config.adapter, exc)


async def _abandon(clients: list[BleakClient]) -> None:
    """Disconnect clients whose connect failed or was cut short, so no link is left half-open."""
    for client in clients:
        try:
            async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
                await client.disconnect()
        except (*BLEAK_IO_ERRORS, TimeoutError) as exc:
            log.warning("BLE %s: disconnect after a failed connect failed: %r", client.address, exc)
