"""Every query the journal runs, composed from constants here so that the text an index needs stays exact.

Values always travel as bound parameters; the f-strings below join constant fragments only.

Finding the lowest free slot without scanning every attempt: slots are handed out lowest-free-first within each
lease, so a free slot below a lease's highest held slot can only be one whose attempt was released. The lowest
free slot of a lease is therefore the lowest of its first slot, a released slot, or one past its highest held
slot, each taken only if no live attempt holds it. With the v2 partial indexes each is an index lookup, so a
reservation costs the same at slot 10 as at slot 100,000.
"""
# ruff: noqa: S608

from __future__ import annotations

from agent.journal.models import ATTEMPT_COLUMNS, LEASE_COLUMNS, LEASE_READ_COLUMNS
from agent.journal.schema import LIVE_SQL

OPEN_SQL = "state IN ('reserved', 'in_doubt')"
_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM attempts"

ATTEMPT_BY_ID = f"{_ATTEMPTS} WHERE id = ?"
LIVE_ATTEMPTS_OF_SN = f"{_ATTEMPTS} WHERE sn = ? AND {LIVE_SQL} ORDER BY id"
OPEN_ATTEMPT_OF_SN = f"{_ATTEMPTS} WHERE sn = ? AND {OPEN_SQL} ORDER BY id DESC LIMIT 1"
CONFIRMED_ATTEMPT_OF_SN = f"{_ATTEMPTS} WHERE sn = ? AND state = 'confirmed' AND new_pid = ? ORDER BY id DESC LIMIT 1"
RESERVED_ATTEMPTS = f"{_ATTEMPTS} WHERE state = 'reserved' ORDER BY id"
OPEN_ATTEMPTS_OF_LEASE = f"{_ATTEMPTS} WHERE lease_id = ? AND {OPEN_SQL} ORDER BY id"
IN_DOUBT_ATTEMPTS = f"{_ATTEMPTS} WHERE state = 'in_doubt' ORDER BY id LIMIT ?"

INSERT_ATTEMPT = (
    "INSERT INTO attempts (lease_id, cert_no, slot, sn, old_pid, new_pid, radio, state, grant_token, reason,"
    " reserved_at, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'reserved', ?, '', ?, ?) RETURNING id"
)
MOVE_ATTEMPT = "UPDATE attempts SET state = ?, reason = ?, changed_at = ? WHERE id = ?"

ALL_LEASES = f"SELECT {LEASE_READ_COLUMNS} FROM leases"
INSERT_LEASE = f"INSERT INTO leases ({LEASE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
CLOSE_LEASE = (
    "UPDATE leases SET closed_seq = ?, closed_at = ?, closed_reason = ? WHERE lease_id = ? AND closed_seq IS NULL"
)

INSERT_REFUSAL = "INSERT INTO refusals (cert_no, sn, reason, at) VALUES (?, ?, ?, ?)"

# A lease a reservation may use: of the certificate, not closed, and not expiring before :until (now plus the
# clock margin).
_USABLE = "cert_no = :cert AND exp > :until AND closed_seq IS NULL"
_USABLE_L = "l.cert_no = :cert AND l.exp > :until AND l.closed_seq IS NULL"

# Parameters :cert and :until.
COUNTS = f"""
SELECT
    (SELECT COUNT(*) FROM attempts WHERE cert_no = :cert AND state = 'confirmed'),
    (SELECT COUNT(*) FROM attempts WHERE cert_no = :cert AND state = 'in_doubt'),
    (SELECT COUNT(*) FROM refusals WHERE cert_no = :cert),
    (SELECT COALESCE(SUM(slot_hi - slot_lo), 0) FROM leases WHERE {_USABLE}),
    (SELECT COUNT(*) FROM leases l JOIN attempts a ON a.lease_id = l.lease_id
        WHERE {_USABLE_L} AND a.{LIVE_SQL})
"""

# Parameters :cert and :until. One row (lease_id, slot): the lowest free slot of the first usable lease (by
# slot_lo) that has one; no row when every usable slot is held.
FREE_SLOT = f"""
SELECT c.lease_id, MIN(c.slot)
FROM (
    SELECT lease_id, slot_lo AS slot FROM leases WHERE {_USABLE}
    UNION ALL
    SELECT l.lease_id, (SELECT MAX(a.slot) FROM attempts a WHERE a.lease_id = l.lease_id AND a.{LIVE_SQL}) + 1
    FROM leases l WHERE {_USABLE_L}
    UNION ALL
    SELECT a.lease_id, a.slot FROM leases l JOIN attempts a ON a.lease_id = l.lease_id AND a.state = 'released'
    WHERE {_USABLE_L}
) c
JOIN leases owner ON owner.lease_id = c.lease_id
WHERE c.slot IS NOT NULL AND c.slot < owner.slot_hi
  AND NOT EXISTS (SELECT 1 FROM attempts b WHERE b.lease_id = c.lease_id AND b.slot = c.slot AND b.{LIVE_SQL})
GROUP BY c.lease_id
ORDER BY owner.slot_lo
LIMIT 1
"""

APPEND_RECORD = "INSERT INTO records (seq, body, digest) VALUES (?, ?, ?)"
SET_HEAD = "UPDATE chain SET head_seq = ?, head_digest = ? WHERE id = 1"
RECORD_DIGEST = "SELECT digest FROM records WHERE seq = ?"
RETIRE_RECORDS = "DELETE FROM records WHERE seq <= ?"
SET_RETIRED = "UPDATE chain SET retired_seq = ?, retired_digest = ? WHERE id = 1"
PENDING_RECORDS = "SELECT seq, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?"
VERIFY_RECORDS = "SELECT seq, body, digest FROM records WHERE seq > ? ORDER BY seq LIMIT ?"
STALE_RECORD = "SELECT MIN(seq) FROM records WHERE seq <= ?"
READ_CHAIN = "SELECT gw, head_seq, head_digest, retired_seq, retired_digest FROM chain"
READ_ACKS = "SELECT last_at, frozen_ack_at, frozen_seq, frozen_head, frozen_since, frozen_reason FROM acks"
SET_ACK_AT = "UPDATE acks SET last_at = ? WHERE id = 1"
SET_FROZEN = (
    "UPDATE acks SET frozen_ack_at = ?, frozen_seq = ?, frozen_head = ?, frozen_since = ?, frozen_reason = ?"
    " WHERE id = 1"
)
LIFT_FREEZE = (
    "UPDATE acks SET frozen_ack_at = NULL, frozen_seq = NULL, frozen_head = NULL, frozen_since = NULL,"
    " frozen_reason = NULL WHERE id = 1"
)
SET_GW = "UPDATE chain SET gw = ? WHERE id = 1"
