"""The hash chain check run at open: every retained record, in order, against the stored head."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import JournalCorruptError
from wire.errors import MalformedError
from wire.records import record_from_cbor

RESTORE_HINT = "refusing to start. Restore the journal from the platform or contact support"


@dataclass(frozen=True)
class ChainState:
    """The chain row: gateway, head (last written record) and the last record the platform acked and we retired."""

    gw: str | None
    head_seq: int
    head_digest: bytes
    retired_seq: int
    retired_digest: bytes


def broken(seq: int, why: str) -> JournalCorruptError:
    """The error for a chain broken at `seq`."""
    return JournalCorruptError(f"journal chain broken at seq {seq}: {why}; {RESTORE_HINT}", seq=seq)


class ChainVerifier:
    """Feeds on (seq, body, digest) rows in seq order, from the record after the last retired one."""

    def __init__(self, gw: str, state: ChainState) -> None:
        if state.retired_seq > state.head_seq:
            raise broken(state.head_seq + 1, f"the last retired seq {state.retired_seq} lies past the head")
        self.gw = gw
        self.state = state
        self.seq = state.retired_seq
        self.digest = state.retired_digest

    def feed(self, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Check the next rows; raise JournalCorruptError naming the first bad seq."""
        for seq, body, digest in rows:
            self._check(seq, bytes(body), bytes(digest))
            self.seq, self.digest = seq, bytes(digest)

    def _check(self, seq: int, body: bytes, digest: bytes) -> None:
        want = self.seq + 1
        if seq != want:
            raise broken(want, f"record seq {want} is missing (the next stored record is seq {seq})")
        if hashlib.sha256(body).digest() != digest:
            raise broken(seq, "record body does not match its hash")
        try:
            rec = record_from_cbor(body)
        except MalformedError as exc:
            raise broken(seq, f"record body does not decode ({exc})") from exc
        if rec.seq != seq:
            raise broken(seq, f"record body says seq {rec.seq}")
        if rec.gw != self.gw:
            raise broken(seq, f"record belongs to gateway {rec.gw!r}, not {self.gw!r}")
        if rec.prev != self.digest:
            before = "the last retired record" if seq == self.state.retired_seq + 1 else "the record before it"
            raise broken(seq, f"record does not link to {before}")

    def finish(self) -> None:
        """After the last row: the chain must end exactly at the stored head."""
        head_seq, head_digest = self.state.head_seq, self.state.head_digest
        if self.seq < head_seq:
            raise broken(self.seq + 1, f"record seq {self.seq + 1} is missing (the journal's head is seq {head_seq})")
        if self.seq > head_seq:
            raise broken(head_seq + 1, f"records run past the stored head seq {head_seq}")
        if self.digest != head_digest:
            raise broken(self.seq, "record does not match the stored head")
