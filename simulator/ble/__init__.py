"""Simulated BLE goods: an air of advertising peripherals running the reference firmware, and a bleak backend.

line = build_ble_line([BleUnit("SN0001", "stock001")], issuers)
radio = BleRadio(config.ble, **line.radio_kwargs)
"""

from simulator.ble.air import Air, Latency
from simulator.ble.backend import SimBleakClient, SimBleakScanner
from simulator.ble.line import BleLine, BleUnit, build_ble_line
from simulator.ble.peripheral import BleFault, BleFaults, Peripheral

__all__ = [
    "Air",
    "BleFault",
    "BleFaults",
    "BleLine",
    "BleUnit",
    "Latency",
    "Peripheral",
    "SimBleakClient",
    "SimBleakScanner",
    "build_ble_line",
]
