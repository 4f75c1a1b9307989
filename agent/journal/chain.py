"""The hash chain check run at open: every retained record, in order, against the stored head."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import JournalCorruptError
from wire.chain import ChainChecker, ChainError

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
        self.state = state
        self.chain = ChainChecker(gw, seq=state.retired_seq, head=state.retired_digest)

    def feed(self, rows: Iterable[tuple[int, bytes, bytes]]) -> None:
        """Check the next rows; raise JournalCorruptError naming the first bad seq."""
        chain = self.chain
        for seq, body, digest in rows:
            if seq != chain.seq + 1:
                raise broken(
                    chain.seq + 1, f"record seq {chain.seq + 1} is missing (the next stored record is seq {seq})"
                )
            try:
                chain.feed(body)
            except ChainError as exc:
                raise broken(exc.seq, exc.why) from exc
            if chain.head != digest:
                raise broken(seq, "record body does not match its hash")

    def finish(self) -> None:
        """After the last row: the chain must end exactly at the stored head."""
        seq, head_seq = self.chain.seq, self.state.head_seq
        if seq < head_seq:
            raise broken(seq + 1, f"record seq {seq + 1} is missing (the journal's head is seq {head_seq})")
        if seq > head_seq:
            raise broken(head_seq + 1, f"records run past the stored head seq {head_seq}")
        if self.chain.head != self.state.head_digest:
            raise broken(seq, "record does not match the stored head")
