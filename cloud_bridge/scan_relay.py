"""The console's link to the gateways: signed scan commands out on `cmd/scan`, their scan events back.

One MQTT client of the serving process (its own client id; the platform's service identity over mTLS where the
broker has it). Results are matched by request id and kept in memory for the last `MAX_KEPT` commands, so the page
that sent them can show them live; the ledger's counts come from the gateways' signed records, never from here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

import aiomqtt
from aiomqtt import ProtocolVersion
from pydantic import ValidationError

from cloud_bridge.errors import ConflictError
from mqtt_link import ConnectionState, ReconnectPolicy, SessionRunner
from wire import topics
from wire.keys import SigningKey
from wire.scan_command import SCAN_OP, sign_scan
from wire.topics import ScanEvent

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 5.0
KEEPALIVE_S = 30
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 30.0
MAX_KEPT = 1000  # commands whose results are kept, oldest forgotten first
ALL_EVENTS = f"{topics.BASE}/gw/+/events"


@dataclass(frozen=True)
class SentScan:
    """One scan command the console sent, and the gateway's event once it answered."""

    request_id: str
    gw: str
    sn: str
    sent_at: int
    sent_by: str
    event: ScanEvent | None = None


class ScanRelay:
    """Publishes signed scan commands and collects the events that answer them; `run()` until cancelled."""

    def __init__(
        self, host: str, port: int, *, tls_context: ssl.SSLContext | None = None,
        reconnect_min_s: float = RECONNECT_MIN_S, reconnect_max_s: float = RECONNECT_MAX_S,
        clock: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.host = host
        self.port = port
        self._tls = tls_context
        self._clock = clock
        self.client_id = f"rebadge-console-{secrets.token_hex(4)}"
        self._sent: OrderedDict[str, SentScan] = OrderedDict()
        self._live: aiomqtt.Client | None = None
        self._changed = asyncio.Condition()
        self.mqtt = SessionRunner(
            f"console {self.client_id}", new_client=self._new_client, greet=self._greet, serve=self._serve,
            policy=ReconnectPolicy(reconnect_min_s, reconnect_max_s), connect_timeout_s=CONNECT_TIMEOUT_S,
            where=f"MQTT broker {host}:{port}", logger=log,
        )  # fmt: skip

    @property
    def connected(self) -> bool:
        """Whether commands can be sent now."""
        return self.mqtt.state is ConnectionState.CONNECTED and self._live is not None

    async def run(self) -> None:
        """Keep the link up until cancelled."""
        await self.mqtt.run()

    async def send(self, key: SigningKey, gw: str, sn: str, sent_by: str) -> SentScan:
        """Sign a scan command for `gw` with the platform's `key` and publish it; ConflictError when offline."""
        client = self._live
        if client is None:
            raise ConflictError(
                f"the platform is not connected to the {self.mqtt.where} now; nothing was sent to gateway {gw}. "
                "Try again in a moment (the platform's log says why)"
            )
        now = int(self._clock())
        sent = SentScan(secrets.token_hex(8), gw, sn, now, sent_by)
        token = sign_scan(key, gw, sn, sent.request_id, now)
        try:
            await client.publish(topics.command(gw, SCAN_OP), token, qos=1, timeout=PUBLISH_TIMEOUT_S)
        except aiomqtt.MqttError as exc:
            raise ConflictError(f"the scan of {sn} was not sent to gateway {gw} ({exc}); try again") from exc
        self._keep(sent)
        log.info("scan of %s sent to gateway %s by %s (request %s)", sn, gw, sent_by, sent.request_id)
        return sent

    def results(self, gw: str) -> list[SentScan]:
        """The commands sent to `gw` that are still kept, newest first."""
        return [s for s in reversed(self._sent.values()) if s.gw == gw]

    def _keep(self, sent: SentScan) -> None:
        self._sent[sent.request_id] = sent
        while len(self._sent) > MAX_KEPT:
            self._sent.popitem(last=False)

    async def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host, self.port, identifier=self.client_id, protocol=ProtocolVersion.V5, tls_context=self._tls,
            keepalive=KEEPALIVE_S, timeout=CONNECT_TIMEOUT_S,
        )  # fmt: skip

    async def _greet(self, client: aiomqtt.Client) -> None:
        await client.subscribe(ALL_EVENTS, qos=1, timeout=CONNECT_TIMEOUT_S)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._live = client
        try:
            async for message in client.messages:
                self._on_event(message.topic.value, message.payload)
        finally:
            self._live = None

    def _on_event(self, topic: str, payload: object) -> None:
        try:
            gw = topics.gw_of(topic)
            event = ScanEvent.model_validate_json(payload if isinstance(payload, bytes) else b"")
        except (ValueError, ValidationError):
            log.debug("console: an event on %s that does not parse was ignored", topic)
            return
        sent = self._sent.get(event.id or "")
        # Only the gateway the command went to answers it: the broker's ACL keeps each gateway under its prefix.
        if sent is None or sent.gw != gw or sent.event is not None:
            return
        self._sent[sent.request_id] = replace(sent, event=event)
