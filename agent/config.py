"""The agent's configuration: one frozen pydantic model tree, loaded from TOML once, under env overrides.

Env overrides (pydantic-settings): REBADGE_<SECTION>__<KEY>=value, nested sections by `__` as well
(REBADGE_MQTT__TLS__CA_FILE=/etc/rebadge/ca.crt), lists and whole sections as JSON
(REBADGE_TRUST__ISSUER_KEYS='["ab..."]'). The environment wins over the file, the file over the defaults. Nothing
else in the agent reads the environment or a raw dict.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from agent.config_lines import KeyPath, key_lines, line_of
from agent.dispatch import SCAN_DEBOUNCE_S
from agent.errors import ConfigError
from wire.device import Radio
from wire.ids import CertNo, Sn

ENV_PREFIX = "REBADGE_"
ENV_NESTED_DELIMITER = "__"
# Never echoed in an error, never in the fingerprint; held as SecretStr, so a logged config shows "**********".
SECRET_KEYS = frozenset({"password", "ap_password"})
HIDDEN = "<hidden>"
# Station and work order are labels of the MES: printable, no control characters (they end up in JSON lines).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Secrets are left out of the fingerprint: it is shown on screens and must not help anyone guess them.
FINGERPRINT_SECRETS = (("mqtt", "password"), ("wifi", "ap_password"))
FINGERPRINT_CHARS = 12


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
    password: SecretStr | None = None
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

    certificate: CertNo | None = Field(default=None, description="cert_no to rebadge under; default: the only one.")
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
    station: str = Field(default="", max_length=64, description="This station, in the MES's words.")
    work_order: str = Field(default="", max_length=64, description="The MES work order being run.")

    @field_validator("station", "work_order")
    @classmethod
    def _printable(cls, value: str) -> str:
        if _CONTROL.search(value):
            raise ValueError("has a control character (a newline, tab, ...): write it on one line, printable only")
        return value


class MetricsConfig(_Section):
    """An optional Prometheus /metrics endpoint (needs: pip install 'rebadge[metrics]')."""

    port: int | None = Field(default=None, ge=1, le=65535, description="None: no endpoint (the default).")
    bind_address: str = Field(default="127.0.0.1", description="Listen here; 0.0.0.0 exposes it to the LAN.")


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
    ap_password: SecretStr | None = Field(default=None, description="WPA key of the devices' access points, if any.")
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
    """Where SNs come from: serial barcode scanners, HID scanners, the keyboard, MQTT commands."""

    serial_ports: tuple[str, ...] = ()
    baudrate: int = Field(default=9600, ge=300)
    terminator: Literal["any", "cr", "lf", "crlf"] = Field(
        default="any", description="What ends a serial scanner's line; any: CR or LF."
    )
    hid_devices: tuple[str, ...] = Field(
        default=(), description="HID (USB keyboard-wedge) scanners by evdev device name or /dev/input path."
    )
    debounce_s: float = Field(
        default=SCAN_DEBOUNCE_S, ge=0, le=60, description="One scanner reading a code again within this counts once."
    )
    keyboard: bool = Field(default=False, description="Read SNs typed on the agent's terminal (a terminal only).")
    mqtt: bool = Field(
        default=False, description="Accept cmd/scan commands signed by the platform (the console); off by default."
    )


class DebugConfig(_Section):
    """Fault injection for tests: pause at a point of the transaction so a test can kill the process there."""

    pause_after_reserve_s: float = Field(default=0.0, ge=0)
    pause_after_send_s: float = Field(default=0.0, ge=0)


class AgentConfig(BaseSettings):
    """The whole agent configuration."""

    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTED_DELIMITER
    )

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
    metrics: MetricsConfig = MetricsConfig()
    debug: DebugConfig = DebugConfig()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """AgentConfig(...) too: the environment wins over the values given, as over the file."""
        return env_settings, init_settings


def config_fingerprint(config: AgentConfig) -> str:
    """A short hash of the effective configuration (file plus env), secrets left out: equal on two stations means
    they run the same settings."""
    data = config.model_dump(mode="json")
    for section, key in FINGERPRINT_SECRETS:
        data[section][key] = None if data[section][key] is None else "<set>"
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_CHARS]


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' env source over a given mapping (os.environ by default).

    A value that is not JSON where a list or a section is wanted is kept as text, so that validation reports it
    with the other errors, naming its variable.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(AgentConfig)
        self.env_vars = {name.lower(): value for name, value in env.items()}

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError:
            return value


@dataclass(frozen=True)
class _Variable:
    """One REBADGE_... variable and the key path it sets, e.g. REBADGE_MQTT__TLS__CA_FILE -> mqtt.tls.ca_file."""

    name: str
    value: str
    path: tuple[str, ...]

    def shown(self) -> str:
        """`NAME='value'`; a secret's value hidden, also inside a section given as JSON."""
        if _is_secret(self.path):
            return f"{self.name}={HIDDEN}"
        try:
            section = json.loads(self.value)
        except ValueError:
            return f"{self.name}={self.value!r}"
        return (
            f"{self.name}={json.dumps(_masked(section))!r}"
            if isinstance(section, dict)
            else f"{self.name}={self.value!r}"
        )


@dataclass(frozen=True)
class _Sources:
    """Where the values being validated came from: a file (with the line of each key) and the environment."""

    source: str
    lines: Mapping[KeyPath, int] | None
    variables: tuple[_Variable, ...]

    def in_file(self, loc: KeyPath) -> str:
        line = None if self.lines is None else line_of(dict(self.lines), loc)
        return self.source if line is None else f"{self.source}:{line}"

    def written(self, loc: KeyPath) -> bool:
        """Whether the file holds `loc` (or a key or table around it)."""
        return self.lines is not None and line_of(dict(self.lines), loc) is not None

    def variable_setting(self, loc: KeyPath) -> _Variable | None:
        """The variable that set `loc` or a section holding it (REBADGE_MQTT sets all of mqtt.*)."""
        return next((v for v in self.variables if loc[: len(v.path)] == v.path), None)

    def variables_within(self, loc: KeyPath) -> list[_Variable]:
        return [v for v in self.variables if v.path[: len(loc)] == loc]


def _is_secret(path: KeyPath) -> bool:
    return any(part in SECRET_KEYS for part in path)


def _masked(value: object) -> object:
    """`value` with every secret key's value replaced, for echoing a section back in an error."""
    if isinstance(value, Mapping):
        return {k: HIDDEN if k in SECRET_KEYS else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def _variables(env: Mapping[str, str]) -> tuple[tuple[_Variable, ...], list[str]]:
    """The variables meant for this config, and an error for each that names no section."""
    found, unknown = [], []
    sections = ", ".join(AgentConfig.model_fields)
    for name, value in env.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = tuple(name[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER))
        if path[0] in AgentConfig.model_fields:
            found.append(_Variable(name, value, path))
        elif len(path) > 1:  # REBADGE_CONFIG, REBADGE_LOG_LEVEL, ... are options of the commands, not config keys
            unknown.append(f"  {name}: no config section {path[0]!r}; the sections are {sections}")
    return tuple(found), unknown


def _json_hint(err: ErrorDetails, variable: _Variable) -> str:
    if err["type"] in {"tuple_type", "list_type"}:
        return f'; write a list as JSON, e.g. {variable.name}=\'["first", "second"]\''
    if err["type"] in {"model_type", "model_attributes_type", "dict_type"}:
        return f'; write a section as JSON, e.g. {variable.name}=\'{{"key": "value"}}\', or one key per variable'
    return ""


def _describe(err: ErrorDetails, sources: _Sources) -> str:
    """One error as `where: key: what is wrong (got value)`; where is `file:line` or `VARIABLE=value`."""
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against 'rebadge agent config-example'"
    variable = sources.variable_setting(loc)
    if variable is not None:
        return f"  {variable.shown()}: {key}: {msg}{_json_hint(err, variable)}"
    where = sources.in_file(loc)
    if err["type"] == "missing":
        parent = loc[:-1]
        setters = sources.variables_within(parent)
        if setters and not sources.written(parent):
            also = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p).upper() for p in loc)
            section = ".".join(str(p) for p in parent)
            return f"  {setters[0].name}: {key}: {msg}: {setters[0].name} sets {section}, so set {also} too"
        return f"  {where}: {key}: {msg}"
    within = sources.variables_within(loc)
    if within and not sources.written(loc):  # a section only the environment sets: its variables are to blame
        return f"  {', '.join(v.shown() for v in within)}: {key}: {msg}"
    got = HIDDEN if _is_secret(loc) else repr(_masked(err.get("input")))
    with_env = "".join(f" (with {v.shown()})" for v in within)
    return f"  {where}: {key}: {msg} (got {got}){with_env}"


def parse_config(
    data: Mapping[str, Any],
    source: str,
    env: Mapping[str, str] | None = None,
    *,
    lines: Mapping[KeyPath, int] | None = None,
) -> AgentConfig:
    """Validate a config mapping under the REBADGE_* environment (env > file > defaults), once.

    Every error is reported at once, each naming its key, what is wrong and where it came from: the file and line
    (`lines`, from `agent.config_lines.key_lines`) or the variable and its value. Secrets are never echoed.
    """
    env = os.environ if env is None else env
    variables, problems = _variables(env)
    merged = _deep_merge(dict(data), _EnvSource(env)())
    try:
        config = AgentConfig.model_validate(merged)
    except ValidationError as exc:
        sources = _Sources(source, lines, variables)
        problems += [_describe(err, sources) for err in exc.errors()]
    if problems:
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"the configuration is not valid ({count}):\n" + "\n".join(problems))
    return config


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on it; sections merge key by key, anything else in `over` wins."""
    merged = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        both = isinstance(current, dict) and isinstance(value, Mapping)
        merged[key] = _deep_merge(current, value) if both else value  # type: ignore[arg-type]
    return merged


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> AgentConfig:
    """Load the TOML file at `path` (None: defaults only) under the REBADGE_* environment."""
    if path is None:
        return parse_config({}, "defaults", env)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such config file; write one with 'rebadge agent config-example'") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); check its owner and mode (0600, the agent's user)") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data, str(path), env, lines=key_lines(text))
