"""One way into the line for every scan source (serial, HID, keyboard, MQTT, the API): a bounded queue, one policy.

A unit's fault is the line's business and ends in a REFUSED (or IN_DOUBT) event. Anything else that escapes a scan
(a journal or disk error, a driver bug, any unexpected exception) is a gateway fault: logged with the SN, counted in
the agent's health, answered with a REFUSED `gateway_fault` event; the scanner and the agent carry on. A full queue
is answered with a REFUSED `gateway_busy` event at once, never a wait or a silent drop. Cancellation always
propagates. Sources only read SNs and hand them in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from agent.errors import AgentError
from wire.refusals import RefusalReason
from wire.topics import Result, ScanEvent

log = logging.getLogger(__name__)

# Scans waiting for a free worker; one more is refused as gateway_busy (a technician sees it at once).
SCAN_QUEUE_SIZE = 64
# No one source may hold more than this share of the queue: a client flooding cmd/scan on the broker (or a
# jammed scanner) gets gateway_busy while the other scanners still get their scans in.
SOURCE_SHARE = 0.5
# The same code read again by the same source within this many seconds counts once (scanners double-read).
SCAN_DEBOUNCE_S = 1.0
# Past this many remembered reads, those older than the debounce window are forgotten.
DEBOUNCE_PRUNE_AT = 256
# Garbage is shown (escaped) up to this many bytes.
SHOWN_GARBAGE_BYTES = 40

ScanFn = Callable[[str, str | None], Awaitable[ScanEvent]]
EventSink = Callable[[ScanEvent], Awaitable[None]]


@dataclass(frozen=True)
class GatewayFault:
    """The last fault of the gateway during a scan, for health."""

    sn: str
    source: str
    error: str
    at: int

    def as_dict(self) -> dict[str, object]:
        """As the health payload carries it."""
        return {"sn": self.sn, "source": self.source, "error": self.error, "at": self.at}


@dataclass
class _Job:
    sn: str
    source: str
    request_id: str | None
    result: asyncio.Future[ScanEvent] | None = None


@dataclass
class DispatchCounts:
    """What the dispatcher did since start (health)."""

    done: int = 0
    faults: int = 0
    busy: int = 0
    debounced: int = 0
    garbage: int = 0
    last_fault: GatewayFault | None = field(default=None)


class ScanDispatcher:
    """Runs scans handed in by any source through `scan` on `workers` workers; `run()` until cancelled."""

    def __init__(
        self, scan: ScanFn, on_event: EventSink, *, workers: int, queue_size: int = SCAN_QUEUE_SIZE,
        debounce_s: float = SCAN_DEBOUNCE_S, on_fault: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if workers < 1 or queue_size < 1:
            raise ValueError(f"a dispatcher needs workers ({workers}) and queue_size ({queue_size}) of at least 1")
        self._scan = scan
        self._on_event = on_event
        self._workers = workers
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(queue_size)
        self._per_source = max(1, int(queue_size * SOURCE_SHARE))
        self._queued: Counter[str] = Counter()
        self._debounce_s = debounce_s
        self._on_fault = on_fault or (lambda: None)
        self._clock = clock
        self._last_read: dict[tuple[str, str], float] = {}
        self.counts = DispatchCounts()

    async def run(self) -> None:
        """Serve the queue until cancelled; scans still queued then are cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                for n in range(self._workers):
                    tg.create_task(self._work(), name=f"scan worker {n}")
        finally:
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if job.result is not None:
                    job.result.cancel()

    async def submit(self, sn: str, source: str, request_id: str | None = None, *, debounce: bool = True) -> bool:
        """Hand in a scan without waiting for it; False when it was garbage, a repeat read or refused as busy."""
        if not _printable(sn):
            await self._unprintable(sn, source, request_id)
            return False
        if debounce and self._repeat(sn, source):
            return False
        return await self._enqueue(_Job(sn, source, request_id)) is None

    async def scan(self, sn: str, source: str, request_id: str | None = None) -> ScanEvent:
        """Hand in a scan and wait for its outcome (a busy refusal comes back at once)."""
        if not _printable(sn):
            return await self._unprintable(sn, source, request_id)
        job = _Job(sn, source, request_id, asyncio.get_running_loop().create_future())
        refused = await self._enqueue(job)
        if refused is not None:
            return refused
        assert job.result is not None
        return await job.result

    async def reject(self, source: str, raw: bytes, why: str, request_id: str | None = None) -> ScanEvent:
        """A source read something that is no SN: refused with a message, so the technician sees it."""
        self.counts.garbage += 1
        shown = _escaped(raw[:SHOWN_GARBAGE_BYTES])
        log.warning("scanner %s: %s %r; refused", source, why, raw[:SHOWN_GARBAGE_BYTES])
        message = f"{source} read {why} ({shown}), not a serial number; scan the label again"
        event = _event(shown, RefusalReason.BAD_SN, message, request_id)
        await self._emit(event)
        return event

    async def _unprintable(self, sn: str, source: str, request_id: str | None) -> ScanEvent:
        # An SN from MQTT (or the API) is any string: control characters never travel on into events and screens.
        return await self.reject(source, sn.encode("utf-8", errors="replace"), "unprintable characters", request_id)

    def health(self) -> dict[str, object]:
        """The dispatcher's part of the agent's health payload."""
        c = self.counts
        return {
            "queued": self._queue.qsize(), "queue_size": self._queue.maxsize, "done": c.done, "faults": c.faults,
            "busy": c.busy, "debounced": c.debounced, "garbage": c.garbage,
            "last_fault": None if c.last_fault is None else c.last_fault.as_dict(),
        }  # fmt: skip

    def _repeat(self, sn: str, source: str) -> bool:
        now = self._clock()
        key = (source, sn)
        last = self._last_read.get(key)
        if last is not None and now - last < self._debounce_s:
            self.counts.debounced += 1
            log.info("%s: read again by %s within %.1f s (scanner.debounce_s); counted once", sn, source,
                     self._debounce_s)  # fmt: skip
            return True
        if len(self._last_read) >= DEBOUNCE_PRUNE_AT:
            self._last_read = {k: t for k, t in self._last_read.items() if now - t < self._debounce_s}
        self._last_read[key] = now
        return False

    async def _enqueue(self, job: _Job) -> ScanEvent | None:
        """Queue `job`; the busy refusal (already reported) when the queue, or this source's share of it, is full."""
        waiting = self._queue.qsize()
        if self._queued[job.source] >= self._per_source:
            why = f"{self._queued[job.source]} scans from {job.source} are waiting already"
        elif self._queue.full():
            why = f"the gateway has {waiting} scans waiting already"
        else:
            self._queue.put_nowait(job)
            self._queued[job.source] += 1
            return None
        self.counts.busy += 1
        log.warning("%s: scan from %s refused: %s", job.sn, job.source, why)
        event = _event(job.sn, RefusalReason.GATEWAY_BUSY, f"{why}; nothing was started. Scan {job.sn} again shortly",
                       job.request_id)  # fmt: skip
        await self._emit(event)
        return event

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            self._queued[job.source] -= 1
            if not self._queued[job.source]:
                del self._queued[job.source]
            try:
                event = await self._run(job)
                if job.result is not None and not job.result.done():
                    job.result.set_result(event)
            finally:
                self._queue.task_done()
                if job.result is not None and not job.result.done():
                    job.result.cancel()  # cancelled mid-scan: a caller waiting for it learns so

    async def _run(self, job: _Job) -> ScanEvent:
        try:
            event = await self._scan(job.sn, job.request_id)
        except Exception as exc:  # noqa: BLE001 - the one policy: what is not the unit's fault is the gateway's
            return await self._fault(job, exc)
        self.counts.done += 1
        return event

    async def _fault(self, job: _Job, exc: Exception) -> ScanEvent:
        self.counts.faults += 1
        error = f"{type(exc).__name__}: {exc}"
        self.counts.last_fault = GatewayFault(job.sn, job.source, error, int(time.time()))
        # The agent's own errors say what happened; anything else is a bug whose traceback is worth keeping.
        log.error("%s: gateway fault during a scan from %s: %s; the agent carries on", job.sn, job.source, error,
                  exc_info=None if isinstance(exc, AgentError) else exc)  # fmt: skip
        self._on_fault()
        message = (
            f"gateway fault, not the unit's: {error}. The scan stopped; scan {job.sn} again (a slot it may have "
            "reserved is settled then); if this repeats, see the agent's log"
        )
        event = _event(job.sn, RefusalReason.GATEWAY_FAULT, message, job.request_id)
        await self._emit(event)
        return event

    async def _emit(self, event: ScanEvent) -> None:
        try:
            await self._on_event(event)
        except Exception:  # reporting must not take the worker down with it; the log keeps the event
            log.exception("%s: could not report the event %s %s", event.sn, event.result.value, event.reason)


def _printable(sn: str) -> bool:
    return sn.isascii() and sn.isprintable()


def _escaped(raw: bytes) -> str:
    """`raw` as printable ASCII: anything else as \\xNN, so no control sequence reaches a terminal or a dashboard."""
    return "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x5C else f"\\x{b:02x}" for b in raw)


def _event(sn: str, reason: RefusalReason, message: str, request_id: str | None) -> ScanEvent:
    return ScanEvent(sn=sn, result=Result.REFUSED, reason=reason, message=message, at=int(time.time()), id=request_id)
