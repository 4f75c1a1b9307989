"""What every scanner shares: bytes assembled into lines, lines checked as SN text, and the sink they go to."""

from __future__ import annotations

import asyncio
import re
from typing import Literal, Protocol

# Longer than any SN: a line past this is garbage (a stuck key, line noise at the wrong baud rate).
MAX_SN_LINE = 128
READ_CHUNK = 256

Terminator = Literal["any", "cr", "lf", "crlf"]
TERMINATORS: dict[str, re.Pattern[bytes]] = {
    "any": re.compile(rb"[\r\n]"),
    "cr": re.compile(rb"\r"),
    "lf": re.compile(rb"\n"),
    "crlf": re.compile(rb"\r\n"),
}


class ScanSink(Protocol):
    """Where sources hand what they read (agent.dispatch.ScanDispatcher)."""

    async def submit(self, sn: str, source: str, request_id: str | None = None, *, debounce: bool = True) -> bool:
        """Hand in one SN read by `source`."""
        ...

    async def reject(self, source: str, raw: bytes, why: str) -> object:
        """Report something read that is no SN."""
        ...


def clean_line(raw: bytes) -> str | None:
    """One scanner line as an SN: printable ASCII, trimmed; None for an empty or unreadable line."""
    text = raw.strip(b"\r\n\t \x00").decode("ascii", errors="replace")
    if not text or len(text) > MAX_SN_LINE or not text.isprintable() or "\ufffd" in text:
        return None
    return text


class LineAssembler:
    """Bytes as they arrive (a line may come in pieces) -> whole lines; an over-long line is cut off and its rest
    skipped up to the next terminator, so no piece of it is taken for an SN."""

    def __init__(self, terminator: Terminator = "any") -> None:
        self._split = TERMINATORS[terminator]
        self._buf = b""
        self._skipping = False

    def feed(self, chunk: bytes) -> list[bytes | None]:
        """The lines `chunk` completes, in order; None stands for an over-long line."""
        *lines, self._buf = self._split.split(self._buf + chunk)
        out: list[bytes | None] = []
        for raw in lines:
            if self._skipping:
                self._skipping = False  # the tail of the over-long line ends here
                continue
            out.append(None if len(raw) > MAX_SN_LINE else raw)
        if len(self._buf) > MAX_SN_LINE:
            if not self._skipping:
                out.append(None)
            self._skipping = True
            self._buf = b""
        return out


async def hand_in(raw: bytes | None, source: str, sink: ScanSink) -> None:
    """Submit one assembled line as an SN, or reject it with the reason."""
    if raw is None or len(raw) > MAX_SN_LINE:
        await sink.reject(source, (raw or b"")[:MAX_SN_LINE], f"a line longer than {MAX_SN_LINE} bytes")
        return
    if not raw.strip(b"\r\n\t \x00"):
        return  # an empty line (CRLF with terminator "any", a bare Enter) is nothing
    sn = clean_line(raw)
    if sn is None:
        await sink.reject(source, raw, "unreadable bytes")
        return
    await sink.submit(sn, source)


async def read_lines(reader: asyncio.StreamReader, source: str, sink: ScanSink, terminator: Terminator) -> None:
    """Hand in every line from `reader` until it ends."""
    lines = LineAssembler(terminator)
    while chunk := await reader.read(READ_CHUNK):
        for raw in lines.feed(chunk):
            await hand_in(raw, source, sink)
