"""Simulated Zigbee goods: a zigpy ControllerApplication over a simulated network of nodes running our firmware."""

from simulator.zigbee.app import SIMULATED_NETWORK_KEY, SimulatedControllerApp, quiet_app_config
from simulator.zigbee.line import (
    REALISTIC_FRAME_LATENCY_S,
    SimulatedZigbeeLine,
    ZigbeeUnit,
    build_zigbee_line,
    make_node,
)
from simulator.zigbee.network import SimulatedNetwork
from simulator.zigbee.node import LinkFault, LinkFaults, SimulatedNode, ieee_for

__all__ = [
    "REALISTIC_FRAME_LATENCY_S",
    "SIMULATED_NETWORK_KEY",
    "LinkFault",
    "LinkFaults",
    "SimulatedControllerApp",
    "SimulatedNetwork",
    "SimulatedNode",
    "SimulatedZigbeeLine",
    "ZigbeeUnit",
    "build_zigbee_line",
    "ieee_for",
    "make_node",
    "quiet_app_config",
]
