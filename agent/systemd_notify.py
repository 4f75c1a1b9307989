"""sd_notify: READY, WATCHDOG and STATUS to systemd over $NOTIFY_SOCKET (a few lines; no library needed)."""

from __future__ import annotations

import socket


class Notifier:
    """Sends systemd notifications when started under systemd; does nothing otherwise."""

    def __init__(self, notify_socket: str | None) -> None:
        self._addr = notify_socket
        if self._addr and self._addr.startswith("@"):
            self._addr = "\0" + self._addr[1:]

    def send(self, **fields: str) -> None:
        """Send fields such as READY="1" or STATUS="..."; errors are ignored (systemd may be restarting)."""
        if not self._addr:
            return
        msg = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(msg, self._addr)
        except OSError:
            pass
