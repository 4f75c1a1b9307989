"""The platform's service identity on the broker: mTLS with the certificate `rebadge provision broker-config` wrote.

Built once at the edge (the CLI); a file that cannot be loaded, or a certificate outside its dates, stops the
platform with a message naming the file, the subject and the dates. There is no plaintext fallback.
"""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cloud_bridge.errors import ConfigError
from wire import x509 as wx

BROKER_CONFIG_HINT = "rebadge provision broker-config --ca-dir DATA_DIR --out BROKER_DIR"


@dataclass(frozen=True)
class ServiceTls:
    """The files of the platform's service identity: the CA that signed the broker, its certificate and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _certificate(path: Path, now: datetime.datetime) -> str:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--mqtt-cert {path}: not a readable PEM certificate ({exc})") from exc
    if not wx.in_force(cert, now):
        raise ConfigError(
            f"--mqtt-cert {path}: the platform's certificate ({wx.describe(cert)}) is expired or not yet valid at "
            f"{now.isoformat(timespec='seconds')}; check the clock, or write new ones with: {BROKER_CONFIG_HINT}"
        )
    return wx.describe(cert)


def service_context(tls: ServiceTls, now: datetime.datetime | None = None) -> ssl.SSLContext:
    """A client TLS context presenting the platform's identity; the broker's certificate and name are checked."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--mqtt-ca {tls.ca_file}: cannot load the broker's CA ({exc})") from exc
    about = _certificate(tls.cert_file, now)
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"--mqtt-cert {tls.cert_file} ({about}) / --mqtt-key {tls.key_file}: cannot load the platform's "
            f"certificate and key ({exc}); check both paths and that the key matches the certificate"
        ) from exc
    return context
