"""Build a simulated Zigbee line: units on a simulated network, and what a ZigbeeRadio needs to reach them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simulator.firmware import DeviceState, Fault, Faults, Firmware
from simulator.zigbee.app import SimulatedControllerApp, quiet_app_config
from simulator.zigbee.network import SimulatedNetwork
from simulator.zigbee.node import LinkFault, LinkFaults, SimulatedNode
from wire import zigbee_chunks as zc
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.keys import KeyRing

FIRST_NWK = 0x1A00
# About the air time of one frame plus its APS ACK on a quiet 2.4 GHz channel.
REALISTIC_FRAME_LATENCY_S = 0.030


@dataclass(frozen=True)
class ZigbeeUnit:
    """One Zigbee good on the line: firmware faults (simulator.firmware.Fault) or link faults (LinkFault)."""

    sn: str
    pid: str
    firmware: FirmwareKind = FirmwareKind.OEM
    fault: Fault | LinkFault = Fault.NONE
    fault_times: int | None = 1
    fw_version: str = "1.0.0"
    prefix: str = zc.DEFAULT_MANUFACTURER_PREFIX


@dataclass
class SimulatedZigbeeLine:
    """The simulated goods and the coordinator app class + config to pass to ZigbeeRadio."""

    network: SimulatedNetwork
    app_class: type[SimulatedControllerApp]
    app_config: dict[str, Any]
    issuers: KeyRing
    next_nwk: int = FIRST_NWK

    def node(self, sn: str) -> SimulatedNode:
        """The node with this SN."""
        for node in self.network.nodes.values():
            if node.sn == sn:
                return node
        raise KeyError(f"no simulated zigbee unit {sn!r}")

    def place(self, unit: ZigbeeUnit) -> SimulatedNode:
        """Put one more unit on the line (it joins at the next permit window, or now if one is open)."""
        # Never an address a unit taken away had: zigpy would take the newcomer's frames for the old device's.
        node = make_node(unit, self.issuers, self.next_nwk)
        self.next_nwk += 1
        self.network.add(node)
        return node

    def take_away(self, sn: str) -> None:
        """Power a unit off and take it off the line."""
        self.network.remove(self.node(sn))

    def radio_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ZigbeeRadio (or create_radio) that plug in this simulated line."""
        return {"app_class": self.app_class, "app_config": self.app_config}


def make_node(unit: ZigbeeUnit, issuers: KeyRing, nwk: int) -> SimulatedNode:
    """One simulated node running the reference firmware for `unit`."""
    state = DeviceState(
        sn=unit.sn, pid=unit.pid, firmware=unit.firmware, radio=Radio.ZIGBEE, fw_version=unit.fw_version
    )
    firmware_faults = Faults(unit.fault, times=unit.fault_times) if isinstance(unit.fault, Fault) else None
    link_faults = LinkFaults(unit.fault, times=unit.fault_times) if isinstance(unit.fault, LinkFault) else None
    firmware = Firmware(state, issuers, faults=firmware_faults)
    return SimulatedNode(firmware, nwk, prefix=unit.prefix, faults=link_faults)


def build_zigbee_line(units: list[ZigbeeUnit], issuers: KeyRing, *, latency_s: float = 0.0) -> SimulatedZigbeeLine:
    """Simulated Zigbee goods on one network; `latency_s` is the time of one frame on the air."""
    nodes = [make_node(u, issuers, FIRST_NWK + i) for i, u in enumerate(units)]
    network = SimulatedNetwork(nodes, latency_s=latency_s)
    return SimulatedZigbeeLine(
        network=network,
        app_class=SimulatedControllerApp,
        app_config=quiet_app_config(network),
        issuers=issuers,
        next_nwk=FIRST_NWK + len(nodes),
    )
