"""Journal records out as signed batches, the platform's acks in.

A batch is done only when a verified ack covers it. After each (re)connect, and whenever acks stop coming for
`resend_after_s` while batches are out, sending starts again at the journal's acked seq + 1: duplicates are fine
(the platform is idempotent), gaps never happen. A live (not retained) ack that retires nothing and stops short of every
batch out is the platform saying it waits behind a gap (a batch it never got): sending starts again from there at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from agent.errors import JournalError
from agent.journal.models import AckOutcome, AckResult
from wire import topics
from wire.errors import WireError
from wire.keys import KeyRing
from wire.records import Batch, Record
from wire.tokens import Ack, verify

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]
SignCheckpoint = Callable[[int, bytes], bytes]
# How much of a bad payload a log line shows.
SHOWN_BYTES = 80
# However often "a worker subscribed" is said (anyone the broker lets publish it can), at most one resend per this.
READY_RESEND_MIN_S = 2.0


class RecordJournal(Protocol):
    """What the uplink needs of the journal."""

    async def head(self) -> tuple[int, bytes]:
        """(seq, digest) of the last record written."""
        ...

    async def acked(self) -> int:
        """The highest seq the platform's acks cover."""
        ...

    async def pending(self, after_seq: int, limit: int) -> list[Record]:
        """Retained records with seq > after_seq, oldest first."""
        ...

    async def apply_ack(self, seq: int, head: bytes, at: int) -> AckResult:
        """Retire records up to seq once the ack names our digest there; freeze on an ack of another chain."""
        ...


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; False when the time ran out."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


def shown(payload: bytes) -> str:
    """A bad payload, cut short for a log line."""
    return repr(payload[:SHOWN_BYTES]) + ("..." if len(payload) > SHOWN_BYTES else "")


class RecordSender:
    """Sends the journal's records in order, a few batches ahead of the platform's acks, and applies those acks."""

    def __init__(
        self, journal: RecordJournal, gw: str, sign_checkpoint: SignCheckpoint, issuers: KeyRing, *,
        batch_records: int, max_in_flight: int, resend_after_s: float, idle_check_s: float,
    ) -> None:  # fmt: skip
        self._journal = journal
        self._gw = gw
        self._topic = topics.records(gw)
        self._sign_checkpoint = sign_checkpoint
        self._issuers = issuers
        self._batch_records = batch_records
        self._max_in_flight = max_in_flight
        self._resend_after = resend_after_s
        self._idle_check = idle_check_s
        self._wake = asyncio.Event()
        self._ack_pulse = asyncio.Event()
        self._waits_at: int | None = None  # the seq a live ack said the platform holds, until the loop looks
        self._platform_ready = False  # a worker subscribed since the loop last looked
        self._ready_resend_at: float | None = None  # monotonic time of the last resend a worker's ready started
        self.batches_sent = 0
        self.early_resends = 0

    def wake(self) -> None:
        """New records were written, or an ack arrived: look again."""
        self._wake.set()

    def platform_ready(self) -> None:
        """A platform worker has just subscribed: batches out before it listened may be lost, so send them again.

        Anyone the broker lets publish the cue could repeat it; a resend is harmless (the platform ingests each
        record once) and happens at most once per READY_RESEND_MIN_S.
        """
        self._platform_ready = True
        self.wake()

    async def acked(self) -> int:
        """The highest seq the platform's acks cover."""
        return await self._journal.acked()

    async def wait_acked(self, seq: int) -> None:
        """Return once the journal's acked seq reaches `seq` (the caller bounds the wait)."""
        while True:
            pulse = self._ack_pulse  # taken before the read, so an ack between the two still wakes us
            if await self._journal.acked() >= seq:
                return
            await pulse.wait()

    async def run(self, publish: Publish) -> None:
        """Send batches over one connection until it fails or the task is cancelled."""
        next_seq = await self._journal.acked() + 1
        in_flight: deque[int] = deque()  # last seq of each batch out and not yet covered by an ack
        waiting_since = time.monotonic()
        while True:
            self._wake.clear()
            acked = await self._journal.acked()
            if in_flight and in_flight[0] <= acked:
                while in_flight and in_flight[0] <= acked:
                    in_flight.popleft()
                waiting_since = time.monotonic()
            next_seq = max(next_seq, acked + 1)
            head_seq, _ = await self._journal.head()
            if next_seq <= head_seq and len(in_flight) < self._max_in_flight:
                last = await self._send_batch(publish, next_seq)
                if last is not None:
                    if not in_flight:
                        waiting_since = time.monotonic()
                    in_flight.append(last)
                    next_seq = last + 1
                    continue
            waits_at, self._waits_at = self._waits_at, None
            if in_flight and waits_at is not None and waits_at == acked < in_flight[0]:
                log.info("uplink: the platform waits at seq %d with %d batch(es) out; sending again from seq %d",
                         acked, len(in_flight), acked + 1)  # fmt: skip
                self.early_resends += 1
                in_flight.clear()
                next_seq = acked + 1
                waiting_since = time.monotonic()
                continue
            ready, self._platform_ready = self._platform_ready, False
            if in_flight and ready and self._ready_resend_due():
                log.info("uplink: a platform worker subscribed with %d batch(es) out; sending again from seq %d",
                         len(in_flight), acked + 1)  # fmt: skip
                self.early_resends += 1
                in_flight.clear()
                next_seq = acked + 1
                waiting_since = time.monotonic()
                continue
            waited = time.monotonic() - waiting_since
            if in_flight and waited >= self._resend_after:
                log.info(
                    "uplink: no ack past seq %d for %.1f s with %d batch(es) out; sending again from seq %d",
                    acked, waited, len(in_flight), acked + 1,
                )  # fmt: skip
                in_flight.clear()
                next_seq = acked + 1
                continue
            timeout = self._resend_after - waited if in_flight else self._idle_check
            await wait_event(self._wake, max(timeout, 0.0))

    def _ready_resend_due(self) -> bool:
        now = time.monotonic()
        if self._ready_resend_at is not None and now - self._ready_resend_at < READY_RESEND_MIN_S:
            log.debug("uplink: a platform worker subscribed again within %.0f s; not resending", READY_RESEND_MIN_S)
            return False
        self._ready_resend_at = now
        return True

    async def _send_batch(self, publish: Publish, next_seq: int) -> int | None:
        """Publish records from `next_seq` as one batch; the last seq sent, or None when there was nothing."""
        records = await self._journal.pending(next_seq - 1, self._batch_records)
        if not records:
            return None
        last = records[-1]
        batch = Batch(
            gw=self._gw,
            from_seq=records[0].seq,
            records=[r.to_cbor() for r in records],
            checkpoint=self._sign_checkpoint(last.seq, last.digest()),
        )
        await publish(self._topic, batch.to_cbor())
        self.batches_sent += 1
        log.debug("uplink: sent records %d..%d", records[0].seq, last.seq)
        return last.seq

    async def on_ack(self, token: bytes, *, live: bool = False) -> AckResult | None:
        """Verify a signed ack and apply it; a forged, garbled or foreign ack does nothing (None).

        `live` is an ack published now (not the retained one a subscription delivers): one that covers no batch out
        starts the resend at once.

        Only a verified ack of this gateway reaches the journal, which retires what it covers, or freezes the
        gateway when it shows another chain than ours (the journal was restored from a backup).
        """
        if not token:
            return None  # the retained ack was cleared
        try:
            ack = verify(token, Ack, self._issuers)
        except WireError as exc:
            log.warning("uplink: ignoring an ack that does not verify (%s): %s", exc, shown(token))
            return None
        if ack.gw != self._gw:
            log.warning("uplink: ignoring an ack for gateway %s; this gateway is %s", ack.gw, self._gw)
            return None
        try:
            applied = await self._journal.apply_ack(ack.seq, ack.head, ack.at)
        except JournalError as exc:
            log.warning("uplink: ack for seq %d not applied: %s", ack.seq, exc)
            return None
        if applied.outcome is AckOutcome.REPLAYED:
            log.warning("uplink: ignoring an ack for seq %d of time %d: older than the newest ack applied (a replay)",
                        ack.seq, ack.at)  # fmt: skip
        elif applied.outcome is AckOutcome.FROZE:
            log.error("uplink: the platform's ack for seq %d shows another chain than this journal's; "
                      "the gateway is frozen", ack.seq)  # fmt: skip
        elif applied.outcome is AckOutcome.STILL_FROZEN:
            log.warning("uplink: the gateway stays frozen: the ack for seq %d does not lift it (only an ack newer "
                        "than the one that froze it, matching this journal, does)", ack.seq)  # fmt: skip
        if live and applied.retired == 0 and applied.outcome in (AckOutcome.RETIRED, AckOutcome.UNCHANGED):
            self._waits_at = ack.seq  # it moved nothing: the platform tells us where it stands
        pulse, self._ack_pulse = self._ack_pulse, asyncio.Event()
        pulse.set()
        self.wake()
        return applied
