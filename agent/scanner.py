"""SN input: serial barcode scanners (pyserial-asyncio-fast), the keyboard, and MQTT commands (in the uplink)."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Awaitable, Callable

import serial
import serial_asyncio_fast

from agent.config import ScannerConfig

log = logging.getLogger(__name__)

ScanHandler = Callable[[str], Awaitable[object]]
SERIAL_REOPEN_S = 2.0
MAX_SN_LINE = 128


def clean_line(raw: bytes) -> str | None:
    """One scanner line as an SN: printable ASCII, trimmed; None for an empty or unreadable line."""
    text = raw.strip(b"\r\n\t \x00").decode("ascii", errors="replace")
    if not text or len(text) > MAX_SN_LINE or not text.isprintable() or "\ufffd" in text:
        return None
    return text


async def read_serial(port: str, baudrate: int, handle: ScanHandler) -> None:
    """Read SN lines from a serial barcode scanner until cancelled; reopens the port when it goes away."""
    while True:
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(url=port, baudrate=baudrate)
        except (OSError, serial.SerialException) as exc:
            log.warning("scanner %s cannot be opened (%s); retrying in %.0fs", port, exc, SERIAL_REOPEN_S)
            await asyncio.sleep(SERIAL_REOPEN_S)
            continue
        log.info("scanner %s open at %d baud", port, baudrate)
        try:
            await _lines(reader, port, handle)
        except (OSError, serial.SerialException) as exc:
            log.warning("scanner %s went away (%s); reopening", port, exc)
        finally:
            writer.close()
        await asyncio.sleep(SERIAL_REOPEN_S)


async def _lines(reader: asyncio.StreamReader, source: str, handle: ScanHandler) -> None:
    """Split input on CR or LF (scanners end lines with either) and hand each SN on."""
    buf = b""
    while chunk := await reader.read(256):
        buf += chunk
        *lines, buf = re.split(rb"[\r\n]", buf)
        if len(buf) > MAX_SN_LINE:
            log.warning("scanner %s sent an over-long line; ignored", source)
            buf = b""
        for raw in lines:
            if not raw.strip():
                continue
            sn = clean_line(raw)
            if sn is None:
                log.warning("scanner %s sent an unreadable line %r; ignored", source, raw[:40])
                continue
            await handle(sn)


async def read_keyboard(handle: ScanHandler) -> None:
    """Read SN lines typed (or wedge-scanned) on standard input until EOF or cancellation."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await _lines(reader, "keyboard", handle)


async def run_scanners(config: ScannerConfig, handle: ScanHandler, tg: asyncio.TaskGroup) -> None:
    """Start one reader task per configured input in `tg`."""
    for port in config.serial_ports:
        tg.create_task(read_serial(port, config.baudrate, handle), name=f"scanner:{port}")
    if config.keyboard:
        tg.create_task(read_keyboard(handle), name="scanner:keyboard")
