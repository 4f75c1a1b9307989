"""The Wi-Fi radio: finds goods by their UDP announcements (or a static address, or their access point) and
talks to them over TCP in 55AA frames."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Mapping

from agent.config import WifiConfig
from agent.errors import DeviceNotFoundError, RadioStartError
from agent.radios.base import Radio
from agent.radios.wifi.ap import join_access_point
from agent.radios.wifi.discovery import DeviceTable, DiscoveryProtocol, Sighting
from agent.radios.wifi.link import WifiLink
from wire.device import Radio as RadioKind
from wire.errors import MalformedError
from wire.ids import check_sn

log = logging.getLogger(__name__)

UDP_CLOSE_TIMEOUT = 1.0


class WifiRadio(Radio):
    """Wi-Fi goods: UDP discovery, TCP links, optional AP mode through NetworkManager."""

    kind = RadioKind.WIFI

    def __init__(
        self,
        config: WifiConfig,
        *,
        static_devices: Mapping[str, tuple[str, int]] | None = None,
        nmcli: str = "nmcli",
    ) -> None:
        self.config = config
        self.table = DeviceTable(config.announce_ttl_s)
        self._static = {d.sn: (d.host, d.port) for d in config.static_devices}
        self._static.update(static_devices or {})
        self._nmcli = nmcli
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: DiscoveryProtocol | None = None
        self._links: set[WifiLink] = set()
        # Joining one access point leaves the previous one: AP mode reaches one device at a time.
        self._ap_lock = asyncio.Lock()

    @property
    def discovery_address(self) -> tuple[str, int] | None:
        """Where the discovery listener is bound, once started."""
        if self._transport is None:
            return None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def _start(self) -> None:
        """Listen for announcements (not in AP mode: there is no shared network to announce on)."""
        if self.config.ap_mode or self._transport is not None:
            return
        if self.table.closed:
            self.table = DeviceTable(self.config.announce_ttl_s)
        loop = asyncio.get_running_loop()
        where = f"{self.config.bind_address}:{self.config.discovery_port}"
        try:
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: DiscoveryProtocol(self.table),
                local_addr=(self.config.bind_address, self.config.discovery_port),
            )
        except OSError as exc:
            raise self._bind_error(where, exc) from exc
        self._transport, self._protocol = transport, protocol
        log.info("wifi: listening for announcements on %s:%d", *self.discovery_address or ("?", 0))

    def _bind_error(self, where: str, exc: OSError) -> RadioStartError:
        """The discovery listener could not bind, in words that name the setting and what to do."""
        port = self.config.discovery_port
        if exc.errno == errno.EADDRINUSE:
            # Transient: the program holding it (often an agent still stopping) may let go; retried with backoff.
            return RadioStartError(
                f"wifi: UDP port {port} (wifi.discovery_port) is in use on {self.config.bind_address} by another "
                f"program; stop it (is another rebadge agent running? 'ss -ulpn sport = :{port}' shows who holds it) "
                "or set wifi.discovery_port to the port your goods announce to",
                permanent=False,
            )
        if exc.errno in (errno.EACCES, errno.EPERM):
            return RadioStartError(
                f"wifi: no permission to listen on UDP {where} (wifi.discovery_port); use a port above 1023 or "
                "give the agent CAP_NET_BIND_SERVICE",
                permanent=True,
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            return RadioStartError(
                f"wifi: wifi.bind_address {self.config.bind_address!r} is not an address of this machine; set it "
                'to one of its addresses, or "0.0.0.0"',
                permanent=True,
            )
        return RadioStartError(f"wifi: cannot listen for announcements on UDP {where}: {exc}", permanent=False)

    async def _stop(self) -> None:
        """Stop listening, fail pending waits and close every open link."""
        self.table.close()
        if self._transport is not None and self._protocol is not None:
            self._transport.close()
            self._transport = None
            # The socket closes on a later loop turn; wait so a restart can bind the port again.
            try:
                async with asyncio.timeout(UDP_CLOSE_TIMEOUT):
                    await self._protocol.lost
            except TimeoutError:
                log.warning("wifi: discovery socket did not close within %ss", UDP_CLOSE_TIMEOUT)
        for link in list(self._links):
            await link.close()

    async def knows(self, sn: str) -> bool:
        """Whether the device is at a static address or announced itself within the TTL."""
        return sn in self._static or self.table.fresh(sn) is not None

    def sightings(self) -> list[Sighting]:
        """Devices announced within the TTL."""
        return self.table.sightings()

    async def open(self, sn: str, timeout: float) -> WifiLink:
        """Find the device and connect to it within `timeout`; DeviceNotFoundError otherwise."""
        try:
            check_sn(sn)
        except MalformedError as exc:
            raise DeviceNotFoundError(f"wifi: {exc}", sn=sn) from exc
        if self.config.ap_mode:
            return await self._open_ap(sn, timeout)
        stage = "waiting for its announcement"
        try:
            async with asyncio.timeout(timeout):
                while True:
                    host, port = await self._address_of(sn)
                    stage = f"connecting to {host}:{port}"
                    try:
                        return await self._connect(sn, host, port)
                    except DeviceNotFoundError as exc:
                        if sn in self._static:
                            raise
                        # A device that restarted announces its new port soon; wait for that within `timeout`.
                        self.table.forget(sn)
                        stage = f"waiting for a new announcement after: {exc}"
        except TimeoutError as exc:
            raise DeviceNotFoundError(f"wifi: device {sn} not reached within {timeout}s ({stage})", sn=sn) from exc

    async def _address_of(self, sn: str) -> tuple[str, int]:
        if sn in self._static:
            return self._static[sn]
        if self._transport is None:
            raise DeviceNotFoundError(f"wifi: device {sn}: the radio is not started (call start())", sn=sn)
        try:
            seen = await self.table.wait_for(sn)
        except ConnectionAbortedError as exc:
            raise DeviceNotFoundError(f"wifi: device {sn}: the radio stopped while waiting", sn=sn) from exc
        return seen.ip, seen.port

    async def _connect(self, sn: str, host: str, port: int, release_ap: bool = False) -> WifiLink:
        link: WifiLink

        def forget() -> None:
            self._links.discard(link)
            if release_ap:
                self._ap_lock.release()

        link = WifiLink(sn, host, port, on_close=forget)
        self._links.add(link)
        await link.connect()
        return link

    async def _open_ap(self, sn: str, timeout: float) -> WifiLink:
        stage = "waiting for the access point of the previous device to be released"
        locked = False
        try:
            async with asyncio.timeout(timeout):
                await self._ap_lock.acquire()
                locked = True
                stage = "joining its access point"
                await join_access_point(self.config, sn, self._nmcli)
                stage = "connecting to it"
                # From here on the link releases the lock when it closes, on every path.
                locked = False
                return await self._connect(sn, self.config.ap_device_address, self.config.device_port, True)
        except TimeoutError as exc:
            raise DeviceNotFoundError(f"wifi: device {sn} not reached within {timeout}s ({stage})", sn=sn) from exc
        finally:
            if locked:
                self._ap_lock.release()
