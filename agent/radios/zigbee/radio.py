"""Zigbee goods through zigpy: the coordinator's ControllerApplication, chosen by radio type and imported lazily.

A scan finds its device among the joined ones (opening a permit-join window when it is not there yet) by
asking each unknown device `info` over our cluster; the PID is read from Basic ManufacturerName, always
fresh, and must agree with what the firmware says.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zigpy.config
import zigpy.exceptions
import zigpy.types as t
from zigpy.application import ControllerApplication
from zigpy.device import BaseDevice, ZigbeeDevice
from zigpy.zcl.clusters.general import Basic

from agent.config import ZigbeeConfig
from agent.errors import (
    ConfigError,
    DeviceNotFoundError,
    DeviceTimeoutError,
    LinkLostError,
    ProtocolError,
    RadioError,
    RadioStartError,
)
from agent.radios.base import INFO_TIMEOUT, DeviceLink, Radio
from agent.radios.zigbee.channel import DeviceChannel
from agent.radios.zigbee.cluster import RebadgeCluster
from wire import device
from wire import zigbee_chunks as zc
from wire.errors import MalformedError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
SHUTDOWN_TIMEOUT = 10.0
PERMIT_TIMEOUT = 5.0
# A window is renewed when less than this is left of it, so a scan never waits on one about to close.
PERMIT_RENEW_MARGIN_S = 5.0
PERMIT_RETRY_S = 2.0
# How often a waiting scan looks again without news from zigpy (a device answering again after a failed probe).
RESCAN_INTERVAL_S = 1.0
# A device that did not answer a probe is not probed again for this long unless it is heard from.
PROBE_BACKOFF_S = 5.0
DATABASE_FILE = "zigbee.db"

# radio_type -> (module holding the library's ControllerApplication, pyproject extra that installs it)
RADIO_LIBRARIES: Mapping[str, tuple[str, str]] = {
    "ezsp": ("bellows.zigbee.application", "ezsp"),
    "znp": ("zigpy_znp.zigbee.application", "znp"),
    "deconz": ("zigpy_deconz.zigbee.application", "deconz"),
    "zigate": ("zigpy_zigate.zigbee.application", "zigate"),
    "xbee": ("zigpy_xbee.zigbee.application", "xbee"),
}


def controller_class(radio_type: str) -> type[ControllerApplication]:
    """The radio library's ControllerApplication, imported only now; ConfigError names the extra to install."""
    if radio_type not in RADIO_LIBRARIES:
        known = ", ".join(RADIO_LIBRARIES)
        raise ConfigError(f"zigbee.radio_type {radio_type!r} is not a known radio type; use one of {known}")
    module_name, extra = RADIO_LIBRARIES[radio_type]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"zigbee.radio_type {radio_type!r} needs {module_name.partition('.')[0]}, which is not installed "
            f"({exc.name}); install it from the rebadge checkout: pip install '.[{extra}]' "
            f"(or provisioning/install.sh --extras zigbee,{extra})"
        ) from exc
    cls = getattr(module, "ControllerApplication", None)
    if not (isinstance(cls, type) and issubclass(cls, ControllerApplication)):
        raise ConfigError(f"zigbee.radio_type {radio_type!r}: {module_name} has no zigpy ControllerApplication")
    return cls


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


class _Changes:
    """Wakes scans waiting for the network to change (a device initialized, heard from, or gone)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event the next change sets; take it before looking, then wait on it."""
        return self._event

    def notify(self) -> None:
        """Something changed."""
        self._event.set()
        self._event = asyncio.Event()


class ZigbeeRadio(Radio):
    """The gateway's Zigbee coordinator, driven through zigpy."""

    kind = device.Radio.ZIGBEE

    def __init__(
        self,
        config: ZigbeeConfig,
        *,
        state_dir: Path,
        app_class: type[ControllerApplication] | None = None,
        app_config: Mapping[str, Any] | None = None,
        chunk_bytes: int = zc.DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.app_class = app_class if app_class is not None else controller_class(config.radio_type)
        self._app_config = dict(app_config or {})
        self.chunk_bytes = chunk_bytes
        self.app: ControllerApplication | None = None
        self._sns: dict[t.EUI64, str] = {}
        self._channels: dict[t.EUI64, DeviceChannel] = {}
        self._unreachable: dict[t.EUI64, float] = {}
        self._probe_locks: dict[t.EUI64, asyncio.Lock] = {}
        self._permit_lock = asyncio.Lock()
        self._permit_until = 0.0
        self._changes = _Changes()

    # --- life cycle ---------------------------------------------------------------------------------------

    def zigpy_config(self) -> dict[str, Any]:
        """zigpy's config: device from our config, database in the state dir, no OTA; `app_config` on top."""
        base: dict[str, Any] = {
            zigpy.config.CONF_DATABASE: str(self.state_dir / DATABASE_FILE),
            zigpy.config.CONF_DEVICE: {
                zigpy.config.CONF_DEVICE_PATH: self.config.device,
                zigpy.config.CONF_DEVICE_BAUDRATE: self.config.baudrate,
                zigpy.config.CONF_DEVICE_FLOW_CONTROL: self.config.flow_control,
            },
            # The agent never updates firmware over the air; OTA would only fetch indexes from the internet.
            zigpy.config.CONF_OTA: {zigpy.config.CONF_OTA_ENABLED: False},
        }
        return _merge(base, self._app_config)

    async def _start(self) -> None:
        """Open the coordinator and start (or form) the network."""
        if self.app is not None:
            return
        await asyncio.to_thread(self.state_dir.mkdir, parents=True, exist_ok=True)
        zconfig = self.zigpy_config()
        library = self.app_class.__module__.partition(".")[0]
        where = f"{library} coordinator at {zconfig[zigpy.config.CONF_DEVICE][zigpy.config.CONF_DEVICE_PATH]}"
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                app = await self.app_class.new(zconfig, start_radio=False)
        except Exception as exc:  # a radio library fails in its own ways; the gateway reports them and runs on
            # zigpy checks its config and opens its database here: trying again cannot help.
            raise RadioStartError(f"zigbee: the {where} could not be set up: {exc!r}", permanent=True) from exc
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                await app.startup(auto_form=True)
        except Exception as exc:
            await self._shutdown(app)  # zigpy leaves its database open when startup fails
            # A stick unplugged, busy or slow to answer may come back: these are retried with backoff.
            if isinstance(exc, TimeoutError):
                message = f"zigbee: the {where} did not start within {STARTUP_TIMEOUT:.0f}s"
                raise RadioStartError(message, permanent=False) from exc
            raise RadioStartError(f"zigbee: the {where} did not start: {exc}", permanent=False) from exc
        app.add_listener(self)
        self.app = app
        log.info("zigbee: %s started with %d known device(s)", where, len(app.devices) - 1)

    async def _stop(self) -> None:
        """Shut zigpy down (its tasks, the serial port, the database)."""
        app, self.app = self.app, None
        if app is None:
            return
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        app.remove_listener(self)
        await self._shutdown(app)

    @staticmethod
    async def _shutdown(app: ControllerApplication) -> None:
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                await app.shutdown()
        except TimeoutError:
            log.warning("zigbee: the coordinator did not shut down within %.0fs", SHUTDOWN_TIMEOUT)

    def _require_app(self) -> ControllerApplication:
        if self.app is None:
            raise RadioError("zigbee radio is not started (call start() first)")
        return self.app

    # --- zigpy listener callbacks -------------------------------------------------------------------------

    def device_initialized(self, dev: BaseDevice) -> None:
        """zigpy: a device finished its interview (or was re-created)."""
        self._heard(dev)

    def handle_message(self, dev: BaseDevice, *_args: Any) -> None:
        """zigpy: a frame came from `dev` (a rejoining device announces itself this way)."""
        if dev.ieee in self._unreachable or self._is_gone(dev.ieee):
            self._heard(dev)

    def device_left(self, dev: BaseDevice) -> None:
        """zigpy: a device left the network."""
        self._lost(dev.ieee, "it announced leaving")

    def device_removed(self, dev: BaseDevice) -> None:
        """zigpy: a device was removed from the network."""
        self._lost(dev.ieee, "it was removed")
        self._sns.pop(dev.ieee, None)

    def _heard(self, dev: BaseDevice) -> None:
        self._unreachable.pop(dev.ieee, None)
        channel = self._channels.get(dev.ieee)
        if channel is not None:
            channel.back()
            cluster = self._cluster_of(dev)
            if cluster is not None:
                channel.rebind(cluster)
        self._changes.notify()

    def _lost(self, ieee: t.EUI64, reason: str) -> None:
        channel = self._channels.get(ieee)
        if channel is not None:
            channel.lost(reason)
        log.info("zigbee device %s (%s) is gone: %s", self._sns.get(ieee, "?"), ieee, reason)
        self._changes.notify()

    def _is_gone(self, ieee: t.EUI64) -> bool:
        channel = self._channels.get(ieee)
        return channel is not None and channel.gone

    # --- finding a device by SN ---------------------------------------------------------------------------

    async def knows(self, sn: str) -> bool:
        """Whether a device on this network has answered with this SN and not left since."""
        return any(s == sn and not self._is_gone(ieee) for ieee, s in self._sns.items())

    async def open(self, sn: str, timeout: float) -> DeviceLink:
        """Find the device with this SN among the joined ones, opening a permit-join window if needed."""
        app = self._require_app()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    changed = self._changes.current()
                    dev = await self._find(app, sn)
                    if dev is not None:
                        return ZigbeeLink(sn, dev, self._channel(dev, sn), self)
                    await self._ensure_permit(app)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(RESCAN_INTERVAL_S):
                            await changed.wait()
        except TimeoutError as exc:
            raise DeviceNotFoundError(
                f"no zigbee device answered as {sn} within {timeout:.1f}s "
                f"({self._candidate_count(app)} device(s) with our cluster on the network)",
                sn=sn,
            ) from exc

    def _candidates(self, app: ControllerApplication) -> list[ZigbeeDevice]:
        return [
            d
            for d in app.devices.values()
            if isinstance(d, ZigbeeDevice)
            and d.is_initialized
            and d.nwk != app.state.node_info.nwk
            and self._cluster_of(d) is not None
            and not self._is_gone(d.ieee)
        ]

    def _candidate_count(self, app: ControllerApplication) -> int:
        return len(self._candidates(app))

    async def _find(self, app: ControllerApplication, sn: str) -> ZigbeeDevice | None:
        candidates = self._candidates(app)
        for dev in candidates:
            if self._sns.get(dev.ieee) == sn:
                return dev
        now = asyncio.get_running_loop().time()
        unknown = [
            d
            for d in candidates
            if d.ieee not in self._sns and now - self._unreachable.get(d.ieee, -1e9) > PROBE_BACKOFF_S
        ]
        if unknown:
            async with asyncio.TaskGroup() as tg:
                for dev in unknown:
                    tg.create_task(self._probe(dev), name=f"zigbee-probe-{dev.ieee}")
        return next((d for d in candidates if self._sns.get(d.ieee) == sn), None)

    async def _probe(self, dev: ZigbeeDevice) -> None:
        """Learn a device's SN by asking it `info`; a device that does not answer is left alone for a while."""
        lock = self._probe_locks.setdefault(dev.ieee, asyncio.Lock())
        async with lock:
            if dev.ieee in self._sns:
                return
            request = device.InfoRequest(id=random.getrandbits(32)).to_cbor()
            channel = self._channel(dev, str(dev.ieee))
            try:
                answer = device.decode_info(await channel.exchange(request, self.config.frame_timeout_s * 2))
            except (RadioError, MalformedError) as exc:
                log.info("zigbee device %s did not tell its SN: %s", dev.ieee, exc)
                self._unreachable[dev.ieee] = asyncio.get_running_loop().time()
                return
            self.learned(dev.ieee, answer.sn)

    def learned(self, ieee: t.EUI64, sn: str) -> None:
        """Remember which SN answers at `ieee` (an SN seen at a new address moves there)."""
        for other, known in list(self._sns.items()):
            if known == sn and other != ieee:
                del self._sns[other]
        self._sns[ieee] = sn
        channel = self._channels.get(ieee)
        if channel is not None:
            channel.label = sn

    async def _ensure_permit(self, app: ControllerApplication) -> None:
        async with self._permit_lock:
            now = asyncio.get_running_loop().time()
            if now < self._permit_until - PERMIT_RENEW_MARGIN_S:
                return
            window = self.config.permit_join_s
            try:
                async with asyncio.timeout(PERMIT_TIMEOUT):
                    await app.permit(window)
            except (TimeoutError, zigpy.exceptions.ZigbeeException) as exc:
                log.warning("zigbee: could not open a permit-join window: %s", exc)
                self._permit_until = now + PERMIT_RETRY_S + PERMIT_RENEW_MARGIN_S
                return
            log.info("zigbee: permit-join window open for %ds", window)
            self._permit_until = now + window

    @staticmethod
    def _cluster_of(dev: BaseDevice) -> RebadgeCluster | None:
        if not isinstance(dev, ZigbeeDevice):
            return None
        for endpoint in dev.non_zdo_endpoints:
            cluster = endpoint.in_clusters.get(zc.CLUSTER_ID)
            if isinstance(cluster, RebadgeCluster):
                return cluster
        return None

    def _channel(self, dev: ZigbeeDevice, label: str) -> DeviceChannel:
        cluster = self._cluster_of(dev)
        if cluster is None:
            raise ProtocolError(f"zigbee device {label} has no rebadge cluster (0x{zc.CLUSTER_ID:04X})", sn=label)
        channel = self._channels.get(dev.ieee)
        if channel is None:
            channel = DeviceChannel(
                self._sns.get(dev.ieee, label),
                cluster,
                chunk_bytes=self.chunk_bytes,
                frame_timeout_s=self.config.frame_timeout_s,
            )
            self._channels[dev.ieee] = channel
        channel.rebind(cluster)
        return channel


class ZigbeeLink(DeviceLink):
    """One scan's connection to a Zigbee device: device-protocol messages plus fresh Basic reads."""

    def __init__(self, sn: str, dev: ZigbeeDevice, channel: DeviceChannel, radio: ZigbeeRadio) -> None:
        super().__init__(sn)
        self.device = dev
        self._channel = channel
        self._radio = radio

    async def exchange(self, request: bytes, timeout: float) -> bytes:
        """One device-protocol request and its answer, in chunks on our cluster."""
        return await self._channel.exchange(request, timeout)

    async def info(self, timeout: float = INFO_TIMEOUT) -> device.InfoResponse:
        """`info` over our cluster, checked against a fresh read of Basic ManufacturerName."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        answer = await super().info(timeout)
        self._radio.learned(self.device.ieee, answer.sn)
        pid = await self.read_pid(max(0.0, deadline - loop.time()))
        if pid != answer.pid:
            raise ProtocolError(
                f"zigbee device {self.sn}: ManufacturerName says PID {pid}, its firmware says {answer.pid}",
                sn=self.sn,
            )
        return answer

    async def read_pid(self, timeout: float) -> str:
        """The PID in Basic ManufacturerName, read from the device now (never from zigpy's cache)."""
        name = await self._read_manufacturer_name(timeout)
        try:
            return zc.pid_of_manufacturer_name(name)
        except MalformedError as exc:
            raise ProtocolError(f"zigbee device {self.sn}: {exc}", sn=self.sn) from exc

    async def _read_manufacturer_name(self, timeout: float) -> str:
        basic = self._basic_cluster()
        attr = Basic.AttributeDefs.manufacturer.name
        try:
            async with asyncio.timeout(timeout):
                success, failure = await basic.read_attributes([attr], allow_cache=False)
        except TimeoutError as exc:
            raise DeviceTimeoutError(
                f"zigbee device {self.sn} did not answer a Basic read within {timeout:.1f}s", sn=self.sn
            ) from exc
        except zigpy.exceptions.ZigbeeException as exc:
            if self._channel.gone:
                raise LinkLostError(f"zigbee device {self.sn} left the network: {exc}", sn=self.sn) from exc
            raise DeviceTimeoutError(f"zigbee device {self.sn}: Basic read failed: {exc}", sn=self.sn) from exc
        if attr not in success:
            raise ProtocolError(
                f"zigbee device {self.sn} did not give its ManufacturerName ({failure.get(attr)!r})", sn=self.sn
            )
        return str(success[attr])

    def _basic_cluster(self) -> Basic:
        for endpoint in self.device.non_zdo_endpoints:
            cluster = endpoint.in_clusters.get(Basic.cluster_id)
            if isinstance(cluster, Basic):
                return cluster
        raise ProtocolError(f"zigbee device {self.sn} has no Basic cluster", sn=self.sn)
