"""A bleak backend over the simulated air: pass these classes as `backend=` and the air as `air=`.

    BleakScanner(detection_callback, [SERVICE_UUID], backend=SimBleakScanner, air=air)
    BleakClient(ble_device, backend=SimBleakClient, air=air)

bleak hands the extra keyword (`air`) to the backend, as it does its own (`bluez`, `services`, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bleak.args import SizedBuffer
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError, BleakGATTProtocolErrorCode

from simulator.ble.air import DEFAULT_ADAPTER, Air
from simulator.ble.peripheral import Connection, Peripheral
from wire import fragments

log = logging.getLogger(__name__)

CCCD_UUID = "00002902-0000-1000-8000-00805f9b34fb"
SERVICE_HANDLE = 0x0010
WRITE_HANDLE = 0x0012
NOTIFY_HANDLE = 0x0014
CCCD_HANDLE = 0x0015
CCCD_NOTIFY = b"\x01\x00"


def _adapter_of(bluez: Mapping[str, Any] | None) -> str:
    return str((bluez or {}).get("adapter", DEFAULT_ADAPTER))


class SimBleakScanner(BaseBleakScanner):
    """Hears the advertisements of the air's peripherals while started."""

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        *,
        air: Air,
        bluez: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self.air = air
        self.adapter = _adapter_of(bluez)
        self.scanning_mode = scanning_mode

    async def start(self) -> None:
        """Start hearing the air; raises like BlueZ when the adapter is missing."""
        self.air.check_adapter(self.adapter)
        self.seen_devices = {}
        self.air.listen(self)

    async def stop(self) -> None:
        """Stop hearing the air."""
        self.air.unlisten(self)

    def hear(self, peripheral: Peripheral) -> None:
        """One advertisement reaches this scanner."""
        adv = peripheral.advertisement()
        if not self.is_allowed_uuid(adv.service_uuids):
            return
        device = self.create_or_update_device(
            peripheral.address, peripheral.address, peripheral.name, ("sim", self.adapter), adv
        )
        self.call_detection_callbacks(device, adv)


def _services(connection: Connection) -> BleakGATTServiceCollection:
    """Our GATT service as bleak describes it: a write and a notify characteristic (with its CCCD)."""
    services = BleakGATTServiceCollection()
    service = BleakGATTService(None, SERVICE_HANDLE, fragments.SERVICE_UUID)
    services.add_service(service)

    def max_write() -> int:
        return connection.payload

    write = BleakGATTCharacteristic(
        None, WRITE_HANDLE, fragments.WRITE_CHAR_UUID, ["write", "write-without-response"], max_write, service
    )
    notify = BleakGATTCharacteristic(None, NOTIFY_HANDLE, fragments.NOTIFY_CHAR_UUID, ["notify"], max_write, service)
    services.add_characteristic(write)
    services.add_characteristic(notify)
    services.add_descriptor(BleakGATTDescriptor(None, CCCD_HANDLE, CCCD_UUID, notify))
    return services


class SimBleakClient(BaseBleakClient):
    """A GATT client connected through the air to one peripheral."""

    def __init__(
        self,
        address_or_ble_device: BLEDevice | str,
        *,
        air: Air,
        bluez: Mapping[str, Any] | None = None,
        disconnected_callback: Any = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout, **kwargs)
        self.air = air
        self.adapter = _adapter_of(bluez)
        self._connection: Connection | None = None
        self._callback: NotifyCallback | None = None

    @property
    def name(self) -> str:
        """The peripheral's advertised name, or its address with dashes."""
        peripheral = self.air.peripheral(self.address)
        return peripheral.name if peripheral else self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        """The negotiated ATT MTU (23 until connected)."""
        return self._connection.att_mtu if self._connection else fragments.DEFAULT_ATT_MTU

    @property
    def is_connected(self) -> bool:
        """Whether the link is up."""
        return self._connection is not None and self._connection.open

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        """Connect through the air: takes `Latency.connect_s`; fails as the peripheral's faults say."""
        if self.is_connected:
            raise BleakError("Client is already connected")
        self.air.check_adapter(self.adapter)
        peripheral = self.air.peripheral(self.address)
        if peripheral is None:
            await self.air.elapse(self.air.latency.connect_s)
            raise BleakError(f"simulated: device {self.address} was not found (out of range)")
        self._connection = await peripheral.accept(self)
        self.services = _services(self._connection)

    async def disconnect(self) -> None:
        """Drop the link; the disconnected callback is for links lost unasked, so it is not called."""
        connection, self._connection = self._connection, None
        self._callback = None
        if connection is not None:
            await connection.close()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        """Our service needs no pairing."""

    async def unpair(self) -> None:
        """Our service needs no pairing."""

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """Our characteristics cannot be read."""
        self._require()
        raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.READ_NOT_PERMITTED)

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False, **kwargs: Any
    ) -> bytearray:
        """The notify characteristic's CCCD."""
        connection = self._require()
        if descriptor.handle != CCCD_HANDLE:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.INVALID_HANDLE)
        return bytearray(CCCD_NOTIFY if connection.subscribed else b"\x00\x00")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: SizedBuffer, response: bool) -> None:
        """One request fragment to the device; one connection interval of air time."""
        connection = self._require()
        if characteristic.uuid != fragments.WRITE_CHAR_UUID:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)
        if len(data) > connection.payload:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.INVALID_ATTRIBUTE_VALUE_LENGTH)
        await connection.write(bytes(data))

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: SizedBuffer) -> None:
        """Writing the CCCD turns notifications on or off."""
        connection = self._require()
        if descriptor.handle != CCCD_HANDLE:
            raise BleakGATTProtocolError(BleakGATTProtocolErrorCode.WRITE_NOT_PERMITTED)
        connection.subscribed = bytes(data) == CCCD_NOTIFY

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        """Subscribe to the notify characteristic."""
        connection = self._require()
        if characteristic.uuid != fragments.NOTIFY_CHAR_UUID:
            raise BleakError(f"characteristic {characteristic.uuid} does not notify")
        self._callback = callback
        connection.subscribed = True

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        """Unsubscribe."""
        connection = self._require()
        self._callback = None
        connection.subscribed = False

    def notified(self, data: bytes) -> None:
        """The peripheral notified one fragment."""
        if self._callback is not None:
            self._callback(bytearray(data))

    def link_lost(self) -> None:
        """The peripheral or the air dropped the link."""
        log.debug("simulated link to %s lost", self.address)
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _require(self) -> Connection:
        if self._connection is None or not self._connection.open:
            raise BleakError("Not connected")
        return self._connection
