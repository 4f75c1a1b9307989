"""SN sources: serial barcode scanners (`serial_port`), HID scanners through evdev (`hid`), the terminal
(`keyboard`); MQTT scan commands come through the uplink. Every source only reads SNs and hands them to the one
scan dispatcher (agent.dispatch), which owns what happens next."""

from __future__ import annotations

import asyncio
import importlib.util

from agent.config import ScannerConfig
from agent.errors import ConfigError
from agent.scanners.keyboard import read_keyboard
from agent.scanners.lines import ScanSink
from agent.scanners.serial_port import read_serial


def check_scanner_libraries(config: ScannerConfig) -> None:
    """Refuse a config whose scanners need a library that is not installed (before anything starts)."""
    if config.hid_devices and importlib.util.find_spec("evdev") is None:
        raise ConfigError(
            f"scanner.hid_devices lists {', '.join(map(repr, config.hid_devices))} but evdev is not installed; "
            "install it with: pip install 'rebadge[hid]'"
        )


def start_scanners(config: ScannerConfig, sink: ScanSink, tg: asyncio.TaskGroup) -> None:
    """Start one reader task per configured scanner in `tg` (call check_scanner_libraries first)."""
    for port in config.serial_ports:
        tg.create_task(
            read_serial(port, config.baudrate, sink, terminator=config.terminator), name=f"scanner serial:{port}"
        )
    if config.hid_devices:
        from agent.scanners.hid import read_hid  # noqa: PLC0415 - evdev is an optional extra

        for selector in config.hid_devices:
            tg.create_task(read_hid(selector, sink), name=f"scanner hid:{selector}")
    if config.keyboard:
        tg.create_task(read_keyboard(sink), name="scanner keyboard")
