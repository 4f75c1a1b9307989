"""The MQTT worker: ingests gateways' record batches, publishes signed acks, answers lease and release requests.

Workers keep no state of their own, so several can share one MQTT 5 shared subscription (`$share/GROUP/...`)
in front of one database; the compare-and-set on each gateway's head keeps the ledger right whoever ingests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
from collections import Counter

import aiomqtt
from aiomqtt import ProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.exc import SQLAlchemyError

from cloud_bridge.errors import CloudError
from cloud_bridge.ledger import Outcome
from cloud_bridge.platform import IngestResult, Platform
from cloud_bridge.unverified import UNEXPECTED
from mqtt_link import ConnectionState, ReconnectPolicy, SessionRunner
from mqtt_link.policy import HEALTHY_AFTER_S
from wire import topics
from wire.lease_request import (
    LEASE_OP,
    RELEASE_OP,
    RENEW_OP,
    ROTATE_OP,
    AnswerCode,
    LeaseAnswer,
    ReleaseAnswer,
    RenewAnswer,
)

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 10.0
RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 30.0
KEEPALIVE_S = 30
SWEEP_S = 60.0
# Answers to a request that did not verify as the gateway's own: counted, like unverified batches.
UNVERIFIED_ANSWERS = frozenset({AnswerCode.MALFORMED, AnswerCode.BAD_SIGNATURE, AnswerCode.UNKNOWN_GATEWAY})


def _stop_if_cancelled(exc: BaseException | None = None) -> None:
    # Python 3.11's asyncio.wait_for (which aiomqtt awaits publishes and acks with) can swallow a cancellation
    # that races a reply, and aiomqtt's __aexit__ can turn one into an MqttError. TaskGroup cancels a child only
    # once, so a swallowed cancellation would leave the worker running forever: check for a pending request.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


def _reply_properties(message: aiomqtt.Message) -> Properties | None:
    # Echo MQTT 5 correlation data, so a requester can match answers without parsing them.
    correlation = getattr(message.properties, "CorrelationData", None) if message.properties else None
    if correlation is None:
        return None
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = correlation
    return props


class IngestWorker:
    """Subscribes to every gateway's `records` topic, ingests each batch and publishes the outcome."""

    def __init__(
        self,
        platform: Platform,
        *,
        host: str,
        port: int,
        shared_group: str | None = None,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        reconnect_min_s: float = RECONNECT_MIN_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
        healthy_after_s: float = HEALTHY_AFTER_S,
        sweep_s: float = SWEEP_S,
    ) -> None:
        self.platform = platform
        self.host = host
        self.port = port
        self.shared_group = shared_group
        self._username = username
        self._password = password
        self._tls = tls_context
        self.sweep_s = sweep_s
        self.client_id = f"rebadge-cloud-{secrets.token_hex(4)}"
        self.ready = asyncio.Event()  # set while connected and subscribed
        self.lost = asyncio.Event()  # set when a connection ends, until the next one is ready
        self.handled = 0  # payloads taken off the broker, for tests and health
        self.reacked = 0  # acks published again for batches that wait behind a gap
        self.batches: Counter[str] = Counter()  # record batches ingested by this worker, by outcome (metrics)
        self._live: aiomqtt.Client | None = None  # the session's client while subscribed, for the sweep's acks
        self.mqtt = SessionRunner(
            f"worker {self.client_id}",
            new_client=self._new_client,
            greet=self._greet,
            serve=self._serve,
            policy=ReconnectPolicy(reconnect_min_s, reconnect_max_s, healthy_after_s=healthy_after_s),
            connect_timeout_s=CONNECT_TIMEOUT_S,
            where=f"MQTT broker {host}:{port}",
            logger=log,
            hint="records wait on the gateways; start the broker, or correct --mqtt-host and --mqtt-port; retries "
            "are logged at debug until the cause changes",
        )
        self.mqtt.link.add_listener(self._on_state)

    def subscription(self, topic: str) -> str:
        """`topic`, inside the shared subscription group when the worker shares its load."""
        return f"$share/{self.shared_group}/{topic}" if self.shared_group else topic

    async def run(self) -> None:
        """Ingest and answer requests until cancelled; every `sweep_s` forget stale request nonces and publish the
        acks of chains an admin rebased."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.mqtt.run(), name="cloud-worker-mqtt")
            tasks.create_task(self._sweep_loop(), name="cloud-worker-sweep")

    async def _sweep_loop(self) -> None:
        while True:
            try:
                pruned = await self.platform.prune_nonces()
            except (SQLAlchemyError, OSError):
                log.exception("could not prune request nonces; trying again in %.0fs", self.sweep_s)
            else:
                log.debug("forgot %d request nonces past the replay window", pruned)
            await self._publish_due_acks()
            _stop_if_cancelled()
            await asyncio.sleep(self.sweep_s)

    async def _publish_due_acks(self) -> None:
        """Tell each gateway an admin rebased where its chain now goes on (its restored journal waits for it)."""
        client = self._live
        if client is None:
            return  # not connected: the acks stay due until the next sweep
        try:
            due = await self.platform.due_acks()
            for gw, ack in due:
                await client.publish(topics.ack(gw), ack, qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
                log.info("published the rebased head of gateway %s", gw)
        except (SQLAlchemyError, OSError, aiomqtt.MqttError):
            log.exception("could not publish the acks of rebased gateways; the gateways' next batches get them")

    def _on_state(self, old: ConnectionState, new: ConnectionState) -> None:
        if new is ConnectionState.CONNECTED:
            self.lost.clear()
            self.ready.set()
        elif old is ConnectionState.CONNECTED or new is ConnectionState.BACKING_OFF:
            self.ready.clear()
            self.lost.set()

    async def _new_client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            protocol=ProtocolVersion.V5,
            username=self._username,
            password=self._password,
            tls_context=self._tls,
            keepalive=KEEPALIVE_S,
            timeout=CONNECT_TIMEOUT_S,
        )

    async def _greet(self, client: aiomqtt.Client) -> None:
        for topic in (topics.ALL_RECORDS, topics.ALL_REQUESTS):
            await client.subscribe(self.subscription(topic), qos=1, timeout=CONNECT_TIMEOUT_S)
        # Listening now: gateways that sent records into a broker with no worker on it send them again at once.
        ready = json.dumps({"at": int(self.platform.now())}).encode()
        await client.publish(topics.CLOUD_READY, ready, qos=1, retain=False, timeout=CONNECT_TIMEOUT_S)

    async def _serve(self, client: aiomqtt.Client) -> None:
        self._live = client
        try:
            _stop_if_cancelled()
            async for message in client.messages:
                await self._on_message(client, message)
                _stop_if_cancelled()
        finally:
            self._live = None

    async def _on_message(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        self.handled += 1
        try:
            gw = topics.gw_of(message.topic.value)
        except ValueError:
            self.platform.unverified.count(UNEXPECTED, None)
            return
        payload = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
        if message.topic.matches(topics.ALL_REQUESTS):
            await self._answer(client, message, gw, payload)
            return
        try:
            result = await self.platform.ingest(payload, topic_gw=gw)
        except (SQLAlchemyError, CloudError, OSError):
            # The database is down or busy: nothing was applied and nothing is acked, so the gateway resends.
            log.exception("could not ingest a batch from gateway %s; it will be resent", gw)
            self.batches["failed"] += 1
            return
        self.batches[result.outcome.value] += 1
        await self._publish(client, result)

    def health(self) -> dict[str, object]:
        """Connection state, payloads handled, and unverified payloads counted per `topic kind/gateway`."""
        counts = self.platform.unverified.counts()
        return {
            "connected": self.ready.is_set(),
            "mqtt": self.mqtt.state.value,
            "connections": self.mqtt.connections,
            "handled": self.handled,
            "reacked": self.reacked,
            "unverified": {f"{kind}/{gw}": n for (kind, gw), n in sorted(counts.items())},
        }

    async def _answer(self, client: aiomqtt.Client, message: aiomqtt.Message, gw: str, payload: bytes) -> None:
        op = message.topic.value.rsplit("/", 1)[-1]
        answer: LeaseAnswer | ReleaseAnswer | RenewAnswer
        try:
            if op == LEASE_OP:
                answer = await self.platform.answer_lease(gw, payload)
            elif op == RELEASE_OP:
                answer = await self.platform.answer_release(gw, payload)
            elif op == RENEW_OP:
                answer = await self.platform.answer_renew(gw, payload)
            elif op == ROTATE_OP:
                answer = await self.platform.answer_rotate(gw, payload)
            else:
                self.platform.unverified.count(UNEXPECTED, gw)
                return
        except (SQLAlchemyError, OSError):
            log.exception("could not answer %s request of gateway %s", op, gw)
            answer = {LEASE_OP: LeaseAnswer, RENEW_OP: RenewAnswer, ROTATE_OP: RenewAnswer}.get(op, ReleaseAnswer)(
                id="", code=AnswerCode.ERROR, message="the platform could not answer now; send the request again"
            )
        if answer.code in UNVERIFIED_ANSWERS:
            self.platform.unverified.count(f"req/{op}", gw)
        await client.publish(
            topics.response(gw, op),
            answer.to_cbor(),
            qos=1,
            properties=_reply_properties(message),
            timeout=PUBLISH_TIMEOUT_S,
        )

    async def _publish(self, client: aiomqtt.Client, result: IngestResult) -> None:
        ack = result.ack
        if result.outcome is Outcome.WAITING and result.gw is not None:
            # The gateway sent past a batch we never got (it went out before we subscribed): tell it at once where
            # we stand, so it resends from there instead of waiting for its resend timer.
            ack = self.platform.current_ack(result)
            self.reacked += ack is not None
        if ack is not None and result.gw is not None:
            await client.publish(topics.ack(result.gw), ack, qos=1, retain=True, timeout=PUBLISH_TIMEOUT_S)
            log.debug("acked gateway %s up to seq %s (%s)", result.gw, result.seq, result.outcome.value)
        for progress in result.progress:
            await client.publish(
                topics.cert_progress(progress.cert_no),
                progress.model_dump_json(),
                qos=1,
                retain=True,
                timeout=PUBLISH_TIMEOUT_S,
            )
        for event in result.anomalies:
            await client.publish(topics.ANOMALIES, event.model_dump_json(), qos=1, timeout=PUBLISH_TIMEOUT_S)
