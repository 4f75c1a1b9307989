"""The support matrix: which firmware can be rebadged over which radio (from the platform's rules)."""

from __future__ import annotations

from wire.device import Firmware, Radio
from wire.ids import SHORT_PID_LEN

SUPPORTED: dict[Firmware, frozenset[Radio]] = {
    Firmware.OEM: frozenset({Radio.WIFI, Radio.BLE, Radio.ZIGBEE}),
    Firmware.GENERAL: frozenset({Radio.WIFI}),
    Firmware.CUSTOM: frozenset({Radio.WIFI}),
}


def unsupported_reason(firmware: Firmware, radio: Radio, new_pid: str) -> str | None:
    """Why this rebadge is not supported, in plain words, or None when it is."""
    if radio not in SUPPORTED[firmware]:
        allowed = ", ".join(sorted(r.value for r in SUPPORTED[firmware]))
        return f"{firmware.value} firmware can be rebadged over {allowed} only, not {radio.value}"
    if radio in (Radio.BLE, Radio.ZIGBEE) and len(new_pid) != SHORT_PID_LEN:
        return f"a {radio.value} product ID has {SHORT_PID_LEN} characters; {new_pid!r} has {len(new_pid)}"
    return None
