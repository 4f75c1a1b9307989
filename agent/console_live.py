"""`rebadge agent console`: the agent in this process with a full-screen console on the terminal.

The console reads the running service directly (journal, radios, uplink), never through the broker, so it works
on a line that is offline. Log warnings go to the console's own panel instead of through the screen.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import sys
import time
from collections.abc import Sequence

from rich.console import Console
from rich.live import Live

from agent.config import AgentConfig, config_fingerprint
from agent.console_view import CONNECTED, DOWN, RECONNECTING, ConsoleState, render
from agent.leases import keeper_certificate
from agent.radios.base import Radio
from agent.service import AgentService
from agent.uplink.records import wait_event
from mqtt_link import ConnectionState
from wire.topics import Result, ScanEvent

log = logging.getLogger(__name__)

# The screen is read again from the journal and the links this often, and soon after each scan.
CONSOLE_REFRESH_S = 0.5
# A link lost less than this long ago shows as reconnecting; longer (or never up), as down.
LINK_DOWN_AFTER_S = 10.0
# Results that need the technician's eyes: the terminal bell rings.
BELL_RESULTS = frozenset({Result.REFUSED, Result.IN_DOUBT})


class WarningsToPanel(logging.Handler):
    """Log records of WARNING and above, as lines of the console's warnings panel."""

    def __init__(self, state: ConsoleState) -> None:
        super().__init__(logging.WARNING)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        at = datetime.datetime.fromtimestamp(record.created, datetime.UTC).strftime("%H:%M:%S")
        self.state.warnings.appendleft(f"{at} {record.getMessage()}")


class ConsoleFeed:
    """Keeps a `ConsoleState` in step with one running `AgentService`."""

    def __init__(
        self, service: AgentService, state: ConsoleState, console: Console, *, bell: bool = True,
        down_after_s: float = LINK_DOWN_AFTER_S,
    ) -> None:  # fmt: skip
        self.service = service
        self.down_after_s = down_after_s
        self.state = state
        self.console = console
        self.bell = bell
        self.changed = asyncio.Event()
        self._uplink_up_at: float | None = None
        self._wake = asyncio.Event()

    @classmethod
    def state_for(cls, config: AgentConfig, gw: str) -> ConsoleState:
        """The screen's state before anything ran."""
        return ConsoleState(
            gw=gw, name=config.gateway.name, station=config.line.station, work_order=config.line.work_order,
            fingerprint=config_fingerprint(config),
        )  # fmt: skip

    async def on_event(self, event: ScanEvent) -> None:
        """A scan ended (the service's event sink)."""
        self.state.add(event)
        if self.bell and event.result in BELL_RESULTS:
            self.console.bell()
        # The scan waits for this sink: the journal is read by the feed's own loop, coalesced under load.
        self.changed.set()
        self._wake.set()

    async def refresh(self) -> None:
        """Read the journal, radios and uplink once into the state."""
        s, service = self.state, self.service
        s.radios = {radio.kind.value: radio.state.value for radio in service.radios}
        s.uplink = self._uplink_word()
        journal = service.journal
        if journal is None or service.line is None:
            self.changed.set()
            return
        s.cert_no = await self._cert_no()
        if s.cert_no:
            s.progress = await service.line.progress(s.cert_no)
            leases = await journal.leases(s.cert_no)
            s.lease = ", ".join(
                f"{lease.lease_id} slots {lease.slot_lo}..{lease.slot_hi - 1}, expires {_when(lease.exp)}"
                for lease in leases[:2]
            ) + (f" and {len(leases) - 2} more" if len(leases) > 2 else "")  # fmt: skip
        s.in_doubt = [(a.sn, a.slot) for a in await journal.in_doubt()]
        s.started = service.ready.is_set()
        s.not_ready = self._not_ready()
        self.changed.set()

    def _uplink_word(self) -> str:
        uplink, now = self.service.uplink, time.monotonic()
        if uplink is not None and uplink.state is ConnectionState.CONNECTED:
            self._uplink_up_at = now
            return CONNECTED
        if self._uplink_up_at is not None and now - self._uplink_up_at < self.down_after_s:
            return RECONNECTING
        return DOWN

    async def _cert_no(self) -> str:
        wanted = self.service.config.line.certificate or keeper_certificate(self.service.config)
        if wanted:
            return wanted
        assert self.service.journal is not None
        held = await self.service.journal.cert_nos()
        return held[0] if len(held) == 1 else ""

    def _not_ready(self) -> str:
        s, journal = self.state, self.service.journal
        if not s.started:
            return "starting the agent"
        if journal is not None and journal.frozen is not None:
            return "the platform froze this gateway; call the line engineer"
        if s.radios and "running" not in s.radios.values():
            return "no radio is running; see warnings"
        if not s.cert_no:
            return "no certificate chosen or no lease loaded; call the line engineer"
        if s.progress is not None and s.progress.remaining == 0:
            return "no slots left; call the line engineer"
        return ""

    async def run(self) -> None:
        """Refresh until cancelled."""
        while True:
            self._wake.clear()
            await self.refresh()
            await wait_event(self._wake, CONSOLE_REFRESH_S)


def _when(exp: int) -> str:
    return datetime.datetime.fromtimestamp(exp, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def console_service(
    config: AgentConfig, console: Console, *, radios: Sequence[Radio] | None = None, bell: bool = True
) -> ConsoleFeed:
    """The agent service for `config` with a feed that shows its scans on `console` (`feed.service.run()` runs it)."""
    feed: ConsoleFeed | None = None

    async def on_event(event: ScanEvent) -> None:
        assert feed is not None
        await feed.on_event(event)

    service = AgentService(config, radios=radios, on_event=on_event)
    feed = ConsoleFeed(service, ConsoleFeed.state_for(config, service.gw), console, bell=bell)
    return feed


async def run_console(
    config: AgentConfig, console: Console, *, radios: Sequence[Radio] | None = None, bell: bool = True
) -> None:
    """Run the agent with the full-screen console until cancelled (Ctrl-C, SIGTERM)."""
    feed = console_service(config, console, radios=radios, bell=bell)
    handler = WarningsToPanel(feed.state)
    root = logging.getLogger()
    # While the screen is up, log lines on the terminal would tear it: the warnings panel shows them instead (a log
    # file keeps its handler).
    quieted = [
        h for h in root.handlers
        if isinstance(h, logging.StreamHandler) and h.stream in (sys.stderr, sys.stdout, console.file)
    ]  # fmt: skip
    for h in quieted:
        root.removeHandler(h)
    root.addHandler(handler)
    try:
        with Live(render(feed.state), console=console, screen=console.is_terminal, auto_refresh=False) as live:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(feed.service.run(), name="agent")
                tg.create_task(feed.run(), name="console feed")
                while True:
                    await feed.changed.wait()
                    feed.changed.clear()
                    live.update(render(feed.state), refresh=True)
    finally:
        root.removeHandler(handler)
        for h in quieted:
            root.addHandler(h)
