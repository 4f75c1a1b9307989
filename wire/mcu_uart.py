"""The MCU UART protocol between a general-firmware Wi-Fi module and its MCU, as Tuya's MCU SDK frames it:

    55 AA | ver u8 | cmd u8 | len u16 BE | data | sum8

`sum8` is the sum of every preceding byte of the frame, modulo 256. The product query (0x01) answers JSON
`{"p": PID, "v": version, "m": mode}`; our vendor command 0xE0 sets the PID and answers one status byte.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wire.errors import FrameError, MalformedError
from wire.ids import Pid, check_pid
from wire.stream import StreamDecoder

HEADER = b"\x55\xaa"
HEAD = struct.Struct(">2sBBH")
MAX_DATA = 1024
VERSION_MODULE = 0x00  # frames the Wi-Fi module sends
VERSION_MCU = 0x03  # frames the MCU sends


class McuCommand(IntEnum):
    """Command codes: Tuya's heartbeat and product query, and our vendor command."""

    HEARTBEAT = 0x00
    PRODUCT_QUERY = 0x01
    SET_PID = 0xE0


class SetPidStatus(IntEnum):
    """The one data byte of the MCU's answer to SET_PID."""

    OK = 0x00
    REFUSED = 0x01


@dataclass(frozen=True)
class McuFrame:
    """One MCU UART frame."""

    ver: int
    cmd: int
    data: bytes = b""


def sum8(data: bytes | bytearray) -> int:
    """The frame checksum: the sum of the bytes, modulo 256."""
    return sum(data) & 0xFF


def encode(frame: McuFrame) -> bytes:
    """The bytes of one frame."""
    if len(frame.data) > MAX_DATA:
        raise FrameError(f"MCU frame data of {len(frame.data)} bytes is over {MAX_DATA}", field="len")
    if not (0 <= frame.ver <= 0xFF and 0 <= frame.cmd <= 0xFF):
        raise FrameError(f"MCU frame ver {frame.ver} / cmd {frame.cmd} is not a byte", field="cmd")
    head = HEAD.pack(HEADER, frame.ver, frame.cmd, len(frame.data)) + frame.data
    return head + bytes([sum8(head)])


class McuDecoder(StreamDecoder[McuFrame]):
    """Incremental decoder: feed any chunks, get whole frames. Noise before a header is skipped and counted.

    A frame with a bad checksum or an impossible length raises FrameError once; decoding resumes one byte after
    its header, so a real frame that began inside the bad one is still found.
    """

    def _next(self) -> McuFrame | None:
        start = self._buf.find(HEADER)
        if start < 0:
            keep = 1 if self._buf.endswith(HEADER[:1]) else 0
            self.skipped += len(self._buf) - keep
            del self._buf[: len(self._buf) - keep]
            return None
        self.skipped += start
        del self._buf[:start]
        if len(self._buf) < HEAD.size:
            return None
        _, ver, cmd, length = HEAD.unpack_from(self._buf)
        if length > MAX_DATA:
            del self._buf[:1]
            raise FrameError(f"MCU frame length {length} is over {MAX_DATA}", field="len")
        total = HEAD.size + length + 1
        if len(self._buf) < total:
            return None
        if sum8(self._buf[: total - 1]) != self._buf[total - 1]:
            del self._buf[:1]
            raise FrameError(f"MCU frame cmd 0x{cmd:02x} fails its checksum", field="sum8")
        frame = McuFrame(ver, cmd, bytes(self._buf[HEAD.size : total - 1]))
        del self._buf[:total]
        return frame


class ProductInfo(BaseModel):
    """The MCU's answer to the product query; keys Tuya MCUs add beyond these are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    pid: Pid = Field(alias="p")
    version: str = Field(alias="v", min_length=1, max_length=32)
    mode: int = Field(alias="m", ge=0, le=2)

    def to_bytes(self) -> bytes:
        """The JSON the MCU sends."""
        return json.dumps(self.model_dump(by_alias=True), separators=(",", ":")).encode()


def parse_product_info(data: bytes) -> ProductInfo:
    """The data of a product-query answer; anything else is a MalformedError naming the field."""
    try:
        return ProductInfo.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "product info"
        raise MalformedError(f"MCU product info field {where!r}: {first['msg']}", field=where) from exc


def product_query() -> McuFrame:
    """The module's product query."""
    return McuFrame(VERSION_MODULE, McuCommand.PRODUCT_QUERY)


def set_pid_request(pid: str) -> McuFrame:
    """The module's request that the MCU take `pid`."""
    return McuFrame(VERSION_MODULE, McuCommand.SET_PID, check_pid(pid).encode("ascii"))


def parse_set_pid_request(data: bytes) -> str:
    """The PID in a SET_PID request."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedError("MCU SET_PID data is not ASCII", field="pid") from exc
    return check_pid(text)


def parse_set_pid_answer(data: bytes) -> SetPidStatus:
    """The status byte of the MCU's answer to SET_PID."""
    if len(data) != 1 or data[0] not in {s.value for s in SetPidStatus}:
        raise MalformedError(f"MCU SET_PID answer {data.hex()!r} is not one status byte", field="status")
    return SetPidStatus(data[0])
