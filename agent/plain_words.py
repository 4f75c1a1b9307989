"""Every scan outcome in plain words for the technician: what happened and what to do next, in one table.

The console shows these; `rebadge agent run --json` carries the reason code, and a MES can use `advice()` too.
A test checks that every `RefusalReason` and `OutcomeReason` has its row, so a new reason cannot reach the line
without words.
"""

from __future__ import annotations

from dataclasses import dataclass

from wire.refusals import OutcomeReason, RefusalReason, ScanReason
from wire.topics import Result, ScanEvent


@dataclass(frozen=True)
class Advice:
    """What a technician reads: what happened, and the next step."""

    said: str
    action: str


R, Out = RefusalReason, OutcomeReason
# Nothing was spent on a refusal; every action says what to do with the unit in hand.
ADVICE: dict[ScanReason, Advice] = {
    R.BAD_SN: Advice("the scanned code is not a serial number", "scan the SN label again"),
    R.SCAN_IN_PROGRESS: Advice("this unit is being rebadged right now", "wait for its result, do not rescan"),
    R.BAD_COMMAND: Advice("the scan command was not the platform's signed one", "scan the unit again from the console"),
    R.STALE_COMMAND: Advice("the scan command arrived too late or too early", "check the clocks; scan the unit again"),
    R.GATEWAY_BUSY: Advice("the gateway has too many scans waiting", "wait a moment and scan the unit again"),
    R.GATEWAY_FAULT: Advice("the gateway had a fault (journal, disk, radio)", "call the line engineer; keep the unit"),
    R.NO_LEASE: Advice("no slots are loaded for this certificate", "call the line engineer to load a lease"),
    R.LEASE_EXPIRED: Advice("the slots loaded here have expired", "call the line engineer for a new lease"),
    R.LEASE_EXPIRING: Advice("the slots loaded here are about to expire", "call the line engineer for a new lease"),
    R.LEASE_CLOSED: Advice(
        "this unit's earlier attempt is on a closed lease", "set the unit aside for the line engineer"
    ),
    R.QUOTA_EXHAUSTED: Advice("every slot is used: the quota is spent", "stop scanning; call the line engineer"),
    R.JOURNAL_RESTORED: Advice(
        "the platform froze this gateway (its journal was restored)", "stop scanning; call the line engineer"
    ),
    R.DISK_FULL: Advice("the gateway's disk is full", "stop scanning; call the line engineer"),
    R.UNKNOWN_KEY: Advice("the lease is signed by a key this gateway does not trust", "call the line engineer"),
    R.WRONG_KIND: Advice("the loaded file is not a lease", "call the line engineer"),
    R.BAD_SIGNATURE: Advice("the lease's signature does not check", "call the line engineer"),
    R.MALFORMED: Advice("the lease is damaged", "call the line engineer"),
    R.CERTIFICATE_MISMATCH: Advice("the lease does not match its certificate", "call the line engineer"),
    R.WRONG_GATEWAY: Advice("the lease was issued to another gateway", "call the line engineer"),
    R.NOT_YET_VALID: Advice("the lease is not valid yet (check the clock)", "call the line engineer"),
    R.EXPIRED: Advice("the lease or certificate has expired", "call the line engineer for a new lease"),
    R.NOT_FOUND: Advice("no unit with this SN answered", "power the unit on, bring it closer and scan again"),
    R.DEVICE_ERROR: Advice("the unit could not be read", "check the unit's power and scan again"),
    R.ALREADY_REBADGED_ELSEWHERE: Advice(
        "the unit shows the new ID already, but not from this gateway", "set the unit aside for the line engineer"
    ),
    R.UNSUPPORTED_FIRMWARE: Advice("the unit's firmware cannot be rebadged", "set it aside; it needs new firmware"),
    R.PROTOCOL_NOT_CERTIFIED: Advice(
        "the certificate does not cover this kind of unit", "set the unit aside; it is not for this order"
    ),
    R.WRONG_PID: Advice("the unit is not the product this order rebadges", "set the unit aside; wrong product"),
    R.WRONG_SN: Advice("the unit refused: its SN differs from the label", "set the unit aside for the line engineer"),
    R.SLOT_OUT_OF_RANGE: Advice("the unit refused the slot number", "call the line engineer"),
    R.BUSY: Advice("the unit was busy and changed nothing", "scan the unit again"),
    Out.ALREADY_REBADGED: Advice("this unit was rebadged here before; nothing spent", "put it with the done ones"),
    Out.SETTLED: Advice("an earlier attempt is confirmed by the unit", "put it with the done ones"),
    Out.NO_ANSWER: Advice("the unit did not answer; it may have taken the new ID", "keep it powered and scan it again"),
    Out.READ_BACK_FAILED: Advice("the unit answered but could not be read back", "keep it powered and scan it again"),
    Out.READ_BACK_MISMATCH: Advice(
        "the unit reads back an unexpected ID", "set the unit aside for the line engineer (slot held)"
    ),
}
CONFIRMED = Advice("rebadged", "next unit")
# A reason this table lacks (an agent newer than its words) still gets a safe instruction.
UNKNOWN = Advice("the scan ended unexpectedly", "call the line engineer")


def advice(event: ScanEvent) -> Advice:
    """The plain words for one scan's outcome."""
    if event.reason:
        return ADVICE.get(event.reason, UNKNOWN)
    return CONFIRMED if event.result is Result.CONFIRMED else UNKNOWN
