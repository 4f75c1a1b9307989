"""A simulated BLE line in one call: goods on the air, and what the gateway's BLE radio needs to reach them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from simulator.ble.air import DEFAULT_ADAPTER, Air, Latency
from simulator.ble.backend import SimBleakClient, SimBleakScanner
from simulator.ble.peripheral import BleFaults, Peripheral
from simulator.firmware import DeviceState, Faults, Firmware
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.fragments import DEFAULT_ATT_MTU
from wire.keys import KeyRing


@dataclass(frozen=True)
class BleUnit:
    """One BLE good to put on the line: SN, 8-character PID, firmware kind, and its faults."""

    sn: str
    pid: str
    firmware: FirmwareKind = FirmwareKind.OEM
    fault: BleFaults = field(default_factory=BleFaults)
    firmware_faults: Faults = field(default_factory=Faults)
    att_mtu: int = DEFAULT_ATT_MTU
    fw_version: str = "1.0.0"


@dataclass
class BleLine:
    """The air with its goods, and the keyword arguments a BLE radio takes to reach them."""

    air: Air
    peripherals: dict[str, Peripheral]

    @property
    def radio_kwargs(self) -> dict[str, Any]:
        """`BleRadio(config, **radio_kwargs)` (or `create_radio(Radio.BLE, config, **radio_kwargs)`)."""
        return {"backend_client": SimBleakClient, "backend_scanner": SimBleakScanner, "air": self.air}

    def place(self, unit: BleUnit, issuers: KeyRing) -> Peripheral:
        """Bring one more good into range."""
        peripheral = make_peripheral(self.air, unit, issuers)
        self.air.add(peripheral)
        self.peripherals[unit.sn] = peripheral
        return peripheral


def make_peripheral(air: Air, unit: BleUnit, issuers: KeyRing) -> Peripheral:
    """A peripheral running the reference firmware for `unit` (not yet in range)."""
    state = DeviceState(sn=unit.sn, pid=unit.pid, firmware=unit.firmware, radio=Radio.BLE, fw_version=unit.fw_version)
    firmware = Firmware(state, issuers, faults=unit.firmware_faults)
    return Peripheral(air, firmware, att_mtu=unit.att_mtu, faults=unit.fault)


def build_ble_line(
    units: Iterable[BleUnit],
    issuers: KeyRing,
    *,
    latency: Latency | None = None,
    adapters: Iterable[str] = (DEFAULT_ADAPTER,),
    seed: int = 0,
) -> BleLine:
    """An air holding `units`, each advertising our service with its PID; the issuers are the pinned keys."""
    line = BleLine(Air(latency, adapters=adapters, seed=seed), {})
    for unit in units:
        line.place(unit, issuers)
    return line
