"""Journal records and the batches a gateway sends to the platform (their chain is checked in wire.chain)."""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict

from wire.cbor import dumps
from wire.ids import LeaseId, Pid, Sn
from wire.strict import decode_model

GENESIS = bytes(32)
MAX_BATCH_RECORDS = 500


class RecordKind(StrEnum):
    """What happened to a slot, or (`closed`) to a whole lease."""

    RESERVED = "reserved"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    IN_DOUBT = "in_doubt"
    # The gateway spends nothing more on the lease: no record on it after this one is valid. Its `slot` is the
    # lease's slot_hi, its `sn` the lease id, `radio` CLOSE_RADIO, and its PIDs the lease's (see close_record).
    CLOSED = "closed"


CLOSE_RADIO = "gateway"


class Record(BaseModel):
    """One state change of one slot; `prev` is the hash of the record before it on this gateway."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)
    gw: str = Field(min_length=1, max_length=64)
    seq: int = Field(ge=1)
    prev: bytes = Field(min_length=32, max_length=32)
    kind: Annotated[RecordKind, Strict(False)]
    lease_id: LeaseId
    slot: int = Field(ge=0)
    sn: Sn
    old_pid: Pid
    new_pid: Pid
    radio: str = Field(min_length=1, max_length=16)
    at: int = Field(ge=0)
    reason: str = Field(default="", max_length=200)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR, the exact bytes that are hashed."""
        return dumps(self.model_dump(mode="python"))

    def digest(self) -> bytes:
        """This record's link in the chain: SHA-256 of its CBOR."""
        return hashlib.sha256(self.to_cbor()).digest()


def close_record(
    gw: str, seq: int, prev: bytes, *, lease_id: str, slot_hi: int, old_pid: str, new_pid: str, at: int, reason: str
) -> Record:
    """The record that closes a lease at `seq`: the gateway's signed-by-chain statement that it spends no more."""
    return Record(
        gw=gw, seq=seq, prev=prev, kind=RecordKind.CLOSED, lease_id=lease_id, slot=slot_hi, sn=lease_id,
        old_pid=old_pid, new_pid=new_pid, radio=CLOSE_RADIO, at=at, reason=reason,
    )  # fmt: skip


def record_from_cbor(data: bytes) -> Record:
    """Strictly decode one record."""
    return decode_model(data, Record, "record")


class Batch(BaseModel):
    """Records seq from_seq.. in order, with a checkpoint token signed by the gateway over the last one."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    gw: str = Field(min_length=1, max_length=64)
    from_seq: int = Field(ge=1)
    records: list[bytes] = Field(min_length=1, max_length=MAX_BATCH_RECORDS)
    checkpoint: bytes = Field(min_length=1, max_length=2048)

    def to_cbor(self) -> bytes:
        """Deterministic CBOR for the `records` topic."""
        return dumps(self.model_dump(mode="python"))


def batch_from_cbor(data: bytes) -> Batch:
    """Strictly decode a batch (its records are decoded one by one by the caller)."""
    return decode_model(data, Batch, "batch")


__all__ = [
    "CLOSE_RADIO",
    "GENESIS",
    "Batch",
    "Record",
    "RecordKind",
    "batch_from_cbor",
    "close_record",
    "record_from_cbor",
]
