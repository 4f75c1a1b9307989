"""Device-protocol messages cut into chunks for our manufacturer-specific Zigbee cluster, and put back together.

One chunk travels as the single octet-string argument of a cluster command:

    msg u8 | index u8 | count u8 | total u16 LE | data

`msg` names the message (an answer carries the number of its request), `index` < `count` places the chunk,
`total` is the message's length in bytes. Every chunk but the last carries the same amount of data, so a
receiver needs no agreement on the chunk size. Also here: the cluster's numbers and the Basic
ManufacturerName layout (an 8-byte prefix plus the 8-character PID), which agent and firmware share.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from wire.device import MAX_MESSAGE_BYTES
from wire.errors import MalformedError
from wire.ids import SHORT_PID_LEN, check_pid

# Our cluster, inside the manufacturer-specific range 0xFC00-0xFFFF (0xEF00, Tuya's, lies outside it).
CLUSTER_ID = 0xFC5B
# A placeholder manufacturer code: a product must carry its maker's own code, assigned by the CSA.
MANUFACTURER_CODE = 0xFFF1
# Server commands go to the device (request chunks); client commands come back from it (answer chunks).
REQUEST_CHUNK_COMMAND = 0x00
ANSWER_CHUNK_COMMAND = 0x00

HEADER = struct.Struct("<BBBH")
HEADER_BYTES = HEADER.size
MIN_CHUNK_BYTES = 20
MAX_CHUNK_BYTES = 80
# 64 + the 5-byte manufacturer-specific ZCL header + the 1-byte length prefix stays inside one unfragmented
# APS frame even with NWK security and a short source route.
DEFAULT_CHUNK_BYTES = 64
MAX_CHUNKS = 255
MAX_PARTIAL_MESSAGES = 8
RECENT_MESSAGES = 32
DEFAULT_REASSEMBLY_TIMEOUT_S = 5.0

MANUFACTURER_PREFIX_BYTES = 8
DEFAULT_MANUFACTURER_PREFIX = "_TZ3000_"


class ChunkError(MalformedError):
    """A chunk that cannot be placed: bad header, conflicting duplicate, or a message over the size limit."""


@dataclass(frozen=True)
class Chunk:
    """One piece of a message."""

    msg: int
    index: int
    count: int
    total: int
    data: bytes

    def encode(self) -> bytes:
        """The chunk's bytes, header first."""
        return HEADER.pack(self.msg, self.index, self.count, self.total) + self.data


def decode_chunk(raw: bytes) -> Chunk:
    """Parse one chunk; the header must be self-consistent."""
    if len(raw) < HEADER_BYTES:
        raise ChunkError(f"chunk of {len(raw)} bytes is shorter than its {HEADER_BYTES}-byte header", field="chunk")
    msg, index, count, total = HEADER.unpack_from(raw)
    data = bytes(raw[HEADER_BYTES:])
    if count == 0 or index >= count:
        raise ChunkError(f"chunk index {index} does not fit a message of {count} chunks", field="index")
    if total > count * (MAX_CHUNK_BYTES - HEADER_BYTES) or (index == count - 1 and len(data) > total):
        raise ChunkError(f"chunk claims a {total}-byte message in {count} chunks, which cannot be", field="total")
    return Chunk(msg=msg, index=index, count=count, total=total, data=data)


def split(message: bytes, msg: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[bytes]:
    """Cut `message` into encoded chunks of at most `chunk_bytes` bytes each (header included)."""
    if not MIN_CHUNK_BYTES <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk size {chunk_bytes} is outside {MIN_CHUNK_BYTES}..{MAX_CHUNK_BYTES} bytes")
    if not 0 <= msg <= 0xFF:
        raise ValueError(f"message number {msg} is outside 0..255")
    per = chunk_bytes - HEADER_BYTES
    count = max(1, -(-len(message) // per))
    if len(message) > MAX_MESSAGE_BYTES or count > MAX_CHUNKS:
        raise ValueError(f"message of {len(message)} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")
    return [Chunk(msg, i, count, len(message), message[i * per : (i + 1) * per]).encode() for i in range(count)]


@dataclass
class _Partial:
    count: int
    total: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class _Done:
    """A completed message, kept to tell a repeated chunk from a new message that reuses the number."""

    count: int
    total: int
    per: int
    message: bytes

    def repeats(self, chunk: Chunk) -> bool:
        start = chunk.index * self.per
        same_shape = (chunk.count, chunk.total) == (self.count, self.total)
        return same_shape and chunk.data == self.message[start : start + self.per]


class Reassembler:
    """Puts chunks back into messages, several messages at once.

    Duplicates are ignored, also of a recently completed message; a chunk that reuses a completed message's
    number with other bytes starts a new message (the sender restarted its numbering). A duplicate with other
    bytes inside a partial message, a message over `max_bytes`, or chunks that disagree on the message's size
    raise ChunkError. A partial message older than `timeout_s` is dropped. The caller passes the clock, so this
    stays pure.
    """

    def __init__(
        self,
        *,
        max_bytes: int = MAX_MESSAGE_BYTES,
        timeout_s: float = DEFAULT_REASSEMBLY_TIMEOUT_S,
        max_partial: int = MAX_PARTIAL_MESSAGES,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_partial = max_partial
        self._partial: OrderedDict[int, _Partial] = OrderedDict()
        self._done: OrderedDict[int, _Done] = OrderedDict()
        self.duplicates = 0

    def feed(self, raw: bytes, now: float) -> tuple[int, bytes] | None:
        """Add one encoded chunk; return (msg, message) when it completes a message."""
        chunk = decode_chunk(raw)
        self.expire(now)
        done = self._done.get(chunk.msg)
        if done is not None:
            if done.repeats(chunk):
                self.duplicates += 1
                return None
            del self._done[chunk.msg]
        if chunk.total > self.max_bytes:
            raise ChunkError(f"message {chunk.msg} claims {chunk.total} bytes, over {self.max_bytes}", field="total")
        part = self._partial_for(chunk, now)
        held = part.parts.get(chunk.index)
        if held is not None:
            if held != chunk.data:
                raise ChunkError(f"message {chunk.msg} chunk {chunk.index} came twice with other bytes", field="data")
            self.duplicates += 1
            return None
        part.parts[chunk.index] = chunk.data
        if len(part.parts) < part.count:
            return None
        return chunk.msg, self._join(chunk.msg, part)

    def _partial_for(self, chunk: Chunk, now: float) -> _Partial:
        part = self._partial.get(chunk.msg)
        if part is None:
            while len(self._partial) >= self.max_partial:
                self._partial.popitem(last=False)
            part = self._partial[chunk.msg] = _Partial(chunk.count, chunk.total, now)
        elif (part.count, part.total) != (chunk.count, chunk.total):
            raise ChunkError(
                f"message {chunk.msg}: chunk {chunk.index} says {chunk.count} chunks/{chunk.total} bytes, "
                f"earlier chunks said {part.count}/{part.total}",
                field="count",
            )
        return part

    def _join(self, msg: int, part: _Partial) -> bytes:
        del self._partial[msg]
        sizes = {len(part.parts[i]) for i in range(part.count - 1)}
        message = b"".join(part.parts[i] for i in range(part.count))
        if len(message) != part.total or len(sizes) > 1:
            raise ChunkError(f"message {msg}: chunks add up to {len(message)} bytes, not {part.total}", field="total")
        self._done[msg] = _Done(part.count, part.total, sizes.pop() if sizes else len(message), message)
        while len(self._done) > RECENT_MESSAGES:
            self._done.popitem(last=False)
        return message

    def missing(self, msg: int) -> list[int] | None:
        """Indexes still missing from a partial message; None when nothing of it is held."""
        part = self._partial.get(msg)
        if part is None:
            return None
        return [i for i in range(part.count) if i not in part.parts]

    def expire(self, now: float) -> list[int]:
        """Drop partial messages older than the timeout; return their numbers."""
        old = [m for m, p in self._partial.items() if now - p.started > self.timeout_s]
        for m in old:
            del self._partial[m]
        return old

    def forget(self, msg: int) -> None:
        """Drop whatever is held of `msg` and let it be used again."""
        self._partial.pop(msg, None)
        self._done.pop(msg, None)


def manufacturer_name(pid: str, prefix: str = DEFAULT_MANUFACTURER_PREFIX) -> str:
    """The Basic ManufacturerName of a Zigbee good: an 8-byte prefix followed by its 8-character PID."""
    if len(prefix.encode()) != MANUFACTURER_PREFIX_BYTES:
        raise MalformedError(f"manufacturer prefix {prefix!r} is not {MANUFACTURER_PREFIX_BYTES} bytes", field="prefix")
    check_pid(pid)
    if len(pid) != SHORT_PID_LEN:
        raise MalformedError(f"a Zigbee PID has {SHORT_PID_LEN} characters; {pid!r} has {len(pid)}", field="pid")
    return prefix + pid


def pid_of_manufacturer_name(name: str) -> str:
    """The PID inside a Basic ManufacturerName (prefix + PID); MalformedError names what is wrong."""
    raw = name.encode()
    if len(raw) != MANUFACTURER_PREFIX_BYTES + SHORT_PID_LEN:
        raise MalformedError(
            f"ManufacturerName {name!r} is {len(raw)} bytes; expected an {MANUFACTURER_PREFIX_BYTES}-byte prefix "
            f"and an {SHORT_PID_LEN}-character PID",
            field="manufacturer_name",
        )
    return check_pid(raw[MANUFACTURER_PREFIX_BYTES:].decode(errors="replace"), field="manufacturer_name PID")
