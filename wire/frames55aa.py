"""The Wi-Fi link's TCP framing, as Tuya devices use it:

    00 00 55 AA | seq u32 | cmd u32 | len u32 | payload | CRC32 u32 | 00 00 AA 55

`len` counts payload + CRC + suffix; the CRC32 covers everything from the prefix to the end of the payload.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from wire.errors import FrameError
from wire.stream import StreamDecoder

PREFIX = b"\x00\x00\x55\xaa"
SUFFIX = b"\x00\x00\xaa\x55"
HEADER = struct.Struct(">4sIII")
TRAILER = struct.Struct(">I4s")
MAX_PAYLOAD = 4096


class Command(IntEnum):
    """Our vendor command codes (outside Tuya's public range)."""

    INFO = 0x80
    REBADGE = 0x81
    ERROR = 0x8F


@dataclass(frozen=True)
class Frame:
    """One 55AA frame."""

    seq: int
    cmd: int
    payload: bytes


def encode(frame: Frame) -> bytes:
    """The bytes of one frame."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(frame.payload)} bytes is over {MAX_PAYLOAD}", field="payload")
    head = HEADER.pack(PREFIX, frame.seq, frame.cmd, len(frame.payload) + TRAILER.size) + frame.payload
    return head + TRAILER.pack(zlib.crc32(head), SUFFIX)


class Decoder(StreamDecoder[Frame]):
    """Incremental decoder: feed any chunks, get whole frames; garbage before a prefix is skipped and counted."""

    def _next(self) -> Frame | None:
        start = self._buf.find(PREFIX)
        if start < 0:
            keep = len(PREFIX) - 1
            self.skipped += max(0, len(self._buf) - keep)
            del self._buf[: max(0, len(self._buf) - keep)]
            return None
        self.skipped += start
        del self._buf[:start]
        if len(self._buf) < HEADER.size:
            return None
        _, seq, cmd, length = HEADER.unpack_from(self._buf)
        if not TRAILER.size <= length <= MAX_PAYLOAD + TRAILER.size:
            del self._buf[: len(PREFIX)]
            raise FrameError(f"frame length {length} is out of range", field="len")
        total = HEADER.size + length
        if len(self._buf) < total:
            return None
        raw = bytes(self._buf[:total])
        del self._buf[:total]
        crc, suffix = TRAILER.unpack_from(raw, total - TRAILER.size)
        if suffix != SUFFIX:
            raise FrameError(f"frame seq {seq} has a bad suffix {suffix.hex()}", field="suffix")
        if zlib.crc32(raw[: total - TRAILER.size]) != crc:
            raise FrameError(f"frame seq {seq} fails its CRC32", field="crc")
        return Frame(seq, cmd, raw[HEADER.size : total - TRAILER.size])
