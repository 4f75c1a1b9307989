"""BLE: device-protocol messages cut into fragments that fit the negotiated ATT MTU, and put back together.

One fragment is the value of one GATT write (agent -> device) or one notification (device -> agent):

    first fragment:  msg u8 | index u8 = 0 | total u16 BE | data
    other fragments: msg u8 | index u8     | data

`msg` names the message (an answer carries the `msg` of its request), `index` counts fragments from 0, and
`total` is the message's length in bytes. Every fragment but the last fills the ATT payload (MTU - 3), so
a receiver learns the sender's fragment size from the first fragment and checks each later one against it.
Also here: our GATT service and characteristic UUIDs and the advertisement's service data (the PID), which
agent and firmware share. docs/ble.md has a worked example for firmware writers.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from wire.device import MAX_MESSAGE_BYTES
from wire.errors import FrameError, MalformedError
from wire.ids import SHORT_PID_LEN, check_pid

# Our GATT service (a random 128-bit UUID: vendor services must not use the Bluetooth base UUID).
SERVICE_UUID = "8ba60001-198b-484e-b788-eaeee2526104"
# The agent writes request fragments here (write with response, so each fragment is acknowledged).
WRITE_CHAR_UUID = "8ba60002-198b-484e-b788-eaeee2526104"
# The device notifies answer fragments here.
NOTIFY_CHAR_UUID = "8ba60003-198b-484e-b788-eaeee2526104"

# Service data under SERVICE_UUID: layout version u8 | PID (8 ASCII characters).
SERVICE_DATA_VERSION = 1
SERVICE_DATA_BYTES = 1 + SHORT_PID_LEN

FIRST_HEADER = struct.Struct(">BBH")
NEXT_HEADER = struct.Struct(">BB")
ATT_HEADER_BYTES = 3
DEFAULT_ATT_MTU = 23
# The ATT payload of the default MTU (23 - 3); the smallest a BLE link can have.
MIN_PAYLOAD = DEFAULT_ATT_MTU - ATT_HEADER_BYTES
# The largest attribute value ATT allows.
MAX_PAYLOAD = 512
MAX_FRAGMENTS = 256
# Fragment numbers of this many recently completed messages are remembered, so their late duplicates are ignored.
RECENT_MESSAGES = 8


@dataclass(frozen=True)
class Fragment:
    """One parsed fragment; `total` is set on the first fragment only."""

    msg: int
    index: int
    total: int | None
    data: bytes


def parse(raw: bytes) -> Fragment:
    """Split one fragment into header fields and data; FrameError when it is too short for its header."""
    if len(raw) < NEXT_HEADER.size:
        raise FrameError(f"BLE fragment of {len(raw)} bytes is shorter than its header", field="fragment")
    msg, index = NEXT_HEADER.unpack_from(raw)
    if index != 0:
        return Fragment(msg, index, None, bytes(raw[NEXT_HEADER.size :]))
    if len(raw) < FIRST_HEADER.size:
        raise FrameError(
            f"first BLE fragment of message {msg} is {len(raw)} bytes, "
            f"shorter than its {FIRST_HEADER.size}-byte header",
            field="fragment",
        )
    _, _, total = FIRST_HEADER.unpack_from(raw)
    data = bytes(raw[FIRST_HEADER.size :])
    if len(data) > total:
        raise FrameError(f"first fragment of message {msg} holds {len(data)} bytes of a {total}-byte message")
    return Fragment(msg, 0, total, data)


def check_payload(payload: int) -> int:
    """Return `payload` (bytes per fragment, header included) if a BLE link can carry it."""
    if not MIN_PAYLOAD <= payload <= MAX_PAYLOAD:
        raise ValueError(f"fragment payload {payload} is outside {MIN_PAYLOAD}..{MAX_PAYLOAD} bytes")
    return payload


def payload_for_mtu(att_mtu: int) -> int:
    """The fragment size for a negotiated ATT MTU, kept inside what a BLE link can carry."""
    return max(MIN_PAYLOAD, min(MAX_PAYLOAD, att_mtu - ATT_HEADER_BYTES))


def fragment_count(total: int, payload: int) -> int:
    """How many fragments a `total`-byte message takes at this payload size."""
    first = payload - FIRST_HEADER.size
    if total <= first:
        return 1
    per = payload - NEXT_HEADER.size
    return 1 + -(-(total - first) // per)


def split(message: bytes, msg: int, payload: int = MIN_PAYLOAD, *, max_bytes: int = MAX_MESSAGE_BYTES) -> list[bytes]:
    """Cut `message` into fragments of at most `payload` bytes each (header included)."""
    check_payload(payload)
    if not 0 <= msg <= 0xFF:
        raise ValueError(f"message number {msg} is outside 0..255")
    if len(message) > max_bytes:
        raise ValueError(f"message of {len(message)} bytes is over the {max_bytes}-byte limit")
    first = payload - FIRST_HEADER.size
    out = [FIRST_HEADER.pack(msg, 0, len(message)) + message[:first]]
    per = payload - NEXT_HEADER.size
    for index, start in enumerate(range(first, len(message), per), start=1):
        out.append(NEXT_HEADER.pack(msg, index) + message[start : start + per])
    if len(out) > MAX_FRAGMENTS:
        raise ValueError(f"message of {len(message)} bytes needs {len(out)} fragments, over {MAX_FRAGMENTS}")
    return out


@dataclass
class _Partial:
    msg: int
    total: int
    first_raw: bytes
    parts: list[bytes] = field(default_factory=list)
    received: int = 0

    @property
    def per(self) -> int:
        """Data bytes in each fragment after the first (the sender's payload minus the short header)."""
        return len(self.first_raw) - NEXT_HEADER.size


class Reassembler:
    """Puts fragments back into messages, one message at a time, in order.

    A first fragment starts a new message (dropping any partial one), unless it repeats the first fragment
    of the message in progress or of a recently completed one: duplicates are ignored. A gap, a fragment of
    the wrong size, a message over `max_bytes`, or a fragment of an unknown message raises FrameError; an
    error about the message in progress drops it. It never returns a message it did not get whole, so a
    lossy link ends in an error or a timeout (the caller's), never in wrong bytes.
    """

    def __init__(self, *, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._partial: _Partial | None = None
        self._done: deque[tuple[int, bytes]] = deque(maxlen=RECENT_MESSAGES)
        self.duplicates = 0

    @property
    def in_progress(self) -> int | None:
        """The number of the message being reassembled, if any."""
        return None if self._partial is None else self._partial.msg

    def reset(self) -> None:
        """Drop the message in progress."""
        self._partial = None

    def feed(self, raw: bytes) -> tuple[int, bytes] | None:
        """Add one fragment; return (msg, message) when it completes a message."""
        frag = parse(raw)
        if frag.total is not None:
            return self._first(frag, frag.total, bytes(raw))
        part = self._partial
        if part is not None and part.msg == frag.msg:
            return self._next(part, frag)
        if any(msg == frag.msg for msg, _ in self._done):
            self.duplicates += 1
            return None
        raise FrameError(
            f"fragment {frag.index} of message {frag.msg} arrived without its first fragment", field="index"
        )

    def _first(self, frag: Fragment, total: int, raw: bytes) -> tuple[int, bytes] | None:
        part = self._partial
        if (part is not None and (part.msg, part.first_raw) == (frag.msg, raw)) or (frag.msg, raw) in self._done:
            self.duplicates += 1
            return None
        self._partial = None
        if total > self.max_bytes:
            raise FrameError(f"message {frag.msg} claims {total} bytes, over {self.max_bytes}", field="total")
        if len(raw) > MAX_PAYLOAD or (len(frag.data) < total and len(raw) < MIN_PAYLOAD):
            raise FrameError(
                f"message {frag.msg}: a first fragment of {len(raw)} bytes that is not the last must fill "
                f"{MIN_PAYLOAD}..{MAX_PAYLOAD} bytes",
                field="fragment",
            )
        part = _Partial(frag.msg, total, raw, [frag.data], len(frag.data))
        self._partial = part
        return self._complete(part)

    def _next(self, part: _Partial, frag: Fragment) -> tuple[int, bytes] | None:
        expected = len(part.parts)
        if frag.index < expected:
            if part.parts[frag.index] != frag.data:
                self._partial = None
                raise FrameError(f"message {part.msg} fragment {frag.index} came twice with other bytes", field="data")
            self.duplicates += 1
            return None
        if frag.index > expected:
            self._partial = None
            raise FrameError(
                f"message {part.msg}: fragment {frag.index} arrived while fragment {expected} was expected "
                f"(fragments {expected}..{frag.index - 1} missing)",
                field="index",
            )
        size = min(part.per, part.total - part.received)
        if len(frag.data) != size:
            self._partial = None
            raise FrameError(
                f"message {part.msg}: fragment {frag.index} holds {len(frag.data)} bytes, expected {size}",
                field="data",
            )
        part.parts.append(frag.data)
        part.received += size
        return self._complete(part)

    def _complete(self, part: _Partial) -> tuple[int, bytes] | None:
        if part.received < part.total:
            return None
        self._partial = None
        self._done.append((part.msg, part.first_raw))
        return part.msg, b"".join(part.parts)


def service_data(pid: str) -> bytes:
    """The service data a device advertises under SERVICE_UUID: layout version and its 8-character PID."""
    check_pid(pid)
    if len(pid) != SHORT_PID_LEN:
        raise MalformedError(f"a BLE PID has {SHORT_PID_LEN} characters; {pid!r} has {len(pid)}", field="pid")
    return bytes([SERVICE_DATA_VERSION]) + pid.encode()


def pid_of_service_data(data: bytes) -> str:
    """The PID in a device's service data; MalformedError names what is wrong."""
    if len(data) != SERVICE_DATA_BYTES or data[0] != SERVICE_DATA_VERSION:
        raise MalformedError(
            f"service data {data.hex()} is not version {SERVICE_DATA_VERSION} followed by an "
            f"{SHORT_PID_LEN}-character PID",
            field="service_data",
        )
    return check_pid(data[1:].decode(errors="replace"), field="service_data PID")
