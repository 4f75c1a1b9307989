"""The rebadge transaction (DESIGN §1 steps 3-6): the only place that orders the steps.

find -> info -> checks -> reserve (durable) -> grant -> send -> read back -> confirm | release | in doubt.
A slot is spent only by a reservation; every refusal before it spends nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease, check_lease, check_window
from agent.config import DebugConfig, LineConfig
from agent.errors import DiskFullError, LeaseError, RadioError
from agent.journal import Attempt, Journal
from agent.radios.base import DeviceLink, Radio
from wire import device
from wire.device import Status
from wire.errors import MalformedError
from wire.ids import check_sn
from wire.keys import KeyRing
from wire.support import unsupported_reason
from wire.tokens import Grant, sign
from wire.topics import ProgressPayload, Result, ScanEvent

log = logging.getLogger(__name__)

EventSink = Callable[[ScanEvent], Awaitable[None]]


class Refused(Exception):  # noqa: N818 - an outcome, not a fault
    """A scan ends refused; nothing was spent (or a reservation was released)."""

    def __init__(self, reason: str, message: str) -> None:
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

    def event(self, result: Result, reason: str = "", message: str = "") -> ScanEvent:
        return ScanEvent(
            sn=self.sn, result=result, reason=reason, message=message, radio=self.radio, old_pid=self.old_pid,
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
            return await self._finish(scan, scan.event(Result.REFUSED, "bad_sn", str(exc)), counted=False)
        if sn in self._busy:
            msg = f"{sn} is being rebadged already; wait for its result"
            return await self._finish(scan, scan.event(Result.REFUSED, "busy", msg), counted=False)
        self._busy.add(sn)
        try:
            async with self._slots:
                event = await self._run(scan)
        finally:
            self._busy.discard(sn)
        return await self._finish(scan, event, counted=event.result is Result.REFUSED)

    async def _finish(self, scan: _Scan, event: ScanEvent, *, counted: bool) -> ScanEvent:
        if counted and scan.cert_no:
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
            lease = await self._lease_for_scan(scan)
            done = await self.journal.confirmed_attempt(scan.sn, lease.lease.new_pid)
            if done is not None:
                scan.slot, scan.lease_id, scan.old_pid = done.slot, done.lease_id, done.old_pid
                msg = f"{scan.sn} was rebadged to {done.new_pid} already (slot {done.slot}); nothing spent"
                return scan.event(Result.ALREADY_REBADGED, "already_rebadged", msg)
            async with AsyncExitStack() as stack:
                link = await self._find(scan, stack)
                return await self._with_device(scan, link, lease)
        except Refused as refusal:
            return scan.event(Result.REFUSED, refusal.reason, refusal.message)

    async def _lease_for_scan(self, scan: _Scan) -> CheckedLease:
        now = self._clock()
        held = await self.journal.leases(active_only=False)
        active = [lease for lease in held if lease.exp > now]
        cert_nos = sorted({lease.cert_no for lease in active})
        wanted = self.config.certificate
        # A certificate whose leases all expired must say so, not "no lease".
        expired = {lease.cert_no for lease in held} - set(cert_nos)
        if (wanted in expired) or (wanted is None and not cert_nos and expired):
            names = wanted or ", ".join(sorted(expired))
            raise Refused("lease_expired", f"every lease of certificate {names} has expired; request a new one")
        if wanted is not None and wanted not in cert_nos:
            raise Refused("no_lease", f"no active lease for certificate {wanted}; load one or request one")
        if wanted is None and len(cert_nos) != 1:
            if not cert_nos:
                raise Refused("no_lease", "this gateway holds no active lease; load a lease file or request one")
            raise Refused("no_lease", f"several certificates are active ({', '.join(cert_nos)}); set line.certificate")
        scan.cert_no = wanted or cert_nos[0]
        first = next(lease for lease in active if lease.cert_no == scan.cert_no)
        checked = self._checked_lease(first.lease_token, first.cert_token, now)
        scan.new_pid = checked.lease.new_pid
        return checked

    def _checked_lease(self, lease_token: bytes, cert_token: bytes, now: float) -> CheckedLease:
        """Signatures and bindings are checked once per token pair; the validity window on every scan."""
        try:
            checked = self._verified.get((lease_token, cert_token))
            if checked is None:
                checked = check_lease(lease_token, cert_token, self.issuers, self.identity.public, now)
                self._verified[lease_token, cert_token] = checked
            check_window(checked.lease, checked.cert, now)
        except LeaseError as exc:
            raise Refused(exc.reason, str(exc)) from exc
        return checked

    async def _find(self, scan: _Scan, stack: AsyncExitStack) -> DeviceLink:
        known = [r for r in self.radios if await r.knows(scan.sn)]
        errors: list[str] = []
        # A radio that has seen the SN is asked alone first: asking the others makes them probe their own goods.
        # Otherwise every radio is asked at once, so a radio that cannot find the unit (or is slow) costs the
        # scan no more than the one that can.
        for radios in (known, [r for r in self.radios if r not in known]):
            found = await self._first_link(scan.sn, radios, errors) if radios else None
            if found is not None:
                radio, link = found
                stack.push_async_callback(link.close)
                scan.radio = radio.kind.value
                return link
        raise Refused("not_found", f"no device {scan.sn} answered ({'; '.join(errors) or 'no radio configured'})")

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
            raise Refused("device_error", f"{scan.sn}: could not read the device: {exc}") from exc
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
        """An earlier attempt on this SN is open: the device's receipt says how it ended."""
        scan.slot, scan.lease_id = attempt.slot, attempt.lease_id
        if info.pid == attempt.new_pid and info.receipt == attempt.grant:
            await self.journal.confirm(attempt.id)
            self._on_records()
            scan.old_pid = attempt.old_pid
            msg = f"{scan.sn} had taken {attempt.new_pid} (slot {attempt.slot}); the earlier attempt is confirmed"
            return scan.event(Result.CONFIRMED, "settled", msg)
        await self.journal.release(attempt.id, "rescan: the device did not apply the earlier grant")
        self._on_records()
        log.info("%s: earlier attempt on slot %d released: device did not apply it", scan.sn, attempt.slot)
        scan.slot, scan.lease_id = None, ""
        return None

    def _check_device(self, scan: _Scan, info: device.InfoResponse, lease: CheckedLease) -> None:
        new_pid, original = lease.lease.new_pid, lease.lease.original_pid
        if info.pid == new_pid:
            raise Refused("already_rebadged_elsewhere", f"{scan.sn} shows {new_pid} already, without our receipt")
        why = unsupported_reason(info.firmware, info.radio, new_pid)
        if why is not None:
            raise Refused("unsupported_firmware", f"{scan.sn}: {why}")
        if info.radio.value not in lease.cert.protocols:
            raise Refused(
                "protocol_not_certified",
                f"{scan.sn}: certificate {lease.cert.cert_no} does not cover {info.radio.value} goods",
            )
        if info.pid != original:
            raise Refused("wrong_pid", f"{scan.sn} has PID {info.pid}, but the certificate rebadges {original}")

    async def _reserve(self, scan: _Scan, info: device.InfoResponse, lease: CheckedLease) -> Attempt:
        new_pid = lease.lease.new_pid

        def sign_grant(lease_id: str, slot: int) -> bytes:
            grant = Grant(lease_id=lease_id, slot=slot, sn=scan.sn, new_pid=new_pid, iat=int(self._clock()))
            return sign(grant, self.identity.key)

        try:
            attempt = await self.journal.reserve(scan.cert_no, scan.sn, info.pid, new_pid, scan.radio, sign_grant)
        except DiskFullError as exc:
            raise Refused("disk_full", str(exc)) from exc
        if attempt is None:
            counts = await self.journal.counts(scan.cert_no)
            raise Refused(
                "quota_exhausted",
                f"quota exhausted: all {counts.lease_size} slots of {scan.cert_no} are used "
                f"({counts.confirmed} confirmed, {counts.in_doubt} in doubt)",
            )
        self._on_records()
        scan.slot, scan.lease_id = attempt.slot, attempt.lease_id
        if self.debug.pause_after_reserve_s:
            await asyncio.sleep(self.debug.pause_after_reserve_s)
        return attempt

    async def _send(self, scan: _Scan, link: DeviceLink, lease: CheckedLease, attempt: Attempt) -> ScanEvent:
        lease_token = await self._lease_token(attempt.lease_id, lease)
        try:
            answer = await link.rebadge(lease_token, attempt.grant, self.config.rebadge_timeout_s)
        except RadioError as exc:
            return await self._after_link_error(scan, attempt, exc)
        if self.debug.pause_after_send_s:
            await asyncio.sleep(self.debug.pause_after_send_s)
        if answer.status not in (Status.OK, Status.ALREADY_DONE):
            await self.journal.release(attempt.id, f"device refused: {answer.status.value}")
            self._on_records()
            raise Refused(answer.status.value, f"{scan.sn}: the device refused the rebadge ({answer.status.value})")
        return await self._read_back(scan, link, attempt)

    async def _lease_token(self, lease_id: str, lease: CheckedLease) -> bytes:
        if lease_id == lease.lease.lease_id:
            return lease.lease_token
        for stored in await self.journal.leases(lease.cert.cert_no, active_only=False):
            if stored.lease_id == lease_id:
                return stored.lease_token
        raise Refused("no_lease", f"lease {lease_id} of the reservation is gone from the journal")

    async def _after_link_error(self, scan: _Scan, attempt: Attempt, exc: RadioError) -> ScanEvent:
        if not exc.sent:
            await self.journal.release(attempt.id, f"not sent: {exc}")
            self._on_records()
            raise Refused("device_error", f"{scan.sn}: the rebadge did not reach the device ({exc}); scan it again")
        await self.journal.mark_in_doubt(attempt.id, f"no answer after sending: {exc}")
        self._on_records()
        msg = f"{scan.sn}: no answer after sending; slot {attempt.slot} is held. Scan this unit again to settle it"
        return scan.event(Result.IN_DOUBT, "no_answer", msg)

    async def _read_back(self, scan: _Scan, link: DeviceLink, attempt: Attempt) -> ScanEvent:
        try:
            info = await self._info(scan, link, sent=True)
        except RadioError as exc:
            await self.journal.mark_in_doubt(attempt.id, f"read-back failed: {exc}")
            self._on_records()
            msg = f"{scan.sn}: the device accepted but could not be read back; scan it again to settle it"
            return scan.event(Result.IN_DOUBT, "read_back_failed", msg)
        if info.pid == attempt.new_pid and info.receipt == attempt.grant:
            await self.journal.confirm(attempt.id)
            self._on_records()
            return scan.event(Result.CONFIRMED, "", f"{scan.sn}: {attempt.old_pid} -> {attempt.new_pid}")
        await self.journal.mark_in_doubt(attempt.id, f"read-back shows {info.pid} without our receipt")
        self._on_records()
        msg = f"{scan.sn}: device accepted but reads back {info.pid}; scan it again to settle it"
        return scan.event(Result.IN_DOUBT, "read_back_mismatch", msg)
