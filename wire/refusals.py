"""Why a scan ended as it did: the `reason` of a scan event, shared by the agent, its events and dashboards.

A refused scan spent nothing (or its reservation was released after the unit was read back unchanged). The other
outcomes carry an `OutcomeReason`, or no reason at all for a plain confirmation. docs/mqtt.md lists them all.
"""

from __future__ import annotations

from enum import StrEnum

from wire.device import Status


class RefusalReason(StrEnum):
    """Why a scan was refused; nothing is spent on this gateway's leases."""

    # The scan itself.
    BAD_SN = "bad_sn"  # the scanned text is not a serial number
    SCAN_IN_PROGRESS = "scan_in_progress"  # this SN is being rebadged by another scan right now
    # The gateway itself, not the unit: scan the unit again later (agent/dispatch.py).
    GATEWAY_BUSY = "gateway_busy"  # the scan queue is full; nothing was started
    GATEWAY_FAULT = "gateway_fault"  # a journal, disk or driver fault stopped the scan; the agent's health says which
    # The gateway's leases and journal.
    NO_LEASE = "no_lease"  # no usable lease of the certificate; load or request one
    LEASE_EXPIRED = "lease_expired"  # every lease of the certificate has expired
    LEASE_EXPIRING = "lease_expiring"  # the leases with free slots expire within line.clock_margin_s
    LEASE_CLOSED = "lease_closed"  # the SN's open attempt lies on a lease this gateway closed
    QUOTA_EXHAUSTED = "quota_exhausted"  # every slot of the usable leases is held
    JOURNAL_RESTORED = "journal_restored"  # the platform froze this gateway: its journal was restored from a backup
    DISK_FULL = "disk_full"  # too little disk to journal safely
    # A scan command on MQTT cmd/scan (wire.scan_command) that was not carried out.
    BAD_COMMAND = "bad_command"  # unparsable, unsigned, not the platform's signature, another gateway's, or replayed
    STALE_COMMAND = "stale_command"  # its time lies outside the window of this gateway's clock
    # The lease and certificate fail a check (agent.certs.leases).
    UNKNOWN_KEY = "unknown_key"
    WRONG_KIND = "wrong_kind"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    WRONG_GATEWAY = "wrong_gateway"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    # The unit, before anything was sent.
    NOT_FOUND = "not_found"  # no radio reached the SN
    DEVICE_ERROR = "device_error"  # the unit could not be read, or the rebadge provably never left the gateway
    ALREADY_REBADGED_ELSEWHERE = "already_rebadged_elsewhere"  # shows the new PID without our receipt
    UNSUPPORTED_FIRMWARE = "unsupported_firmware"
    PROTOCOL_NOT_CERTIFIED = "protocol_not_certified"
    WRONG_PID = "wrong_pid"
    # The unit answered a rebadge with a refusing status and was then read back unchanged (see status_reason).
    WRONG_SN = "wrong_sn"
    SLOT_OUT_OF_RANGE = "slot_out_of_range"
    BUSY = "busy"


class OutcomeReason(StrEnum):
    """Why a scan that was not refused ended as it did (a plain confirmation has no reason)."""

    ALREADY_REBADGED = "already_rebadged"  # confirmed by this gateway before; nothing spent
    SETTLED = "settled"  # an earlier attempt in doubt is confirmed by the unit's receipt
    NO_ANSWER = "no_answer"  # in doubt: the rebadge may have reached the unit, no answer came
    READ_BACK_FAILED = "read_back_failed"  # in doubt: the unit answered but could not be read back
    READ_BACK_MISMATCH = "read_back_mismatch"  # in doubt: the unit reads back neither unchanged nor with our receipt


# Every reason a scan event may carry.
ScanReason = RefusalReason | OutcomeReason


def status_reason(status: Status) -> RefusalReason:
    """The refusal for a unit that answered `status` and then read back unchanged."""
    if status in (Status.OK, Status.ALREADY_DONE):
        raise ValueError(f"device status {status.value!r} is not a refusal")
    return RefusalReason(status.value)
