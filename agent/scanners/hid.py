"""HID (USB keyboard-wedge) barcode scanners through evdev: grabbed exclusively, keys mapped on a fixed US layout.

The grab keeps the scans off the console and out of any other program; the key codes are turned into characters
here (agent.scanners.keymap), so the host's keyboard layout never garbles an SN. Needs the `hid` extra (evdev).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from pathlib import Path

import evdev
from evdev import ecodes

from agent.scanners.keymap import KeyDecoder
from agent.scanners.lines import ScanSink, hand_in

log = logging.getLogger(__name__)

# A scanner that is missing, unplugged or grabbed by another program is looked for again this often.
HID_REOPEN_S = 2.0


class HidNotFoundError(LookupError):
    """No input device has the configured name or path (yet)."""


def open_device(selector: str) -> evdev.InputDevice[str]:
    """The input device at path `selector`, or the first whose name is `selector`."""
    if selector.startswith("/"):
        if not Path(selector).exists():
            raise HidNotFoundError(f"no input device at {selector}")
        return evdev.InputDevice(selector)
    names: list[str] = []
    for path in evdev.list_devices():
        try:
            dev = evdev.InputDevice(path)
        except OSError:
            continue  # gone, or not ours to read
        if dev.name == selector:
            return dev
        names.append(dev.name)
        dev.close()
    seen = ", ".join(repr(n) for n in names) or "none readable"
    raise HidNotFoundError(f"no input device is named {selector!r} (devices: {seen})")


async def read_hid(selector: str, sink: ScanSink, *, reopen_s: float = HID_REOPEN_S) -> None:
    """Hand in SN lines from the HID scanner `selector` (a device name or a /dev/input path) until cancelled."""
    source = f"hid:{selector}"
    said = ""  # the last problem logged, so an unplugged scanner is not reported every reopen_s
    while True:
        try:
            dev = await asyncio.to_thread(open_device, selector)
        except (HidNotFoundError, OSError) as exc:
            if str(exc) != said:
                log.warning("scanner %s (scanner.hid_devices): %s; looking again every %.0f s", source, exc, reopen_s)
                said = str(exc)
            await asyncio.sleep(reopen_s)
            continue
        try:
            dev.grab()
        except OSError as exc:
            dev.close()
            why = "another program holds it grabbed" if exc.errno == errno.EBUSY else str(exc)
            if why != said:
                log.warning("scanner %s: cannot take %s for itself (%s); trying again every %.0f s",
                            source, dev.path, why, reopen_s)  # fmt: skip
                said = why
            await asyncio.sleep(reopen_s)
            continue
        said = ""
        log.info("scanner %s: %s (%s) grabbed", source, dev.path, dev.name)
        try:
            await _read_keys(dev, source, sink)
        except OSError as exc:
            log.warning("scanner %s went away (%s); looking for it again", source, exc)
        finally:
            with contextlib.suppress(OSError):  # unplugged: nothing left to release
                dev.ungrab()
            dev.close()
        await asyncio.sleep(reopen_s)


async def _read_keys(dev: evdev.InputDevice[str], source: str, sink: ScanSink) -> None:
    keys = KeyDecoder()
    async for event in dev.async_read_loop():
        if event.type != ecodes.EV_KEY:
            continue
        line = keys.feed(event.code, event.value)
        if line is not None:
            await hand_in(line, source, sink)
