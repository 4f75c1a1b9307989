"""Lease requests from the gateway over MQTT: the keeper that asks for slots before the line runs out
(`req/lease`), and the release of a lease this gateway closed (`req/release`).

Every request is signed by the gateway key with a fresh nonce and time. Every lease that comes back is checked
(issuer signatures, this gateway's key, validity window, certificate hash) before the journal stores it; a refusal,
a silence or a bad answer stores nothing, is logged, and is retried later with capped backoff. Nothing is released
on shutdown or expiry: slots stay with the gateway for offline work, and only a close hands unused ones back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease, check_bundle
from agent.config import AgentConfig, LeaseConfig
from agent.errors import AckTimeoutError, AgentError, BrokerUnreachableError, LeaseError, LeaseRefusedError
from agent.journal import Journal, LeaseClose
from agent.uplink import Uplink
from agent.uplink.records import wait_event
from agent.uplink.requests import Signed, signed_request
from mqtt_link import ReconnectPolicy
from wire.errors import WireError
from wire.keys import KeyRing
from wire.lease_request import AnswerCode, LeaseAnswer, LeaseRequest, Release, ReleaseAnswer
from wire.refusals import RefusalReason
from wire.tokens import Certificate, Checkpoint, sign, verify

log = logging.getLogger(__name__)

# `rebadge agent request-lease`: how long to wait for the broker before giving up.
CLI_CONNECT_TIMEOUT_S = 20.0

# What a person should do about each refusal (the CLI prints it; the keeper logs it).
ANSWER_ADVICE: dict[AnswerCode, str] = {
    AnswerCode.NO_SLOTS: "every slot of the certificate is leased or spent; wait for other gateways' leases to "
    "be closed or written off, or apply for a certificate with a larger quantity",
    AnswerCode.NOT_FOUND: "the platform has no such certificate for this gateway's organisation; check the "
    "certificate number (lease.cert_no or --cert)",
    AnswerCode.REFUSED: "the certificate is not approved, revoked or expired, or this gateway is revoked; ask the "
    "platform's administrator",
    AnswerCode.UNKNOWN_GATEWAY: "this gateway is not registered on the platform; enrol it with the gateway id and "
    "public key that 'rebadge agent init' prints",
    AnswerCode.MALFORMED: "the platform could not read the request; check that agent and platform versions match",
    AnswerCode.BAD_SIGNATURE: "the platform could not verify the request with this gateway's enrolled key; check "
    "that the gateway was enrolled with the public key 'rebadge agent init' prints",
    AnswerCode.REPLAYED: "the platform has seen this request before, or its time lies too far from the platform's "
    "clock; check the gateway's clock (NTP), then ask again",
    AnswerCode.FROZEN: "the platform has frozen this gateway because its journal was restored from a backup; ask a "
    "platform admin to reinstate the gateway",
    AnswerCode.PENDING: "the platform has not yet stored this gateway's journal up to the close; run the agent (it "
    "sends the records), then ask again",
    AnswerCode.ERROR: "the platform could not answer now; try again in a while",
}


class LeaseRequester(Protocol):
    """What the keeper needs of the uplink."""

    @property
    def connected(self) -> asyncio.Event:
        """Set while a session to the broker is up."""
        ...

    async def request_lease(self, signed: Signed[LeaseRequest], timeout: float) -> LeaseAnswer:
        """Send a signed lease request and return the platform's answer (or raise RequestTimeoutError)."""
        ...


class ReleaseRequester(Protocol):
    """What a release needs of the uplink."""

    async def request_release(self, signed: Signed[Release], timeout: float) -> ReleaseAnswer:
        """Send a signed release and return the platform's answer (or raise RequestTimeoutError)."""
        ...


def refusal(asked: str, answer: LeaseAnswer | ReleaseAnswer) -> LeaseRefusedError:
    """The error for an answer that is not what was asked for: names the code, the platform's message, what to do."""
    advice = ANSWER_ADVICE.get(answer.code, "see the platform's message")
    said = f" ({answer.message})" if answer.message else ""
    return LeaseRefusedError(
        f"the platform answered {answer.code.value} to {asked}{said}; {advice}", reason=answer.code.value
    )


async def request_lease(
    requester: LeaseRequester, journal: Journal, identity: GatewayIdentity, issuers: KeyRing, cert_no: str,
    slots: int, *, valid_s: int | None, timeout: float, clock: Callable[[], float] = time.time,
) -> CheckedLease:  # fmt: skip
    """Ask once for `slots` slots of `cert_no`; check the lease fully and store it, or raise (storing nothing)."""
    signed = signed_request(
        LeaseRequest, identity.key, gw=identity.gw, clock=clock, cert_no=cert_no, slots=slots, valid_s=valid_s
    )
    request_id = signed.request.id
    log.info("certificate %s: asking the platform for %d slots (request %s)", cert_no, slots, request_id)
    answer = await requester.request_lease(signed, timeout)
    if not answer.ok:
        raise refusal(f"a request for {slots} slots of certificate {cert_no}", answer)
    if answer.bundle is None:
        why = f"the platform answered ok to request {request_id} but sent no lease"
        raise LeaseError(why, reason=RefusalReason.MALFORMED)
    checked = check_bundle(answer.bundle, issuers, identity.public, clock())
    if checked.lease.cert_no != cert_no:
        raise LeaseError(
            f"asked for certificate {cert_no} but lease {checked.lease.lease_id} is of {checked.lease.cert_no}",
            reason=RefusalReason.CERTIFICATE_MISMATCH,
        )
    await journal.add_lease(checked.lease, checked.lease_token, checked.cert, checked.cert_token)
    lease = checked.lease
    log.info("certificate %s: lease %s stored, slots [%d, %d) (%d of %d asked for)",
             cert_no, lease.lease_id, lease.slot_lo, lease.slot_hi, lease.size, slots)  # fmt: skip
    return checked


class TopUp(StrEnum):
    """What one look at the slots left came to."""

    NOT_NEEDED = "not_needed"
    OBTAINED = "obtained"
    FAILED = "failed"


class LeaseKeeper:
    """Keeps certificate `cert_no` supplied: asks for `request_slots` more when `low_water` or fewer are left."""

    def __init__(
        self, config: LeaseConfig, cert_no: str | None, journal: Journal, requester: LeaseRequester,
        identity: GatewayIdentity, issuers: KeyRing, *, clock: Callable[[], float] = time.time,
        on_lease: Callable[[CheckedLease], None] | None = None,
    ) -> None:  # fmt: skip
        self.config = config
        self.cert_no = cert_no
        self._journal = journal
        self._requester = requester
        self._identity = identity
        self._issuers = issuers
        self._clock = clock
        self._on_lease = on_lease  # e.g. the service republishes the certificate's progress (lease size grew)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one request at a time, whoever asks
        self.requests = 0  # requests sent, for tests and health

    def wake(self) -> None:
        """Slots were used (the line wrote to the journal): look again soon."""
        self._wake.set()

    async def run(self) -> None:
        """Top up until cancelled; returns at once when automatic requests are off or no certificate is set."""
        if not self.config.auto_request or self.cert_no is None:
            log.info("automatic lease requests are off (%s)",
                     "lease.auto_request = false" if not self.config.auto_request
                     else "no lease.cert_no or line.certificate set")  # fmt: skip
            return
        backoff = ReconnectPolicy(self.config.retry_min_s, self.config.retry_max_s)
        while True:
            self._wake.clear()
            if not self._requester.connected.is_set():
                await wait_event(self._requester.connected, self.config.check_interval_s)
                continue
            outcome = await self.top_up()
            if outcome is TopUp.OBTAINED:
                backoff.reset()
                continue  # the platform may have granted fewer than asked: look again at once
            if outcome is TopUp.NOT_NEEDED:
                backoff.reset()
                await wait_event(self._wake, self.config.check_interval_s)
                continue
            delay = backoff.next_delay()
            log.info("certificate %s: asking for slots again in %.1f s", self.cert_no, delay)
            await asyncio.sleep(delay)  # scans must not cut a backoff short, so no wake here

    async def top_up(self) -> TopUp:
        """Ask once if the certificate runs low; a refusal, silence or bad answer is logged, never raised."""
        cert_no = self.cert_no
        if cert_no is None or self._journal.frozen is not None:
            return TopUp.NOT_NEEDED  # a frozen gateway gets no lease and could spend none
        async with self._lock:
            try:
                slots = await self.slots_wanted(cert_no)
                if slots == 0:
                    return TopUp.NOT_NEEDED
                self.requests += 1
                checked = await request_lease(
                    self._requester, self._journal, self._identity, self._issuers, cert_no, slots,
                    valid_s=self.config.valid_s, timeout=self.config.request_timeout_s, clock=self._clock,
                )  # fmt: skip
            except LeaseRefusedError as exc:
                log.warning("certificate %s: no lease: %s", cert_no, exc)
            except LeaseError as exc:
                # An error, not a warning: a lease that fails its checks is forged, damaged or not ours.
                log.error("certificate %s: refused the lease the platform sent (%s): %s; nothing stored",  # noqa: TRY400
                          cert_no, exc.reason, exc)  # fmt: skip
            except AgentError as exc:  # no answer, connection lost, journal refused the lease
                log.warning("certificate %s: no lease: %s", cert_no, exc)
            else:
                if self._on_lease is not None:
                    self._on_lease(checked)
                return TopUp.OBTAINED
            return TopUp.FAILED

    async def slots_wanted(self, cert_no: str) -> int:
        """How many slots to ask for now: 0 while more than `low_water` are left or the gateway holds them all."""
        counts = await self._journal.counts(cert_no)
        if counts.remaining > self.config.low_water:
            return 0
        unleased = await self._unleased(cert_no)
        if unleased == 0:
            log.debug("certificate %s: this gateway holds every slot; nothing to ask for", cert_no)
            return 0
        return self.config.request_slots if unleased is None else min(self.config.request_slots, unleased)

    async def _unleased(self, cert_no: str) -> int | None:
        """Slots of the certificate outside this gateway's active leases; None when no lease tells the quantity."""
        leases = await self._journal.leases(cert_no)
        if not leases:
            return None
        try:
            quantity = verify(leases[0].cert_token, Certificate, self._issuers).quantity
        except WireError:
            return None  # the issuer key was unpinned since: let the platform say what is left
        return max(quantity - sum(lease.size for lease in leases), 0)


def keeper_certificate(config: AgentConfig) -> str | None:
    """The certificate the keeper supplies: lease.cert_no, else line.certificate."""
    return config.lease.cert_no or config.line.certificate


@asynccontextmanager
async def cli_uplink(
    config: AgentConfig, journal: Journal, identity: GatewayIdentity, issuers: KeyRing
) -> AsyncIterator[Uplink]:
    """An uplink with the agent's MQTT settings, connected, for one command (the agent must not run meanwhile)."""

    def sign_checkpoint(seq: int, head: bytes) -> bytes:
        return sign(Checkpoint(gw=identity.gw, seq=seq, head=head, at=int(time.time())), identity.key)

    uplink = Uplink(
        config.mqtt, identity.gw, journal, sign_checkpoint=sign_checkpoint, issuers=issuers,
        name=config.gateway.name,
    )  # fmt: skip
    task = asyncio.create_task(uplink.run(), name=f"uplink {identity.gw}: command")
    try:
        try:
            await uplink.wait_connected(CLI_CONNECT_TIMEOUT_S)
        except TimeoutError as exc:
            raise BrokerUnreachableError(
                f"could not reach the MQTT broker {config.mqtt.host}:{config.mqtt.port} within "
                f"{CLI_CONNECT_TIMEOUT_S:.0f} s; check [mqtt] in the config and that the broker runs"
            ) from exc
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def request_once(
    config: AgentConfig, journal: Journal, identity: GatewayIdentity, issuers: KeyRing, cert_no: str, slots: int
) -> CheckedLease:
    """Connect with the agent's MQTT settings, ask for one lease, check and store it, disconnect."""
    async with cli_uplink(config, journal, identity, issuers) as uplink:
        return await request_lease(
            uplink, journal, identity, issuers, cert_no, slots,
            valid_s=config.lease.valid_s, timeout=config.lease.request_timeout_s,
        )  # fmt: skip


# -- releasing a closed lease -----------------------------------------------------------------------------------


async def ask_release(
    requester: ReleaseRequester, identity: GatewayIdentity, close: LeaseClose, *, timeout: float,
    clock: Callable[[], float] = time.time,
) -> ReleaseAnswer:  # fmt: skip
    """Ask what came back of a closed lease: `ok` (with `returned`) or `pending`; any other answer raises."""
    lease_id = close.lease.lease_id
    signed = signed_request(Release, identity.key, gw=identity.gw, clock=clock, lease_id=lease_id, seq=close.seq)
    log.info("lease %s: asking the platform what came back of the close at seq %d (request %s)",
             lease_id, close.seq, signed.request.id)  # fmt: skip
    answer = await requester.request_release(signed, timeout)
    if answer.code not in (AnswerCode.OK, AnswerCode.PENDING):
        raise refusal(f"the release of lease {lease_id} (closed at seq {close.seq})", answer)
    return answer


@dataclass(frozen=True)
class Released:
    """A lease closed in the journal, and the platform's answer (None when the broker was not reachable)."""

    close: LeaseClose
    answer: ReleaseAnswer | None


async def release_once(
    config: AgentConfig, journal: Journal, identity: GatewayIdentity, issuers: KeyRing, lease_id: str, *,
    reason: str, force: bool,
) -> Released:  # fmt: skip
    """Close the lease in the journal; then, if the broker answers, send the records and the signed release."""
    close = await journal.close_lease(lease_id, reason, force=force)
    timeout = config.lease.request_timeout_s
    try:
        async with cli_uplink(config, journal, identity, issuers) as uplink:
            # The platform answers `pending` until it has ingested the chain up to the close: wait for its ack.
            with contextlib.suppress(AckTimeoutError):
                await uplink.wait_acked(close.seq, timeout)
            return Released(close, await ask_release(uplink, identity, close, timeout=timeout))
    except BrokerUnreachableError as exc:
        log.warning("lease %s closed at seq %d, but not sent: %s", lease_id, close.seq, exc)
        return Released(close, None)
