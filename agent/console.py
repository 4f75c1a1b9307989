"""The technician's screen: one unmistakable line per scan (colour, a word, and a bell on refusal)."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from wire.topics import ProgressPayload, Result, ScanEvent

STYLES = {
    Result.CONFIRMED: ("  OK  ", "bold white on green"),
    Result.ALREADY_REBADGED: (" DONE ", "bold black on cyan"),
    Result.REFUSED: ("REFUSED", "bold white on red"),
    Result.IN_DOUBT: ("RESCAN", "bold black on yellow"),
}


def event_line(event: ScanEvent) -> Text:
    """A scan's outcome as one styled line."""
    word, style = STYLES[event.result]
    line = Text()
    line.append(f" {word} ", style=style)
    line.append(f" {event.sn:<20} ", style="bold")
    if event.result is Result.CONFIRMED:
        line.append(f"{event.old_pid} -> {event.new_pid}  slot {event.slot}  {event.radio}  {event.ms} ms")
    else:
        line.append(event.message or event.reason)
    return line


class ScanConsole:
    """Prints events as they happen; rings the terminal bell on anything but OK."""

    def __init__(self, console: Console | None = None, *, bell: bool = True) -> None:
        self.console = console or Console(highlight=False)
        self.bell = bell

    def show(self, event: ScanEvent) -> None:
        """Print one event."""
        self.console.print(event_line(event))
        if self.bell and event.result in (Result.REFUSED, Result.IN_DOUBT):
            self.console.bell()

    def show_progress(self, p: ProgressPayload) -> None:
        """Print a certificate's counts."""
        self.console.print(
            f"certificate {p.cert_no}: {p.confirmed} confirmed, {p.in_doubt} in doubt, {p.refused} refused, "
            f"{p.remaining} of {p.lease_size} slots left"
        )
