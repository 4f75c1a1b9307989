"""SNs typed (or wedge-scanned) on the agent's terminal; a terminal only, never a pipe or /dev/null."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TextIO

from agent.scanners.lines import READ_CHUNK, ScanSink, read_lines

log = logging.getLogger(__name__)

SOURCE = "keyboard"


async def read_keyboard(sink: ScanSink, stdin: TextIO | None = None) -> None:
    """Hand in lines typed on `stdin` (default: sys.stdin) until it ends; without a terminal, say so and return."""
    stdin = sys.stdin if stdin is None else stdin
    if stdin is None or not stdin.isatty():
        log.error(
            "scanner.keyboard is on, but the agent's standard input is not a terminal (under systemd it is "
            "/dev/null): keyboard scanning is off, the rest of the agent runs. Run 'rebadge agent run' on a terminal, "
            "or set scanner.keyboard = false and use a serial (scanner.serial_ports) or HID (scanner.hid_devices) "
            "scanner"
        )
        return
    # Read when the terminal says a line is ready, without making it non-blocking: the terminal is usually one open
    # file shared with stdout, and O_NONBLOCK there would make the console's writes fail with EAGAIN.
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    fd = stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except OSError as exc:
            loop.remove_reader(fd)
            reader.set_exception(exc)
            return
        if data:
            reader.feed_data(data)
        else:
            loop.remove_reader(fd)
            reader.feed_eof()

    loop.add_reader(fd, readable)
    try:
        await read_lines(reader, SOURCE, sink, "any")
    except OSError as exc:
        log.warning("keyboard: the terminal went away (%s); keyboard scanning is off", exc)
        return
    finally:
        loop.remove_reader(fd)
    log.warning("keyboard: the terminal closed its input; keyboard scanning is off")
