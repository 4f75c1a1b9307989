"""The MQTT connection layer: an aiomqtt (paho) client built from MqttConfig, TLS, protocol choice.

The life cycle (connect, reconnect, state) is `mqtt_link.SessionRunner`'s.

aiomqtt runs paho's blocking connect in an executor thread and paho's socket I/O on the event loop's reader and
writer callbacks, so nothing here blocks the loop.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from cryptography import x509
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.errors import ConfigError
from wire.x509 import describe, in_force

log = logging.getLogger(__name__)

# One subscribe or publish round trip (SUBACK, PUBACK) before the link is taken for dead.
MQTT_TIMEOUT_S = 10.0
# TCP (paho's own 5 s connect timeout) plus TLS plus CONNACK.
CONNECT_TIMEOUT_S = 20.0
# A flood of commands must not grow memory without bound; aiomqtt drops past this with a warning.
MAX_QUEUED_INCOMING = 1000
# Refusals that mean "this broker does not speak the protocol version you asked for":
# 1 is MQTT 3.1.1's "unacceptable protocol version" (paho maps it to 0x84 for an MQTT 5 client).
PROTOCOL_REFUSED_CODES = frozenset({1, 0x84})

ENROL_HINT = "rebadge provision enrol --state-dir STATE_DIR --platform URL --token NEW_TOKEN"

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
        raise ConfigError(
            f"mqtt.tls.ca_file {tls.ca_file}: cannot load the broker's CA ({exc}); enrol again to get it: {ENROL_HINT}"
        ) from exc
    about = _certificate_in_force(tls.cert_file)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"mqtt.tls.cert_file {tls.cert_file} ({about}) / mqtt.tls.key_file {tls.key_file}: cannot load the "
            f"gateway's certificate and key ({exc}); check both paths and that the key matches the certificate, "
            f"or enrol again: {ENROL_HINT}"
        ) from exc
    context.sslsocket_class = _ClosingSSLSocket
    return context


def _certificate_in_force(path: Path) -> str:
    """Subject and dates of the gateway's certificate; ConfigError naming them if it is outside its dates."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return "not a readable PEM certificate"
    now = datetime.datetime.now(datetime.UTC)
    if not in_force(cert, now):
        raise ConfigError(
            f"mqtt.tls.cert_file {path}: the gateway's certificate ({describe(cert)}) is expired or not yet valid "
            f"at {now.isoformat(timespec='seconds')}; check the gateway's clock, or enrol again: {ENROL_HINT}"
        )
    return describe(cert)


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
        password=None if config.password is None else config.password.get_secret_value(),
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
