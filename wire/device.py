"""The device protocol: `info` and `rebadge` requests and their answers, CBOR maps with a request id.

Every radio carries these same bytes in its own framing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from wire.cbor import dumps, loads_map
from wire.errors import MalformedError
from wire.ids import Pid, Sn
from wire.strict import decode_model

MAX_MESSAGE_BYTES = 1024


class Status(StrEnum):
    """A device's answer to `rebadge`, shared by the agent and the firmware."""

    OK = "ok"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_KEY = "unknown_key"
    WRONG_SN = "wrong_sn"
    WRONG_PID = "wrong_pid"
    SLOT_OUT_OF_RANGE = "slot_out_of_range"
    UNSUPPORTED_FIRMWARE = "unsupported_firmware"
    ALREADY_DONE = "already_done"
    BUSY = "busy"
    MALFORMED = "malformed"


class Firmware(StrEnum):
    """Where the PID lives: OEM firmware in the module; general firmware in the MCU; custom firmware."""

    OEM = "oem"
    GENERAL = "general"
    CUSTOM = "custom"


class Radio(StrEnum):
    """How the gateway reaches a device."""

    WIFI = "wifi"
    BLE = "ble"
    ZIGBEE = "zigbee"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR of this message."""
        return dumps(self.model_dump(mode="python"))


class InfoRequest(_Message):
    """Ask a device who it is."""

    id: int = Field(ge=0, lt=2**32)
    op: Literal["info"] = "info"


class RebadgeRequest(_Message):
    """Ask a device to take the grant's PID; it verifies lease and grant itself."""

    id: int = Field(ge=0, lt=2**32)
    op: Literal["rebadge"] = "rebadge"
    lease: bytes = Field(min_length=1, max_length=400)
    grant: bytes = Field(min_length=1, max_length=300)


class InfoResponse(_Message):
    """What a device says of itself; `receipt` is the grant it last applied, if any."""

    id: int = Field(ge=0, lt=2**32)
    sn: Sn
    pid: Pid
    firmware: Annotated[Firmware, Strict(False)]
    fw_version: str = Field(min_length=1, max_length=32)
    radio: Annotated[Radio, Strict(False)]
    receipt: bytes | None = Field(default=None, max_length=300)


class RebadgeResponse(_Message):
    """A device's verdict on a rebadge request and the PID it holds afterwards."""

    id: int = Field(ge=0, lt=2**32)
    status: Annotated[Status, Strict(False)]
    pid: Pid


Request = InfoRequest | RebadgeRequest


def decode_request(data: bytes) -> Request:
    """A request as a device receives it."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MalformedError(f"request is {len(data)} bytes, over {MAX_MESSAGE_BYTES}", field="request")
    op = loads_map(data, "request").get("op")
    if op == "info":
        return decode_model(data, InfoRequest, "info request")
    if op == "rebadge":
        return decode_model(data, RebadgeRequest, "rebadge request")
    raise MalformedError(f"request field 'op': unknown operation {op!r}; expected 'info' or 'rebadge'", field="op")


def request_id_of(data: bytes) -> int | None:
    """The request id in a message that may be malformed otherwise, to answer `malformed` to the right request."""
    try:
        value = loads_map(data, "message").get("id")
    except MalformedError:
        return None
    # type(), not isinstance(): a CBOR `true` decodes to a bool, which is an int to Python but not an id.
    return value if type(value) is int and 0 <= value < 2**32 else None


def decode_info(data: bytes) -> InfoResponse:
    """A device's answer to `info`."""
    return decode_model(data, InfoResponse, "info response")


def decode_rebadge(data: bytes) -> RebadgeResponse:
    """A device's answer to `rebadge`."""
    return decode_model(data, RebadgeResponse, "rebadge response")
