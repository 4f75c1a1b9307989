"""`rebadge agent run --json`: one JSON object per scan on stdout, in the fields a MES reads.

`retries` counts the earlier scans of the same SN by this agent process (a rescan after RESCAN or a refusal);
it starts from 0 when the agent starts. Time is the scan's end in ISO 8601 UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections import OrderedDict, deque
from typing import TextIO

from agent.config import AgentConfig
from agent.plain_words import advice
from wire.topics import ScanEvent

log = logging.getLogger(__name__)

# Lines a stalled reader of stdout may leave unwritten before the oldest is dropped.
MES_QUEUE_LINES = 10_000
DROP_LOG_EVERY = 100
# On the way out, the lines still queued get this long to be written.
MES_FLUSH_TIMEOUT_S = 2.0
# SNs whose scans are counted for `retries`; past this the oldest is forgotten (a long shift, bounded memory).
RETRY_MEMORY_SNS = 100_000


class MesLines:
    """Writes each scan event as one JSON line to `out`, flushed at once, from a thread: a MES that stops reading
    its pipe must not stop the line. `run()` does the writing until cancelled (then writes what is left)."""

    def __init__(self, config: AgentConfig, gw: str, out: TextIO, *, max_queued: int = MES_QUEUE_LINES) -> None:
        self.work_order = config.line.work_order
        self.station = config.line.station
        self.gw = gw
        self.out = out
        self.dropped = 0
        self.closed = False  # stdout went away: lines are counted as dropped, not written
        self._scans: OrderedDict[str, int] = OrderedDict()
        self._queue: deque[str] = deque()
        self._max_queued = max_queued
        self._wake = asyncio.Event()

    def line(self, event: ScanEvent) -> dict[str, object]:
        """The MES's object for one event (and count it for the SN's next retries)."""
        retries = self._scans.pop(event.sn, 0)
        self._scans[event.sn] = retries + 1
        if len(self._scans) > RETRY_MEMORY_SNS:
            self._scans.popitem(last=False)
        words = advice(event)
        at = datetime.datetime.fromtimestamp(event.at, datetime.UTC).isoformat().replace("+00:00", "Z")
        return {
            "time": at, "work_order": self.work_order, "station": self.station, "gateway": self.gw, "sn": event.sn,
            "result": event.result.value, "reason": str(event.reason), "message": event.message,
            "advice": words.action, "elapsed_ms": event.ms, "retries": retries, "slot": event.slot,
            "cert_no": event.cert_no, "lease_id": event.lease_id, "old_pid": event.old_pid,
            "new_pid": event.new_pid, "radio": event.radio, "request_id": event.id,
        }  # fmt: skip

    def write(self, event: ScanEvent) -> None:
        """Queue the event's line (never blocks); past `max_queued` unwritten lines the oldest is dropped, counted."""
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped % DROP_LOG_EVERY == 1:
                log.warning("--json: stdout is not being read; %d lines dropped so far (the journal has every scan)",
                            self.dropped)  # fmt: skip
        self._queue.append(json.dumps(self.line(event), separators=(",", ":")) + "\n")
        self._wake.set()

    async def run(self) -> None:
        """Write queued lines until cancelled; then what is left, bounded by MES_FLUSH_TIMEOUT_S."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await asyncio.to_thread(self._write_queued)
        finally:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MES_FLUSH_TIMEOUT_S):
                    await asyncio.to_thread(self._write_queued)

    def _write_queued(self) -> None:
        try:
            while self._queue and not self.closed:
                self.out.write(self._queue.popleft())
            if not self.closed:
                self.out.flush()
        except (OSError, ValueError) as exc:  # the reader went away (broken pipe), or stdout was closed
            self.closed = True
            # A plain message, no traceback.
            log.error(  # noqa: TRY400
                "--json: stdout is gone (%s); scan lines are no longer written (the journal has every scan)", exc
            )
        if self.closed:
            self.dropped += len(self._queue)
            self._queue.clear()
