"""A line of simulated finished goods, built from unit specs. Each radio adds its own builder here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from simulator.firmware import DeviceState, Fault, Faults, Firmware
from simulator.mcu import MCU_REPLY_TIMEOUT, GeneralFirmware, McuFault, SimulatedMcu
from simulator.wifi import ANNOUNCE_INTERVAL, LinkFault, WifiDevice
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.ids import check_pid, check_sn
from wire.keys import KeyRing


@dataclass(frozen=True)
class UnitSpec:
    """One finished good on the line: who it is, how it is reached, and how it misbehaves."""

    sn: str
    pid: str
    firmware: FirmwareKind = FirmwareKind.OEM
    radio: Radio = Radio.WIFI
    fault: Fault = Fault.NONE
    fault_times: int | None = None
    slow_s: float = 0.5
    link_fault: LinkFault = LinkFault.NONE  # Wi-Fi only so far
    fw_version: str = "1.0.0"
    mcu_fault: McuFault = McuFault.NONE  # general firmware only: how its MCU misbehaves
    mcu_silent_s: float = 1.0  # how long McuFault.SILENT_AFTER_SET keeps the MCU silent

    def __post_init__(self) -> None:
        check_sn(self.sn, "unit sn")
        check_pid(self.pid, f"unit {self.sn} pid")


def make_firmware(spec: UnitSpec, issuers: KeyRing, state_dir: Path | None = None) -> Firmware:
    """The reference firmware of one unit, holding its PID in the module (OEM and custom firmware)."""
    state = DeviceState(sn=spec.sn, pid=spec.pid, firmware=spec.firmware, radio=spec.radio, fw_version=spec.fw_version)
    faults = Faults(spec.fault, times=spec.fault_times, slow_s=spec.slow_s)
    state_file = None if state_dir is None else state_dir / f"{spec.sn}.json"
    return Firmware(state, issuers, faults=faults, state_file=state_file)


class WifiLine(dict[str, WifiDevice]):
    """Running Wi-Fi devices by SN; `mcus` holds the MCU of each general-firmware unit."""

    def __init__(self) -> None:
        super().__init__()
        self.mcus: dict[str, SimulatedMcu] = {}


@asynccontextmanager
async def build_wifi_line(
    issuers: KeyRing,
    units: Sequence[UnitSpec],
    *,
    announce_to: tuple[str, int] | None,
    announce_interval: float = ANNOUNCE_INTERVAL,
    state_dir: Path | None = None,
    mcu_timeout: float = MCU_REPLY_TIMEOUT,
    latency_s: float = 0.0,
) -> AsyncIterator[WifiLine]:
    """Start one WifiDevice per unit on loopback (general firmware with its MCU on a pty); stops all on exit."""
    seen: set[str] = set()
    for spec in units:
        if spec.radio is not Radio.WIFI:
            raise ValueError(f"unit {spec.sn}: radio is {spec.radio.value!r}; build_wifi_line builds Wi-Fi goods only")
        if spec.sn in seen:
            raise ValueError(f"unit {spec.sn} is listed twice; each finished good has its own SN")
        seen.add(spec.sn)
    async with AsyncExitStack() as stack:
        line = WifiLine()
        for spec in units:
            if spec.firmware is FirmwareKind.GENERAL:
                simulated = SimulatedMcu(spec.pid, fault=spec.mcu_fault, silent_s=spec.mcu_silent_s)
                mcu = line.mcus[spec.sn] = await stack.enter_async_context(simulated)
                state = DeviceState(spec.sn, spec.pid, spec.firmware, spec.radio, spec.fw_version)
                faults = Faults(spec.fault, times=spec.fault_times, slow_s=spec.slow_s)
                general = GeneralFirmware(state, issuers, mcu_port=mcu.port, mcu_timeout=mcu_timeout, faults=faults)
                firmware: Firmware = await stack.enter_async_context(general)
            else:
                firmware = make_firmware(spec, issuers, state_dir)
            device = WifiDevice(
                firmware,
                announce_to=announce_to,
                announce_interval=announce_interval,
                link_fault=spec.link_fault,
                link_fault_times=spec.fault_times,
                latency_s=latency_s,
            )
            line[spec.sn] = await stack.enter_async_context(device)
        yield line
