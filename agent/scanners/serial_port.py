"""Serial barcode scanners through pyserial-asyncio-fast: one task per port, reopened when it goes away."""

from __future__ import annotations

import asyncio
import logging

import serial
import serial_asyncio_fast

from agent.scanners.lines import ScanSink, Terminator, read_lines

log = logging.getLogger(__name__)

# An unplugged scanner's port is tried again this often (a replugged one is back within this).
SERIAL_REOPEN_S = 2.0


async def read_serial(
    port: str, baudrate: int, sink: ScanSink, *, terminator: Terminator = "any", reopen_s: float = SERIAL_REOPEN_S
) -> None:
    """Hand in SN lines from the scanner at `port` until cancelled; reopens the port when it goes away."""
    source = f"serial:{port}"
    missing = False  # said once per outage, not every reopen_s
    while True:
        try:
            reader, writer = await serial_asyncio_fast.open_serial_connection(url=port, baudrate=baudrate)
        except (OSError, serial.SerialException) as exc:
            level = logging.DEBUG if missing else logging.WARNING
            log.log(level, "scanner %s cannot be opened (%s); trying again every %.0f s", port, exc, reopen_s)
            missing = True
            await asyncio.sleep(reopen_s)
            continue
        missing = False
        log.info("scanner %s open at %d baud", port, baudrate)
        try:
            await read_lines(reader, source, sink, terminator)
            log.warning("scanner %s closed its port; reopening", port)
        except (OSError, serial.SerialException) as exc:
            log.warning("scanner %s went away (%s); reopening", port, exc)
        finally:
            writer.close()
        await asyncio.sleep(reopen_s)
