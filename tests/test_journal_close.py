"""Closing a lease, the clock margin, and the freeze a forked ack puts on the gateway, against real SQLite files;
and the stored schema-v2 journal migrating to v3."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from agent.errors import JournalError, JournalFrozenError, LeaseClosedError, OpenAttemptsError
from agent.journal import (
    CLOSED_IN_DOUBT_REASON,
    SCHEMA_VERSION,
    AckOutcome,
    AckResult,
    AttemptState,
    Counts,
    Freeze,
    Journal,
)
from tests.test_journal import DATA, GW, NEW, OLD, T0, Clock, make_lease, records, reserve
from wire.chain import ChainChecker
from wire.records import CLOSE_RADIO, RecordKind, record_from_cbor
from wire.refusals import RefusalReason


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


async def two_leases(path: Path, clock: Clock, **kw: float) -> Journal:
    journal = await Journal.open(path, GW, clock=clock, **kw)  # type: ignore[arg-type]
    await journal.add_lease(*make_lease("LA01", 0, 2))
    await journal.add_lease(*make_lease("LB01", 10, 12))
    return journal


# -- closing a lease ----------------------------------------------------------------------------------------------


async def test_close_chains_a_closed_record_and_no_slot_of_the_lease_is_reserved_again(
    path: Path, clock: Clock
) -> None:
    async with await two_leases(path, clock) as journal:
        a = await reserve(journal, "SN0001")
        assert a is not None
        await journal.confirm(a.id)
        clock.now += 3
        closed = await journal.close_lease("LA01", "line stopped")
        assert (closed.seq, closed.at, closed.reason, closed.in_doubt, closed.new) == (
            3,
            T0 + 3,
            "line stopped",
            (),
            True,
        )
        record = (await records(journal))[-1]
        assert (record.seq, record.kind, record.lease_id, record.slot, record.sn, record.radio) == (
            3, RecordKind.CLOSED, "LA01", 2, "LA01", CLOSE_RADIO,
        )  # fmt: skip
        assert (record.old_pid, record.new_pid, record.at, record.reason) == (OLD, NEW, T0 + 3, "line stopped")
        b = await reserve(journal, "SN0002")  # slot 1 of LA01 is free, but the lease is closed
        assert b is not None
        assert (b.lease_id, b.slot) == ("LB01", 10)
        assert await journal.counts("C1") == Counts("C1", 1, 0, 0, 2, 1)
        assert [lease.lease_id for lease in await journal.leases()] == ["LB01"]
    async with await Journal.open(path, GW, clock=clock) as journal:  # the close is durable
        (stored,) = [lease for lease in await journal.leases(active_only=False) if lease.lease_id == "LA01"]
        assert (stored.closed, stored.closed_seq, stored.closed_reason) == (True, 3, "line stopped")
        again = await journal.close_lease("LA01", "again")
        assert (again.seq, again.reason, again.new) == (3, "line stopped", False)  # nothing written the second time
        assert (await journal.head())[0] == 4
        assert await reserve(journal, "SN0003") is not None
        assert await reserve(journal, "SN0004") is None
        assert ChainChecker(GW).extend(await records(journal)) == (await journal.head())[1]


async def test_close_is_refused_while_attempts_are_open_naming_their_units(path: Path, clock: Clock) -> None:
    async with await two_leases(path, clock) as journal:
        a = await reserve(journal, "SN0001")
        b = await reserve(journal, "SN0002")
        assert a is not None
        assert b is not None
        await journal.mark_in_doubt(b.id, "no answer")
        head = await journal.head()
        with pytest.raises(OpenAttemptsError) as refused:
            await journal.close_lease("LA01", "done")
        assert refused.value.sns == ("SN0001", "SN0002")
        assert str(refused.value) == (
            "lease LA01 has attempts whose outcome is not known: SN0001 (slot 0, reserved), SN0002 (slot 1, in_doubt); "
            "scan those units again to settle them, or close with --force (they then stay in doubt for good, and "
            "their slots count as spent)"
        )
        assert await journal.head() == head
        assert not (await journal.leases(active_only=False))[0].closed
        with pytest.raises(JournalError, match="no lease 'LZ99' is stored on this gateway"):
            await journal.close_lease("LZ99", "done")


async def test_forced_close_leaves_open_attempts_in_doubt_for_good(path: Path, clock: Clock) -> None:
    async with await two_leases(path, clock) as journal:
        a = await reserve(journal, "SN0001")
        b = await reserve(journal, "SN0002")
        assert a is not None
        assert b is not None
        await journal.mark_in_doubt(b.id, "no answer")
        closed = await journal.close_lease("LA01", "units lost", force=True)
        assert [(x.sn, x.state) for x in closed.in_doubt] == [
            ("SN0001", AttemptState.IN_DOUBT), ("SN0002", AttemptState.IN_DOUBT),
        ]  # fmt: skip
        kinds = [(r.kind, r.sn, r.reason) for r in await records(journal)][-2:]
        assert kinds == [
            (RecordKind.IN_DOUBT, "SN0001", CLOSED_IN_DOUBT_REASON),
            (RecordKind.CLOSED, "LA01", "units lost"),
        ]
        head = await journal.head()
        for settle in (journal.confirm(a.id), journal.release(b.id, "read back unchanged")):
            with pytest.raises(LeaseClosedError, match=r"lies on lease LA01, which this gateway closed at seq 5"):
                await settle
        assert await journal.head() == head  # nothing on the closed lease after its close
        open_attempt = await journal.open_attempt("SN0001")
        assert open_attempt is not None
        assert (open_attempt.lease_id, open_attempt.state) == ("LA01", AttemptState.IN_DOUBT)
        assert await journal.counts("C1") == Counts("C1", 0, 2, 0, 2, 2)


async def test_a_lease_id_too_short_for_a_record_is_named(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, GW, clock=clock) as journal:
        await journal.add_lease(*make_lease("L1", 0, 2))
        with pytest.raises(JournalError, match="lease L1 cannot be closed by a record"):
            await journal.close_lease("L1", "done")
        assert await journal.head() == (0, bytes(32))


# -- the clock margin ---------------------------------------------------------------------------------------------


async def test_a_lease_is_not_used_from_the_clock_margin_before_its_expiry(path: Path, clock: Clock) -> None:
    async with await Journal.open(path, GW, clock=clock, clock_margin_s=300) as journal:
        await journal.add_lease(*make_lease("LA01", 0, 2, exp=T0 + 400))
        a = await reserve(journal, "SN0001")
        assert a is not None
        assert await journal.counts("C1") == Counts("C1", 0, 0, 0, 2, 1)
        clock.now = T0 + 100  # exp - margin: not usable any more, although not expired
        assert await reserve(journal, "SN0002") is None
        assert await journal.counts("C1") == Counts("C1", 0, 0, 0, 0, 0)
        assert [lease.lease_id for lease in await journal.leases()] == ["LA01"]  # still active (it holds slots)
        await journal.confirm(a.id)  # an attempt reserved in time can still be settled


# -- the freeze -----------------------------------------------------------------------------------------------------


async def filled(journal: Journal, n: int) -> None:
    for i in range(n):
        attempt = await reserve(journal, f"SN{i:04d}")
        assert attempt is not None
        await journal.confirm(attempt.id)


async def test_an_ack_past_our_head_freezes_the_gateway_durably(path: Path, clock: Clock) -> None:
    heard: list[Freeze | None] = []
    async with await two_leases(path, clock) as journal:
        journal.add_freeze_listener(heard.append)
        await filled(journal, 1)
        open_one = await reserve(journal, "SN0100")
        assert open_one is not None
        recs = await records(journal)
        assert await journal.apply_ack(2, recs[1].digest(), 100) == AckResult(AckOutcome.RETIRED, 2)
        assert await journal.apply_ack(7, bytes(32), 200) == AckResult(AckOutcome.FROZE)
        assert journal.frozen is not None
        assert heard == [journal.frozen]
        assert (journal.frozen.ack_seq, journal.frozen.ack_at) == (7, 200)
        assert journal.frozen.reason == "the platform acked seq 7, beyond this journal's head seq 3"
        assert journal.frozen.message.startswith(
            "this gateway's journal was restored from a backup; the platform has frozen it; ask a platform admin "
            "to reinstate the gateway"
        )
        head = await journal.head()
        with pytest.raises(JournalFrozenError, match="cannot reserve a slot for SN SN0200: this gateway's journal"):
            await reserve(journal, "SN0200")
        with pytest.raises(JournalFrozenError):
            await journal.confirm(open_one.id)  # settling writes too: nothing new while frozen
        with pytest.raises(JournalFrozenError):
            await journal.close_lease("LB01", "done")
        assert await journal.recover() == []
        await journal.note_refusal("C1", "SN0200", RefusalReason.JOURNAL_RESTORED)  # refusals are still counted
        assert await journal.head() == head
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert journal.frozen is not None
        assert journal.frozen.ack_seq == 7
        with pytest.raises(JournalFrozenError):
            await reserve(journal, "SN0200")
        assert (await journal.counts("C1")).refused == 1


async def test_only_a_later_ack_that_matches_our_chain_lifts_the_freeze(path: Path, clock: Clock) -> None:
    heard: list[Freeze | None] = []
    async with await two_leases(path, clock) as journal:
        journal.add_freeze_listener(heard.append)
        await filled(journal, 2)
        recs = await records(journal)
        assert (await journal.apply_ack(2, recs[1].digest(), 100)).outcome is AckOutcome.RETIRED
        assert (await journal.apply_ack(3, bytes([9]) * 32, 200)).outcome is AckOutcome.FROZE  # another digest
        assert journal.frozen is not None
        assert "where this journal's record hashes to" in journal.frozen.reason
        assert (await journal.apply_ack(4, recs[3].digest(), 150)).outcome is AckOutcome.REPLAYED  # older: ignored
        assert (await journal.apply_ack(4, recs[3].digest(), 200)).outcome is AckOutcome.STILL_FROZEN  # not newer
        assert (await journal.apply_ack(9, bytes(32), 250)).outcome is AckOutcome.STILL_FROZEN  # another fork
        assert await journal.acked() == 2
        assert heard == [journal.frozen]
        assert await journal.apply_ack(4, recs[3].digest(), 300) == AckResult(AckOutcome.LIFTED, 2)
        assert journal.frozen is None
        assert heard[-1] is None
        assert await journal.acked() == 4
        assert (await journal.apply_ack(2, recs[1].digest(), 299)).outcome is AckOutcome.REPLAYED
        # Reinstating wrote off the gateway's leases: lifting closed them all, so nothing is spent on them again.
        stored = await journal.leases(active_only=False)
        assert stored
        assert all(lease.closed_seq is not None for lease in stored)
        assert [r.kind for r in (await records(journal))[-len(stored) :]] == [RecordKind.CLOSED] * len(stored)
        assert await reserve(journal, "SN0300") is None
    async with await Journal.open(path, GW, clock=clock) as journal:
        assert journal.frozen is None
        assert (await journal.apply_ack(4, recs[3].digest(), 250)).outcome is AckOutcome.REPLAYED  # `at` is durable


async def test_an_ack_of_our_retired_head_with_another_digest_freezes(path: Path, clock: Clock) -> None:
    async with await two_leases(path, clock) as journal:
        await filled(journal, 1)
        recs = await records(journal)
        assert (await journal.apply_ack(2, recs[1].digest(), 100)).outcome is AckOutcome.RETIRED
        assert (await journal.apply_ack(2, recs[1].digest(), 100)).outcome is AckOutcome.UNCHANGED  # the same again
        assert (await journal.apply_ack(1, recs[0].digest(), 110)).outcome is AckOutcome.UNCHANGED  # retired before
        assert (await journal.apply_ack(2, bytes(32), 120)).outcome is AckOutcome.FROZE


# -- the stored schema-v2 journal -----------------------------------------------------------------------------------


@pytest.fixture
def v2_journal(tmp_path: Path) -> Path:
    """A copy of the stored schema-v2 journal (see tests/data/make_journal_v2.py)."""
    target = tmp_path / "v2" / "journal.sqlite"
    target.parent.mkdir(mode=0o700)
    shutil.copyfile(DATA / "journal_v2.sqlite", target)
    return target


async def test_stored_v2_journal_migrates_to_v3_and_its_leases_can_be_closed(v2_journal: Path, clock: Clock) -> None:
    with sqlite3.connect(v2_journal) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        bodies = {seq: bytes(body) for seq, body in db.execute("SELECT seq, body FROM records")}
    async with await Journal.open(v2_journal, "line-v2", clock=clock) as journal:
        pending = await journal.pending(0, 100)
        assert {r.seq: r.to_cbor() for r in pending} == bodies
        assert [r.seq for r in pending] == [3, 4, 5, 6, 7, 8]
        assert journal.frozen is None
        assert [(lease.lease_id, lease.closed) for lease in await journal.leases()] == [
            ("LV2-A", False), ("LV2-B", False),
        ]  # fmt: skip
        assert await journal.counts("V2-1") == Counts("V2-1", 2, 1, 1, 8, 5)
        with pytest.raises(OpenAttemptsError) as refused:
            await journal.close_lease("LV2-A", "line moved")
        assert refused.value.sns == ("SN2002",)
        closed = await journal.close_lease("LV2-B", "line moved")
        assert closed.seq == 9
        assert await journal.counts("V2-1") == Counts("V2-1", 2, 1, 1, 4, 2)
        seq, head = await journal.head()
        assert (seq, (await journal.apply_ack(seq, head, 50)).retired) == (9, 7)
    with sqlite3.connect(v2_journal) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (3,)
        assert db.execute("SELECT lease_id, closed_seq, closed_reason FROM leases ORDER BY lease_id").fetchall() == [
            ("LV2-A", None, None), ("LV2-B", 9, "line moved"),
        ]  # fmt: skip
        assert db.execute("SELECT last_at, frozen_ack_at FROM acks").fetchall() == [(50, None)]
    async with await Journal.open(v2_journal, "line-v2", clock=clock) as journal:
        assert await journal.acked() == 9
        assert record_from_cbor(bodies[3]).seq == 3
