"""What the full-screen technician's console shows, as a pure function of `ConsoleState` (tests render it).

Everything a unit or a scanner supplied (SN, PIDs, messages) goes in as `Text`, never as markup, so a label or a
device cannot restyle the screen or write terminal control codes.

Layout, top to bottom: who and what (gateway, station, work order, config fingerprint); certificate and links side
by side; the last result in large letters with its reason and next step in plain words; units in doubt next to the
history; warnings in their own panel; and the line's readiness at the bottom.
"""

from __future__ import annotations

import datetime
import re
from collections import deque
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agent.plain_words import advice
from wire.topics import RESULT_WORDS, ProgressPayload, Result, ScanEvent

HISTORY_ROWS = 10
WARNING_ROWS = 5
IN_DOUBT_ROWS = 10
# Every badge is this wide, so the columns after it never shift.
BADGE_WIDTH = 9
SN_WIDTH = 20

BADGE_STYLES = {
    Result.CONFIRMED: "bold white on green",
    Result.ALREADY_REBADGED: "bold black on cyan",
    Result.REFUSED: "bold white on red",
    Result.IN_DOUBT: "bold black on yellow",
}
# The words are the ones the web console and dashboards show too (wire.topics.RESULT_WORDS).
BADGES: dict[Result, tuple[str, str]] = {result: (RESULT_WORDS[result], BADGE_STYLES[result]) for result in Result}
# Link words a technician reads: up, coming back, or not there.
CONNECTED, RECONNECTING, DOWN = "connected", "reconnecting", "down"
LINK_STYLES = {CONNECTED: "green", RECONNECTING: "yellow", DOWN: "bold red"}

# A 5-row block font for the words the console shows large.
_FONT = {
    "O": ["███", "█ █", "█ █", "█ █", "███"], "K": ["█ █", "██ ", "█  ", "██ ", "█ █"],
    "R": ["██ ", "█ █", "██ ", "█ █", "█ █"], "E": ["███", "█  ", "██ ", "█  ", "███"],
    "S": ["███", "█  ", "███", "  █", "███"], "C": ["███", "█  ", "█  ", "█  ", "███"],
    "A": ["███", "█ █", "███", "█ █", "█ █"], "N": ["█ █", "███", "███", "█ █", "█ █"],
    "F": ["███", "█  ", "██ ", "█  ", "█  "], "U": ["█ █", "█ █", "█ █", "█ █", "███"],
    "D": ["██ ", "█ █", "█ █", "█ █", "██ "], "Y": ["█ █", "█ █", " █ ", " █ ", " █ "],
}  # fmt: skip


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value: str) -> Text:
    """A supplied string as plain text: no markup, and control characters (ESC, BEL, ...) written out as \\xNN."""
    return Text(_CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value))


def big_word(word: str) -> str:
    """`word` in 5-row block letters (letters the font lacks are left blank)."""
    rows = [" ".join(_FONT.get(ch, ["   "] * 5)[i] for ch in word) for i in range(5)]
    return "\n".join(rows)


@dataclass
class ConsoleState:
    """Everything on the screen; the feed updates it, `render` draws it."""

    gw: str
    name: str = ""
    station: str = ""
    work_order: str = ""
    fingerprint: str = ""
    cert_no: str = ""
    lease: str = ""
    progress: ProgressPayload | None = None
    last: ScanEvent | None = None
    history: deque[ScanEvent] = field(default_factory=lambda: deque(maxlen=HISTORY_ROWS))
    in_doubt: list[tuple[str, int]] = field(default_factory=list)  # (sn, slot)
    radios: dict[str, str] = field(default_factory=dict)  # kind -> state
    uplink: str = DOWN
    warnings: deque[str] = field(default_factory=lambda: deque(maxlen=WARNING_ROWS))
    started: bool = False
    not_ready: str = ""  # why the line is not ready, empty when it is

    def add(self, event: ScanEvent) -> None:
        """A scan ended: it becomes the last result and the newest history row."""
        self.last = event
        self.history.appendleft(event)

    @property
    def ready(self) -> bool:
        """The line can take a scan now."""
        return self.started and not self.not_ready


def badge(result: Result) -> Text:
    """The fixed-width coloured word of a result."""
    word, style = BADGES[result]
    return Text(f"{word:^{BADGE_WIDTH}}", style=style)


def _clock(at: int) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%H:%M:%S") if at else "--:--:--"


def _header(s: ConsoleState) -> Text:
    text = Text(" rebadge ", style="bold white on blue")
    text.append_text(shown(f"  gateway {s.gw[:16]}"))
    if s.name:
        text.append_text(shown(f" ({s.name})"))
    text.append_text(
        shown(f"   station {s.station or '-'}   work order {s.work_order or '-'}   config {s.fingerprint or '-'}")
    )
    return text


def _certificate(s: ConsoleState) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("certificate", shown(s.cert_no or "none"))
    grid.add_row("lease", shown(s.lease or "none loaded"))
    p = s.progress
    if p is not None:
        grid.add_row("confirmed", Text(f"{p.confirmed} / {p.lease_size}", style="bold"))
        grid.add_row("in doubt", Text(str(p.in_doubt), style="yellow" if p.in_doubt else ""))
        grid.add_row("refused", str(p.refused))
        grid.add_row("slots left", Text(str(p.remaining), style="bold red" if p.remaining == 0 else ""))
    return Panel(grid, title="certificate", border_style="blue")


def _links(s: ConsoleState) -> Panel:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    for kind, state in sorted(s.radios.items()):
        word = CONNECTED if state == "running" else RECONNECTING if state in ("starting", "retrying") else DOWN
        grid.add_row(Text(f"radio {kind}"), Text(f"{word} ({state})", style=LINK_STYLES[word]))
    note = " (scans go on offline)" if s.uplink != CONNECTED else ""
    grid.add_row("uplink", Text(s.uplink + note, style=LINK_STYLES[s.uplink]))
    return Panel(grid, title="links", border_style="blue")


def _last(s: ConsoleState) -> Panel:
    e = s.last
    if e is None:
        return Panel(Text("no scan yet", justify="center", style="dim"), title="last scan")
    word, style = BADGES[e.result]
    words = advice(e)
    body = Group(
        Text(big_word(word), justify="center", style=style.replace("bold ", "").split(" on ")[-1]),
        _centred(shown(e.sn), "bold"),
        _centred(shown(_detail(e))),
        Text(f"next: {words.action}", justify="center", style="bold"),
    )
    return Panel(body, title=f"last scan {_clock(e.at)}", border_style=style.split(" on ")[-1])


def _centred(text: Text, style: str = "") -> Text:
    text.justify = "center"
    text.stylize(style)
    return text


def _detail(e: ScanEvent) -> str:
    if e.result is Result.CONFIRMED and not e.reason:
        return f"rebadged {e.old_pid} -> {e.new_pid}, slot {e.slot}, {e.radio}, {e.ms} ms"
    return advice(e).said


def _history(s: ConsoleState) -> Panel:
    table = Table(box=None, padding=(0, 1), show_edge=False, expand=True)
    table.add_column("time", width=8, no_wrap=True)
    table.add_column("result", width=BADGE_WIDTH, no_wrap=True)
    table.add_column("SN", width=SN_WIDTH, no_wrap=True, overflow="ellipsis")
    table.add_column("ms", width=6, justify="right", no_wrap=True)
    table.add_column("what", ratio=1, no_wrap=True, overflow="ellipsis")
    for e in s.history:
        table.add_row(_clock(e.at), badge(e.result), shown(e.sn), str(e.ms), shown(_detail(e)))
    return Panel(table, title="history", border_style="blue")


def _in_doubt(s: ConsoleState) -> Panel:
    if not s.in_doubt:
        return Panel(Text("none", style="dim"), title="in doubt", border_style="blue")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, overflow="ellipsis", style="yellow")
    grid.add_column(no_wrap=True, style="yellow")
    for sn, slot in s.in_doubt[:IN_DOUBT_ROWS]:
        grid.add_row(shown(sn), f"slot {slot}")
    more = len(s.in_doubt) - IN_DOUBT_ROWS
    body = Group(grid, *([Text(f"and {more} more", style="yellow")] if more > 0 else []),
                 Text("rescan each to settle it", style="bold"))  # fmt: skip
    return Panel(body, title=f"in doubt ({len(s.in_doubt)})", border_style="yellow")


def _warnings(s: ConsoleState) -> Panel:
    body: RenderableType = Text("none", style="dim")
    if s.warnings:
        body = Text("\n", style="yellow").join(shown(w) for w in s.warnings)
    return Panel(body, title="warnings", border_style="yellow" if s.warnings else "blue")


def _footer(s: ConsoleState) -> Text:
    if s.ready:
        return Text(" ready, scan now ", style="bold white on green", justify="center")
    why = s.not_ready or "starting the agent"
    return Text(f" not ready: {why} ", style="bold black on yellow", justify="center")


def render(s: ConsoleState) -> Layout:
    """The whole screen for `s`."""
    layout = Layout()
    layout.split_column(
        Layout(_header(s), name="header", size=1),
        Layout(name="top", size=9),
        Layout(_last(s), name="last", size=11),
        Layout(name="middle", ratio=1, minimum_size=6),
        Layout(_warnings(s), name="warnings", size=WARNING_ROWS + 2),
        Layout(_footer(s), name="footer", size=1),
    )
    layout["top"].split_row(Layout(_certificate(s)), Layout(_links(s)))
    layout["middle"].split_row(Layout(_history(s), ratio=3), Layout(_in_doubt(s), ratio=1))
    return layout
