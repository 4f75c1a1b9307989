"""MQTT topics and the JSON payloads dashboards read. Base `rebadge/v1`.

Gateway-owned, under `rebadge/v1/gw/{gw}/`: status, records, events, progress/{cert_no}, health, req/{op}
(answered on res/{op}) and cmd/{op} (commands to the gateway, e.g. a scan). Platform-owned, under
`rebadge/v1/cloud/`: gw/{gw}/ack, cert/{cert_no}/progress, anomalies, ready.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wire.refusals import OutcomeReason, RefusalReason

BASE = "rebadge/v1"
TOPIC_SAFE = re.compile(r"[0-9A-Za-z._-]{1,64}")


def _safe(value: str, what: str) -> str:
    if not TOPIC_SAFE.fullmatch(value):
        raise ValueError(f"{what} {value!r} cannot be part of an MQTT topic: use letters, digits, '.', '_' or '-'")
    return value


def gw_prefix(gw: str) -> str:
    """Everything a gateway may publish lies under this prefix."""
    return f"{BASE}/gw/{_safe(gw, 'gateway id')}"


def status(gw: str) -> str:
    """Retained online/offline (the last will says offline)."""
    return f"{gw_prefix(gw)}/status"


def records(gw: str) -> str:
    """QoS 1 CBOR record batches with a signed checkpoint."""
    return f"{gw_prefix(gw)}/records"


def events(gw: str) -> str:
    """One JSON object per scan."""
    return f"{gw_prefix(gw)}/events"


def progress(gw: str, cert_no: str) -> str:
    """Retained counts of one certificate on this gateway."""
    return f"{gw_prefix(gw)}/progress/{_safe(cert_no, 'certificate number')}"


def health(gw: str) -> str:
    """Retained health of the gateway (journal, disk, uplink)."""
    return f"{gw_prefix(gw)}/health"


def request(gw: str, op: str) -> str:
    """A request from the gateway to the platform (lease, release)."""
    return f"{gw_prefix(gw)}/req/{_safe(op, 'operation')}"


def response(gw: str, op: str) -> str:
    """The platform's answer to a gateway's request."""
    return f"{gw_prefix(gw)}/res/{_safe(op, 'operation')}"


def command(gw: str, op: str) -> str:
    """A command to the gateway from a dashboard or tool (scan)."""
    return f"{gw_prefix(gw)}/cmd/{_safe(op, 'operation')}"


def ack(gw: str) -> str:
    """Retained signed ack of the gateway's journal head."""
    return f"{BASE}/cloud/gw/{_safe(gw, 'gateway id')}/ack"


def cert_progress(cert_no: str) -> str:
    """Retained platform-wide verified counts of a certificate."""
    return f"{BASE}/cloud/cert/{_safe(cert_no, 'certificate number')}/progress"


ANOMALIES = f"{BASE}/cloud/anomalies"
# Published (not retained) by each platform worker each time it has subscribed: records a gateway sent while no
# worker listened (a broker restart without persistence) are lost, so gateways send what is unacked again at once.
CLOUD_READY = f"{BASE}/cloud/ready"
ALL_RECORDS = f"{BASE}/gw/+/records"
ALL_REQUESTS = f"{BASE}/gw/+/req/+"


def gw_of(topic: str) -> str:
    """The gateway id in a gateway-owned topic."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:3]) != f"{BASE}/gw":
        raise ValueError(f"topic {topic!r} is not under {BASE}/gw/")
    return _safe(parts[3], "gateway id")


class Result(StrEnum):
    """The outcome of one scan, as the technician sees it."""

    CONFIRMED = "confirmed"
    ALREADY_REBADGED = "already_rebadged"
    REFUSED = "refused"
    IN_DOUBT = "in_doubt"


# The word a technician reads for each outcome, on the gateway's screen and in the web console.
RESULT_WORDS = {
    Result.CONFIRMED: "OK",
    Result.ALREADY_REBADGED: "DONE",
    Result.REFUSED: "REFUSED",
    Result.IN_DOUBT: "RESCAN",
}


class _Json(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StatusPayload(_Json):
    """Retained gateway status."""

    state: str = Field(pattern="^(online|offline)$")
    gw: str
    name: str = ""
    version: str = ""
    at: int = 0


class ScanCommand(_Json):
    """A scan the uplink verified (wire.scan_command) and hands to the agent's handler; `id` comes back in the event."""

    sn: str = Field(min_length=1, max_length=64)
    id: str | None = Field(default=None, max_length=64)


class ScanEvent(_Json):
    """One scan's outcome, for dashboards and the technician's screen; `reason` is empty for a plain confirmation."""

    sn: str
    result: Result
    reason: RefusalReason | OutcomeReason | Literal[""] = ""
    message: str = ""
    radio: str = ""
    old_pid: str = ""
    new_pid: str = ""
    cert_no: str = ""
    lease_id: str = ""
    slot: int | None = None
    at: int = 0
    ms: int = 0
    id: str | None = None


class ProgressPayload(_Json):
    """Retained counts of one certificate on one gateway."""

    cert_no: str
    confirmed: int
    in_doubt: int
    refused: int
    lease_size: int
    remaining: int


class CertProgressPayload(_Json):
    """Retained platform-wide verified counts of one certificate."""

    cert_no: str
    confirmed: int
    quantity: int
