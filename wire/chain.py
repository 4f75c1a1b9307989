"""The hash chain of one gateway's records, checked one record at a time.

The journal runs it over every retained record at open, the platform over every batch it ingests, and the tests
over what they build: one checker, so the three cannot disagree on what a valid chain is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from wire.errors import MalformedError
from wire.records import GENESIS, Record, record_from_cbor

_ALL_FIELDS = len(Record.model_fields)


class ChainError(MalformedError):
    """A record that does not extend the chain; `seq` is where the chain breaks, `why` says how (without the seq)."""

    def __init__(self, why: str, *, seq: int, field: str | None) -> None:
        super().__init__(f"chain broken at seq {seq}: {why}", field=field)
        self.seq = seq
        self.why = why


class ChainBreakError(ChainError):
    """A record that decodes but does not follow: another seq than the next one, or a `prev` that is not the head."""


class BadRecordError(ChainError):
    """A record body that does not decode strictly, leaves out fields or belongs to another gateway."""


class ChainChecker:
    """Fed a gateway's records in seq order from a known point; `seq` and `head` are those of the last good record."""

    __slots__ = ("_anchored", "gw", "head", "seq")

    def __init__(self, gw: str | None = None, *, seq: int = 0, head: bytes = GENESIS) -> None:
        self.gw = gw  # None: the gateway the first record names
        self.seq = seq
        self.head = head
        self._anchored = True

    @classmethod
    def segment(cls, gw: str, from_seq: int) -> ChainChecker:
        """A checker for records from `from_seq` whose first `prev` the caller checks (its `head` is b"" until then).

        The platform compares a batch's first link with the head it stores, which may lie before the batch (a
        resend) or after it (a gap); every later link is checked here.
        """
        checker = cls(gw, seq=from_seq - 1, head=b"")
        checker._anchored = False
        return checker

    def feed(self, body: bytes) -> Record:
        """Decode one record body strictly and check that it extends the chain; return the record."""
        seq = self.seq + 1
        try:
            record = record_from_cbor(body)
        except MalformedError as exc:
            raise BadRecordError(f"record body does not decode ({exc})", seq=seq, field=exc.field) from exc
        # With every field present, a strictly decoded body is exactly Record.to_cbor(): its SHA-256 is the
        # record's digest, without encoding it again.
        if len(record.model_fields_set) != _ALL_FIELDS:
            raise BadRecordError(
                "record leaves out fields; the canonical encoding names every field", seq=seq, field="record"
            )
        self._link(record, hashlib.sha256(body).digest())
        return record

    def extend(self, records: Iterable[Record]) -> bytes:
        """Check records already decoded (and so encoded canonically) one by one; return the new head."""
        for record in records:
            self._link(record, record.digest())
        return self.head

    def _link(self, record: Record, digest: bytes) -> None:
        seq = self.seq + 1
        if self.gw is None:
            self.gw = record.gw
        elif record.gw != self.gw:
            raise BadRecordError(f"record belongs to gateway {record.gw!r}, not {self.gw!r}", seq=seq, field="gw")
        if record.seq != seq:
            raise ChainBreakError(f"record says seq {record.seq} where seq {seq} was expected", seq=seq, field="seq")
        if record.prev != self.head and self._anchored:
            raise ChainBreakError("record does not link to the record before it", seq=seq, field="prev")
        self.seq, self.head, self._anchored = seq, digest, True


__all__ = ["BadRecordError", "ChainBreakError", "ChainChecker", "ChainError"]
