"""Write journal_v1.sqlite: a journal as schema v1 left it, for the migration test.

Run from the repository root: `python tests/data/make_journal_v1.py`. The file is committed; rerun this only to
rebuild it, never after changing schema v1 (a released schema never changes).

What it holds (gateway "line-old", certificate "OLD-1", one lease "L-OLD" of slots [0, 6)):
  slot 0  SN0001  confirmed
  slot 1  SN0002  released (device refused), then SN0003 confirmed on the same slot
  slot 2  SN0004  in doubt
  slot 3  SN0005  reserved (the agent died before the outcome was known)
  nine records; the platform acked seq 3, so records 1-3 are retired.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from agent.journal.schema import V1
from wire.keys import SigningKey
from wire.records import GENESIS, Record, RecordKind
from wire.tokens import Certificate, Grant, Lease, sign, token_hash

OUT = Path(__file__).with_name("journal_v1.sqlite")
GW = "line-old"
CERT_NO = "OLD-1"
LEASE_ID = "L-OLD"
OLD_PID, NEW_PID = "oldpid01", "newpid01"
ISSUER = SigningKey(bytes([1]) * 32)
GATEWAY = SigningKey(bytes([2]) * 32)
EXP = 4_000_000_000
T0 = 1_790_000_000
ACKED_SEQ = 3

# (attempt id, slot, SN, [(state, reason), ...]) in the order things happened.
HISTORY: list[tuple[int, int, str, list[tuple[RecordKind, str]]]] = [
    (1, 0, "SN0001", [(RecordKind.RESERVED, ""), (RecordKind.CONFIRMED, "")]),
    (2, 1, "SN0002", [(RecordKind.RESERVED, ""), (RecordKind.RELEASED, "device refused: wrong_pid")]),
    (3, 1, "SN0003", [(RecordKind.RESERVED, ""), (RecordKind.CONFIRMED, "")]),
    (4, 2, "SN0004", [(RecordKind.RESERVED, ""), (RecordKind.IN_DOUBT, "no answer after sending")]),
    (5, 3, "SN0005", [(RecordKind.RESERVED, "")]),
]


def tokens() -> tuple[bytes, bytes]:
    """The certificate and lease tokens, signed by the fixed issuer key (Ed25519 signing is deterministic)."""
    cert = Certificate(
        cert_no=CERT_NO, factory="old factory", original_pid=OLD_PID, new_pid=NEW_PID, quantity=6,
        protocols=("wifi",), nbf=0, exp=EXP,
    )  # fmt: skip
    cert_token = sign(cert, ISSUER)
    lease = Lease(
        lease_id=LEASE_ID, cert_no=CERT_NO, cert_hash=token_hash(cert_token), original_pid=OLD_PID, new_pid=NEW_PID,
        gateway_key=GATEWAY.public.raw, gateway_kid=GATEWAY.kid, slot_lo=0, slot_hi=6, exp=EXP,
    )  # fmt: skip
    return sign(lease, ISSUER), cert_token


def build(db: sqlite3.Connection) -> None:
    """Create schema v1 and fill it as a v1 agent would have."""
    for statement in V1:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    lease_token, cert_token = tokens()
    db.execute(
        "INSERT INTO leases VALUES (?, ?, ?, ?, 0, 6, ?, ?, ?, ?)",
        (LEASE_ID, CERT_NO, OLD_PID, NEW_PID, EXP, GATEWAY.kid, lease_token, cert_token),
    )
    seq, prev, at = 0, GENESIS, T0
    digests: dict[int, bytes] = {}
    for attempt_id, slot, sn, steps in HISTORY:
        grant = sign(Grant(lease_id=LEASE_ID, slot=slot, sn=sn, new_pid=NEW_PID, iat=at), GATEWAY)
        reserved_at = at
        for kind, reason in steps:
            seq, at = seq + 1, at + 7
            record = Record(
                gw=GW, seq=seq, prev=prev, kind=kind, lease_id=LEASE_ID, slot=slot, sn=sn, old_pid=OLD_PID,
                new_pid=NEW_PID, radio="wifi", at=at, reason=reason,
            )  # fmt: skip
            body = record.to_cbor()
            prev = digests[seq] = hashlib.sha256(body).digest()
            db.execute("INSERT INTO records VALUES (?, ?, ?)", (seq, body, prev))
        db.execute(
            "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, 'wifi', ?, ?, ?, ?, ?)",
            (attempt_id, LEASE_ID, CERT_NO, slot, sn, OLD_PID, NEW_PID, steps[-1][0].value, grant, steps[-1][1],
             reserved_at, at),
        )  # fmt: skip
    db.execute("DELETE FROM records WHERE seq <= ?", (ACKED_SEQ,))
    db.execute(
        "UPDATE chain SET gw = ?, head_seq = ?, head_digest = ?, retired_seq = ?, retired_digest = ?",
        (GW, seq, prev, ACKED_SEQ, digests[ACKED_SEQ]),
    )


def main() -> None:
    """Rebuild the stored file from scratch, as one self-contained database file (no WAL beside it)."""
    OUT.unlink(missing_ok=True)
    db = sqlite3.connect(OUT, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("BEGIN")
        build(db)
        db.execute("COMMIT")
        db.execute("VACUUM")
    finally:
        db.close()
    print(f"wrote {OUT.name}")


if __name__ == "__main__":
    main()
