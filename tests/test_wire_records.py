"""Journal records and batches: deterministic bytes and digests, strict decoding (their chain: test_wire_chain)."""

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
    Record,
    RecordKind,
    batch_from_cbor,
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
