"""The write-ahead journal against real SQLite files: slots, transitions, the hash chain, acks, migrations."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import DiskFullError, JournalCorruptError, JournalError, JournalFrozenError, LeaseClosedError
from agent.journal import SCHEMA_VERSION, AckOutcome, AckResult, Attempt, AttemptState, Counts, Journal, StoredLease
from wire.chain import ChainChecker
from wire.keys import KeyRing, SigningKey
from wire.records import GENESIS, Record, RecordKind, record_from_cbor
from wire.refusals import RefusalReason
from wire.tokens import Certificate, Grant, Lease, sign, token_hash, verify

DATA = Path(__file__).parent / "data"
ISSUER = SigningKey(bytes([7]) * 32)
GATEWAY = SigningKey(bytes([8]) * 32)
GW = "line-1"
OLD, NEW = "aaaaaaaa", "bbbbbbbb"
T0 = 1_800_000_000
FAR = 4_000_000_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_lease(
    lease_id: str, lo: int, hi: int, *, cert_no: str = "C1", exp: int = FAR, quantity: int = 100
) -> tuple[Lease, bytes, Certificate, bytes]:
    """A certificate and a lease of it for GATEWAY, both signed by ISSUER."""
    cert = Certificate(
        cert_no=cert_no, factory="f1", original_pid=OLD, new_pid=NEW, quantity=quantity, protocols=("wifi",),
        nbf=0, exp=FAR,
    )  # fmt: skip
    cert_token = sign(cert, ISSUER)
    lease = Lease(
        lease_id=lease_id, cert_no=cert_no, cert_hash=token_hash(cert_token), original_pid=OLD, new_pid=NEW,
        gateway_key=GATEWAY.public.raw, gateway_kid=GATEWAY.kid, slot_lo=lo, slot_hi=hi, exp=exp,
    )  # fmt: skip
    return lease, sign(lease, ISSUER), cert, cert_token


def signer(sn: str, calls: list[tuple[str, int]] | None = None) -> Callable[[str, int], bytes]:
    """A real grant signer for `sn`, noting each call."""

    def sign_grant(lease_id: str, slot: int) -> bytes:
        if calls is not None:
            calls.append((lease_id, slot))
        return sign(Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW, iat=T0), GATEWAY)

    return sign_grant


async def reserve(journal: Journal, sn: str, cert_no: str = "C1") -> Attempt | None:
    return await journal.reserve(cert_no, sn, OLD, NEW, "wifi", signer(sn))


async def records(journal: Journal) -> list[Record]:
    return await journal.pending(0, 10_000)


async def opened(path: Path, clock: Clock, *leases: tuple[str, int, int], **kw: int) -> Journal:
    journal = await Journal.open(path, GW, clock=clock, **kw)
    for lease_id, lo, hi in leases:
        await journal.add_lease(*make_lease(lease_id, lo, hi))
    return journal


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


def live_slot_dupes(path: Path) -> list[tuple[str, int, int]]:
    """(lease, slot, n) for every slot more than one live attempt holds, read beside the journal's connection."""
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT lease_id, slot, COUNT(*) FROM attempts WHERE state IN ('reserved', 'confirmed', 'in_doubt')"
            " GROUP BY lease_id, slot HAVING COUNT(*) > 1"
        ).fetchall()


def edit(path: Path, sql: str, params: tuple[object, ...] = ()) -> None:
    """Change the closed journal file behind the agent's back."""
    db = sqlite3.connect(path)
    try:
        db.execute(sql, params)
        db.commit()
    finally:
        db.close()


# -- files and the first open -------------------------------------------------------------------------------------


async def test_new_journal_is_private_wal_and_empty(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert journal.gw == GW
        assert await journal.head() == (0, GENESIS)
        assert await journal.acked() == 0
        assert await journal.pending(0, 10) == []
        assert await journal.cert_nos() == []
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert journal._db is not None
        assert list(await journal._db.execute_fetchall("PRAGMA synchronous")) == [(2,)]  # FULL
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


async def test_other_gateways_journal_is_refused(path: Path, clock: Clock) -> None:
    await (await Journal.open(path, GW, clock=clock)).close()
    with pytest.raises(JournalError, match="belongs to gateway 'line-1', not 'line-2'"):
        await Journal.open(path, "line-2", clock=clock)


@pytest.fixture
def junk_file(path: Path) -> Path:
    path.parent.mkdir(mode=0o700)
    path.write_bytes(b"this is not sqlite" * 300)
    return path


async def test_file_that_is_not_a_database_is_refused(junk_file: Path, clock: Clock) -> None:
    with pytest.raises(JournalCorruptError, match="refusing to start") as err:
        await Journal.open(junk_file, GW, clock=clock)
    assert err.value.seq is None


# -- leases -------------------------------------------------------------------------------------------------------


async def test_add_lease_is_idempotent_and_refuses_conflicts(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, GW, clock=clock) as journal:
        lease, lease_token, cert, cert_token = make_lease("L1", 0, 5)
        assert await journal.add_lease(lease, lease_token, cert, cert_token) is True
        assert await journal.add_lease(lease, lease_token, cert, cert_token) is False
        other = make_lease("L1", 0, 6)
        with pytest.raises(JournalError, match="lease L1 is stored already with different bytes"):
            await journal.add_lease(*other)
        with pytest.raises(JournalError, match="overlaps active lease L1"):
            await journal.add_lease(*make_lease("L2", 4, 8))
        _, _, cert2, cert2_token = make_lease("X", 0, 1, cert_no="C2")
        with pytest.raises(JournalError, match="names certificate C1, not C2"):
            await journal.add_lease(lease, lease_token, cert2, cert2_token)
        with pytest.raises(JournalError, match=r"do not lie inside \[0, 10\)"):
            await journal.add_lease(*make_lease("L3", 8, 12, quantity=10))
        stored = await journal.leases("C1")
    assert stored == [
        StoredLease(
            lease_id="L1",
            cert_no="C1",
            original_pid=OLD,
            new_pid=NEW,
            slot_lo=0,
            slot_hi=5,
            exp=FAR,
            gateway_kid=GATEWAY.kid,
            lease_token=lease_token,
            cert_token=cert_token,
        )
    ]


# -- reservations and transitions -----------------------------------------------------------------------------------


async def test_reserve_then_confirm_writes_two_chained_records(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        attempt = await reserve(journal, "SN1000")
        assert attempt is not None
        assert (attempt.lease_id, attempt.slot, attempt.state, attempt.cert_no) == (
            "L1",
            0,
            AttemptState.RESERVED,
            "C1",
        )
        grant = verify(attempt.grant, Grant, KeyRing([GATEWAY.public]))
        assert (grant.lease_id, grant.slot, grant.sn) == ("L1", 0, "SN1000")
        clock.now += 5
        done = await journal.confirm(attempt.id)
        assert done.state is AttemptState.CONFIRMED
        assert done.at == T0 + 5
        first, second = await records(journal)
    assert first == Record(
        gw=GW, seq=1, prev=GENESIS, kind=RecordKind.RESERVED, lease_id="L1", slot=0, sn="SN1000", old_pid=OLD,
        new_pid=NEW, radio="wifi", at=T0, reason="",
    )  # fmt: skip
    assert (second.seq, second.prev, second.kind, second.at) == (2, first.digest(), RecordKind.CONFIRMED, T0 + 5)


async def test_release_and_in_doubt_transitions_and_their_records(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN1000")
        b = await reserve(journal, "SN1001")
        assert a is not None
        assert b is not None
        released = await journal.release(a.id, "device refused: wrong_pid")
        doubt = await journal.mark_in_doubt(b.id, "no answer after sending")
        assert released.state is AttemptState.RELEASED
        assert released.reason == "device refused: wrong_pid"
        assert doubt.state is AttemptState.IN_DOUBT
        settled = await journal.confirm(b.id)  # a rescan found our receipt on the device
        assert settled.state is AttemptState.CONFIRMED
        assert settled.reason == ""
        kinds = [(r.kind, r.sn, r.reason) for r in await records(journal)]
    assert kinds == [
        (RecordKind.RESERVED, "SN1000", ""),
        (RecordKind.RESERVED, "SN1001", ""),
        (RecordKind.RELEASED, "SN1000", "device refused: wrong_pid"),
        (RecordKind.IN_DOUBT, "SN1001", "no answer after sending"),
        (RecordKind.CONFIRMED, "SN1001", ""),
    ]


async def test_forbidden_transitions_name_attempt_sn_and_states(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN1000")
        assert a is not None
        await journal.confirm(a.id)
        head = await journal.head()
        with pytest.raises(JournalError, match=f"attempt {a.id} for SN SN1000 is confirmed; it cannot become released"):
            await journal.release(a.id, "late")
        with pytest.raises(JournalError, match="is confirmed; it cannot become in_doubt"):
            await journal.mark_in_doubt(a.id, "late")
        b = await reserve(journal, "SN1001")
        assert b is not None
        await journal.release(b.id, "refused")
        with pytest.raises(JournalError, match="SN SN1001 is released; it cannot become confirmed"):
            await journal.confirm(b.id)
        with pytest.raises(JournalError, match="no attempt 999"):
            await journal.confirm(999)
        assert (await journal.head())[0] == head[0] + 2  # only b's two records were added


async def test_lowest_free_slot_across_two_leases(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("LB", 20, 22), ("LA", 3, 5)) as journal:
        got = [await reserve(journal, f"SN{i:04d}") for i in range(5)]
    assert [(a.lease_id, a.slot) for a in got if a] == [("LA", 3), ("LA", 4), ("LB", 20), ("LB", 21)]
    assert got[4] is None


async def test_released_slot_is_reused_first(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = [await reserve(journal, f"SN{i:04d}") for i in range(4)]
        assert all(a)
        await journal.release(a[1].id, "device refused")  # type: ignore[union-attr]
        await journal.release(a[2].id, "device refused")  # type: ignore[union-attr]
        again = await reserve(journal, "SN0100")
        then = await reserve(journal, "SN0101")
        after = await reserve(journal, "SN0102")
    assert again is not None
    assert then is not None
    assert after is not None
    assert (again.slot, then.slot, after.slot) == (1, 2, 4)


async def test_quota_exhausted_returns_none_and_spends_nothing(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 2)) as journal:
        assert await reserve(journal, "SN0001") is not None
        assert await reserve(journal, "SN0002") is not None
        head, before = await journal.head(), await journal.counts("C1")
        calls: list[tuple[str, int]] = []
        assert await journal.reserve("C1", "SN0003", OLD, NEW, "wifi", signer("SN0003", calls)) is None
        assert calls == []
        assert await journal.head() == head
        assert await journal.counts("C1") == before == Counts("C1", 0, 0, 0, 2, 0)
        assert await journal.open_attempt("SN0003") is None


async def test_in_doubt_slot_stays_held(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 2)) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
        await journal.mark_in_doubt(a.id, "no answer")
        b = await reserve(journal, "SN0002")
        assert b is not None
        assert b.slot == 1
        assert await reserve(journal, "SN0003") is None
        assert await journal.counts("C1") == Counts("C1", 0, 1, 0, 2, 0)
        assert await journal.open_attempt("SN0001") == a.__class__(**{**vars(a), "state": AttemptState.IN_DOUBT,
                                                                       "reason": "no answer"})  # fmt: skip


async def test_reserve_refuses_an_sn_that_is_open_or_done(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
        with pytest.raises(JournalError, match="SN SN0001 already has attempt 1 reserved"):
            await reserve(journal, "SN0001")
        await journal.confirm(a.id)
        with pytest.raises(JournalError, match="SN SN0001 was rebadged to bbbbbbbb already"):
            await reserve(journal, "SN0001")
        assert await journal.confirmed_attempt("SN0001", NEW) == await journal.confirmed_attempt("SN0001", NEW)
        assert (await journal.confirmed_attempt("SN0001", NEW)).id == a.id  # type: ignore[union-attr]
        assert await journal.confirmed_attempt("SN0001", "cccccccc") is None
        assert (await journal.head())[0] == 2


async def test_bad_input_is_named_and_spends_nothing(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        with pytest.raises(JournalError, match="sn 'bad sn!' is not a serial number"):
            await journal.reserve("C1", "bad sn!", OLD, NEW, "wifi", signer("x"))
        with pytest.raises(JournalError, match="new_pid 'BBBB' is not a product ID"):
            await journal.reserve("C1", "SN0001", OLD, "BBBB", "wifi", signer("SN0001"))
        with pytest.raises(JournalError, match="rebadges aaaaaaaa -> bbbbbbbb, not cccccccc -> bbbbbbbb"):
            await journal.reserve("C1", "SN0001", "cccccccc", NEW, "wifi", signer("SN0001"))
        with pytest.raises(JournalError, match="no lease of certificate 'C9' is stored"):
            await journal.reserve("C9", "SN0001", OLD, NEW, "wifi", signer("SN0001"))
        with pytest.raises(JournalError, match="radio '' must be 1 to 16 characters"):
            await journal.reserve("C1", "SN0001", OLD, NEW, "", signer("SN0001"))

        def broken_signer(lease_id: str, slot: int) -> bytes:
            raise RuntimeError("key unreadable")

        with pytest.raises(RuntimeError, match="key unreadable"):
            await journal.reserve("C1", "SN0001", OLD, NEW, "wifi", broken_signer)
        assert await journal.head() == (0, GENESIS)
        assert await journal.open_attempt("SN0001") is None
        assert (await journal.counts("C1")).remaining == 5


async def test_concurrent_reservations_never_share_a_slot(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 6)) as journal:
        got = await asyncio.gather(*(reserve(journal, f"SN{i:04d}") for i in range(10)))
        slots = sorted(a.slot for a in got if a is not None)
        assert slots == [0, 1, 2, 3, 4, 5]
        assert sum(a is None for a in got) == 4
        ChainChecker(GW).extend(await records(journal))
    assert live_slot_dupes(path) == []


async def test_recover_turns_reserved_into_in_doubt(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN0001")
        b = await reserve(journal, "SN0002")
        assert a is not None
        assert b is not None
        await journal.confirm(b.id)
    async with await Journal.open(path, GW, clock=clock) as journal:
        recovered = await journal.recover()
        assert [(r.id, r.state, r.reason) for r in recovered] == [
            (a.id, AttemptState.IN_DOUBT, "agent restarted before the outcome was known")
        ]
        last = (await records(journal))[-1]
        assert (last.seq, last.kind, last.sn, last.reason) == (
            4, RecordKind.IN_DOUBT, "SN0001", "agent restarted before the outcome was known"
        )  # fmt: skip
        assert await journal.recover() == []


async def test_note_refusal_counts_without_chaining(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        await journal.note_refusal("C1", "SN0001", RefusalReason.WRONG_PID)
        await journal.note_refusal("C1", "not a valid sn at all, and far too long to be one" * 3, RefusalReason.BAD_SN)
        assert await journal.counts("C1") == Counts("C1", 0, 0, 2, 5, 5)
        assert await journal.head() == (0, GENESIS)


async def test_expired_lease_slots_are_not_used(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, GW, clock=clock) as journal:
        await journal.add_lease(*make_lease("LA", 0, 3, exp=T0 + 60))
        await journal.add_lease(*make_lease("LB", 10, 12))
        a = await reserve(journal, "SN0001")
        assert a is not None
        assert (a.lease_id, a.slot) == ("LA", 0)
        clock.now = T0 + 60
        b = await reserve(journal, "SN0002")
        assert b is not None
        assert (b.lease_id, b.slot) == ("LB", 10)
        assert [lease.lease_id for lease in await journal.leases()] == ["LB"]
        assert [lease.lease_id for lease in await journal.leases(active_only=False)] == ["LA", "LB"]
        assert await journal.counts("C1") == Counts("C1", 0, 0, 0, 2, 1)
        await journal.confirm(a.id)  # an attempt reserved in time can still be settled
        await reserve(journal, "SN0003")
        assert await reserve(journal, "SN0004") is None
        clock.now = FAR
        assert await journal.cert_nos() == []


async def test_disk_full_refuses_new_scans_but_settles_open_ones(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
    async with await Journal.open(path, GW, clock=clock, min_free_bytes=2**62) as journal:
        with pytest.raises(DiskFullError, match=r"MiB free on the journal's disk .* new scans are refused"):
            await reserve(journal, "SN0002")
        await journal.confirm(a.id)
        assert (await journal.head())[0] == 2


# -- reopening, acks, and a chain that was tampered with --------------------------------------------------------------


async def test_reopen_keeps_everything_and_continues_the_chain(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
        await journal.confirm(a.id)
        await journal.note_refusal("C1", "SN0009", RefusalReason.WRONG_PID)
        head = await journal.head()
        counts = await journal.counts("C1")
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert await journal.head() == head
        assert await journal.counts("C1") == counts
        assert [lease.lease_id for lease in await journal.leases()] == ["L1"]
        b = await reserve(journal, "SN0002")
        assert b is not None
        assert b.slot == 1
        assert b.id == a.id + 1
        recs = await records(journal)
        assert recs[-1].seq == 3
        assert recs[-1].prev == head[1]
        assert ChainChecker(GW).extend(recs) == (await journal.head())[1]


async def test_apply_ack_retires_records_and_the_chain_survives_reopen(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 9)) as journal:
        for i in range(3):
            a = await reserve(journal, f"SN000{i}")
            assert a is not None
            await journal.confirm(a.id)
        recs = await records(journal)
        assert await journal.apply_ack(4, recs[3].digest(), T0) == AckResult(AckOutcome.RETIRED, 4)
        assert await journal.acked() == 4
        assert [r.seq for r in await journal.pending(0, 100)] == [5, 6]
        assert await journal.apply_ack(2, recs[1].digest(), T0) == AckResult(AckOutcome.UNCHANGED)  # older seq
        assert await journal.apply_ack(4, recs[3].digest(), T0) == AckResult(AckOutcome.UNCHANGED)  # repeated ack
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert await journal.acked() == 4
        assert (await journal.apply_ack(6, recs[5].digest(), T0 + 1)).retired == 2
        assert await journal.pending(0, 100) == []
        assert await journal.head() == (6, recs[5].digest())
    async with await Journal.open(path, GW, clock=clock) as journal:  # everything retired: the head carries on
        a = await reserve(journal, "SN0100")
        assert a is not None
        assert a.slot == 3
        (rec,) = await journal.pending(6, 100)
        assert (rec.seq, rec.prev) == (7, recs[5].digest())
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert (await journal.head())[0] == 7


async def test_a_mismatching_or_future_ack_retires_nothing_and_freezes(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
        await journal.confirm(a.id)
        assert await journal.apply_ack(2, bytes([1]) * 32, T0) == AckResult(AckOutcome.FROZE)
        assert journal.frozen is not None
        assert journal.frozen.reason.startswith("the platform acked head 0101010101010101... at seq 2")
        assert await journal.apply_ack(3, bytes(32), T0) == AckResult(AckOutcome.STILL_FROZEN)
        assert await journal.acked() == 0
        assert [r.seq for r in await records(journal)] == [1, 2]


async def filled(path: Path, clock: Clock, n: int) -> list[Record]:
    """A closed journal of n reservations (n records)."""
    async with await opened(path, clock, ("L1", 0, 50)) as journal:
        for i in range(n):
            await reserve(journal, f"SN{i:04d}")
        return await records(journal)


async def test_an_edited_record_body_is_caught_by_seq(path: Path, clock: Clock) -> None:
    recs = await filled(path, clock, 5)
    forged = recs[2].model_copy(update={"sn": "SN9999"}).to_cbor()
    edit(path, "UPDATE records SET body = ? WHERE seq = 3", (forged,))
    with pytest.raises(JournalCorruptError) as err:
        await Journal.open(path, GW, clock=clock)
    assert err.value.seq == 3
    assert str(err.value) == (
        "journal chain broken at seq 3: record body does not match its hash; refusing to start. "
        "Restore the journal from the platform or contact support"
    )


async def test_an_edited_body_with_its_hash_recomputed_breaks_the_next_link(path: Path, clock: Clock) -> None:
    recs = await filled(path, clock, 5)
    forged = recs[2].model_copy(update={"sn": "SN9999"}).to_cbor()
    edit(path, "UPDATE records SET body = ?, digest = ? WHERE seq = 3", (forged, hashlib.sha256(forged).digest()))
    with pytest.raises(JournalCorruptError, match="at seq 4: record does not link to the record before it") as err:
        await Journal.open(path, GW, clock=clock)
    assert err.value.seq == 4


async def test_an_edited_last_record_does_not_match_the_head(path: Path, clock: Clock) -> None:
    recs = await filled(path, clock, 3)
    forged = recs[2].model_copy(update={"slot": 40}).to_cbor()
    edit(path, "UPDATE records SET body = ?, digest = ? WHERE seq = 3", (forged, hashlib.sha256(forged).digest()))
    with pytest.raises(JournalCorruptError, match="at seq 3: record does not match the stored head") as err:
        await Journal.open(path, GW, clock=clock)
    assert err.value.seq == 3


async def test_a_deleted_middle_row_names_the_missing_seq(path: Path, clock: Clock) -> None:
    await filled(path, clock, 5)
    edit(path, "DELETE FROM records WHERE seq = 3")
    with pytest.raises(JournalCorruptError, match="at seq 3: record seq 3 is missing") as err:
        await Journal.open(path, GW, clock=clock)
    assert err.value.seq == 3


async def test_deleted_last_rows_are_caught_against_the_head(path: Path, clock: Clock) -> None:
    await filled(path, clock, 5)
    edit(path, "DELETE FROM records WHERE seq >= 4")
    with pytest.raises(JournalCorruptError, match=r"record seq 4 is missing \(the journal's head is seq 5\)") as e:
        await Journal.open(path, GW, clock=clock)
    assert e.value.seq == 4


async def test_a_body_that_does_not_decode_is_named(path: Path, clock: Clock) -> None:
    await filled(path, clock, 2)
    junk = b"\xa1\x61x\x01"
    edit(path, "UPDATE records SET body = ?, digest = ? WHERE seq = 1", (junk, hashlib.sha256(junk).digest()))
    with pytest.raises(JournalCorruptError, match="at seq 1: record body does not decode") as err:
        await Journal.open(path, GW, clock=clock)
    assert err.value.seq == 1


async def test_a_cancelled_caller_never_leaves_a_half_written_reservation(path: Path, clock: Clock) -> None:
    async with await opened(path, clock, ("L1", 0, 5)) as journal:
        task = asyncio.create_task(reserve(journal, "SN0001"))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    async with await Journal.open(path, GW, clock=clock) as journal:
        open_attempt = await journal.open_attempt("SN0001")
        assert open_attempt is not None
        assert open_attempt.slot == 0
        assert (await journal.head())[0] == 1


# -- migrations from a stored older file -------------------------------------------------------------------------------


@pytest.fixture
def old_journal(tmp_path: Path) -> Path:
    """A copy of the stored schema-v1 journal (see tests/data/make_journal_v1.py)."""
    target = tmp_path / "old" / "journal.sqlite"
    target.parent.mkdir(mode=0o700)
    shutil.copyfile(DATA / "journal_v1.sqlite", target)
    return target


async def test_stored_v1_journal_migrates_with_records_and_chain_intact(old_journal: Path, clock: Clock) -> None:
    with sqlite3.connect(old_journal) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        bodies = {seq: bytes(body) for seq, body in db.execute("SELECT seq, body FROM records")}
    async with await Journal.open(old_journal, "line-old", clock=clock) as journal:
        assert stat.S_IMODE(os.stat(old_journal).st_mode) == 0o600  # the copy was 0644: set back
        assert await journal.acked() == 3
        pending = await journal.pending(0, 100)
        assert [r.seq for r in pending] == [4, 5, 6, 7, 8, 9]
        assert {r.seq: r.to_cbor() for r in pending} == bodies
        assert (await journal.head()) == (9, pending[-1].digest())
        assert await journal.counts("OLD-1") == Counts("OLD-1", 2, 1, 0, 6, 2)
        doubt = await journal.open_attempt("SN0004")
        assert doubt is not None
        assert (doubt.slot, doubt.state) == (2, AttemptState.IN_DOUBT)
        (recovered,) = await journal.recover()
        assert (recovered.sn, recovered.slot) == ("SN0005", 3)
        new = await journal.reserve("OLD-1", "SN0006", "oldpid01", "newpid01", "wifi", lambda _l, _s: b"grant")
        assert new is not None
        assert (new.slot, new.id) == (4, 6)
        await journal.note_refusal("OLD-1", "SN0007", RefusalReason.WRONG_PID)  # the v2 table
        assert (await journal.counts("OLD-1")).refused == 1
        head = await journal.head()
        assert head[0] == 11
    with sqlite3.connect(old_journal) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):  # v2: the database refuses a second live slot
            db.execute(
                "INSERT INTO attempts (lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant_token,"
                " reserved_at, changed_at) VALUES ('L-OLD', 'OLD-1', 0, 'SN0008', 'oldpid01', 'newpid01', 'wifi',"
                " 'reserved', x'00', 0, 0)"
            )
    async with await Journal.open(old_journal, "line-old", clock=clock) as journal:
        assert await journal.head() == head
        pending = await journal.pending(0, 100)
        assert ChainChecker("line-old", seq=3, head=record_from_cbor(bodies[4]).prev).extend(pending) == head[1]


async def test_v1_journal_with_a_doubly_held_slot_is_not_migrated(old_journal: Path, clock: Clock) -> None:
    edit(old_journal, "UPDATE attempts SET state = 'confirmed' WHERE id = 2")  # slot 1 now held twice
    with pytest.raises(JournalCorruptError, match="cannot be migrated to schema v2: UNIQUE constraint failed"):
        await Journal.open(old_journal, "line-old", clock=clock)
    with sqlite3.connect(old_journal) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)  # rolled back whole


async def test_a_newer_schema_is_refused(path: Path, clock: Clock) -> None:
    await (await Journal.open(path, GW, clock=clock)).close()
    edit(path, "PRAGMA user_version = 99")
    with pytest.raises(JournalError, match=f"schema v99, newer than this agent's v{SCHEMA_VERSION}; upgrade the agent"):
        await Journal.open(path, GW, clock=clock)


# -- random histories ------------------------------------------------------------------------------------------------

MODEL_LEASES = {"LA01": (0, 3, T0 + 50), "LB01": (10, 13, FAR)}  # LA01 expires when the history says "expire"
LIVE = {AttemptState.RESERVED, AttemptState.CONFIRMED, AttemptState.IN_DOUBT}
OPEN = {AttemptState.RESERVED, AttemptState.IN_DOUBT}
MOVES = {
    "confirm": (AttemptState.CONFIRMED, OPEN),
    "release": (AttemptState.RELEASED, OPEN),
    "doubt": (AttemptState.IN_DOUBT, {AttemptState.RESERVED}),
}
HISTORIES = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 7)),
        st.tuples(st.sampled_from(sorted(MOVES)), st.integers(0, 40)),
        st.tuples(st.just("ack"), st.integers(0, 40)),
        st.tuples(st.just("close"), st.integers(0, 3)),
        st.tuples(st.sampled_from(["reopen", "recover", "expire"]), st.just(0)),
    ),
    max_size=30,
)


class Model:
    """What the journal should hold: attempts by id, the clock, the retired end of the chain, the closed leases,
    and whether a forked ack froze the gateway."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.attempts: dict[int, tuple[str, int, str, AttemptState]] = {}  # id -> lease, slot, SN, state
        self.retired = (0, GENESIS)
        self.closed: set[str] = set()
        self.frozen = False
        self.ack_at = 0  # `at` of the newest ack applied

    def active(self) -> list[tuple[str, int, int]]:
        leases = [
            (lo, hi, lid)
            for lid, (lo, hi, exp) in MODEL_LEASES.items()
            if exp > self.clock.now and lid not in self.closed
        ]
        return [(lid, lo, hi) for lo, hi, lid in sorted(leases)]

    def lowest_free(self) -> tuple[str, int] | None:
        held = {(lid, slot) for lid, slot, _, state in self.attempts.values() if state in LIVE}
        for lid, lo, hi in self.active():
            for slot in range(lo, hi):
                if (lid, slot) not in held:
                    return lid, slot
        return None

    def sn_blocked(self, sn: str) -> bool:
        return any(s == sn and state in LIVE for _, _, s, state in self.attempts.values())

    def counts(self, refused: int) -> Counts:
        states = [state for _, _, _, state in self.attempts.values()]
        active = {lid for lid, _, _ in self.active()}
        size = sum(hi - lo for lid, lo, hi in self.active())
        held = sum(1 for lid, _, _, state in self.attempts.values() if lid in active and state in LIVE)
        return Counts(
            "C1", states.count(AttemptState.CONFIRMED), states.count(AttemptState.IN_DOUBT), refused, size, size - held
        )


async def step(journal: Journal, model: Model, op: str, arg: int, path: Path) -> Journal:
    """Apply one operation to the journal and the model; return the (maybe reopened) journal."""
    reclose = op == "close" and sorted(MODEL_LEASES)[arg % 2] in model.closed  # writes nothing: allowed
    if model.frozen and op in ("reserve", "close", *MOVES) and not reclose:
        with pytest.raises(JournalFrozenError):
            await write(journal, op, arg, model)
        return journal
    if op == "reserve":
        sn = f"SN{arg:04d}"
        if model.sn_blocked(sn):
            with pytest.raises(JournalError, match=f"SN {sn}"):
                await reserve(journal, sn)
            return journal
        got = await reserve(journal, sn)
        assert (got and (got.lease_id, got.slot)) == model.lowest_free()
        if got is not None:
            assert got.id not in model.attempts
            model.attempts[got.id] = (got.lease_id, got.slot, sn, AttemptState.RESERVED)
    elif op in MOVES and model.attempts:
        attempt_id = sorted(model.attempts)[arg % len(model.attempts)]
        lid, slot, sn, state = model.attempts[attempt_id]
        to, allowed = MOVES[op]
        if lid in model.closed:
            with pytest.raises(LeaseClosedError, match=f"lies on lease {lid}"):
                await move(journal, op, attempt_id)
            return journal
        if state not in allowed:
            with pytest.raises(
                JournalError, match=f"attempt {attempt_id} for SN {sn} is {state}; it cannot become {to}"
            ):
                await move(journal, op, attempt_id)
            return journal
        assert (await move(journal, op, attempt_id)).state is to
        model.attempts[attempt_id] = (lid, slot, sn, to)
    elif op == "ack":
        await ack(journal, model, arg)
    elif op == "close":
        await close(journal, model, arg)
    elif op == "reopen":
        await journal.close()
        return await Journal.open(path, GW, clock=model.clock)
    elif op == "recover":
        recovered = await journal.recover()
        reserved = (i for i, (_, _, _, state) in model.attempts.items() if state is AttemptState.RESERVED)
        expected = [] if model.frozen else sorted(reserved)
        assert [a.id for a in recovered] == expected
        for i in expected:
            lid, slot, sn, _ = model.attempts[i]
            model.attempts[i] = (lid, slot, sn, AttemptState.IN_DOUBT)
    elif op == "expire":
        model.clock.now = T0 + 60
    return journal


async def write(journal: Journal, op: str, arg: int, model: Model) -> object:
    """An operation that writes a record (refused while frozen)."""
    if op == "reserve":
        return await reserve(journal, f"SN{arg:04d}")
    if op == "close":
        return await journal.close_lease(sorted(MODEL_LEASES)[arg % 2], "closed", force=True)
    return await move(journal, op, sorted(model.attempts)[arg % len(model.attempts)] if model.attempts else 1)


async def close(journal: Journal, model: Model, arg: int) -> None:
    """Close a lease (arg 0, 1) or force it closed (arg 2, 3); its open attempts stay in doubt for good."""
    lid = sorted(MODEL_LEASES)[arg % 2]
    force = arg >= 2
    open_ids = sorted(i for i, (lease, _, _, state) in model.attempts.items() if lease == lid and state in OPEN)
    if lid not in model.closed and open_ids and not force:
        with pytest.raises(JournalError, match=f"lease {lid} has attempts whose outcome is not known"):
            await journal.close_lease(lid, "closed")
        return
    closed = await journal.close_lease(lid, "closed", force=force)
    assert closed.new is (lid not in model.closed)
    assert [a.id for a in closed.in_doubt] == (open_ids if closed.new else [])
    for i in open_ids if closed.new else []:
        _, slot, sn, _ = model.attempts[i]
        model.attempts[i] = (lid, slot, sn, AttemptState.IN_DOUBT)
    model.closed.add(lid)


async def move(journal: Journal, op: str, attempt_id: int) -> Attempt:
    if op == "confirm":
        return await journal.confirm(attempt_id)
    if op == "release":
        return await journal.release(attempt_id, "refused")
    return await journal.mark_in_doubt(attempt_id, "no answer")


async def ack(journal: Journal, model: Model, arg: int) -> None:
    """Ack part of what is pending: the right digest retires (and lifts a freeze), a wrong one (arg > 30) freezes;
    an ack older than the last (arg 0) is a replay and changes nothing."""
    head_seq, _ = await journal.head()
    acked = await journal.acked()
    if head_seq == acked:
        return
    seq = acked + 1 + arg % (head_seq - acked)
    record = (await journal.pending(acked, seq - acked))[-1]
    if arg == 0 and model.ack_at > 0:
        assert await journal.apply_ack(seq, record.digest(), model.ack_at - 1) == AckResult(AckOutcome.REPLAYED)
        return
    model.ack_at += 1
    if arg > 30:
        froze = await journal.apply_ack(seq, bytes(32), model.ack_at)
        assert froze.outcome is (AckOutcome.STILL_FROZEN if model.frozen else AckOutcome.FROZE)
        model.frozen = True
        return
    applied = await journal.apply_ack(seq, record.digest(), model.ack_at)
    assert applied == AckResult(AckOutcome.LIFTED if model.frozen else AckOutcome.RETIRED, seq - acked)
    if model.frozen:  # reinstated: the platform wrote off every lease, so lifting closes them all, forced
        for lid in sorted(set(MODEL_LEASES) - model.closed):
            for i, (lease, slot, sn, state) in model.attempts.items():
                if lease == lid and state is AttemptState.RESERVED:
                    model.attempts[i] = (lease, slot, sn, AttemptState.IN_DOUBT)
            model.closed.add(lid)
    model.frozen = False
    model.retired = (seq, record.digest())


async def check_ledger(journal: Journal, model: Model, path: Path, refused: int) -> None:
    """The chain links from the retired end to the head; no slot is held twice; counts match the model."""
    retired_seq, retired_digest = model.retired
    assert await journal.acked() == retired_seq
    kept = await journal.pending(retired_seq, 10_000)
    assert await journal.head() == (
        retired_seq + len(kept),
        ChainChecker(GW, seq=retired_seq, head=retired_digest).extend(kept),
    )
    assert (journal.frozen is not None) is model.frozen
    counts = await journal.counts("C1")
    assert counts == model.counts(refused)
    assert counts.confirmed + counts.in_doubt <= sum(hi - lo for lo, hi, _ in MODEL_LEASES.values())
    assert live_slot_dupes(path) == []


@settings(max_examples=40, deadline=None)
@given(history=HISTORIES)
async def test_random_histories_keep_the_ledger_sound(history: list[tuple[str, int]]) -> None:
    model = Model()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.sqlite"
        journal = await Journal.open(path, GW, clock=model.clock)
        try:
            for lid, (lo, hi, exp) in MODEL_LEASES.items():
                await journal.add_lease(*make_lease(lid, lo, hi, exp=exp))
            for op, arg in history:
                journal = await step(journal, model, op, arg, path)
                await check_ledger(journal, model, path, refused=0)
        finally:
            await journal.close()
        async with await Journal.open(path, GW, clock=model.clock) as journal:  # the whole chain checks out at open
            await check_ledger(journal, model, path, refused=0)
