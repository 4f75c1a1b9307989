"""The agent's run loop: builds the parts from the config, runs them in one TaskGroup, talks to systemd."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease, check_bundle
from agent.certs.renewal import CertificateRenewer
from agent.config import AgentConfig
from agent.dispatch import ScanDispatcher
from agent.errors import ConfigError
from agent.journal import Journal
from agent.leases import LeaseKeeper, keeper_certificate
from agent.line import Line
from agent.radios.base import Radio
from agent.radios.registry import create_radio
from agent.scanners import check_scanner_libraries, start_scanners
from agent.systemd_notify import Notifier
from agent.uplink import Uplink
from agent.uplink.records import wait_event

if TYPE_CHECKING:
    from agent.metrics import AgentMetrics
from wire.keys import KeyRing, PublicKey
from wire.tokens import Checkpoint, sign
from wire.topics import ScanCommand, ScanEvent

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.sqlite"
WATCHDOG_PERIOD_S = 10.0
HEALTH_PERIOD_S = 30.0
# The line opens once every radio has had its first start (or this long has passed); a radio that failed is
# reported in health and, when that may pass, retried in the background.
RADIOS_FIRST_START_S = 150.0


def agent_version() -> str:
    """The installed rebadge version."""
    try:
        return version("rebadge")
    except PackageNotFoundError:
        return "0+unknown"


def pinned_issuers(config: AgentConfig) -> KeyRing:
    """The issuer keys from the config; an empty set is a configuration error."""
    if not config.trust.issuer_keys:
        raise ConfigError(
            "trust.issuer_keys is empty: pin the platform's issuer key (printed by 'rebadge cloud init') "
            "in the config file, or as JSON in the environment: REBADGE_TRUST__ISSUER_KEYS='[\"<64 hex>\"]'"
        )
    return KeyRing([PublicKey(bytes.fromhex(k)) for k in config.trust.issuer_keys])


async def open_journal(config: AgentConfig, identity: GatewayIdentity) -> Journal:
    """The journal in the state directory, checked at open."""
    return await Journal.open(
        config.gateway.state_dir / JOURNAL_FILE, identity.gw, min_free_bytes=config.journal.min_free_mb * 2**20,
        clock_margin_s=config.line.clock_margin_s,
    )  # fmt: skip


async def load_lease_file(config: AgentConfig, data: bytes) -> CheckedLease:
    """Check a lease file against this gateway and store it in the journal."""
    identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
    checked = check_bundle(data, pinned_issuers(config), identity.public, time.time())
    journal = await open_journal(config, identity)
    try:
        await journal.add_lease(checked.lease, checked.lease_token, checked.cert, checked.cert_token)
    finally:
        await journal.close()
    return checked


class AgentService:
    """One gateway agent: journal, radios, line, uplink, scanners."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        radios: Sequence[Radio] | None = None,
        on_event: Callable[[ScanEvent], Awaitable[None]] | None = None,
        notify_socket: str | None = None,
    ) -> None:
        self.config = config
        self.identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
        self.issuers = pinned_issuers(config)
        self._radios = list(radios) if radios is not None else None
        self._on_event = on_event
        self._notifier = Notifier(notify_socket)
        self.ready = asyncio.Event()
        self.line: Line | None = None
        self.uplink: Uplink | None = None
        self.journal: Journal | None = None
        self.keeper: LeaseKeeper | None = None
        self.renewer: CertificateRenewer | None = None  # with mqtt.tls: keeps the client certificate in force
        self.dispatcher: ScanDispatcher | None = None
        self.radios: list[Radio] = []
        self._progress_due: set[str] = set()
        self._progress_wake = asyncio.Event()
        self._health_wake = asyncio.Event()
        self.metrics: AgentMetrics | None = None  # with [metrics] port: the Prometheus endpoint's values

    @property
    def gw(self) -> str:
        """This gateway's id."""
        return self.identity.gw

    async def run(self) -> None:
        """Run until cancelled; a broken journal stops it before anything else starts."""
        check_scanner_libraries(self.config.scanner)
        self.metrics = self._metrics()
        journal = await open_journal(self.config, self.identity)
        self.journal = journal
        radios = self._radios or [create_radio(k, self.config) for k in self.config.line.radios]
        self.radios = radios
        try:
            for attempt in await journal.recover():
                log.warning("%s: slot %d left in doubt by a restart; rescan to settle", attempt.sn, attempt.slot)
            await self._run_parts(journal, radios)
        finally:
            for radio in radios:
                with contextlib.suppress(Exception):
                    await radio.stop()
            await journal.close()
            self._notifier.send(STOPPING="1")

    async def _run_parts(self, journal: Journal, radios: list[Radio]) -> None:
        uplink = Uplink(
            self.config.mqtt, self.gw, journal, sign_checkpoint=self._sign_checkpoint, issuers=self.issuers,
            name=self.config.gateway.name, version=agent_version(),
            on_scan=self._on_scan_command if self.config.scanner.mqtt else None,
        )  # fmt: skip
        self.uplink = uplink
        keeper = LeaseKeeper(
            self.config.lease, keeper_certificate(self.config), journal, uplink, self.identity, self.issuers,
            on_lease=lambda checked: self._progress_changed(checked.lease.cert_no),
        )  # fmt: skip
        self.keeper = keeper

        def records_changed() -> None:
            uplink.records_changed()
            keeper.wake()  # a slot may have been spent: the keeper looks at what is left

        journal.add_freeze_listener(lambda _freeze: self._health_wake.set())  # dashboards learn of it at once
        self.line = Line(
            journal, radios, self.identity, self.issuers, self.config.line, debug=self.config.debug,
            on_event=self._publish_event, on_records=records_changed,
        )  # fmt: skip
        dispatcher = ScanDispatcher(
            self.line.scan, self._publish_event, workers=self.config.line.max_in_flight,
            debounce_s=self.config.scanner.debounce_s, on_fault=self._health_wake.set,
        )  # fmt: skip
        self.dispatcher = dispatcher
        async with asyncio.TaskGroup() as tg:
            tg.create_task(uplink.run(), name="uplink")
            await self._start_radios(radios, tg)
            tg.create_task(dispatcher.run(), name="scan dispatcher")
            tg.create_task(keeper.run(), name="lease keeper")
            if self.config.mqtt.tls is not None:
                self.renewer = CertificateRenewer(self.config.mqtt.tls, self.identity, uplink)
                tg.create_task(self.renewer.run(), name="certificate renewer")
            start_scanners(self.config.scanner, dispatcher, tg)
            tg.create_task(self._watchdog(), name="watchdog")
            if self.metrics is not None and self.config.metrics.port is not None:
                metrics = self.metrics.serve(self, self.config.metrics.port, self.config.metrics.bind_address)
                tg.create_task(metrics, name="metrics")
            tg.create_task(self._health(journal, uplink), name="health")
            self._progress_due.update(await journal.cert_nos())
            self._progress_wake.set()
            tg.create_task(self._progress(uplink), name="progress")
            self._notifier.send(READY="1", STATUS=f"gateway {self.gw} ready")
            log.info("gateway %s (%s) ready: radios %s", self.gw, self.config.gateway.name,
                     ", ".join(f"{r.kind.value} ({r.state.value})" for r in radios))  # fmt: skip
            self.ready.set()

    async def _start_radios(self, radios: list[Radio], tg: asyncio.TaskGroup) -> None:
        """Start every radio in `tg` and wait for each one's first attempt; none that fails stops the gateway."""
        loop = asyncio.get_running_loop()
        firsts: list[asyncio.Future[None]] = []
        for radio in radios:
            first: asyncio.Future[None] = loop.create_future()
            firsts.append(first)

            def attempted(first: asyncio.Future[None] = first) -> None:
                if not first.done():
                    first.set_result(None)
                self._health_wake.set()

            tg.create_task(radio.keep_started(on_attempt=attempted), name=f"radio {radio.kind.value}")
        if firsts:
            await asyncio.wait(firsts, timeout=RADIOS_FIRST_START_S)

    async def scan(self, sn: str, request_id: str | None = None, *, source: str = "api") -> ScanEvent:
        """Rebadge one SN through the dispatcher, as every scanner does, and return its outcome."""
        assert self.dispatcher is not None, "scan() before run() started the dispatcher"
        return await self.dispatcher.scan(sn, source, request_id)

    async def _on_scan_command(self, cmd: ScanCommand) -> None:
        assert self.dispatcher is not None
        # A command carries its own id; a repeat is the sender's choice, not a scanner's double read.
        await self.dispatcher.submit(cmd.sn, "mqtt", cmd.id, debounce=False)

    def _metrics(self) -> AgentMetrics | None:
        """With [metrics] port: the endpoint's values; a missing library is a configuration error, said at start."""
        port = self.config.metrics.port
        if port is None:
            return None
        try:
            from agent.metrics import AgentMetrics  # noqa: PLC0415 - an optional extra
        except ImportError as exc:
            raise ConfigError(
                f"metrics.port is {port} but prometheus-client is not installed ({exc.name}): "
                "pip install 'rebadge[metrics]', or unset metrics.port"
            ) from exc
        return AgentMetrics(self.gw, self.config.gateway.name, agent_version())

    async def _publish_event(self, event: ScanEvent) -> None:
        assert self.uplink is not None
        if self.metrics is not None:
            self.metrics.count(event)
        await self.uplink.publish_event(event)
        if event.cert_no:
            self._progress_changed(event.cert_no)
        if self._on_event is not None:
            await self._on_event(event)

    def _sign_checkpoint(self, seq: int, head: bytes) -> bytes:
        return sign(Checkpoint(gw=self.gw, seq=seq, head=head, at=int(time.time())), self.identity.key)

    def _progress_changed(self, cert_no: str) -> None:
        self._progress_due.add(cert_no)
        self._progress_wake.set()

    async def _progress(self, uplink: Uplink) -> None:
        """Publish the counts of certificates that changed, off the scan's path and coalesced under load."""
        assert self.line is not None
        while True:
            await self._progress_wake.wait()
            self._progress_wake.clear()
            due, self._progress_due = self._progress_due, set()
            for cert_no in sorted(due):
                await uplink.publish_progress(await self.line.progress(cert_no))

    async def _watchdog(self) -> None:
        while True:
            self._notifier.send(WATCHDOG="1")
            await asyncio.sleep(WATCHDOG_PERIOD_S)

    async def _health(self, journal: Journal, uplink: Uplink) -> None:
        while True:
            self._health_wake.clear()
            seq, _ = await journal.head()
            disk = shutil.disk_usage(self.config.gateway.state_dir)
            frozen = journal.frozen
            await uplink.publish_health({
                "journal_seq": seq, "acked_seq": await journal.acked(),
                "disk_free_mb": disk.free // 2**20, "at": int(time.time()), "pid": os.getpid(),
                "frozen": None if frozen is None else frozen.as_dict(),
                "mqtt": uplink.state.value, "mqtt_connections": uplink.connections,
                "radios": {radio.kind.value: radio.health() for radio in self.radios},
                "scans": None if self.dispatcher is None else self.dispatcher.health(),
            })  # fmt: skip
            await wait_event(self._health_wake, HEALTH_PERIOD_S)
