"""The reference firmware's rebadge logic, the same on every radio: verify issuer -> lease -> gateway key -> grant.

Radios in this package only carry bytes to `Firmware.handle` and back; faults that belong to the link
(silence, garbling, slowness) are applied here too so every radio can simulate them the same way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from wire import device
from wire.device import Firmware as FirmwareKind
from wire.device import Radio, Status
from wire.errors import MalformedError, TokenError, UnknownKeyError
from wire.keys import KeyRing, PublicKey, kid_of
from wire.support import unsupported_reason
from wire.tokens import Grant, Lease, verify

log = logging.getLogger(__name__)


class Fault(StrEnum):
    """Misbehaviour a simulated device can be told to show."""

    NONE = "none"
    REFUSE = "refuse"  # answer `busy` to every rebadge
    SILENT_BEFORE_APPLY = "silent_before_apply"  # drop the rebadge request unapplied, answer nothing
    SILENT_AFTER_APPLY = "silent_after_apply"  # apply, then answer nothing
    SLOW = "slow"  # answer after `slow_s`
    GARBLED = "garbled"  # answer with bytes that are not a message


@dataclass
class DeviceState:
    """What a finished good holds; persisted when the device has a state file."""

    sn: str
    pid: str
    firmware: FirmwareKind = FirmwareKind.OEM
    radio: Radio = Radio.WIFI
    fw_version: str = "1.0.0"
    receipt: bytes | None = None

    def to_json(self) -> str:
        """The state as JSON (receipt in hex)."""
        data = asdict(self)
        data["receipt"] = self.receipt.hex() if self.receipt else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> DeviceState:
        """The state back from `to_json`."""
        data = json.loads(text)
        receipt = data.pop("receipt")
        return cls(
            **{**data, "firmware": FirmwareKind(data["firmware"]), "radio": Radio(data["radio"])},
            receipt=bytes.fromhex(receipt) if receipt else None,
        )


@dataclass
class Faults:
    """Which fault a device shows, and for how many rebadge requests (None = always)."""

    fault: Fault = Fault.NONE
    times: int | None = None
    slow_s: float = 0.5
    hits: int = field(default=0, init=False)

    def take(self) -> Fault:
        """The fault for this rebadge request, counting it down."""
        if self.fault is Fault.NONE or (self.times is not None and self.hits >= self.times):
            return Fault.NONE
        self.hits += 1
        return self.fault


class Firmware:
    """One device's firmware: answers `info` and verifies and applies `rebadge`."""

    def __init__(
        self,
        state: DeviceState,
        issuers: KeyRing,
        *,
        faults: Faults | None = None,
        state_file: Path | None = None,
    ) -> None:
        self.state = state
        self.issuers = issuers
        self.faults = faults or Faults()
        self.state_file = state_file
        self.rebadge_requests = 0
        self._lock = asyncio.Lock()

    async def handle(self, data: bytes) -> bytes | None:
        """Answer one request; None means the device stays silent."""
        try:
            request = device.decode_request(data)
        except MalformedError as exc:
            log.info("device %s: malformed request: %s", self.state.sn, exc)
            req_id = device.request_id_of(data)
            if req_id is None:
                return None
            return device.RebadgeResponse(id=req_id, status=Status.MALFORMED, pid=self.state.pid).to_cbor()
        if isinstance(request, device.InfoRequest):
            return self._info(request.id)
        return await self._rebadge_with_faults(request)

    def _info(self, req_id: int) -> bytes:
        s = self.state
        return device.InfoResponse(
            id=req_id,
            sn=s.sn,
            pid=s.pid,
            firmware=s.firmware,
            fw_version=s.fw_version,
            radio=s.radio,
            receipt=s.receipt,
        ).to_cbor()

    async def _rebadge_with_faults(self, request: device.RebadgeRequest) -> bytes | None:
        self.rebadge_requests += 1
        fault = self.faults.take()
        if fault is Fault.SILENT_BEFORE_APPLY:
            return None
        if fault is Fault.REFUSE:
            return device.RebadgeResponse(id=request.id, status=Status.BUSY, pid=self.state.pid).to_cbor()
        async with self._lock:
            status = await self.rebadge(request.lease, request.grant)
        log.info("device %s: rebadge -> %s (pid %s)", self.state.sn, status.value, self.state.pid)
        if fault is Fault.SILENT_AFTER_APPLY:
            return None
        if fault is Fault.SLOW:
            await asyncio.sleep(self.faults.slow_s)
        if fault is Fault.GARBLED:
            return b"\xff\x00garbled\x13"
        return device.RebadgeResponse(id=request.id, status=status, pid=self.state.pid).to_cbor()

    async def rebadge(self, lease_token: bytes, grant_token: bytes) -> Status:
        """Verify lease and grant and, if all holds, take the new PID and keep the grant as receipt."""
        s = self.state
        if s.receipt is not None and s.receipt == grant_token:
            return Status.ALREADY_DONE
        try:
            lease = verify(lease_token, Lease, self.issuers)
            if kid_of(lease.gateway_key) != lease.gateway_kid:
                return Status.BAD_SIGNATURE
            grant = verify(grant_token, Grant, KeyRing([PublicKey(lease.gateway_key)]))
        except UnknownKeyError:
            return Status.UNKNOWN_KEY
        except TokenError:
            return Status.BAD_SIGNATURE
        except MalformedError:
            return Status.MALFORMED
        return await self._check_and_apply(lease, grant, grant_token)

    async def _check_and_apply(self, lease: Lease, grant: Grant, grant_token: bytes) -> Status:
        s = self.state
        if grant.sn != s.sn:
            return Status.WRONG_SN
        if grant.lease_id != lease.lease_id or grant.new_pid != lease.new_pid:
            return Status.BAD_SIGNATURE
        if unsupported_reason(s.firmware, s.radio, lease.new_pid) is not None:
            return Status.UNSUPPORTED_FIRMWARE
        if s.pid != lease.original_pid:
            return Status.WRONG_PID
        if not lease.slot_lo <= grant.slot < lease.slot_hi:
            return Status.SLOT_OUT_OF_RANGE
        await self.apply_pid(lease.new_pid)
        s.pid = lease.new_pid
        s.receipt = grant_token
        self._persist()
        return Status.OK

    async def apply_pid(self, pid: str) -> None:
        """Where the PID is written; general firmware overrides this to go through its MCU."""

    def _persist(self) -> None:
        if self.state_file is not None:
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(self.state.to_json())
            tmp.replace(self.state_file)
