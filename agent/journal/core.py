"""The write-ahead journal: leases, slot reservations, and a hash-chained record of every state change.

One aiosqlite connection, one asyncio.Lock around each transaction (one writer), WAL with synchronous=FULL so a
commit is on disk when it returns. A reservation is committed before its grant is handed to the caller, so a
grant never leaves the gateway for a slot the journal could forget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import shutil
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite
from pydantic import ValidationError

from agent.errors import (
    DiskFullError,
    JournalError,
    JournalFrozenError,
    JournalTimeoutError,
    LeaseClosedError,
    OpenAttemptsError,
)
from agent.journal import queries as q
from agent.journal.chain import ChainState, broken
from agent.journal.models import (
    OPEN_STATES,
    AckOutcome,
    AckResult,
    Attempt,
    AttemptState,
    Counts,
    Freeze,
    LeaseClose,
    StoredLease,
    attempt_from_row,
    freeze_from_row,
)
from agent.journal.opening import load, open_error, prepare_files
from wire.errors import MalformedError
from wire.ids import check_pid, check_sn
from wire.records import Record, RecordKind, close_record, record_from_cbor
from wire.refusals import RefusalReason
from wire.times import utc_iso
from wire.tokens import Certificate, Lease

log = logging.getLogger(__name__)

DEFAULT_MIN_FREE_BYTES = 50 * 2**20
# A transaction is a few statements and one fsync; one that takes this long means the disk has stalled.
WRITE_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 30.0
# Open checks every retained record; a gateway offline for weeks may hold a few hundred thousand.
OPEN_TIMEOUT_S = 600.0
CLOSE_TIMEOUT_S = 30.0
MAX_REASON = 200
MAX_REFUSAL_SN = 64
RESTARTED_REASON = "agent restarted before the outcome was known"
REINSTATED_REASON = "the platform reinstated this gateway after its journal forked and wrote off its leases"
CLOSED_IN_DOUBT_REASON = "lease closed before the outcome was known; in doubt for good"

T = TypeVar("T")


@dataclass
class _Txn:
    """One write transaction: the chain head as it will be after commit, and what to update in memory then."""

    db: aiosqlite.Connection
    head_seq: int
    head_digest: bytes
    on_commit: list[Callable[[], None]] = field(default_factory=list)


class Journal:
    """The gateway's ledger of leases and slot attempts; open with `await Journal.open(path, gw)`."""

    def __init__(
        self, db: aiosqlite.Connection, path: Path, gw: str, chain: ChainState, leases: list[StoredLease],
        acks: _AckState, *, min_free_bytes: int, clock_margin_s: float, clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.gw = gw
        self.path = path
        self.clock_margin_s = clock_margin_s
        self._db: aiosqlite.Connection | None = db
        self._head_seq, self._head_digest = chain.head_seq, chain.head_digest
        self._retired_seq, self._retired_digest = chain.retired_seq, chain.retired_digest
        self._leases = {lease.lease_id: lease for lease in leases}
        self._acks = acks
        self._freeze_listeners: list[Callable[[Freeze | None], None]] = []
        self._min_free = min_free_bytes
        self._clock = clock
        self._lock = asyncio.Lock()
        self._writes: set[asyncio.Task[Any]] = set()

    # -- open and close ---------------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, path: Path, gw: str, *, min_free_bytes: int = DEFAULT_MIN_FREE_BYTES, clock_margin_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> Journal:  # fmt: skip
        """Open (or create) the journal at `path`: migrate, check integrity and the whole chain, or refuse.

        `clock_margin_s`: a lease is not used for new reservations from this long before its expiry.
        """
        path = Path(path)
        if not 1 <= len(gw) <= 64:
            raise JournalError(f"gateway name {gw!r} must be 1 to 64 characters")
        await asyncio.to_thread(prepare_files, path)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {path}: {exc}") from exc
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                chain, leases = await load(db, path, gw)
                acks = _AckState.from_row(next(iter(await db.execute_fetchall(q.READ_ACKS))))
        except BaseException as exc:
            await db.close()
            if isinstance(exc, TimeoutError):
                raise JournalTimeoutError(f"journal {path} was not checked within {OPEN_TIMEOUT_S:.0f} s") from exc
            if isinstance(exc, sqlite3.Error):
                raise open_error(path, exc) from exc
            raise
        log.info("journal %s open: head seq %d, retired up to seq %d", path, chain.head_seq, chain.retired_seq)
        if acks.freeze is not None:
            log.error(
                "journal %s: %s (since %s: %s)",
                path,
                acks.freeze.message,
                utc_iso(acks.freeze.since),
                acks.freeze.reason,
            )
        return cls(
            db, path, gw, chain, leases, acks, min_free_bytes=min_free_bytes, clock_margin_s=clock_margin_s,
            clock=clock,
        )  # fmt: skip

    async def close(self) -> None:
        """Let writes in flight finish, then close the database."""
        db, self._db = self._db, None
        if db is None:
            return
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=CLOSE_TIMEOUT_S)
        await db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- leases -----------------------------------------------------------------------------------------------

    async def add_lease(self, lease: Lease, lease_token: bytes, cert: Certificate, cert_token: bytes) -> bool:
        """Store a verified lease with its certificate; False if it is stored already with the same bytes."""
        stored = _stored_lease(lease, lease_token, cert, cert_token)

        async def body(txn: _Txn) -> bool:
            if not self._check_new_lease(stored):
                return False
            await txn.db.execute(
                q.INSERT_LEASE,
                (stored.lease_id, stored.cert_no, stored.original_pid, stored.new_pid, stored.slot_lo,
                 stored.slot_hi, stored.exp, stored.gateway_kid, stored.lease_token, stored.cert_token),
            )  # fmt: skip
            txn.on_commit.append(lambda: self._leases.__setitem__(stored.lease_id, stored))
            return True

        added = await self._write(f"store lease {stored.lease_id}", body)
        if added:
            log.info("lease %s stored: certificate %s, slots [%d, %d)", *_lease_words(stored))
        return added

    def _check_new_lease(self, new: StoredLease) -> bool:
        old = self._leases.get(new.lease_id)
        if old is not None:
            if old.lease_token != new.lease_token:
                raise JournalError(
                    f"lease {new.lease_id} is stored already with different bytes; a lease id is never reissued, "
                    "so one of the two did not come from the platform"
                )
            return False
        now = self._now()
        for other in self._leases.values():
            overlaps = other.slot_lo < new.slot_hi and new.slot_lo < other.slot_hi
            # A closed lease's unspent slots go back to the platform, which may lease them to us again.
            if other.cert_no == new.cert_no and other.exp > now and not other.closed and overlaps:
                raise JournalError(
                    f"lease {new.lease_id} (slots [{new.slot_lo}, {new.slot_hi})) overlaps active lease "
                    f"{other.lease_id} (slots [{other.slot_lo}, {other.slot_hi})) of certificate {new.cert_no}; "
                    "the platform issues disjoint leases, so this one is refused"
                )
        return True

    async def leases(self, cert_no: str | None = None, *, active_only: bool = True) -> list[StoredLease]:
        """Stored leases (of one certificate if given), by certificate then first slot; active = not expired, not
        closed."""
        self._conn()
        now = self._now()
        found = [
            lease
            for lease in self._leases.values()
            if (cert_no is None or lease.cert_no == cert_no)
            and (not active_only or (lease.exp > now and not lease.closed))
        ]
        return sorted(found, key=lambda lease: (lease.cert_no, lease.slot_lo))

    async def cert_nos(self) -> list[str]:
        """Certificates this gateway holds an active lease of."""
        return sorted({lease.cert_no for lease in await self.leases()})

    # -- attempts ---------------------------------------------------------------------------------------------

    async def reserve(
        self, cert_no: str, sn: str, old_pid: str, new_pid: str, radio: str, sign_grant: Callable[[str, int], bytes]
    ) -> Attempt | None:
        """Durably reserve the lowest free slot of a usable lease and sign its grant; None when every usable slot is
        taken (a lease is usable until `clock_margin_s` before its expiry, unless closed)."""
        self._check_reserve(cert_no, sn, old_pid, new_pid, radio)
        self._check_not_frozen(f"reserve a slot for SN {sn}")
        self._check_disk()

        async def body(txn: _Txn) -> Attempt | None:
            now = self._now()
            self._check_not_frozen(f"reserve a slot for SN {sn}")
            await self._refuse_if_open(txn.db, sn, new_pid)
            rows = list(await txn.db.execute_fetchall(q.FREE_SLOT, {"cert": cert_no, "until": self._until(now)}))
            if not rows:
                return None
            lease_id, slot = rows[0]
            grant = sign_grant(lease_id, slot)
            if not isinstance(grant, bytes) or not grant:
                raise JournalError(f"sign_grant returned {type(grant).__name__}, not the grant token's bytes")
            inserted = await txn.db.execute_fetchall(
                q.INSERT_ATTEMPT, (lease_id, cert_no, slot, sn, old_pid, new_pid, radio, grant, now, now)
            )
            attempt = Attempt(
                id=next(iter(inserted))[0], lease_id=lease_id, cert_no=cert_no, slot=slot, sn=sn, old_pid=old_pid,
                new_pid=new_pid, radio=radio, state=AttemptState.RESERVED, grant=grant, reason="", at=now,
            )  # fmt: skip
            await self._append(txn, attempt)
            return attempt

        attempt = await self._write(f"reserve a slot for SN {sn}", body)
        if attempt is None:
            log.info("%s: no free slot left under certificate %s", sn, cert_no)
        else:
            log.info("%s: reserved slot %d of lease %s (attempt %d)", sn, attempt.slot, attempt.lease_id, attempt.id)
        return attempt

    def _check_reserve(self, cert_no: str, sn: str, old_pid: str, new_pid: str, radio: str) -> None:
        self._conn()
        try:
            check_sn(sn)
            check_pid(old_pid, "old_pid")
            check_pid(new_pid, "new_pid")
        except MalformedError as exc:
            raise JournalError(f"cannot reserve a slot: {exc}") from exc
        if not 1 <= len(radio) <= 16:
            raise JournalError(f"cannot reserve a slot: radio {radio!r} must be 1 to 16 characters")
        known = [lease for lease in self._leases.values() if lease.cert_no == cert_no]
        if not known:
            raise JournalError(f"no lease of certificate {cert_no!r} is stored; load a lease file or request one")
        lease = known[0]
        if (old_pid, new_pid) != (lease.original_pid, lease.new_pid):
            raise JournalError(
                f"cannot reserve a slot for SN {sn}: certificate {cert_no} rebadges {lease.original_pid} -> "
                f"{lease.new_pid}, not {old_pid} -> {new_pid}"
            )

    def _check_disk(self) -> None:
        # statvfs is one quick syscall on the local disk the journal lives on.
        free = shutil.disk_usage(self.path.parent).free
        if free < self._min_free:
            raise DiskFullError(
                f"only {free / 2**20:.1f} MiB free on the journal's disk ({self.path.parent}), below the "
                f"{self._min_free / 2**20:.0f} MiB minimum; new scans are refused until space is freed"
            )

    async def _refuse_if_open(self, db: aiosqlite.Connection, sn: str, new_pid: str) -> None:
        rows = await db.execute_fetchall(q.LIVE_ATTEMPTS_OF_SN, (sn,))
        for attempt in map(attempt_from_row, rows):
            if attempt.state in OPEN_STATES:
                raise JournalError(
                    f"SN {sn} already has attempt {attempt.id} {attempt.state} on slot {attempt.slot} of lease "
                    f"{attempt.lease_id}; settle it (scan the unit again) before reserving another slot"
                )
            if attempt.new_pid == new_pid:
                raise JournalError(
                    f"SN {sn} was rebadged to {new_pid} already (attempt {attempt.id}, slot {attempt.slot} of lease "
                    f"{attempt.lease_id}); not reserving another slot"
                )

    async def confirm(self, attempt_id: int) -> Attempt:
        """The device took the new PID and holds our grant: a reserved or in-doubt attempt becomes confirmed."""
        return await self._transition(attempt_id, AttemptState.CONFIRMED, OPEN_STATES, "")

    async def release(self, attempt_id: int, reason: str) -> Attempt:
        """The device definitely did not take it: a reserved or in-doubt attempt frees its slot."""
        return await self._transition(attempt_id, AttemptState.RELEASED, OPEN_STATES, reason)

    async def mark_in_doubt(self, attempt_id: int, reason: str) -> Attempt:
        """The grant may have reached the device but the outcome is unknown: the slot stays held."""
        return await self._transition(attempt_id, AttemptState.IN_DOUBT, {AttemptState.RESERVED}, reason)

    async def recover(self) -> list[Attempt]:
        """At start: every attempt still reserved (the agent died mid-scan) becomes in doubt; return them."""

        if self.frozen is not None:
            log.error("journal: reserved attempts are left as they are: %s", self.frozen.message)
            return []

        async def body(txn: _Txn) -> list[Attempt]:
            rows = await txn.db.execute_fetchall(q.RESERVED_ATTEMPTS)
            return [
                await self._move(txn, attempt, AttemptState.IN_DOUBT, RESTARTED_REASON)
                for attempt in map(attempt_from_row, rows)
            ]

        recovered = await self._write("recover reserved attempts", body)
        for attempt in recovered:
            log.warning("%s: slot %d is in doubt: %s", attempt.sn, attempt.slot, RESTARTED_REASON)
        return recovered

    async def _transition(
        self, attempt_id: int, to: AttemptState, allowed: Collection[AttemptState], reason: str
    ) -> Attempt:
        async def body(txn: _Txn) -> Attempt:
            self._check_not_frozen(f"mark attempt {attempt_id} {to}")
            rows = list(await txn.db.execute_fetchall(q.ATTEMPT_BY_ID, (attempt_id,)))
            if not rows:
                raise JournalError(f"no attempt {attempt_id} in the journal")
            attempt = attempt_from_row(rows[0])
            lease = self._leases.get(attempt.lease_id)
            if lease is not None and lease.closed_seq is not None:
                raise LeaseClosedError(
                    f"attempt {attempt_id} for SN {attempt.sn} lies on lease {lease.lease_id}, which this gateway "
                    f"closed at seq {lease.closed_seq}; no record on it may follow, so it stays {attempt.state}",
                    lease_id=lease.lease_id, seq=lease.closed_seq,
                )  # fmt: skip
            if attempt.state not in allowed:
                ways = " or ".join(sorted(allowed))
                raise JournalError(
                    f"attempt {attempt_id} for SN {attempt.sn} is {attempt.state}; it cannot become {to} "
                    f"(only an attempt that is {ways} can)"
                )
            return await self._move(txn, attempt, to, reason)

        moved = await self._write(f"mark attempt {attempt_id} {to}", body)
        log.info("%s: slot %d of lease %s %s %s", moved.sn, moved.slot, moved.lease_id, to, reason)
        return moved

    async def _move(self, txn: _Txn, attempt: Attempt, to: AttemptState, reason: str) -> Attempt:
        moved = replace(attempt, state=to, reason=_clip(reason), at=self._now())
        await txn.db.execute(
            q.MOVE_ATTEMPT,
            (to.value, moved.reason, moved.at, attempt.id),
        )
        await self._append(txn, moved)
        return moved

    async def open_attempt(self, sn: str) -> Attempt | None:
        """This SN's attempt whose outcome is not known yet (reserved or in doubt), if any."""
        rows = await self._fetch(q.OPEN_ATTEMPT_OF_SN, (sn,))
        return attempt_from_row(rows[0]) if rows else None

    async def in_doubt(self, limit: int = 100) -> list[Attempt]:
        """Attempts in doubt (a rescan settles each), oldest first, at most `limit`."""
        return [attempt_from_row(row) for row in await self._fetch(q.IN_DOUBT_ATTEMPTS, (limit,))]

    async def confirmed_attempt(self, sn: str, new_pid: str) -> Attempt | None:
        """This SN's confirmed attempt to `new_pid`, if it was rebadged to it already."""
        rows = await self._fetch(q.CONFIRMED_ATTEMPT_OF_SN, (sn, new_pid))
        return attempt_from_row(rows[0]) if rows else None

    async def note_refusal(self, cert_no: str, sn: str, reason: RefusalReason) -> None:
        """Count a scan the line refused (for progress); it spends no slot and is not chained."""

        async def body(txn: _Txn) -> None:
            await txn.db.execute(
                q.INSERT_REFUSAL,
                (cert_no, sn[:MAX_REFUSAL_SN], _clip(reason), self._now()),
            )

        await self._write(f"count a refusal of SN {sn[:MAX_REFUSAL_SN]}", body)

    async def counts(self, cert_no: str) -> Counts:
        """The certificate's progress on this gateway."""
        rows = await self._fetch(q.COUNTS, {"cert": cert_no, "until": self._until(self._now())})
        confirmed, in_doubt, refused, size, held = rows[0]
        return Counts(cert_no, confirmed, in_doubt, refused, size, size - held)

    # -- the chain and the platform's acks -----------------------------------------------------------------------

    async def head(self) -> tuple[int, bytes]:
        """(seq, digest) of the last record ever written; (0, GENESIS) for a new journal."""
        self._conn()
        return self._head_seq, self._head_digest

    async def acked(self) -> int:
        """The highest seq the platform's acks cover (all records up to it are retired)."""
        self._conn()
        return self._retired_seq

    async def pending(self, after_seq: int, limit: int) -> list[Record]:
        """Retained records with seq > after_seq, oldest first, at most `limit`."""
        if limit < 1:
            raise JournalError(f"pending: limit {limit} must be at least 1")
        rows = await self._fetch(q.PENDING_RECORDS, (max(after_seq, 0), limit))
        records = []
        for seq, body in rows:
            try:
                records.append(record_from_cbor(bytes(body)))
            except MalformedError as exc:
                raise broken(seq, f"record body does not decode ({exc})") from exc
        return records

    @property
    def frozen(self) -> Freeze | None:
        """Set while the platform holds another chain than ours (a journal restored from a backup)."""
        return self._acks.freeze

    def add_freeze_listener(self, listener: Callable[[Freeze | None], None]) -> None:
        """Call `listener(freeze)` after each commit that freezes the gateway or lifts the freeze."""
        self._freeze_listeners.append(listener)

    async def apply_ack(self, seq: int, head: bytes, at: int) -> AckResult:
        """Apply the platform's (verified) ack: retire records up to `seq` when `head` is our digest there.

        An ack older than the newest applied is a replay and ignored. An ack for a seq past our head, or naming
        another digest than ours, freezes the gateway durably: the platform holds another chain (this journal was
        restored from a backup). Only a later ack (newer `at` than the one that froze it) that matches lifts it.
        """
        self._conn()
        if at < self._acks.last_at:
            log.info("journal: ignoring an ack for seq %d of time %d, older than the newest applied (%d)",
                     seq, at, self._acks.last_at)  # fmt: skip
            return AckResult(AckOutcome.REPLAYED)
        if self._nothing_to_do(seq, head, at):
            return AckResult(AckOutcome.UNCHANGED)
        result = await self._write(f"apply the ack for seq {seq}", lambda txn: self._apply_ack(txn, seq, head, at))
        self._log_ack(seq, result)
        return result

    def _nothing_to_do(self, seq: int, head: bytes, at: int) -> bool:
        """The same ack again (the retained ack comes back at every connect): answer without a transaction."""
        if self._acks.freeze is not None or at != self._acks.last_at or seq > self._retired_seq:
            return False
        return seq < self._retired_seq or head == self._retired_digest

    async def _apply_ack(self, txn: _Txn, seq: int, head: bytes, at: int) -> AckResult:
        acks = self._acks
        if at < acks.last_at:
            return AckResult(AckOutcome.REPLAYED)
        fork = await self._fork_of(txn, seq, head)
        await txn.db.execute(q.SET_ACK_AT, (at,))
        if fork is not None:
            if acks.freeze is not None:
                self._after(txn, replace(acks, last_at=at))
                return AckResult(AckOutcome.STILL_FROZEN)
            freeze = Freeze(ack_seq=seq, ack_head=head, ack_at=at, since=self._now(), reason=fork)
            await txn.db.execute(q.SET_FROZEN, (at, seq, head, freeze.since, fork))
            self._after(txn, _AckState(at, freeze), notify=True)
            return AckResult(AckOutcome.FROZE)
        lifted = acks.freeze is not None and at > acks.freeze.ack_at
        if acks.freeze is not None and not lifted:
            self._after(txn, replace(acks, last_at=at))
            return AckResult(AckOutcome.STILL_FROZEN)
        if lifted:
            await txn.db.execute(q.LIFT_FREEZE)
            # Reinstating wrote off every lease this gateway held: a record on one would count for nothing, so
            # the journal closes them all and the line starts again on fresh leases.
            for lease in list(self._leases.values()):
                if lease.closed_seq is None:
                    await self._close(txn, lease, REINSTATED_REASON, force=True, check_frozen=False)
        retired = await self._retire(txn, seq, head)
        self._after(txn, _AckState(at, None), notify=lifted)
        if lifted:
            return AckResult(AckOutcome.LIFTED, retired)
        return AckResult(AckOutcome.RETIRED if retired else AckOutcome.UNCHANGED, retired)

    async def _fork_of(self, txn: _Txn, seq: int, head: bytes) -> str | None:
        """Why the ack shows another chain than ours, or None when it matches (or names a seq retired long ago)."""
        if seq > txn.head_seq:
            return f"the platform acked seq {seq}, beyond this journal's head seq {txn.head_seq}"
        if seq < self._retired_seq:
            return None  # retired and forgotten: nothing to compare with
        if seq == self._retired_seq:
            ours = self._retired_digest
        else:
            rows = list(await txn.db.execute_fetchall(q.RECORD_DIGEST, (seq,)))
            ours = bytes(rows[0][0]) if rows else b""
        if ours != head:
            return (
                f"the platform acked head {head.hex()[:16]}... at seq {seq}, where this journal's record hashes to "
                f"{ours.hex()[:16]}..."
            )
        return None

    async def _retire(self, txn: _Txn, seq: int, head: bytes) -> int:
        if seq <= self._retired_seq:
            return 0
        cursor = await txn.db.execute(q.RETIRE_RECORDS, (seq,))
        await txn.db.execute(q.SET_RETIRED, (seq, head))

        def retired() -> None:
            self._retired_seq, self._retired_digest = seq, head

        txn.on_commit.append(retired)
        return int(cursor.rowcount)

    def _after(self, txn: _Txn, acks: _AckState, *, notify: bool = False) -> None:
        def update() -> None:
            self._acks = acks
            if notify:
                for listener in self._freeze_listeners:
                    listener(acks.freeze)

        txn.on_commit.append(update)

    def _log_ack(self, seq: int, result: AckResult) -> None:
        if result.outcome is AckOutcome.FROZE and self.frozen is not None:
            log.error("journal: %s (%s)", self.frozen.message, self.frozen.reason)
        elif result.outcome is AckOutcome.LIFTED:
            log.warning("journal: an ack for seq %d matches this journal again: the freeze is lifted", seq)
        elif result.retired:
            log.info("journal: platform acked up to seq %d; %d records retired", seq, result.retired)

    # -- closing a lease -----------------------------------------------------------------------------------------

    async def close_lease(self, lease_id: str, reason: str, *, force: bool = False) -> LeaseClose:
        """Chain a `closed` record for the lease and spend nothing more on it; the platform then takes back its
        unspent slots. Refused while attempts on it are open, unless `force` (they then stay in doubt for good)."""
        self._conn()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise JournalError(f"no lease {lease_id!r} is stored on this gateway; 'rebadge agent status' lists them")
        if lease.closed_seq is not None:
            return LeaseClose(lease, lease.closed_seq, lease.closed_at or 0, lease.closed_reason, (), new=False)
        self._check_not_frozen(f"close lease {lease_id}")
        closed = await self._write(f"close lease {lease_id}", lambda txn: self._close(txn, lease, reason, force))
        log.info("lease %s closed at seq %d (%s)", lease_id, closed.seq, closed.reason)
        for attempt in closed.in_doubt:
            log.warning("%s: slot %d of closed lease %s stays in doubt for good", attempt.sn, attempt.slot, lease_id)
        return closed

    async def _close(
        self, txn: _Txn, lease: StoredLease, reason: str, force: bool, *, check_frozen: bool = True
    ) -> LeaseClose:
        if check_frozen:
            self._check_not_frozen(f"close lease {lease.lease_id}")
        rows = await txn.db.execute_fetchall(q.OPEN_ATTEMPTS_OF_LEASE, (lease.lease_id,))
        open_attempts = [attempt_from_row(row) for row in rows]
        if open_attempts and not force:
            raise _open_attempts_error(lease.lease_id, open_attempts)
        in_doubt = [
            await self._move(txn, a, AttemptState.IN_DOUBT, CLOSED_IN_DOUBT_REASON)
            if a.state is AttemptState.RESERVED
            else a
            for a in open_attempts
        ]
        now, why = self._now(), _clip(reason)
        try:
            record = close_record(
                self.gw, txn.head_seq + 1, txn.head_digest, lease_id=lease.lease_id, slot_hi=lease.slot_hi,
                old_pid=lease.original_pid, new_pid=lease.new_pid, at=now, reason=why,
            )  # fmt: skip
        except ValidationError as exc:
            raise JournalError(f"lease {lease.lease_id} cannot be closed by a record: {exc}") from exc
        await self._append_record(txn, record)
        await txn.db.execute(q.CLOSE_LEASE, (record.seq, now, why, lease.lease_id))
        closed = replace(lease, closed_seq=record.seq, closed_at=now, closed_reason=why)
        txn.on_commit.append(lambda: self._leases.__setitem__(lease.lease_id, closed))
        return LeaseClose(closed, record.seq, now, why, tuple(in_doubt), new=True)

    async def _append(self, txn: _Txn, attempt: Attempt) -> None:
        """Chain one record of `attempt`'s new state inside the transaction."""
        record = Record(
            gw=self.gw, seq=txn.head_seq + 1, prev=txn.head_digest, kind=RecordKind(attempt.state.value),
            lease_id=attempt.lease_id, slot=attempt.slot, sn=attempt.sn, old_pid=attempt.old_pid,
            new_pid=attempt.new_pid, radio=attempt.radio, at=attempt.at, reason=attempt.reason,
        )  # fmt: skip
        await self._append_record(txn, record)

    async def _append_record(self, txn: _Txn, record: Record) -> None:
        body = record.to_cbor()
        digest = hashlib.sha256(body).digest()
        await txn.db.execute(q.APPEND_RECORD, (record.seq, body, digest))
        await txn.db.execute(q.SET_HEAD, (record.seq, digest))
        txn.head_seq, txn.head_digest = record.seq, digest

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise JournalError("the journal is closed")
        return self._db

    def _now(self) -> int:
        return int(self._clock())

    def _until(self, now: int) -> int:
        """A lease is usable for new reservations only if it expires after this."""
        return now + int(self.clock_margin_s)

    def _check_not_frozen(self, what: str) -> None:
        if self._acks.freeze is not None:
            raise JournalFrozenError(f"cannot {what}: {self._acks.freeze.message}")

    async def _fetch(self, sql: str, params: Any = ()) -> list[Any]:
        db = self._conn()
        try:
            async with asyncio.timeout(READ_TIMEOUT_S), self._lock:
                return list(await db.execute_fetchall(sql, params))
        except TimeoutError as exc:
            raise JournalTimeoutError(f"a journal read took longer than {READ_TIMEOUT_S:.0f} s") from exc
        except sqlite3.Error as exc:
            raise JournalError(f"journal read failed: {exc}") from exc

    async def _write(self, what: str, body: Callable[[_Txn], Awaitable[T]]) -> T:
        """Run `body` in one write transaction, shielded: a cancelled caller never leaves it half done."""
        task = asyncio.create_task(self._transaction(self._conn(), body), name=f"journal: {what}")
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        deadline = asyncio.timeout(WRITE_TIMEOUT_S)
        try:
            async with deadline:
                return await asyncio.shield(task)
        except TimeoutError as exc:
            if deadline.expired():
                raise JournalTimeoutError(
                    f"journal: {what} did not finish within {WRITE_TIMEOUT_S:.0f} s; the disk may be stalled"
                ) from exc
            raise
        except sqlite3.Error as exc:
            raise _write_error(what, exc) from exc

    async def _transaction(self, db: aiosqlite.Connection, body: Callable[[_Txn], Awaitable[T]]) -> T:
        async with self._lock:
            txn = _Txn(db, self._head_seq, self._head_digest)
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await body(txn)
                await db.execute("COMMIT")
            except BaseException:
                await _rollback(db)
                raise
            self._head_seq, self._head_digest = txn.head_seq, txn.head_digest
            for update in txn.on_commit:
                update()
            return result


async def _rollback(db: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.OperationalError):  # a failed COMMIT may have rolled back already
        await db.execute("ROLLBACK")


def _write_error(what: str, exc: sqlite3.Error) -> JournalError:
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        return DiskFullError(f"journal: {what} failed: the disk is full; free space, then scan again")
    if isinstance(exc, sqlite3.IntegrityError):
        return JournalError(f"journal: {what} broke a database constraint ({exc}); is another agent using this file?")
    return JournalError(f"journal: {what} failed: {exc}")


def _stored_lease(lease: Lease, lease_token: bytes, cert: Certificate, cert_token: bytes) -> StoredLease:
    if lease.cert_no != cert.cert_no:
        raise JournalError(f"lease {lease.lease_id} names certificate {lease.cert_no}, not {cert.cert_no}")
    if (lease.original_pid, lease.new_pid) != (cert.original_pid, cert.new_pid):
        raise JournalError(f"lease {lease.lease_id} rebadges other PIDs than certificate {cert.cert_no}")
    if not 0 <= lease.slot_lo < lease.slot_hi <= cert.quantity:
        raise JournalError(
            f"lease {lease.lease_id} slots [{lease.slot_lo}, {lease.slot_hi}) do not lie inside "
            f"[0, {cert.quantity}) of certificate {cert.cert_no}"
        )
    return StoredLease(
        lease_id=lease.lease_id, cert_no=lease.cert_no, original_pid=lease.original_pid, new_pid=lease.new_pid,
        slot_lo=lease.slot_lo, slot_hi=lease.slot_hi, exp=lease.exp, gateway_kid=lease.gateway_kid,
        lease_token=bytes(lease_token), cert_token=bytes(cert_token),
    )  # fmt: skip


def _lease_words(lease: StoredLease) -> tuple[str, str, int, int]:
    return lease.lease_id, lease.cert_no, lease.slot_lo, lease.slot_hi


@dataclass(frozen=True)
class _AckState:
    """The `at` of the newest ack applied, and the freeze, if any."""

    last_at: int
    freeze: Freeze | None

    @classmethod
    def from_row(cls, row: Any) -> _AckState:
        return cls(int(row[0]), freeze_from_row(row))


def _open_attempts_error(lease_id: str, attempts: list[Attempt]) -> OpenAttemptsError:
    listed = ", ".join(f"{a.sn} (slot {a.slot}, {a.state})" for a in attempts)
    return OpenAttemptsError(
        f"lease {lease_id} has attempts whose outcome is not known: {listed}; scan those units again to settle "
        "them, or close with --force (they then stay in doubt for good, and their slots count as spent)",
        lease_id=lease_id, sns=tuple(a.sn for a in attempts),
    )  # fmt: skip


def _clip(reason: str) -> str:
    """Reasons come from device errors of any length; a record holds MAX_REASON characters."""
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
