"""Journal records: deterministic bytes and digests, strict decoding, and where a chain check says it breaks."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from wire.cbor import dumps
from wire.errors import MalformedError
from wire.records import (
    GENESIS,
    MAX_BATCH_RECORDS,
    Batch,
    ChainBreakError,
    Record,
    RecordKind,
    batch_from_cbor,
    check_chain,
    record_from_cbor,
)

BASE: dict[str, Any] = {
    "gw": "24f6ed6acbfe1009",
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


def test_digest_is_sha256_of_the_cbor() -> None:
    rec = make_chain(1)[0]
    assert rec.digest() == hashlib.sha256(rec.to_cbor()).digest()
    assert record_from_cbor(rec.to_cbor()) == rec


def test_every_field_changes_the_digest() -> None:
    rec = make_chain(1)[0]
    changes: dict[str, Any] = {
        "gw": "other",
        "seq": 2,
        "prev": b"\x01" * 32,
        "kind": RecordKind.CONFIRMED,
        "lease_id": "L0002",
        "slot": 1,
        "sn": "SN-2026-000124",
        "old_pid": "stock002",
        "new_pid": "brand002",
        "radio": "ble",
        "at": 1,
        "reason": "x",
    }
    assert set(changes) == set(Record.model_fields)
    for field, value in changes.items():
        assert rec.model_copy(update={field: value}).digest() != rec.digest(), field


def test_kind_travels_as_text() -> None:
    rec = make_chain(1)[0]
    assert record_from_cbor(rec.to_cbor()).kind is RecordKind.RESERVED
    assert b"reserved" in rec.to_cbor()


@pytest.mark.parametrize(
    ("change", "field"),
    [({"kind": "exploded"}, "kind"), ({"seq": 0}, "seq"), ({"prev": b"\x00" * 31}, "prev"), ({"sn": "x"}, "sn")],
)
def test_record_decoding_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    data = dumps({**make_chain(1)[0].model_dump(mode="python"), **change})
    with pytest.raises(MalformedError) as caught:
        record_from_cbor(data)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"record field '{field}'")


def test_record_with_extra_field_is_refused() -> None:
    with pytest.raises(MalformedError, match="'extra'"):
        record_from_cbor(dumps({**make_chain(1)[0].model_dump(mode="python"), "extra": 1}))


def test_good_chain_returns_its_head() -> None:
    records = make_chain(5)
    assert check_chain(records, GENESIS, 1) == records[-1].digest()
    assert check_chain(records[2:], records[1].digest(), 3) == records[-1].digest()
    assert check_chain([], b"\x07" * 32, 9) == b"\x07" * 32


def test_gap_is_reported_at_the_missing_seq() -> None:
    records = make_chain(5)
    with pytest.raises(ChainBreakError) as caught:
        check_chain([records[0], records[1], records[3]], GENESIS, 1)
    assert caught.value.seq == 3
    assert "seq 4 where seq 3 was expected" in str(caught.value)


def test_bad_link_is_reported_at_the_record_that_does_not_link() -> None:
    records = make_chain(4)
    forged = records[2].model_copy(update={"prev": b"\xee" * 32})
    with pytest.raises(ChainBreakError) as caught:
        check_chain([records[0], records[1], forged, records[3]], GENESIS, 1)
    assert caught.value.seq == 3
    assert caught.value.field == "prev"


def test_edited_record_breaks_the_link_after_it() -> None:
    records = make_chain(4)
    records[1] = records[1].model_copy(update={"slot": 99})
    with pytest.raises(ChainBreakError) as caught:
        check_chain(records, GENESIS, 1)
    assert caught.value.seq == 3


def test_wrong_first_seq_is_reported_at_the_expected_seq() -> None:
    records = make_chain(3, first_seq=5)
    with pytest.raises(ChainBreakError) as caught:
        check_chain(records, GENESIS, 4)
    assert caught.value.seq == 4


def test_wrong_prev_for_the_first_record() -> None:
    records = make_chain(2)
    with pytest.raises(ChainBreakError) as caught:
        check_chain(records, b"\x01" * 32, 1)
    assert caught.value.seq == 1


def test_chain_break_is_malformed() -> None:
    assert issubclass(ChainBreakError, MalformedError)


def test_batch_round_trip_and_limits() -> None:
    records = [r.to_cbor() for r in make_chain(3)]
    batch = Batch(gw="gw1", from_seq=1, records=records, checkpoint=b"\xd2")
    assert batch_from_cbor(batch.to_cbor()) == batch
    too_many = dumps({**batch.model_dump(), "records": [records[0]] * (MAX_BATCH_RECORDS + 1)})
    with pytest.raises(MalformedError) as caught:
        batch_from_cbor(too_many)
    assert caught.value.field == "records"
    with pytest.raises(MalformedError, match="'records'"):
        batch_from_cbor(dumps({**batch.model_dump(), "records": []}))
    with pytest.raises(MalformedError, match="'from_seq'"):
        batch_from_cbor(dumps({**batch.model_dump(), "from_seq": 0}))
