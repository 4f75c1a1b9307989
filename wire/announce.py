"""Wi-Fi discovery: devices broadcast JSON over UDP, as Tuya devices do (PID as `productKey`)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wire.errors import MalformedError
from wire.ids import Pid, Sn

DISCOVERY_PORT = 6669
MAX_ANNOUNCE_BYTES = 1024


class Announce(BaseModel):
    """One device's broadcast: who it is and where to reach it over TCP."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    sn: Sn
    pid: Pid = Field(alias="productKey")
    ip: str = Field(min_length=7, max_length=45)
    port: int = Field(ge=1, le=65535)
    version: str = Field(default="", max_length=32)

    def to_bytes(self) -> bytes:
        """The datagram."""
        return json.dumps(self.model_dump(by_alias=True), separators=(",", ":")).encode()


def parse_announce(data: bytes) -> Announce:
    """A datagram as a device announcement; anything else is a MalformedError."""
    if len(data) > MAX_ANNOUNCE_BYTES:
        raise MalformedError(f"announcement of {len(data)} bytes is over {MAX_ANNOUNCE_BYTES}", field="announce")
    try:
        return Announce.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "announce"
        raise MalformedError(f"announcement field {where!r}: {first['msg']}", field=where) from exc
