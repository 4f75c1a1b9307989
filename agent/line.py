"""The rebadge transaction (README "What happens on the line", steps 3-6): the only place that orders the steps.

find -> info -> checks -> reserve (durable) -> grant -> send -> read back -> confirm | release | in doubt.
A slot is spent only by a reservation; every refusal before it spends nothing. Once the grant may have left the
gateway, only a read-back releases its slot: the unit shows its old PID and not our receipt. No device status
alone does (docs/tokens.md §8).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from enum import Enum

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease, check_lease, check_window
from agent.config import DebugConfig, LineConfig
from agent.errors import DiskFullError, JournalFrozenError, LeaseClosedError, LeaseError, RadioError
from agent.journal import Attempt, AttemptState, Journal, StoredLease
from agent.journal.models import FROZEN_ADVICE, FROZEN_MESSAGE
from agent.radios.base import DeviceLink, Radio
from wire import device
from wire.device import Status
from wire.errors import MalformedError
from wire.ids import check_sn
from wire.keys import KeyRing
from wire.refusals import OutcomeReason, RefusalReason, ScanReason, status_reason
from wire.support import unsupported_reason
from wire.tokens import Grant, sign
from wire.topics import ProgressPayload, Result, ScanEvent

log = logging.getLogger(__name__)

EventSink = Callable[[ScanEvent], Awaitable[None]]


class Refused(Exception):  # noqa: N818 - an outcome, not a fault
    """A scan ends refused; nothing was spent (or a reservation was released)."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _NotWritten(Exception):  # noqa: N818 - an outcome, not a fault
    """A write after the reservation was refused (the gateway froze, or its lease was closed meanwhile): the
    attempt stays as it was, and the scan ends in doubt saying why."""

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Scan:
    """What one scan has learnt so far; becomes the event."""

    sn: str
    started: float
    radio: str = ""
    old_pid: str = ""
    new_pid: str = ""
    cert_no: str = ""
    lease_id: str = ""
    slot: int | None = None
    id: str | None = None

    def event(self, result: Result, reason: ScanReason | None = None, message: str = "") -> ScanEvent:
        return ScanEvent(
            sn=self.sn, result=result, reason=reason or "", message=message, radio=self.radio, old_pid=self.old_pid,
            new_pid=self.new_pid, cert_no=self.cert_no, lease_id=self.lease_id, slot=self.slot,
            at=int(time.time()), ms=int((time.monotonic() - self.started) * 1000), id=self.id,
        )  # fmt: skip


class Line:
    """Runs scans against the journal and the radios; many scans at once, one per SN."""

    def __init__(
        self,
        journal: Journal,
        radios: Sequence[Radio],
        identity: GatewayIdentity,
        issuers: KeyRing,
        config: LineConfig,
        *,
        debug: DebugConfig | None = None,
        on_event: EventSink | None = None,
        on_records: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.journal = journal
        self.radios = list(radios)
        self.identity = identity
        self.issuers = issuers
        self.config = config
        self.debug = debug or DebugConfig()
        self._on_event = on_event
        self._on_records = on_records or (lambda: None)
        self._clock = clock
        self._busy: set[str] = set()
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._verified: dict[tuple[bytes, bytes], CheckedLease] = {}

    async def scan(self, sn: str, request_id: str | None = None) -> ScanEvent:
        """Rebadge the unit with this SN; returns (and reports) the outcome. Never raises for a unit's fault."""
        scan = _Scan(sn=sn, started=time.monotonic(), id=request_id)
        try:
            check_sn(sn)
        except MalformedError as exc:
            return await self._finish(scan, scan.event(Result.REFUSED, RefusalReason.BAD_SN, str(exc)), counted=False)
        if sn in self._busy:
            msg = f"{sn} is being rebadged already; wait for its result"
            return await self._finish(
                scan, scan.event(Result.REFUSED, RefusalReason.SCAN_IN_PROGRESS, msg), counted=False
            )
        self._busy.add(sn)
        try:
            async with self._slots:
                event = await self._run(scan)
        finally:
            self._busy.discard(sn)
        return await self._finish(scan, event, counted=event.result is Result.REFUSED)

    async def _finish(self, scan: _Scan, event: ScanEvent, *, counted: bool) -> ScanEvent:
        if counted and scan.cert_no and isinstance(event.reason, RefusalReason):
            await self.journal.note_refusal(scan.cert_no, scan.sn, event.reason)
        log.info("%s: %s %s %s", scan.sn, event.result.value, event.reason, event.message)
        if self._on_event is not None:
            await self._on_event(event)
        return event

    async def progress(self, cert_no: str) -> ProgressPayload:
        """The certificate's counts on this gateway."""
        c = await self.journal.counts(cert_no)
        return ProgressPayload(
            cert_no=cert_no, confirmed=c.confirmed, in_doubt=c.in_doubt, refused=c.refused,
            lease_size=c.lease_size, remaining=c.remaining,
        )  # fmt: skip

    async def _run(self, scan: _Scan) -> ScanEvent:
        try:
            self._refuse_if_frozen()
            await self._refuse_if_stranded(scan)
            lease = await self._lease_for_scan(scan)
            done = await self.journal.confirmed_attempt(scan.sn, lease.lease.new_pid)
            if done is not None:
                scan.slot, scan.lease_id, scan.old_pid = done.slot, done.lease_id, done.old_pid
                msg = f"{scan.sn} was rebadged to {done.new_pid} already (slot {done.slot}); nothing spent"
                return scan.event(Result.ALREADY_REBADGED, OutcomeReason.ALREADY_REBADGED, msg)
            async with AsyncExitStack() as stack:
                link = await self._find(scan, stack)
                return await self._with_device(scan, link, lease)
        except Refused as refusal:
            return scan.event(Result.REFUSED, refusal.reason, refusal.message)
        except _NotWritten as unwritten:
            return scan.event(Result.IN_DOUBT, unwritten.reason, f"{scan.sn}: {unwritten.message}")

    def _refuse_if_frozen(self) -> None:
        if self.journal.frozen is not None:
            raise Refused(RefusalReason.JOURNAL_RESTORED, f"{FROZEN_MESSAGE}; {FROZEN_ADVICE}")

    async def _lease_for_scan(self, scan: _Scan) -> CheckedLease:
        now = self._clock()
        held = [lease for lease in await self.journal.leases(active_only=False) if not lease.closed]
        usable = [lease for lease in held if self._usable(lease, now)]
        cert_nos = sorted({lease.cert_no for lease in usable})
        wanted = self.config.certificate
        if wanted not in cert_nos and (wanted is not None or not cert_nos):
            # A certificate whose leases expire soon, or all expired, must say so, not "no lease".
            self._refuse_unusable(wanted, held, now)
        if wanted is None and len(cert_nos) != 1:
            reason = RefusalReason.NO_LEASE
            raise Refused(reason, f"several certificates are active ({', '.join(cert_nos)}); set line.certificate")
        scan.cert_no = wanted or cert_nos[0]
        first = next(lease for lease in usable if lease.cert_no == scan.cert_no)
        checked = self._checked_lease(first.lease_token, first.cert_token, now)
        scan.new_pid = checked.lease.new_pid
        return checked

    def _usable(self, lease: StoredLease, now: float) -> bool:
        """A lease takes new reservations until `clock_margin_s` before it expires (the gateway's clock may run
        slow; the platform counts by its own)."""
        return now < lease.exp - self.journal.clock_margin_s

    def _refuse_unusable(self, wanted: str | None, held: list[StoredLease], now: float) -> None:
        """Refuse a scan that has no usable lease, saying whether leases expire soon, expired, or do not exist."""
        mine = [lease for lease in held if wanted is None or lease.cert_no == wanted]
        names = wanted or ", ".join(sorted({lease.cert_no for lease in mine}))
        if any(lease.exp > now for lease in mine):
            margin = self.journal.clock_margin_s
            raise Refused(
                RefusalReason.LEASE_EXPIRING,
                f"the leases of certificate {names} expire within {margin:.0f} s (line.clock_margin_s), so no more "
                "is spent on them; request a new lease",
            )
        if mine:
            raise Refused(
                RefusalReason.LEASE_EXPIRED, f"every lease of certificate {names} has expired; request a new one"
            )
        if wanted is not None:
            raise Refused(RefusalReason.NO_LEASE, f"no active lease for certificate {wanted}; load one or request one")
        raise Refused(RefusalReason.NO_LEASE, "this gateway holds no active lease; load a lease file or request one")

    def _checked_lease(self, lease_token: bytes, cert_token: bytes, now: float) -> CheckedLease:
        """Signatures and bindings are checked once per token pair; the validity window on every scan."""
        try:
            checked = self._verified.get((lease_token, cert_token))
            if checked is None:
                checked = check_lease(lease_token, cert_token, self.issuers, self.identity.public, now)
                self._verified[lease_token, cert_token] = checked
            check_window(checked.lease, checked.cert, now)
        except LeaseError as exc:
            raise Refused(RefusalReason(exc.reason), str(exc)) from exc
        return checked

    async def _find(self, scan: _Scan, stack: AsyncExitStack) -> DeviceLink:
        # A radio that is starting or failed to start is not asked; the scan's message says it is off.
        usable = [r for r in self.radios if r.available]
        known = [r for r in usable if await r.knows(scan.sn)]
        errors = [r.unavailable_reason() for r in self.radios if not r.available]
        # A radio that has seen the SN is asked alone first: asking the others makes them probe their own goods.
        # Otherwise every radio is asked at once, so a radio that cannot find the unit (or is slow) costs the
        # scan no more than the one that can.
        for radios in (known, [r for r in usable if r not in known]):
            found = await self._first_link(scan.sn, radios, errors) if radios else None
            if found is not None:
                radio, link = found
                stack.push_async_callback(link.close)
                scan.radio = radio.kind.value
                return link
        raise Refused(
            RefusalReason.NOT_FOUND, f"no device {scan.sn} answered ({'; '.join(errors) or 'no radio configured'})"
        )

    async def _first_link(self, sn: str, radios: list[Radio], errors: list[str]) -> tuple[Radio, DeviceLink] | None:
        """Ask `radios` at once; the first link to `sn` wins and the other radios are called off."""
        found: list[tuple[Radio, DeviceLink]] = []
        tasks: list[asyncio.Task[None]] = []

        async def ask(radio: Radio) -> None:
            try:
                link = await radio.open(sn, self.config.find_timeout_s)
            except RadioError as exc:
                errors.append(f"{radio.kind.value}: {exc}")
                return
            if found:  # two radios reached one SN at once: keep the first link only
                await link.close()
                return
            found.append((radio, link))
            for task in tasks:
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            async with asyncio.TaskGroup() as tg:
                tasks.extend(tg.create_task(ask(r), name=f"find:{sn}:{r.kind.value}") for r in radios)
        except BaseException as exc:
            for _, link in found:
                await link.close()
            # A fault of one driver surfaces as itself, as when the radios were asked one by one.
            if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                raise exc.exceptions[0] from None
            raise
        return found[0] if found else None

    async def _info(self, scan: _Scan, link: DeviceLink, *, sent: bool) -> device.InfoResponse:
        info = await link.info(self.config.info_timeout_s)
        if info.sn != scan.sn:
            raise RadioError(f"asked for {scan.sn}, device says it is {info.sn}", sn=scan.sn, sent=sent)
        return info

    async def _with_device(self, scan: _Scan, link: DeviceLink, lease: CheckedLease) -> ScanEvent:
        try:
            info = await self._info(scan, link, sent=False)
        except RadioError as exc:
            raise Refused(RefusalReason.DEVICE_ERROR, f"{scan.sn}: could not read the device: {exc}") from exc
        scan.old_pid = info.pid
        open_attempt = await self.journal.open_attempt(scan.sn)
        if open_attempt is not None:
            settled = await self._settle(scan, info, open_attempt)
            if settled is not None:
                return settled
        self._check_device(scan, info, lease)
        attempt = await self._reserve(scan, info, lease)
        return await self._send(scan, link, lease, attempt)

    async def _settle(self, scan: _Scan, info: device.InfoResponse, attempt: Attempt) -> ScanEvent | None:
        """An earlier attempt on this SN is open: the unit read back now says how it ended."""
        scan.slot, scan.lease_id = attempt.slot, attempt.lease_id
        seen = _ReadBack.of(info, attempt)
        if seen is _ReadBack.TOOK:
            await self._journal(self.journal.confirm(attempt.id))
            scan.old_pid = attempt.old_pid
            msg = f"{scan.sn} had taken {attempt.new_pid} (slot {attempt.slot}); the earlier attempt is confirmed"
            return scan.event(Result.CONFIRMED, OutcomeReason.SETTLED, msg)
        if seen is _ReadBack.UNCHANGED:
            await self._journal(self.journal.release(attempt.id, "rescan: read back unchanged, without our receipt"))
            log.info("%s: earlier attempt on slot %d released: the unit reads back unchanged", scan.sn, attempt.slot)
            scan.slot, scan.lease_id = None, ""
            return None
        if attempt.state is AttemptState.RESERVED:
            await self._journal(
                self.journal.mark_in_doubt(attempt.id, f"rescan: reads back {info.pid} without receipt")
            )
        msg = (
            f"{scan.sn} reads back {info.pid} without our receipt: it may have taken slot {attempt.slot}, so the slot "
            "stays held (in doubt) and nothing is released. Check the unit"
        )
        return scan.event(Result.IN_DOUBT, OutcomeReason.READ_BACK_MISMATCH, msg)

    async def _refuse_if_stranded(self, scan: _Scan) -> None:
        """An attempt in doubt on a lease this gateway closed stays so for good: say what the unit shows, write
        nothing (no record on a closed lease is valid), and never spend on the unit again here."""
        attempt = await self.journal.open_attempt(scan.sn)
        if attempt is None:
            return
        closed = {lease.lease_id for lease in await self.journal.leases(active_only=False) if lease.closed}
        if attempt.lease_id not in closed:
            return
        scan.cert_no, scan.lease_id, scan.slot = attempt.cert_no, attempt.lease_id, attempt.slot
        scan.old_pid, scan.new_pid = attempt.old_pid, attempt.new_pid
        raise Refused(
            RefusalReason.LEASE_CLOSED,
            f"{scan.sn}: its attempt on slot {attempt.slot} of lease {attempt.lease_id} stays in doubt for good (the "
            f"lease was closed before it was settled; its slot counts as spent); {await self._shows(scan, attempt)}; "
            "nothing written",
        )

    async def _shows(self, scan: _Scan, attempt: Attempt) -> str:
        """What the unit shows of `attempt`, best effort (for a message only)."""
        try:
            async with AsyncExitStack() as stack:
                info = await self._info(scan, await self._find(scan, stack), sent=False)
        except (Refused, RadioError) as exc:
            return f"the unit could not be read ({exc})"
        receipt = "with our receipt" if _ReadBack.of(info, attempt) is _ReadBack.TOOK else "without our receipt"
        return f"the unit shows {info.pid} {receipt}"

    def _check_device(self, scan: _Scan, info: device.InfoResponse, lease: CheckedLease) -> None:
        new_pid, original = lease.lease.new_pid, lease.lease.original_pid
        if info.pid == new_pid:
            raise Refused(
                RefusalReason.ALREADY_REBADGED_ELSEWHERE, f"{scan.sn} shows {new_pid} already, without our receipt"
            )
        why = unsupported_reason(info.firmware, info.radio, new_pid)
        if why is not None:
            raise Refused(RefusalReason.UNSUPPORTED_FIRMWARE, f"{scan.sn}: {why}")
        if info.radio.value not in lease.cert.protocols:
            raise Refused(
                RefusalReason.PROTOCOL_NOT_CERTIFIED,
                f"{scan.sn}: certificate {lease.cert.cert_no} does not cover {info.radio.value} goods",
            )
        if info.pid != original:
            raise Refused(RefusalReason.WRONG_PID, _wrong_pid(scan.sn, info, lease))

    async def _reserve(self, scan: _Scan, info: device.InfoResponse, lease: CheckedLease) -> Attempt:
        new_pid = lease.lease.new_pid

        def sign_grant(lease_id: str, slot: int) -> bytes:
            grant = Grant(lease_id=lease_id, slot=slot, sn=scan.sn, new_pid=new_pid, iat=int(self._clock()))
            return sign(grant, self.identity.key)

        try:
            attempt = await self.journal.reserve(scan.cert_no, scan.sn, info.pid, new_pid, scan.radio, sign_grant)
        except DiskFullError as exc:
            raise Refused(RefusalReason.DISK_FULL, str(exc)) from exc
        except JournalFrozenError as exc:
            raise Refused(RefusalReason.JOURNAL_RESTORED, f"{FROZEN_MESSAGE}; {FROZEN_ADVICE}") from exc
        if attempt is None:
            raise await self._no_slot(scan.cert_no)
        self._on_records()
        scan.slot, scan.lease_id = attempt.slot, attempt.lease_id
        if self.debug.pause_after_reserve_s:
            await asyncio.sleep(self.debug.pause_after_reserve_s)
        return attempt

    async def _no_slot(self, cert_no: str) -> Refused:
        """Why no slot was free: the usable leases are full, and maybe others expire too soon to be used."""
        now = self._clock()
        expiring = [lease.lease_id for lease in await self.journal.leases(cert_no) if not self._usable(lease, now)]
        counts = await self.journal.counts(cert_no)
        if expiring:
            return Refused(
                RefusalReason.LEASE_EXPIRING,
                f"the usable leases of {cert_no} are full ({counts.confirmed} confirmed, {counts.in_doubt} in doubt) "
                f"and lease {', '.join(expiring)} expires within {self.journal.clock_margin_s:.0f} s "
                "(line.clock_margin_s); request a new lease",
            )
        return Refused(
            RefusalReason.QUOTA_EXHAUSTED,
            f"quota exhausted: all {counts.lease_size} slots of {cert_no} are used "
            f"({counts.confirmed} confirmed, {counts.in_doubt} in doubt)",
        )

    async def _send(self, scan: _Scan, link: DeviceLink, lease: CheckedLease, attempt: Attempt) -> ScanEvent:
        lease_token = await self._lease_token(attempt.lease_id, lease)
        try:
            answer = await link.rebadge(lease_token, attempt.grant, self.config.rebadge_timeout_s)
        except RadioError as exc:
            return await self._after_link_error(scan, attempt, exc)
        if self.debug.pause_after_send_s:
            await asyncio.sleep(self.debug.pause_after_send_s)
        return await self._read_back(scan, link, attempt, answer.status)

    async def _lease_token(self, lease_id: str, lease: CheckedLease) -> bytes:
        if lease_id == lease.lease.lease_id:
            return lease.lease_token
        for stored in await self.journal.leases(lease.cert.cert_no, active_only=False):
            if stored.lease_id == lease_id:
                return stored.lease_token
        raise Refused(RefusalReason.NO_LEASE, f"lease {lease_id} of the reservation is gone from the journal")

    async def _after_link_error(self, scan: _Scan, attempt: Attempt, exc: RadioError) -> ScanEvent:
        if not exc.sent:
            await self._journal(self.journal.release(attempt.id, f"not sent: {exc}"))
            raise Refused(
                RefusalReason.DEVICE_ERROR, f"{scan.sn}: the rebadge did not reach the device ({exc}); scan it again"
            )
        # It may have left: the unit may still be applying it, so it is read back by a rescan, not now.
        await self._journal(self.journal.mark_in_doubt(attempt.id, f"no answer after sending: {exc}"))
        msg = f"{scan.sn}: no answer after sending; slot {attempt.slot} is held. Scan this unit again to settle it"
        return scan.event(Result.IN_DOUBT, OutcomeReason.NO_ANSWER, msg)

    async def _read_back(self, scan: _Scan, link: DeviceLink, attempt: Attempt, status: Status) -> ScanEvent:
        """The unit answered `status`; only what it reads back now decides the slot (no status alone releases)."""
        answered = status.value
        try:
            info = await self._info(scan, link, sent=True)
        except RadioError as exc:
            await self._journal(self.journal.mark_in_doubt(attempt.id, f"answered {answered}; read-back failed: {exc}"))
            msg = f"{scan.sn}: the device answered {answered} but could not be read back; scan it again to settle it"
            return scan.event(Result.IN_DOUBT, OutcomeReason.READ_BACK_FAILED, msg)
        seen = _ReadBack.of(info, attempt)
        if seen is _ReadBack.TOOK:
            await self._journal(self.journal.confirm(attempt.id))
            return scan.event(Result.CONFIRMED, None, f"{scan.sn}: {attempt.old_pid} -> {attempt.new_pid}")
        refused = status not in (Status.OK, Status.ALREADY_DONE)
        if seen is _ReadBack.UNCHANGED and refused:
            await self._journal(self.journal.release(attempt.id, f"device answered {answered}; read back unchanged"))
            raise Refused(
                status_reason(status),
                f"{scan.sn}: the device refused the rebadge ({answered}) and reads back unchanged; nothing spent",
            )
        await self._journal(self.journal.mark_in_doubt(attempt.id, f"answered {answered}; reads back {info.pid}"))
        msg = (
            f"{scan.sn}: the device answered {answered} but reads back {info.pid} without our receipt; slot "
            f"{attempt.slot} is held. Scan it again to settle it"
        )
        return scan.event(Result.IN_DOUBT, OutcomeReason.READ_BACK_MISMATCH, msg)

    async def _journal(self, write: Awaitable[Attempt]) -> Attempt:
        """A journal write after the reservation; a freeze that came meanwhile ends the scan without writing."""
        try:
            moved = await write
        except JournalFrozenError as exc:
            # Its attempt stays open, settled by a rescan once the platform reinstates the gateway.
            why = f"{FROZEN_MESSAGE}; the outcome of this rebadge is not written. {FROZEN_ADVICE}"
            raise _NotWritten(RefusalReason.JOURNAL_RESTORED, why) from exc
        except LeaseClosedError as exc:
            raise _NotWritten(RefusalReason.LEASE_CLOSED, str(exc)) from exc
        self._on_records()
        return moved


def _wrong_pid(sn: str, info: device.InfoResponse, lease: CheckedLease) -> str:
    """Why a unit showing another PID than the certificate's original is refused, naming both PIDs."""
    cert, original, new = lease.cert.cert_no, lease.lease.original_pid, lease.lease.new_pid
    if info.firmware is device.Firmware.GENERAL:
        # General firmware: the PID the unit reports is the one its MCU holds, and the finished goods' data follows
        # it. Rebadging a unit whose MCU carries another product's PID would give that product's owner the data.
        return (
            f"{sn}: its MCU reports PID {info.pid}, but certificate {cert} rebadges {original} to {new}; the goods' "
            f"data follows the PID the MCU carries, so burn the MCU file of {original} first (or use a certificate "
            f"from {info.pid})"
        )
    return f"{sn} has PID {info.pid}, but the certificate rebadges {original}"


class _ReadBack(Enum):
    """What a unit read back shows about one attempt."""

    TOOK = "took"  # the new PID and this attempt's grant as its receipt: spent
    UNCHANGED = "unchanged"  # the old PID and not our receipt: it did not take the grant
    UNCLEAR = "unclear"  # anything else (e.g. the new PID without our receipt): the slot stays held

    @classmethod
    def of(cls, info: device.InfoResponse, attempt: Attempt) -> _ReadBack:
        if info.pid == attempt.new_pid and info.receipt == attempt.grant:
            return cls.TOOK
        if info.pid == attempt.old_pid and info.receipt != attempt.grant:
            return cls.UNCHANGED
        return cls.UNCLEAR
