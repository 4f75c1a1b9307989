"""The technician's screen: one unmistakable line per scan (colour, a word, and a bell on refusal)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from agent.console_view import BADGES, shown
from mqtt_link import ConnectionState
from wire.topics import ProgressPayload, Result, ScanEvent

if TYPE_CHECKING:
    from agent.service import AgentService

STOPPED = "stopped: the agent shut down cleanly and its journal is closed"
# At ready, the uplink is given this long to connect, so a broker that is there is not reported missing.
READY_UPLINK_WAIT_S = 3.0
# Every word is centred in this many columns, so the SN column never moves.
WORD_WIDTH = max(len(word) for word, _ in BADGES.values())


def event_line(event: ScanEvent) -> Text:
    """A scan's outcome as one styled line."""
    word, style = BADGES[event.result]
    line = Text()
    line.append(f" {word:^{WORD_WIDTH}} ", style=style)
    start = len(line)
    line.append_text(shown(f" {event.sn:<20} "))
    line.stylize("bold", start)
    if event.result is Result.CONFIRMED:
        line.append_text(shown(f"{event.old_pid} -> {event.new_pid}  slot {event.slot}  {event.radio}  {event.ms} ms"))
    else:
        line.append_text(shown(event.message or event.reason))
    return line


class ScanConsole:
    """Prints events as they happen; rings the terminal bell on anything but OK."""

    def __init__(self, console: Console | None = None, *, bell: bool = True) -> None:
        self.console = console or Console(highlight=False)
        self.bell = bell
        self._stopping = False

    def show(self, event: ScanEvent) -> None:
        """Print one event."""
        self.console.print(event_line(event))
        if self.bell and event.result in (Result.REFUSED, Result.IN_DOUBT):
            self.console.bell()

    async def follow(self, service: AgentService) -> None:
        """Say when the agent is ready for scans, then each time its uplink comes or goes, until cancelled."""
        await service.ready.wait()
        uplink = service.uplink
        assert uplink is not None  # built before the service is ready
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_UPLINK_WAIT_S):
                await uplink.connected.wait()
        radios = ", ".join(f"{r.kind.value} ({r.state.value})" for r in service.radios) or "none"
        where = uplink.mqtt.where
        link = f"connected to {where}" if uplink.is_connected else f"{where} not reached yet (scans go on offline)"
        self.say(
            f"ready: gateway {service.gw} ({service.config.gateway.name}), radios {radios}, uplink {link}; scan now"
        )

        def changed(old: ConnectionState, new: ConnectionState) -> None:
            if self._stopping:
                return  # the agent closing its own connection is no news
            if new is ConnectionState.CONNECTED:
                self.say(f"uplink: connected to {where}")
            elif old is ConnectionState.CONNECTED:
                self.say(f"uplink: lost {where}; reconnecting (scans go on offline, their records wait in the journal)")

        remove = uplink.mqtt.link.add_listener(changed)
        try:
            await asyncio.Event().wait()
        finally:
            remove()

    def say(self, text: str) -> None:
        """One plain line about the agent itself (not a scan), never wrapped."""
        self.console.print(text, soft_wrap=True, markup=False)

    def stopping(self) -> None:
        """The agent is shutting down: from now on its uplink's state changes are not news."""
        self._stopping = True

    def show_progress(self, p: ProgressPayload) -> None:
        """Print a certificate's counts."""
        self.console.print(
            f"certificate {p.cert_no}: {p.confirmed} confirmed, {p.in_doubt} in doubt, {p.refused} refused, "
            f"{p.remaining} of {p.lease_size} slots left"
        )
