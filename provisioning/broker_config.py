"""`rebadge provision broker-config`: mosquitto with mTLS, identities from certificate CNs, an ACL, persistence.

Run it where the platform's CA is (its data dir): it signs the broker's server certificate and the platform's service
identity with that CA. Gateways get their client certificates by enrolling; the broker takes each certificate's CN
(a gateway id, or the platform's identity) as the MQTT user name and the ACL confines every gateway to its own topics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from durable.files import write_atomically
from provisioning.enrolment import DIR_MODE, PUBLIC_MODE, SECRET_MODE, EnrolmentError
from wire import topics
from wire import x509 as wx

CA_KEY_FILE = "ca.key"
CA_CERT_FILE = "ca.crt"
PLATFORM_IDENTITY = "rebadge-platform"
HA_PREFIX = "homeassistant"  # Home Assistant's discovery prefix, which the agent publishes under
DEFAULT_PORT = 8883
# Save the in-memory database after every change of retained messages, subscriptions or queues: a SIGKILL then
# loses nothing already acknowledged. A busy broker can raise it at the cost of that window.
DEFAULT_AUTOSAVE_CHANGES = 1


@dataclass(frozen=True)
class BrokerSettings:
    """What the configuration says."""

    out: Path
    port: int = DEFAULT_PORT
    bind: str = "0.0.0.0"  # noqa: S104 - gateways on the factory network connect to it
    dns_names: tuple[str, ...] = ("localhost",)
    ip_addresses: tuple[str, ...] = ("127.0.0.1",)
    platform_identity: str = PLATFORM_IDENTITY
    user: str = "mosquitto"
    valid_days: int = 365
    autosave_changes: int = DEFAULT_AUTOSAVE_CHANGES


def acl(platform_identity: str) -> str:
    """The ACL: each gateway (%u, its certificate's CN) writes only under its prefix and reads only its answers."""
    gw, cloud = f"{topics.BASE}/gw/%u", f"{topics.BASE}/cloud"  # the layout of wire.topics, with mosquitto's %u
    return (
        "# Written by `rebadge provision broker-config`. The user name is the client certificate's CN.\n"
        "# Every gateway: write only under its own prefix; read its acks, its answers and commands to it.\n"
        f"pattern write {gw}/#\n"
        f"pattern read {cloud}/gw/%u/#\n"
        f"pattern read {gw}/res/#\n"
        f"pattern read {gw}/cmd/#\n"
        "# The platform's workers' cue that they listen again: send unacked records at once.\n"
        f"pattern read {topics.CLOUD_READY}\n"
        "# Its Home Assistant discovery configs, in HA's node_id form with the gateway id as node.\n"
        f"pattern write {HA_PREFIX}/+/%u/#\n"
        "# Home Assistant's birth message, the cue to send those configs again (only HA's own user may write it).\n"
        f"pattern read {HA_PREFIX}/status\n"
        "\n# The platform's service identity: read every gateway's topics, answer them, publish its own.\n"
        f"user {wx.check_cn(platform_identity)}\n"
        f"topic read {topics.BASE}/gw/+/#\n"
        f"topic write {topics.BASE}/gw/+/res/#\n"
        f"topic write {topics.BASE}/gw/+/cmd/scan\n"  # the console's signed scan commands (wire.scan_command)
        f"topic readwrite {cloud}/#\n"
        f"topic read {HA_PREFIX}/#\n"
    )


def mosquitto_conf(s: BrokerSettings) -> str:
    """mosquitto.conf: one TLS listener requiring a client certificate, no anonymous access, persistence on."""
    out = s.out.resolve()
    return (
        "# Written by `rebadge provision broker-config`; see docs/enrolment.md.\n"
        f"user {s.user}\n"
        "per_listener_settings false\n"
        "allow_anonymous false\n"
        f"acl_file {out / 'acl'}\n"
        "\n# Retained status, acks and queued messages survive a crash or SIGKILL.\n"
        "persistence true\n"
        f"persistence_location {out / 'data'}/\n"
        "autosave_on_changes true\n"
        f"autosave_interval {s.autosave_changes}\n"
        "max_queued_messages 100000\n"
        "\n# mTLS: the broker checks every client's certificate against the platform's CA; its CN is the user name.\n"
        f"listener {s.port} {s.bind}\n"
        f"cafile {out / CA_CERT_FILE}\n"
        f"certfile {out / 'server.crt'}\n"
        f"keyfile {out / 'server.key'}\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "tls_version tlsv1.2\n"
    )


def _load_ca(ca_dir: Path) -> tuple[wx.CaKey, x509.Certificate]:
    try:
        key = wx.load_ca_key((ca_dir / CA_KEY_FILE).read_bytes())
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT_FILE).read_bytes())
    except (OSError, ValueError) as exc:
        raise EnrolmentError(
            f"cannot read the platform's CA in {ca_dir} ({exc}); pass the platform's data dir, where "
            "`rebadge cloud init` or `rebadge cloud serve` made ca.key and ca.crt"
        ) from exc
    return key, cert


def _issue(ca: tuple[wx.CaKey, x509.Certificate], out: Path, name: str, leaf: wx.Leaf, now: int) -> None:
    key = wx.new_ca_key()
    write_atomically(out / f"{name}.key", wx.key_pem(key), SECRET_MODE)
    write_atomically(out / f"{name}.crt", wx.pem(wx.issue(*ca, key.public_key(), leaf, now)), PUBLIC_MODE)


def write_broker_config(ca_dir: Path, s: BrokerSettings, *, now: int | None = None) -> list[Path]:
    """Write the configuration, the ACL, the broker's and the platform's certificates; return the files."""
    now = int(time.time()) if now is None else now
    ca = _load_ca(ca_dir)
    s.out.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    (s.out / "data").mkdir(mode=DIR_MODE, exist_ok=True)
    valid_s = s.valid_days * 86400
    server = wx.Leaf("broker", valid_s, server=True, dns_names=s.dns_names, ip_addresses=s.ip_addresses)
    _issue(ca, s.out, "server", server, now)
    _issue(ca, s.out, "platform", wx.Leaf(s.platform_identity, valid_s), now)
    write_atomically(s.out / CA_CERT_FILE, wx.pem(ca[1]), PUBLIC_MODE)
    write_atomically(s.out / "acl", acl(s.platform_identity).encode(), PUBLIC_MODE)
    write_atomically(s.out / "mosquitto.conf", mosquitto_conf(s).encode(), PUBLIC_MODE)
    return sorted(p for p in s.out.iterdir() if p.is_file())
