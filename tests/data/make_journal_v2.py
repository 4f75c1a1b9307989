"""Write journal_v2.sqlite: a journal as schema v2 left it, for the v2 -> v3 migration test.

Run from the repository root: `python tests/data/make_journal_v2.py`. The file is committed; rerun this only to
rebuild it, never after changing schema v1 or v2 (a released schema never changes).

What it holds (gateway "line-v2", certificate "V2-1" of 8, leases "LV2-A" slots [0, 4) and "LV2-B" [4, 8)):
  slot 0  SN2001  confirmed           (lease LV2-A)
  slot 1  SN2002  in doubt            (lease LV2-A)
  slot 2  SN2003  released, wrong_pid (lease LV2-A)
  slot 4  SN2004  confirmed           (lease LV2-B)
  eight records; the platform acked seq 2, so records 1-2 are retired; one refusal counted (v2's table).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from agent.journal.schema import V1, V2
from wire.keys import SigningKey
from wire.records import GENESIS, Record, RecordKind
from wire.tokens import Certificate, Grant, Lease, sign, token_hash

OUT = Path(__file__).with_name("journal_v2.sqlite")
GW = "line-v2"
CERT_NO = "V2-1"
LEASES = {"LV2-A": (0, 4), "LV2-B": (4, 8)}
OLD_PID, NEW_PID = "oldpid02", "newpid02"
ISSUER = SigningKey(bytes([3]) * 32)
GATEWAY = SigningKey(bytes([4]) * 32)
EXP = 4_000_000_000
T0 = 1_795_000_000
ACKED_SEQ = 2

# (attempt id, lease, slot, SN, [(state, reason), ...]) in the order things happened.
HISTORY: list[tuple[int, str, int, str, list[tuple[RecordKind, str]]]] = [
    (1, "LV2-A", 0, "SN2001", [(RecordKind.RESERVED, ""), (RecordKind.CONFIRMED, "")]),
    (2, "LV2-A", 1, "SN2002", [(RecordKind.RESERVED, ""), (RecordKind.IN_DOUBT, "no answer after sending")]),
    (3, "LV2-A", 2, "SN2003", [(RecordKind.RESERVED, ""), (RecordKind.RELEASED, "device refused: wrong_pid")]),
    (4, "LV2-B", 4, "SN2004", [(RecordKind.RESERVED, ""), (RecordKind.CONFIRMED, "")]),
]


def tokens() -> tuple[Certificate, bytes, dict[str, bytes]]:
    """The certificate and lease tokens, signed by the fixed issuer key (Ed25519 signing is deterministic)."""
    cert = Certificate(
        cert_no=CERT_NO, factory="v2 factory", original_pid=OLD_PID, new_pid=NEW_PID, quantity=8,
        protocols=("wifi",), nbf=0, exp=EXP,
    )  # fmt: skip
    cert_token = sign(cert, ISSUER)
    leases = {lease_id: sign(_lease(lease_id, lo, hi, cert_token), ISSUER) for lease_id, (lo, hi) in LEASES.items()}
    return cert, cert_token, leases


def _lease(lease_id: str, lo: int, hi: int, cert_token: bytes) -> Lease:
    return Lease(
        lease_id=lease_id, cert_no=CERT_NO, cert_hash=token_hash(cert_token), original_pid=OLD_PID, new_pid=NEW_PID,
        gateway_key=GATEWAY.public.raw, gateway_kid=GATEWAY.kid, slot_lo=lo, slot_hi=hi, exp=EXP,
    )  # fmt: skip


def build(db: sqlite3.Connection) -> None:
    """Create schema v2 (v1, then the v2 step) and fill it as a v2 agent would have."""
    for statement in (*V1, *V2):
        db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    _, cert_token, lease_tokens = tokens()
    for lease_id, (lo, hi) in LEASES.items():
        db.execute(
            "INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (lease_id, CERT_NO, OLD_PID, NEW_PID, lo, hi, EXP, GATEWAY.kid, lease_tokens[lease_id], cert_token),
        )
    seq, prev, at = 0, GENESIS, T0
    digests: dict[int, bytes] = {}
    for attempt_id, lease_id, slot, sn, steps in HISTORY:
        grant = sign(Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=at), GATEWAY)
        reserved_at = at
        for kind, reason in steps:
            seq, at = seq + 1, at + 5
            record = Record(
                gw=GW, seq=seq, prev=prev, kind=kind, lease_id=lease_id, slot=slot, sn=sn, old_pid=OLD_PID,
                new_pid=NEW_PID, radio="wifi", at=at, reason=reason,
            )  # fmt: skip
            body = record.to_cbor()
            prev = digests[seq] = hashlib.sha256(body).digest()
            db.execute("INSERT INTO records VALUES (?, ?, ?)", (seq, body, prev))
        db.execute(
            "INSERT INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, 'wifi', ?, ?, ?, ?, ?)",
            (attempt_id, lease_id, CERT_NO, slot, sn, OLD_PID, NEW_PID, steps[-1][0].value, grant, steps[-1][1],
             reserved_at, at),
        )  # fmt: skip
    db.execute("INSERT INTO refusals (cert_no, sn, reason, at) VALUES (?, 'SN2009', 'wrong_pid', ?)", (CERT_NO, at))
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
