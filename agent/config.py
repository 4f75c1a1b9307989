"""The agent's configuration: one frozen pydantic model tree, loaded from TOML once, with env overrides.

Env overrides: REBADGE_<SECTION>__<FIELD>=value (e.g. REBADGE_MQTT__HOST=broker.local). Nothing else in the
agent reads the environment or a raw dict.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.errors import ConfigError
from wire.device import Radio
from wire.ids import CertNo, Sn

ENV_PREFIX = "REBADGE_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewayConfig(_Section):
    """Who this gateway is and where it keeps its state."""

    name: str = Field(default="line-1", min_length=1, max_length=64, description="Shown on dashboards.")
    state_dir: Path = Field(default=Path("/var/lib/rebadge"), description="Key, journal, leases (0700).")


class TrustConfig(_Section):
    """The platform issuer keys this gateway pins (raw Ed25519 public keys, hex)."""

    issuer_keys: tuple[str, ...] = Field(default=(), description="64 hex characters each.")

    @field_validator("issuer_keys")
    @classmethod
    def _hex_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for k in keys:
            if len(k) != 64 or any(c not in "0123456789abcdefABCDEF" for c in k):
                raise ValueError(f"issuer key {k!r} is not 64 hex characters (a raw Ed25519 public key)")
        return keys


class TlsConfig(_Section):
    """mTLS to the broker with the gateway's enrolled certificate. Never falls back to plaintext."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    renew_before_s: float = Field(
        default=2 * 86400, gt=0, description="Ask for a new certificate this long before cert_file expires."
    )
    renew_retry_s: float = Field(default=300.0, gt=0, description="After a refused or unanswered renewal, wait this.")
    renew_timeout_s: float = Field(default=15.0, gt=0, description="Bound on one renewal request and its answer.")


class MqttConfig(_Section):
    """The broker the gateway reports to."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    transport: Literal["tcp", "unix"] = "tcp"
    socket_path: Path | None = None
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    healthy_after_s: float = Field(
        default=30.0, gt=0, description="A session up this long resets the reconnect backoff to reconnect_min_s."
    )
    batch_records: int = Field(default=200, ge=1, le=500)
    resend_s: float = Field(
        default=30.0, gt=0, le=3600, description="With batches out and no ack for this long, send again."
    )


class JournalConfig(_Section):
    """The write-ahead journal."""

    min_free_mb: int = Field(default=50, ge=0, description="Below this much free disk, new scans are refused.")


class LineConfig(_Section):
    """How a scan runs."""

    certificate: str | None = Field(default=None, description="cert_no to rebadge under; default: the only one.")
    radios: tuple[Radio, ...] = Field(
        default=(Radio.WIFI,), description="Radios to use; an unknown SN is sought on all at once."
    )
    find_timeout_s: float = Field(default=10.0, gt=0)
    info_timeout_s: float = Field(default=5.0, gt=0)
    rebadge_timeout_s: float = Field(default=10.0, gt=0)
    max_in_flight: int = Field(default=8, ge=1, le=256)
    clock_margin_s: float = Field(
        default=300.0, ge=0, le=86400, description="No new reservation on a lease this close to its expiry."
    )


class LeaseConfig(_Section):
    """Leases asked for over MQTT (`req/lease`): the agent keeps one certificate supplied with slots."""

    auto_request: bool = Field(default=True, description="Ask the platform for slots when they run low.")
    cert_no: CertNo | None = Field(
        default=None,
        description="Certificate to keep supplied; default: line.certificate (none: no automatic requests).",
    )  # fmt: skip
    low_water: int = Field(default=20, ge=0, description="Ask for more when this few unused slots remain.")
    request_slots: int = Field(default=200, ge=1, le=10_000_000, description="Slots per request (may get fewer).")
    valid_s: int | None = Field(default=None, ge=60, le=366 * 86400, description="Lease lifetime; None: platform's.")
    request_timeout_s: float = Field(default=15.0, gt=0, description="Bound on one request and its answer.")
    retry_min_s: float = Field(default=5.0, gt=0, description="First wait after a refusal or no answer.")
    retry_max_s: float = Field(default=300.0, gt=0, description="The wait doubles up to this.")
    check_interval_s: float = Field(default=60.0, gt=0, description="Look at the slots left at least this often.")

    @model_validator(mode="after")
    def _retry_order(self) -> LeaseConfig:
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(f"retry_max_s ({self.retry_max_s}) is below retry_min_s ({self.retry_min_s}): raise it")
        return self


class StaticWifiDevice(_Section):
    """A Wi-Fi device at a known address, reached without waiting for its announcement."""

    sn: Sn
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=6668, ge=1, le=65535)


class WifiConfig(_Section):
    """Wi-Fi goods: UDP discovery and TCP 55AA frames."""

    discovery_port: int = Field(default=6669, ge=1, le=65535)
    bind_address: str = "0.0.0.0"  # noqa: S104 - devices broadcast on the LAN
    device_port: int = Field(default=6668, ge=1, le=65535)
    ap_mode: bool = Field(default=False, description="Join each device's access point (NetworkManager).")
    ap_ssid_prefix: str = "rebadge-"
    ap_device_address: str = "192.168.4.1"
    announce_ttl_s: float = Field(default=30.0, gt=0, description="An announcement older than this is stale.")
    static_devices: tuple[StaticWifiDevice, ...] = Field(default=(), description="Devices at known addresses.")
    ap_interface: str | None = Field(default=None, description="Wi-Fi interface for AP mode; None: nmcli picks.")
    ap_password: str | None = Field(default=None, description="WPA key of the devices' access points, if any.")
    ap_join_timeout_s: float = Field(default=30.0, gt=0, description="Bound on one nmcli join.")


class BleConfig(_Section):
    """BLE goods through bleak."""

    adapter: str = Field(default="hci0", pattern=r"^hci\d+$")
    scan_timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    fragment_timeout_s: float = Field(default=2.0, gt=0)


class ZigbeeConfig(_Section):
    """Zigbee goods through zigpy; the radio library is chosen by `radio_type` and imported lazily."""

    radio_type: Literal["ezsp", "znp", "deconz", "zigate", "xbee"] = "ezsp"
    device: str = "/dev/ttyUSB0"
    baudrate: int = Field(default=115200, ge=1200)
    flow_control: Literal["hardware", "software"] | None = None
    permit_join_s: int = Field(default=60, ge=1, le=254)
    frame_timeout_s: float = Field(default=2.0, gt=0)


class ScannerConfig(_Section):
    """Where SNs come from: serial barcode scanners, the keyboard, MQTT commands."""

    serial_ports: tuple[str, ...] = ()
    baudrate: int = Field(default=9600, ge=300)
    keyboard: bool = False
    mqtt: bool = Field(
        default=False, description="Accept cmd/scan: unauthenticated, so for a trusted broker only; off by default."
    )


class DebugConfig(_Section):
    """Fault injection for tests: pause at a point of the transaction so a test can kill the process there."""

    pause_after_reserve_s: float = Field(default=0.0, ge=0)
    pause_after_send_s: float = Field(default=0.0, ge=0)


class AgentConfig(_Section):
    """The whole agent configuration."""

    gateway: GatewayConfig = GatewayConfig()
    trust: TrustConfig = TrustConfig()
    mqtt: MqttConfig = MqttConfig()
    journal: JournalConfig = JournalConfig()
    line: LineConfig = LineConfig()
    lease: LeaseConfig = LeaseConfig()
    wifi: WifiConfig = WifiConfig()
    ble: BleConfig = BleConfig()
    zigbee: ZigbeeConfig = ZigbeeConfig()
    scanner: ScannerConfig = ScannerConfig()
    debug: DebugConfig = DebugConfig()


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            section, _, name = key[len(ENV_PREFIX) :].lower().partition("__")
            out.setdefault(section, {})[name] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    merged = dict(base)
    for section, fields in extra.items():
        current = merged.get(section, {})
        merged[section] = {**(current if isinstance(current, dict) else {}), **fields}
    return merged


def parse_config(data: Mapping[str, Any], source: str, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate a config mapping (plus env overrides) once; errors name the field, the value and the source."""
    merged = _merge(dict(data), _env_overrides(os.environ if env is None else env))
    try:
        return AgentConfig.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key; check its spelling against 'rebadge agent config-example'"
            lines.append(f"  {where}: {msg}{got}")
        raise ConfigError(f"{source}: the configuration is not valid:\n" + "\n".join(lines)) from exc


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Load the TOML file at `path` (None: defaults only)."""
    if path is None:
        return parse_config({}, "defaults", env)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file; write one with 'rebadge agent config-example'") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path), env)
