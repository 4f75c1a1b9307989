"""Checks of a `records` batch before it may touch the ledger: decode, checkpoint signature, chain, ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.errors import CloudError
from wire.errors import MalformedError, TokenError, WireError
from wire.keys import KeyRing, PublicKey
from wire.records import Batch, Record, batch_from_cbor, record_from_cbor
from wire.tokens import Checkpoint, verify


class BatchRejectedError(CloudError):
    """A batch that changes nothing but an anomaly; `kind` says why, `gw` and `seq` where, when known."""

    def __init__(self, message: str, *, kind: AnomalyKind, gw: str | None = None, seq: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.gw = gw
        self.seq = seq


@dataclass(frozen=True)
class VerifiedBatch:
    """Records that link to each other and end at the head the gateway signed."""

    gw: str
    from_seq: int
    records: tuple[Record, ...]
    bodies: tuple[bytes, ...]
    digests: tuple[bytes, ...]
    checkpoint: Checkpoint

    @property
    def last_seq(self) -> int:
        """The seq of the newest record."""
        return self.from_seq + len(self.records) - 1


def parse_batch(payload: bytes, topic_gw: str | None) -> Batch:
    """Decode the batch envelope; its gw must be the topic's."""
    try:
        batch = batch_from_cbor(payload)
    except WireError as exc:
        raise BatchRejectedError(f"batch is malformed: {exc}", kind=AnomalyKind.MALFORMED, gw=topic_gw) from exc
    if batch.from_seq + len(batch.records) > MAX_INT64:
        raise BatchRejectedError(
            f"batch from_seq {batch.from_seq} is past the largest seq {MAX_INT64}",
            kind=AnomalyKind.MALFORMED,
            gw=batch.gw,
        )
    if topic_gw is not None and batch.gw != topic_gw:
        raise BatchRejectedError(
            f"batch names gateway {batch.gw!r} but came on the topic of gateway {topic_gw!r}",
            kind=AnomalyKind.TOPIC_MISMATCH,
            gw=topic_gw,
        )
    return batch


MAX_SLOT = 2**31 - 1  # slots are 32-bit columns
MAX_INT64 = 2**63 - 1


def _check_bounds(rec: Record, gw: str) -> None:
    for name, value, limit in (("slot", rec.slot, MAX_SLOT), ("seq", rec.seq, MAX_INT64), ("at", rec.at, MAX_INT64)):
        if value > limit:
            raise BatchRejectedError(
                f"record {rec.seq} field {name!r} is {value}, over the limit {limit}",
                kind=AnomalyKind.MALFORMED,
                gw=gw,
                seq=min(rec.seq, MAX_INT64),
            )


def _decode_records(batch: Batch) -> tuple[list[Record], list[bytes]]:
    records: list[Record] = []
    for i, body in enumerate(batch.records):
        seq = batch.from_seq + i
        try:
            rec = record_from_cbor(body)
        except MalformedError as exc:
            raise BatchRejectedError(
                f"record {seq} is malformed: {exc}", kind=AnomalyKind.MALFORMED, gw=batch.gw, seq=seq
            ) from exc
        # The decoder has checked the encoding is deterministic; with every field present, the body is exactly
        # Record.to_cbor(), so its SHA-256 is the record's digest without encoding it again.
        if len(rec.model_fields_set) != len(Record.model_fields):
            raise BatchRejectedError(
                f"record {seq} leaves out fields; the canonical encoding names every field",
                kind=AnomalyKind.MALFORMED,
                gw=batch.gw,
                seq=seq,
            )
        _check_bounds(rec, batch.gw)
        if rec.gw != batch.gw:
            raise BatchRejectedError(
                f"record {seq} names gateway {rec.gw!r} inside a batch of gateway {batch.gw!r}",
                kind=AnomalyKind.MALFORMED,
                gw=batch.gw,
                seq=seq,
            )
        records.append(rec)
    return records, list(batch.records)


def _check_links(records: list[Record], digests: list[bytes], from_seq: int, gw: str) -> None:
    # wire.records.check_chain over digests already computed: seqs follow on, each record names the one before it.
    for i, rec in enumerate(records):
        if rec.seq != from_seq + i:
            raise BatchRejectedError(
                f"batch records do not form a chain: record seq {rec.seq} where seq {from_seq + i} was expected",
                kind=AnomalyKind.BROKEN_CHAIN,
                gw=gw,
                seq=from_seq + i,
            )
        if i and rec.prev != digests[i - 1]:
            raise BatchRejectedError(
                f"batch records do not form a chain: record seq {rec.seq} does not link to the record before it",
                kind=AnomalyKind.BROKEN_CHAIN,
                gw=gw,
                seq=rec.seq,
            )


def verify_batch(batch: Batch, key: PublicKey) -> VerifiedBatch:
    """Verify the checkpoint with the gateway's key, decode every record strictly and check the chain."""
    try:
        checkpoint = verify(batch.checkpoint, Checkpoint, KeyRing([key]))
    except TokenError as exc:
        raise BatchRejectedError(
            f"checkpoint does not verify with gateway {batch.gw}'s key: {exc}",
            kind=AnomalyKind.BAD_SIGNATURE,
            gw=batch.gw,
        ) from exc
    except MalformedError as exc:
        raise BatchRejectedError(f"checkpoint is malformed: {exc}", kind=AnomalyKind.MALFORMED, gw=batch.gw) from exc
    if checkpoint.gw != batch.gw:
        raise BatchRejectedError(
            f"checkpoint names gateway {checkpoint.gw!r} in a batch of {batch.gw!r}",
            kind=AnomalyKind.MALFORMED,
            gw=batch.gw,
        )
    records, bodies = _decode_records(batch)
    digests = [hashlib.sha256(body).digest() for body in bodies]
    _check_links(records, digests, batch.from_seq, batch.gw)
    head = digests[-1]
    last_seq = batch.from_seq + len(records) - 1
    if checkpoint.seq != last_seq or checkpoint.head != head:
        raise BatchRejectedError(
            f"checkpoint signs seq {checkpoint.seq} but the batch ends at seq {last_seq} with another head",
            kind=AnomalyKind.BROKEN_CHAIN,
            gw=batch.gw,
            seq=last_seq,
        )
    return VerifiedBatch(batch.gw, batch.from_seq, tuple(records), tuple(bodies), tuple(digests), checkpoint)
