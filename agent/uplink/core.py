"""The agent's MQTT uplink (docs/mqtt.md): records out with signed checkpoints, acks and scan commands in,
status, events, progress and health for dashboards."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import AckTimeoutError, JournalError, RequestTimeoutError, UplinkError
from agent.uplink import connection
from agent.uplink.connection import LastWill, make_client, protocol_name
from agent.uplink.discovery import HA_ONLINE, HA_PREFIX, HA_REPUBLISH_MIN_S, HA_STATUS, discovery_configs
from agent.uplink.outbox import Outbox
from agent.uplink.records import RecordJournal, RecordSender, SignCheckpoint, shown
from agent.uplink.requests import Answer, PendingRequests, Signed
from mqtt_link import ConnectionState, ReconnectPolicy, SessionRunner
from wire import topics
from wire.key_rotation import KeyIntroduction
from wire.keys import KeyRing
from wire.lease_request import (
    LeaseAnswer,
    LeaseRequest,
    Release,
    ReleaseAnswer,
    RenewAnswer,
    RenewRequest,
    SignedRequest,
)
from wire.refusals import RefusalReason
from wire.scan_command import CommandRefusal, NonceWindow, check_scan
from wire.topics import ProgressPayload, Result, ScanCommand, ScanEvent, StatusPayload

log = logging.getLogger(__name__)

ScanHandler = Callable[[ScanCommand], Awaitable[None]]

# A batch counts as out until an ack covers it; this many may be out at once.
MAX_BATCHES_IN_FLIGHT = 4
# Idle loops look again this often even when nothing woke them.
IDLE_CHECK_S = 30.0
# Scan events kept while the broker is away.
MAX_QUEUED_EVENTS = 1000
# Scan commands running at once; more are refused with a warning (the line has its own bound).
MAX_RUNNING_SCANS = 64
# The retained "offline" an MQTT 3.1.1 broker gets on a clean shutdown (it has no DISCONNECT-with-will).
OFFLINE_PUBLISH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class UplinkTiming:
    """Timeouts and bounds of the uplink; tests shrink them."""

    connect_timeout_s: float = connection.CONNECT_TIMEOUT_S
    mqtt_timeout_s: float = connection.MQTT_TIMEOUT_S
    idle_check_s: float = IDLE_CHECK_S
    offline_publish_timeout_s: float = OFFLINE_PUBLISH_TIMEOUT_S
    max_batches_in_flight: int = MAX_BATCHES_IN_FLIGHT
    max_queued_events: int = MAX_QUEUED_EVENTS
    max_running_scans: int = MAX_RUNNING_SCANS


class Uplink:
    """One gateway's MQTT link to the platform and dashboards; `run()` until cancelled."""

    def __init__(
        self, config: MqttConfig, gw: str, journal: RecordJournal, *, sign_checkpoint: SignCheckpoint,
        issuers: KeyRing, name: str = "", version: str = "", on_scan: ScanHandler | None = None,
        timing: UplinkTiming | None = None,
    ) -> None:  # fmt: skip
        connection.check_config(config)
        topics.gw_prefix(gw)  # a gateway id that cannot be a topic fails here, not at the first publish
        self.config = config
        self.gw = gw
        self.name = name
        self.version = version
        self.timing = timing or UplinkTiming()
        self._on_scan = on_scan
        self._issuers = issuers  # scan commands are the platform's, signed by a pinned issuer key
        self._command_nonces = NonceWindow(not_before=int(time.time()))  # nothing from before this start
        self._started = time.monotonic()
        self._records = RecordSender(
            journal, gw, sign_checkpoint, issuers, batch_records=config.batch_records,
            max_in_flight=self.timing.max_batches_in_flight, resend_after_s=config.resend_s,
            idle_check_s=self.timing.idle_check_s,
        )  # fmt: skip
        self._outbox = Outbox(self.timing.max_queued_events, self.timing.idle_check_s)
        self._requests = PendingRequests(gw)
        self._client: aiomqtt.Client | None = None  # the session's client while connected (requests publish on it)
        self._connected = asyncio.Event()
        self._protocols = list(connection.PROTOCOLS[config.protocol])  # the first is tried; a refusal drops it
        self._protocol: aiomqtt.ProtocolVersion | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._scans: set[asyncio.Task[None]] = set()
        self._ha_sent_at: float | None = None  # when Home Assistant's "online" last made us resend (monotonic)
        policy = ReconnectPolicy(config.reconnect_min_s, config.reconnect_max_s, healthy_after_s=config.healthy_after_s)
        self.mqtt = SessionRunner(
            f"uplink {gw}", new_client=self._new_client, greet=self._greet, serve=self._serve, policy=policy,
            connect_timeout_s=self.timing.connect_timeout_s, where=self._where(), logger=log, lost=(JournalError,),
            retry_at_once=self._fall_back, hint=self._hint(),
        )  # fmt: skip

    # -- what the rest of the agent calls -----------------------------------------------------------------------

    @property
    def connected(self) -> asyncio.Event:
        """Set while a session is up (subscribed, status online published); do not set or clear it."""
        return self._connected

    @property
    def is_connected(self) -> bool:
        """Whether a session is up now."""
        return self._connected.is_set()

    @property
    def state(self) -> ConnectionState:
        """The MQTT link's state now, for health."""
        return self.mqtt.state

    @property
    def connections(self) -> int:
        """Sessions that came up since start."""
        return self.mqtt.connections

    @property
    def protocol(self) -> str | None:
        """'5' or '3.1.1' once a broker accepted one."""
        return None if self._protocol is None else protocol_name(self._protocol)

    @property
    def dropped_events(self) -> int:
        """Scan events dropped because the broker was away too long."""
        return self._outbox.dropped_events

    def records_changed(self) -> None:
        """Wake the record sender (the line calls this after each journal write)."""
        self._records.wake()

    async def publish_event(self, event: ScanEvent) -> None:
        """Queue one scan event (QoS 1, not retained); sent now or after the broker returns."""
        self._outbox.add_event(event.model_dump_json().encode())

    async def publish_progress(self, p: ProgressPayload) -> None:
        """Make `p` the retained progress of its certificate (and announce its counters to Home Assistant)."""
        topic = topics.progress(self.gw, p.cert_no)
        if not self._outbox.has_retained(topic):
            for config_topic, config in discovery_configs(
                self.gw, p.cert_no, name=self.name, version=self.version
            ).items():
                self._outbox.set_retained(config_topic, config)
        self._outbox.set_retained(topic, p.model_dump_json().encode())

    async def publish_health(self, health: dict[str, object]) -> None:
        """Make `health` the retained health of this gateway (values that are not JSON are sent as text)."""
        payload = json.dumps(health, sort_keys=True, separators=(",", ":"), default=str).encode()
        self._outbox.set_retained(topics.health(self.gw), payload)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until a session is up, or raise TimeoutError."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def wait_acked(self, seq: int, timeout: float) -> None:
        """Wait until the platform's acks cover `seq`, or raise AckTimeoutError."""
        try:
            async with asyncio.timeout(timeout):
                await self._records.wait_acked(seq)
        except TimeoutError as exc:
            acked = await self._records.acked()
            raise AckTimeoutError(
                f"the platform acked up to seq {acked}, not seq {seq}, within {timeout:.1f} s; "
                f"check the broker and that the platform's worker runs",
                seq=seq, acked=acked,
            ) from exc  # fmt: skip

    async def request(self, op: str, request_id: str, payload: bytes, timeout: float) -> Answer:
        """Publish a request on `req/{op}` (QoS 1) and return its answer from `res/{op}`, or raise RequestTimeoutError.

        `timeout` bounds everything: waiting for a session, the publish and the answer. A request is sent once; an
        answer lost with its connection shows as a timeout, and the caller decides whether to ask again.
        """
        future = self._requests.open(op, request_id)
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                client = self._client
                if client is None:  # the session ended between the event and here; the timeout still bounds us
                    raise UplinkError(f"the connection to the {self._where()} dropped before {op} request was sent")
                await self._publish(
                    client,
                    topics.request(self.gw, op),
                    payload,
                    retain=False,
                    properties=self._request_properties(op, request_id),
                )
                return await future
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"no answer to {op} request {request_id} within {timeout:.1f} s"
                + ("" if self.is_connected else f" (not connected to the {self._where()})")
                + "; check the broker and that the platform's worker runs",
                op=op, request_id=request_id,
            ) from exc  # fmt: skip
        except aiomqtt.MqttError as exc:
            raise UplinkError(f"{op} request {request_id} not sent: {exc}") from exc
        finally:
            self._requests.close(op, request_id)

    async def request_lease(self, signed: Signed[LeaseRequest], timeout: float) -> LeaseAnswer:
        """Ask the platform for a lease (`req/lease`) with a signed request; the answer may be a refusal."""
        answer = await self._signed(signed, timeout)
        assert isinstance(answer, LeaseAnswer), "res/lease answers decode as LeaseAnswer"
        return answer

    async def request_release(self, signed: Signed[Release], timeout: float) -> ReleaseAnswer:
        """Ask what came back of a closed lease (`req/release`); the answer may ask to resend later."""
        answer = await self._signed(signed, timeout)
        assert isinstance(answer, ReleaseAnswer), "res/release answers decode as ReleaseAnswer"
        return answer

    async def request_renew(self, signed: Signed[RenewRequest], timeout: float) -> RenewAnswer:
        """Ask for a new client certificate (`req/renew`) over this mTLS session; the answer may be a refusal."""
        answer = await self._signed(signed, timeout)
        assert isinstance(answer, RenewAnswer), "res/renew answers decode as RenewAnswer"
        return answer

    async def request_rotate(self, signed: Signed[KeyIntroduction], timeout: float) -> RenewAnswer:
        """Introduce the gateway's new key (`req/rotate`), signed by its current one; `ok` carries its certificate."""
        answer = await self._signed(signed, timeout)
        assert isinstance(answer, RenewAnswer), "res/rotate answers decode as RenewAnswer"
        return answer

    async def _signed(self, signed: Signed[SignedRequest], timeout: float) -> Answer:
        if signed.request.gw != self.gw:
            raise UplinkError(
                f"a {signed.op} request in the name of gateway {signed.request.gw} is not sent by gateway {self.gw}"
            )
        return await self.request(signed.op, signed.request.id, signed.token, timeout)

    @property
    def ignored_answers(self) -> int:
        """Answers on `res/...` dropped because they did not parse or matched no pending request."""
        return self._requests.ignored

    # -- the connect loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, and reconnect with capped jittered backoff, until cancelled."""
        if self._tg is not None:
            raise UplinkError(f"the uplink of gateway {self.gw} is running already")
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                await self.mqtt.run()
        finally:
            self._tg = None

    async def _new_client(self) -> aiomqtt.Client:
        tls = await asyncio.to_thread(connection.tls_context, self.config) if self.config.tls else None
        return make_client(
            self.config, f"rebadge-gw-{self.gw}", self._protocols[0], self._will(), self.timing.mqtt_timeout_s, tls
        )

    def _fall_back(self, exc: BaseException) -> bool:
        """On a broker that refuses MQTT 5, try 3.1.1 at once (with protocol = "auto")."""
        if not connection.is_protocol_refusal(exc) or len(self._protocols) < 2:
            return False
        log.info("uplink: %s refuses MQTT %s; using MQTT %s", self._where(), protocol_name(self._protocols[0]),
                 protocol_name(self._protocols[1]))  # fmt: skip
        self._protocols.pop(0)
        return True

    async def _greet(self, client: aiomqtt.Client) -> None:
        """Subscribe to acks, answers and commands, then say online (retained) so the will has something to replace."""
        self._protocol = self._protocols[0]
        wanted = [
            (topics.ack(self.gw), 1), *((topic, 1) for topic in self._requests.response_topics),
            (topics.CLOUD_READY, 1), (HA_STATUS, 1),
        ]  # fmt: skip
        if self._on_scan is not None:
            wanted.append((topics.command(self.gw, "scan"), 1))
        for topic, qos in wanted:
            granted = await client.subscribe(topic, qos, timeout=self.timing.mqtt_timeout_s)
            codes = [g.value if isinstance(g, ReasonCode) else int(g) for g in granted]
            if any(code >= 0x80 for code in codes):
                log.error("uplink: the broker refused our subscription to %s (codes %s); check its ACL", topic, codes)
        await self._publish(client, topics.status(self.gw), self._status("online"), retain=True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._connected.set()
        try:
            await self._serve_tasks(client)
        except asyncio.CancelledError:
            # A clean DISCONNECT drops the will (aiomqtt's public API has no DISCONNECT-with-will), so a clean
            # shutdown says offline itself.
            await self._say_offline(client)
            raise
        finally:
            self._connected.clear()
            self._client = None

    async def _serve_tasks(self, client: aiomqtt.Client) -> None:
        async def publish_record(topic: str, payload: bytes) -> None:
            await self._publish(client, topic, payload, retain=False)

        async def publish_event(payload: bytes) -> None:
            await self._publish(client, topics.events(self.gw), payload, retain=False)

        async def publish_retained(topic: str, payload: bytes) -> None:
            await self._publish(client, topic, payload, retain=True)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._receive(client), name=f"uplink {self.gw}: receive")
            tg.create_task(self._records.run(publish_record), name=f"uplink {self.gw}: records")
            tg.create_task(self._outbox.run(publish_event, publish_retained), name=f"uplink {self.gw}: outbox")

    async def _publish(
        self, client: aiomqtt.Client, topic: str, payload: bytes, *, retain: bool, properties: Properties | None = None
    ) -> None:
        await client.publish(
            topic, payload, qos=1, retain=retain, properties=properties, timeout=self.timing.mqtt_timeout_s
        )
        # Python 3.11's asyncio.wait_for (inside aiomqtt) swallows a cancel that lands as the PUBACK arrives; the
        # outbox and record loops would then outlive their cancelled session and hang the agent's shutdown.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Retained status offline on the way out (bounded)."""
        try:
            async with asyncio.timeout(self.timing.offline_publish_timeout_s):
                await client.publish(
                    topics.status(self.gw),
                    self._status("offline"),
                    qos=1,
                    retain=True,
                    timeout=self.timing.offline_publish_timeout_s,
                )  # not _publish: this task is being cancelled on purpose
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.debug("uplink: could not say offline on the way out: %s", exc)

    # -- what comes in --------------------------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        ack_topic, scan_topic = topics.ack(self.gw), topics.command(self.gw, "scan")
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if message.topic.value == ack_topic:
                await self._records.on_ack(payload, live=not message.retain)
            elif message.topic.value == scan_topic:
                self._on_command(payload)
            elif message.topic.value == topics.CLOUD_READY and not message.retain:
                self._records.platform_ready()
            elif message.topic.value == HA_STATUS and not message.retain:
                # A retained "online" is old news: the configs went out with this session's start anyway.
                self._on_home_assistant(payload)
            elif (op := self._requests.op_of(message.topic.value)) is not None:
                correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
                self._requests.on_answer(op, payload, correlation if isinstance(correlation, bytes) else None)
            else:
                log.debug("uplink: message on unexpected topic %s ignored", message.topic.value)

    def _on_home_assistant(self, payload: bytes) -> None:
        """Home Assistant (re)started: it may have lost its entities, so the discovery configs go out again."""
        if payload.strip() != HA_ONLINE:
            return
        now = time.monotonic()
        if self._ha_sent_at is not None and now - self._ha_sent_at < HA_REPUBLISH_MIN_S:
            log.debug("uplink: Home Assistant online again within %.0f s; configs were just sent", HA_REPUBLISH_MIN_S)
            return
        self._ha_sent_at = now
        sent = self._outbox.resend_retained(f"{HA_PREFIX}/")
        log.info("uplink: Home Assistant is online; sending its %d discovery configs again", sent)

    def _on_command(self, payload: bytes) -> None:
        """A `cmd/scan` payload: scanned only when it is the platform's signed command for this gateway, in time and
        not seen before; anything else is answered with a REFUSED event and never scanned."""
        if self._on_scan is None or self._tg is None:
            return
        try:
            wall = time.time()
            # The start as today's clock reads it: a clock NTP set right since then moves it along.
            self._command_nonces.not_before = int(wall - (time.monotonic() - self._started))
            cmd = check_scan(payload, self._issuers, self.gw, int(wall), self._command_nonces)
        except CommandRefusal as refusal:
            log.warning("uplink: %s%s", f"{refusal.sn}: " if refusal.sn else "", refusal.message)
            log.debug("uplink: the refused command: %s", shown(payload))
            self._refuse_command(refusal)
            return
        if len(self._scans) >= self.timing.max_running_scans:
            message = f"{len(self._scans)} scans are running already; nothing was started. Scan {cmd.sn} again shortly"
            log.warning("%s: scan command refused: %s", cmd.sn, message)
            self._refuse_command(CommandRefusal(RefusalReason.GATEWAY_BUSY, message, cmd.sn, cmd.id))
            return
        verified = ScanCommand(sn=cmd.sn, id=cmd.id)
        task = self._tg.create_task(self._run_scan(self._on_scan, verified), name=f"uplink {self.gw}: scan {cmd.sn}")
        self._scans.add(task)
        task.add_done_callback(self._scans.discard)

    def _refuse_command(self, refusal: CommandRefusal) -> None:
        event = ScanEvent(
            sn=refusal.sn, result=Result.REFUSED, reason=refusal.reason, message=refusal.message,
            at=int(time.time()), id=refusal.request_id,
        )  # fmt: skip
        self._outbox.add_event(event.model_dump_json().encode())

    async def _run_scan(self, on_scan: ScanHandler, cmd: ScanCommand) -> None:
        try:
            await on_scan(cmd)
        except Exception:
            # One failed scan must not take the uplink (and the agent) down with it.
            log.exception("%s: scan command failed", cmd.sn)

    # -- helpers --------------------------------------------------------------------------------------------------

    def _status(self, state: str) -> bytes:
        status = StatusPayload(state=state, gw=self.gw, name=self.name, version=self.version, at=int(time.time()))
        return status.model_dump_json().encode()

    def _request_properties(self, op: str, request_id: str) -> Properties | None:
        """MQTT 5's own request/response properties (the platform echoes the correlation data); none on 3.1.1."""
        if self._protocol is not aiomqtt.ProtocolVersion.V5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = topics.response(self.gw, op)
        props.CorrelationData = request_id.encode()
        return props

    def _will(self) -> LastWill:
        return LastWill(topics.status(self.gw), self._status("offline"))

    def _hint(self) -> str:
        where = "mqtt.socket_path" if self.config.transport == "unix" else "mqtt.host and mqtt.port"
        return (
            f"records wait in the journal until it is reached; start the broker, or correct {where} in the "
            "agent's config; retries are logged at debug until the cause changes"
        )

    def _where(self) -> str:
        if self.config.transport == "unix":
            return f"mqtt broker at {self.config.socket_path}"
        return f"mqtt broker {self.config.host}:{self.config.port}" + (" (TLS)" if self.config.tls else "")
