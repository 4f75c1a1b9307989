"""Checks of a `records` batch before it may touch the ledger: decode, checkpoint signature, chain, ids."""

from __future__ import annotations

from dataclasses import dataclass

from cloud_bridge.anomalies import AnomalyKind
from cloud_bridge.errors import CloudError
from wire.chain import BadRecordError, ChainBreakError, ChainChecker
from wire.errors import MalformedError, TokenError, WireError
from wire.keys import KeyRing, PublicKey
from wire.records import Batch, Record, batch_from_cbor
from wire.tokens import HDR_KID, Checkpoint, peek_header, verify


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
    checkpoint_token: bytes

    @property
    def signer_kid(self) -> bytes:
        """The kid of the key that signed the checkpoint."""
        return bytes(peek_header(self.checkpoint_token)[HDR_KID])

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


def _check_records(batch: Batch) -> tuple[list[Record], list[bytes]]:
    """Records and digests, each decoded strictly and linked to the one before it (the ledger checks the first)."""
    chain = ChainChecker.segment(batch.gw, batch.from_seq)
    records: list[Record] = []
    digests: list[bytes] = []
    for body in batch.records:
        try:
            rec = chain.feed(body)
        except BadRecordError as exc:
            raise BatchRejectedError(
                f"record {exc.seq} is malformed: {exc.why}", kind=AnomalyKind.MALFORMED, gw=batch.gw, seq=exc.seq
            ) from exc
        except ChainBreakError as exc:
            raise BatchRejectedError(
                f"batch records do not form a chain at seq {exc.seq}: {exc.why}",
                kind=AnomalyKind.BROKEN_CHAIN,
                gw=batch.gw,
                seq=exc.seq,
            ) from exc
        _check_bounds(rec, batch.gw)
        records.append(rec)
        digests.append(chain.head)
    return records, digests


def checkpoint_kid(batch: Batch) -> bytes:
    """The kid the batch's checkpoint names (unverified: only to choose the key); empty if it names none."""
    try:
        return bytes(peek_header(batch.checkpoint)[HDR_KID])
    except MalformedError:
        return b""


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
    records, digests = _check_records(batch)
    head = digests[-1]
    last_seq = batch.from_seq + len(records) - 1
    if checkpoint.seq != last_seq or checkpoint.head != head:
        raise BatchRejectedError(
            f"checkpoint signs seq {checkpoint.seq} but the batch ends at seq {last_seq} with another head",
            kind=AnomalyKind.BROKEN_CHAIN,
            gw=batch.gw,
            seq=last_seq,
        )
    return VerifiedBatch(
        batch.gw, batch.from_seq, tuple(records), tuple(batch.records), tuple(digests), checkpoint, batch.checkpoint
    )
