"""The agent's optional Prometheus endpoint (`[metrics] port`; needs `pip install 'rebadge[metrics]'`).

Scans by result since start, slots left per certificate, journal records not yet acked by the platform, and the
uplink's state. The HTTP server runs in prometheus-client's own thread; the values are read from the journal on
the event loop every `METRICS_REFRESH_S` and after each scan, so a scrape never touches the journal.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from agent.uplink.records import wait_event
from mqtt_link import ConnectionState
from wire.topics import Result, ScanEvent

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from agent.service import AgentService

log = logging.getLogger(__name__)

METRICS_REFRESH_S = 2.0


class AgentMetrics:
    """The agent's metrics in a registry of their own (nothing of the process's default registry leaks in)."""

    def __init__(self, gw: str, name: str, version: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Gauge("rebadge_agent_info", "This gateway.", ["gw", "name", "version"], registry=self.registry)
        info.labels(gw, name, version).set(1)
        self.scans = Counter(
            "rebadge_agent_scans", "Scans since the agent started, by result.", ["result"], registry=self.registry
        )
        for result in Result:
            self.scans.labels(result.value)  # every result is there from the start, at 0
        self.slots_left = Gauge(
            "rebadge_agent_slots_left", "Unused slots in the usable leases, by certificate.", ["cert_no"],
            registry=self.registry,
        )  # fmt: skip
        self.in_doubt = Gauge(
            "rebadge_agent_in_doubt", "Attempts in doubt (a rescan settles each).", registry=self.registry
        )
        self.unsent = Gauge(
            "rebadge_agent_journal_unsent_records", "Journal records the platform has not acked yet.",
            registry=self.registry,
        )  # fmt: skip
        self.uplink = Gauge(
            "rebadge_agent_uplink_state", "1 for the uplink's state now, 0 for the others.", ["state"],
            registry=self.registry,
        )  # fmt: skip
        self.wake = asyncio.Event()
        self.listening = asyncio.Event()  # set once /metrics answers

    def count(self, event: ScanEvent) -> None:
        """One scan ended."""
        self.scans.labels(event.result.value).inc()
        self.wake.set()

    async def refresh(self, service: AgentService) -> None:
        """Read the journal and the uplink once."""
        journal = service.journal
        if journal is not None:
            seq, _ = await journal.head()
            self.unsent.set(seq - await journal.acked())
            in_doubt = 0
            for cert_no in await journal.cert_nos():
                counts = await journal.counts(cert_no)
                self.slots_left.labels(cert_no).set(counts.remaining)
                in_doubt += counts.in_doubt
            self.in_doubt.set(in_doubt)
        now = None if service.uplink is None else service.uplink.state
        for state in ConnectionState:
            self.uplink.labels(state.value).set(1 if state is now else 0)

    async def serve(self, service: AgentService, port: int, address: str) -> None:
        """Serve /metrics on `address`:`port` until cancelled; a port that cannot be bound is logged, not fatal."""
        await self.refresh(service)  # the first scrape already sees every figure
        try:
            server, thread = await asyncio.to_thread(start_http_server, port, address, self.registry)
        except OSError as exc:
            # A plain message, no traceback: the port is taken or not ours.
            log.error(  # noqa: TRY400
                "metrics: cannot listen on %s:%d (metrics.port): %s; set a free port; the agent runs on without "
                "metrics", address, port, exc,
            )  # fmt: skip
            return
        log.info("metrics: http://%s:%d/metrics", address, port)
        self.listening.set()
        try:
            while True:
                self.wake.clear()
                await self.refresh(service)
                await wait_event(self.wake, METRICS_REFRESH_S)
        finally:
            await asyncio.to_thread(_stop, server, thread)


def _stop(server: WSGIServer, thread: threading.Thread) -> None:
    server.shutdown()  # waits for its serving loop to end: not on the event loop
    server.server_close()
    thread.join(timeout=METRICS_REFRESH_S)
