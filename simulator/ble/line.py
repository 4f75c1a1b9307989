"""A simulated BLE line in one call: goods on the air, and what the gateway's BLE radio needs to reach them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.ble.air import DEFAULT_ADAPTER, Air, Latency
from simulator.ble.backend import SimBleakClient, SimBleakScanner
from simulator.ble.peripheral import BleFaults, Peripheral
from simulator.firmware import DeviceState, Faults, Firmware
from simulator.goods import UnitSpec
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.fragments import DEFAULT_ATT_MTU
from wire.ids import SHORT_PID_LEN, check_pid, check_sn
from wire.keys import KeyRing


@dataclass(frozen=True)
class BleUnit:
    """One BLE good: SN, 8-character PID, firmware kind, firmware faults, link faults and ATT MTU."""

    sn: str
    pid: str
    firmware: FirmwareKind = FirmwareKind.OEM
    link_fault: BleFaults = field(default_factory=BleFaults)
    firmware_faults: Faults = field(default_factory=Faults)
    att_mtu: int = DEFAULT_ATT_MTU
    fw_version: str = "1.0.0"

    def __post_init__(self) -> None:
        check_sn(self.sn, "unit sn")
        check_pid(self.pid, f"unit {self.sn} pid")
        if len(self.pid) != SHORT_PID_LEN:
            raise ValueError(
                f"unit {self.sn}: a BLE PID has {SHORT_PID_LEN} characters; {self.pid!r} has {len(self.pid)}"
            )

    @classmethod
    def from_spec(cls, spec: UnitSpec, link_fault: BleFaults | None = None, att_mtu: int = DEFAULT_ATT_MTU) -> BleUnit:
        """A BLE unit from the line's common unit spec (its firmware fault, times and slowness carry over)."""
        if spec.radio is not Radio.BLE:
            raise ValueError(f"unit {spec.sn}: radio is {spec.radio.value!r}; a BLE line holds BLE goods only")
        return cls(
            sn=spec.sn, pid=spec.pid, firmware=spec.firmware, link_fault=link_fault or BleFaults(),
            firmware_faults=Faults(spec.fault, times=spec.fault_times, slow_s=spec.slow_s), att_mtu=att_mtu,
            fw_version=spec.fw_version,
        )  # fmt: skip


@dataclass
class BleLine:
    """The air with its goods (by SN), and the keyword arguments a BLE radio takes to reach them."""

    air: Air
    peripherals: dict[str, Peripheral]
    issuers: KeyRing
    state_dir: Path | None = None

    @property
    def radio_kwargs(self) -> dict[str, Any]:
        """`BleRadio(config.ble, **radio_kwargs)`, or `create_radio(Radio.BLE, config, **radio_kwargs)`."""
        return {"backend_client": SimBleakClient, "backend_scanner": SimBleakScanner, "air": self.air}

    def place(self, unit: BleUnit | UnitSpec) -> Peripheral:
        """Bring one more good into range; running scanners hear it after `Latency.advertise_s`."""
        ble = unit if isinstance(unit, BleUnit) else BleUnit.from_spec(unit)
        if ble.sn in self.peripherals:
            raise ValueError(f"unit {ble.sn} is listed twice; each finished good has its own SN")
        state = DeviceState(sn=ble.sn, pid=ble.pid, firmware=ble.firmware, radio=Radio.BLE, fw_version=ble.fw_version)
        state_file = None if self.state_dir is None else self.state_dir / f"{ble.sn}.json"
        firmware = Firmware(state, self.issuers, faults=ble.firmware_faults, state_file=state_file)
        peripheral = Peripheral(self.air, firmware, att_mtu=ble.att_mtu, faults=ble.link_fault)
        self.air.add(peripheral)
        self.peripherals[ble.sn] = peripheral
        return peripheral

    def take_away(self, sn: str) -> None:
        """The good leaves the bench: out of range, its link (if any) lost."""
        peripheral = self.peripherals.pop(sn)
        self.air.remove(peripheral.address)


def build_ble_line(
    issuers: KeyRing,
    units: Sequence[BleUnit | UnitSpec],
    *,
    latency: Latency | None = None,
    adapters: Iterable[str] = (DEFAULT_ADAPTER,),
    state_dir: Path | None = None,
    seed: int = 0,
) -> BleLine:
    """An air holding `units`, each advertising our service with its PID; `issuers` are the keys they pin."""
    line = BleLine(Air(latency, adapters=adapters, seed=seed), {}, issuers, state_dir)
    for unit in units:
        line.place(unit)
    return line
