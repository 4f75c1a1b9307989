"""Size budget: a lease fits 300 bytes and a grant 200 at the largest the models allow (they cross BLE and Zigbee)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from wire.cbor import MAX_CBOR_BYTES
from wire.device import MAX_MESSAGE_BYTES, RebadgeRequest
from wire.ids import LEASE_ID_MAX_CHARS
from wire.keys import SigningKey
from wire.records import MAX_BATCH_RECORDS, Batch, Record, RecordKind
from wire.tokens import UINT32_END, Checkpoint, Grant, Lease, sign

LEASE_BUDGET = 300
GRANT_BUDGET = 200
TOP = UINT32_END - 1
KEY = SigningKey(bytes(range(32)))


def worst_lease_fields() -> dict[str, Any]:
    return {
        "lease_id": "L" * 10,
        "cert_no": "C" * 12,
        "cert_hash": b"\xff" * 32,
        "original_pid": "o" * 16,
        "new_pid": "n" * 16,
        "gateway_key": b"\xfe" * 32,
        "gateway_kid": b"\xfd" * 8,
        "slot_lo": TOP - 1,
        "slot_hi": TOP,
        "exp": TOP,
    }


def worst_grant_fields() -> dict[str, Any]:
    return {"lease_id": "L" * 10, "slot": TOP, "sn": "S" * 28, "new_pid": "n" * 16, "iat": TOP}


def test_worst_case_lease_fits_its_budget() -> None:
    token = sign(Lease(**worst_lease_fields()), KEY)
    assert len(token) <= LEASE_BUDGET, len(token)


def test_worst_case_grant_fits_its_budget() -> None:
    token = sign(Grant(**worst_grant_fields()), KEY)
    assert len(token) <= GRANT_BUDGET, len(token)


@pytest.mark.parametrize(
    ("field", "too_big"),
    [
        ("lease_id", "L" * 11),
        ("lease_id", "Lé"),  # non-ASCII would make a 10-character id longer than 10 bytes
        ("cert_no", "C" * 13),
        ("original_pid", "o" * 17),
        ("new_pid", "n" * 17),
        ("slot_lo", UINT32_END),
        ("slot_hi", UINT32_END),
        ("exp", UINT32_END),
    ],
)
def test_lease_worst_case_is_the_models_limit(field: str, too_big: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Lease(**{**worst_lease_fields(), field: too_big})


@pytest.mark.parametrize(
    ("field", "too_big"),
    [
        ("lease_id", "L" * 11),
        ("lease_id", "L\u00e9"),
        ("slot", UINT32_END),
        ("sn", "S" * 29),
        ("new_pid", "n" * 17),
        ("iat", UINT32_END),
    ],
)
def test_grant_worst_case_is_the_models_limit(field: str, too_big: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Grant(**{**worst_grant_fields(), field: too_big})


def test_worst_case_rebadge_request_fits_a_device_message() -> None:
    lease = sign(Lease(**worst_lease_fields()), KEY)
    grant = sign(Grant(**worst_grant_fields()), KEY)
    assert len(RebadgeRequest(id=2**32 - 1, lease=lease, grant=grant).to_cbor()) <= MAX_MESSAGE_BYTES


def test_a_full_batch_of_the_largest_records_fits_the_decoder_limit() -> None:
    record = Record(
        gw="g" * 64,
        seq=2**63,
        prev=b"\xff" * 32,
        kind=RecordKind.IN_DOUBT,
        lease_id="L" * LEASE_ID_MAX_CHARS,
        slot=2**63,
        sn="S" * 28,
        old_pid="o" * 16,
        new_pid="n" * 16,
        radio="r" * 16,
        at=2**63,
        reason="\U0001f600" * 200,  # 4 bytes of UTF-8 each
    )
    checkpoint = sign(Checkpoint(gw="g" * 64, seq=2**63, head=b"\xff" * 32, at=2**63, counter=2**63), KEY)
    batch = Batch(gw="g" * 64, from_seq=1, records=[record.to_cbor()] * MAX_BATCH_RECORDS, checkpoint=checkpoint)
    assert len(batch.to_cbor()) <= MAX_CBOR_BYTES
