"""The MQTT connection layer: an aiomqtt (paho) client built from MqttConfig, protocol choice, backoff, close.

aiomqtt runs paho's blocking connect in an executor thread and paho's socket I/O on the event loop's reader and
writer callbacks, so nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import ConfigError

log = logging.getLogger(__name__)

# One subscribe or publish round trip (SUBACK, PUBACK) before the link is taken for dead.
MQTT_TIMEOUT_S = 10.0
# TCP (paho's own 5 s connect timeout) plus TLS plus CONNACK.
CONNECT_TIMEOUT_S = 20.0
# DISCONNECT written and the socket closed.
DISCONNECT_TIMEOUT_S = 2.0
# A flood of commands must not grow memory without bound; aiomqtt drops past this with a warning.
MAX_QUEUED_INCOMING = 1000
# Refusals that mean "this broker does not speak the protocol version you asked for":
# 1 is MQTT 3.1.1's "unacceptable protocol version" (paho maps it to 0x84 for an MQTT 5 client).
PROTOCOL_REFUSED_CODES = frozenset({1, 0x84})
# Doubling stops growing here so a long outage cannot overflow the float.
MAX_BACKOFF_DOUBLINGS = 32

PROTOCOLS: dict[str, tuple[aiomqtt.ProtocolVersion, ...]] = {
    "auto": (aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311),
    "5": (aiomqtt.ProtocolVersion.V5,),
    "3.1.1": (aiomqtt.ProtocolVersion.V311,),
}


def protocol_name(protocol: aiomqtt.ProtocolVersion) -> str:
    """'5' or '3.1.1', for logs and docs."""
    return "5" if protocol is aiomqtt.ProtocolVersion.V5 else "3.1.1"


def check_config(config: MqttConfig) -> None:
    """Refuse a broker setting that cannot work, naming the field."""
    if config.transport == "unix" and config.socket_path is None:
        raise ConfigError("mqtt.socket_path is not set but mqtt.transport is 'unix': set the broker's socket path")
    if config.reconnect_max_s < config.reconnect_min_s:
        raise ConfigError(
            f"mqtt.reconnect_max_s ({config.reconnect_max_s}) is below mqtt.reconnect_min_s "
            f"({config.reconnect_min_s}): raise it"
        )
    if config.password is not None and config.username is None:
        raise ConfigError("mqtt.password is set without mqtt.username: set both or neither")


class _ClosingSSLSocket(ssl.SSLSocket):
    """An SSL socket that closes itself when its handshake fails (paho would leave it open)."""

    def do_handshake(self, block: bool = False) -> None:
        """Handshake; close the socket if it fails."""
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """mTLS with the gateway's enrolled certificate; the broker's certificate and host name are always checked.

    Reads files: call it off the event loop. Built for every connection, so a renewed certificate is picked up.
    """
    if config.tls is None:
        return None
    tls = config.tls
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.tls.ca_file {tls.ca_file}: cannot load the broker's CA ({exc})") from exc
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"mqtt.tls.cert_file {tls.cert_file} / mqtt.tls.key_file {tls.key_file}: cannot load the gateway's "
            f"certificate and key ({exc}); check both paths and that the key matches the certificate"
        ) from exc
    context.sslsocket_class = _ClosingSSLSocket
    return context


@dataclass(frozen=True)
class LastWill:
    """What the broker publishes for us when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes


def make_client(
    config: MqttConfig, identifier: str, protocol: aiomqtt.ProtocolVersion, will: LastWill, timeout: float,
    tls: ssl.SSLContext | None,
) -> aiomqtt.Client:  # fmt: skip
    """A fresh client for one connection; with `config.tls` set it only ever speaks TLS."""
    if config.tls is not None and tls is None:
        raise ConfigError("mqtt.tls is set but no TLS context was built; refusing to connect in plaintext")
    if config.transport == "unix":
        host, port = str(config.socket_path), config.port  # paho checks the port even though a socket has none
    else:
        host, port = config.host, config.port
    return aiomqtt.Client(
        host,
        port,
        username=config.username,
        password=config.password,
        identifier=identifier,
        protocol=protocol,
        will=aiomqtt.Will(will.topic, will.payload, qos=1, retain=True),
        # paho refuses clean_session with MQTT 5 (clean_start covers it there).
        clean_session=True if protocol is aiomqtt.ProtocolVersion.V311 else None,
        transport=config.transport,
        timeout=timeout,
        keepalive=config.keepalive_s,
        max_queued_incoming_messages=MAX_QUEUED_INCOMING,
        tls_context=tls,
    )


def is_protocol_refusal(exc: BaseException) -> bool:
    """Whether a failed connect means the broker refused the MQTT protocol version."""
    if not isinstance(exc, aiomqtt.MqttCodeError):
        return False
    code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
    return code in PROTOCOL_REFUSED_CODES


async def open_client(client: aiomqtt.Client, timeout: float) -> None:
    """Connect; a connect that fails, times out or is cancelled leaves no socket behind."""
    try:
        async with asyncio.timeout(timeout):
            await client.__aenter__()
    except BaseException:
        drop_socket(client)
        raise


async def close_client(client: aiomqtt.Client, *, with_will: bool = False) -> None:
    """DISCONNECT and wait (bounded) for the socket to close; `with_will` asks an MQTT 5 broker to send the will."""
    if with_will:
        # MQTT 5 reason 0x04: the broker publishes our last will (status offline) although we leave cleanly.
        # aiomqtt's own DISCONNECT, queued after this one, is never written: paho closes the socket after the first.
        reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        client._client.disconnect(reasoncode=reason)
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await client.__aexit__(None, None, None)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        log.debug("uplink: no clean disconnect (%s); closing the socket", exc)
    finally:
        drop_socket(client)


def drop_socket(client: aiomqtt.Client) -> None:
    """Close paho's socket if one is still open (aiomqtt leaves it open when a connect fails half way)."""
    paho = client._client
    if paho.socket() is not None:
        with contextlib.suppress(OSError):
            paho._sock_close()


class Backoff:
    """Capped exponential reconnect delay with jitter, so gateways that lost one broker do not return in step."""

    def __init__(self, min_s: float, max_s: float, rng: Callable[[], float] = random.random) -> None:
        self._min = min_s
        self._max = max_s
        self._rng = rng
        self._failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt: uniform in [cap/2, cap], cap doubling per failure up to max_s."""
        cap = min(self._max, self._min * 2.0 ** min(self._failures, MAX_BACKOFF_DOUBLINGS))
        self._failures += 1
        return cap / 2 + self._rng() * cap / 2

    def reset(self) -> None:
        """Start from min_s again (after a connection that worked)."""
        self._failures = 0
