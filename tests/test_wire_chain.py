"""The one chain checker: where it says a chain breaks, strict decoding of bodies, and segments of a batch."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.cbor import dumps
from wire.chain import BadRecordError, ChainBreakError, ChainChecker, ChainError
from wire.errors import MalformedError
from wire.records import GENESIS, Record, RecordKind

GW = "24f6ed6acbfe1009"
BASE: dict[str, Any] = {
    "gw": GW,
    "kind": RecordKind.RESERVED,
    "lease_id": "L0001",
    "sn": "SN-2026-000123",
    "old_pid": "stock001",
    "new_pid": "brand001",
    "radio": "wifi",
    "at": 1767312000,
}


def make_chain(n: int, *, first_seq: int = 1, prev: bytes = GENESIS) -> list[Record]:
    out = []
    for i in range(n):
        rec = Record(**BASE, seq=first_seq + i, prev=prev, slot=i)
        out.append(rec)
        prev = rec.digest()
    return out


def broken_at(records: list[Record], **start: Any) -> ChainError:
    with pytest.raises(ChainError) as caught:
        ChainChecker(**start).extend(records)
    return caught.value


def test_a_good_chain_gives_its_head() -> None:
    records = make_chain(5)
    assert ChainChecker().extend(records) == records[-1].digest()
    assert ChainChecker(GW, seq=2, head=records[1].digest()).extend(records[2:]) == records[-1].digest()
    assert ChainChecker(GW, seq=8, head=b"\x07" * 32).extend([]) == b"\x07" * 32


def test_bodies_and_records_reach_the_same_head() -> None:
    records = make_chain(4)
    chain = ChainChecker(GW)
    assert [chain.feed(r.to_cbor()) for r in records] == records
    assert (chain.seq, chain.head) == (4, ChainChecker(GW).extend(records))


def test_a_gap_is_named_by_the_missing_seq() -> None:
    records = make_chain(5)
    err = broken_at([records[0], records[1], records[3]])
    assert isinstance(err, ChainBreakError)
    assert (err.seq, err.field) == (3, "seq")
    assert str(err) == "chain broken at seq 3: record says seq 4 where seq 3 was expected"


def test_a_bad_link_is_named_by_the_record_that_does_not_link() -> None:
    records = make_chain(4)
    forged = records[2].model_copy(update={"prev": b"\xee" * 32})
    err = broken_at([records[0], records[1], forged, records[3]])
    assert isinstance(err, ChainBreakError)
    assert (err.seq, err.field, err.why) == (3, "prev", "record does not link to the record before it")


def test_an_edited_record_breaks_the_link_after_it() -> None:
    records = make_chain(4)
    records[1] = records[1].model_copy(update={"slot": 99})
    assert broken_at(records).seq == 3


def test_a_chain_that_starts_at_the_wrong_seq_is_named_by_the_expected_seq() -> None:
    assert broken_at(make_chain(3, first_seq=5), seq=3).seq == 4


def test_the_first_record_must_link_to_the_starting_head() -> None:
    assert broken_at(make_chain(2), head=b"\x01" * 32).seq == 1


def test_a_record_of_another_gateway_is_refused() -> None:
    records = make_chain(3)
    records[2] = records[2].model_copy(update={"gw": "other"})
    err = broken_at(records)
    assert isinstance(err, BadRecordError)
    assert (err.seq, err.why) == (3, f"record belongs to gateway 'other', not {GW!r}")


def test_a_body_is_decoded_strictly() -> None:
    rec = make_chain(1)[0]
    fields = rec.model_dump(mode="python")
    bodies = {
        "keys out of order": cbor2.dumps(dict(reversed(fields.items()))),
        "unknown key": dumps({**fields, "extra": 1}),
        "long-form length": bytes([0xBF]) + dumps(fields)[1:] + b"\xff",
    }
    for what, body in bodies.items():
        with pytest.raises(BadRecordError, match=r"^chain broken at seq 1: record body does not decode") as caught:
            ChainChecker(GW).feed(body)
        assert caught.value.seq == 1, what


def test_a_body_that_leaves_out_a_defaulted_field_is_refused() -> None:
    # It decodes to the same record, but its bytes are not the ones that were hashed.
    fields = make_chain(1)[0].model_dump(mode="python")
    del fields["reason"]
    with pytest.raises(BadRecordError, match="leaves out fields") as caught:
        ChainChecker(GW).feed(dumps(fields))
    assert caught.value.seq == 1


def test_a_segment_leaves_its_first_link_to_the_caller() -> None:
    records = make_chain(5)
    chain = ChainChecker.segment(GW, 3)
    assert chain.head == b""
    chain.feed(records[2].to_cbor())
    assert (chain.seq, chain.head) == (3, records[2].digest())
    forged = records[4].model_copy(update={"prev": b"\xee" * 32})
    chain.feed(records[3].to_cbor())
    with pytest.raises(ChainBreakError) as caught:
        chain.feed(forged.to_cbor())
    assert caught.value.seq == 5


def test_chain_errors_are_malformed_input() -> None:
    assert issubclass(ChainBreakError, ChainError)
    assert issubclass(BadRecordError, ChainError)
    assert issubclass(ChainError, MalformedError)


def first_break(bodies: list[bytes]) -> tuple[int | None, bytes]:
    """The seq at which feeding `bodies` breaks (None if it does not), and the head reached."""
    chain = ChainChecker(GW)
    try:
        for body in bodies:
            chain.feed(body)
    except ChainError as exc:
        return exc.seq, chain.head
    return None, chain.head


@given(st.integers(1, 6), st.data())
def test_any_flipped_bit_is_caught_at_that_record_or_the_next(n: int, data: st.DataObject) -> None:
    bodies = [r.to_cbor() for r in make_chain(n)]
    head = ChainChecker(GW).extend(make_chain(n))
    at = data.draw(st.integers(0, n - 1), label="record")
    bit = data.draw(st.integers(0, len(bodies[at]) * 8 - 1), label="bit")
    edited = bytearray(bodies[at])
    edited[bit // 8] ^= 1 << (bit % 8)
    bodies[at] = bytes(edited)
    seq, reached = first_break(bodies)
    if seq is None:  # only the last record can pass, and then only the stored head catches it
        assert (at, reached != head) == (n - 1, True)
    else:
        assert seq in (at + 1, at + 2)
