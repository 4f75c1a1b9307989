"""`rebadge agent rotate-key`: a new gateway key, introduced by the old one, switched to once the platform accepts.

The gateway keeps its id; its journal goes on in the same chain, signed by the new key after the rotation point
(the journal head the introduction names). Crash-safe: the only switch-over is one rename of `gateway.key.next`
over `gateway.key`. Before it the old key is in force and a run of `rotate-key` finishes the rotation (asking the
platform first whether it took the new key already); after it the new key is, and the agent's start moves the new
key's client certificate and PEM key into place. docs/enrolment.md, "Key rotation".
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.certs.identity import (
    KEY_FILE,
    NEXT_KEY_FILE,
    GatewayIdentity,
    new_key_file,
    read_key,
    write_gateway_id,
)
from agent.certs.renewal import CERT_MODE
from agent.config import AgentConfig, TlsConfig
from agent.errors import AckTimeoutError, AgentError
from agent.journal import Journal, LeaseClose
from agent.leases import ANSWER_ADVICE, cli_uplink
from agent.service import open_journal, pinned_issuers
from agent.uplink import Uplink
from agent.uplink.requests import Signed, signed_request
from durable.files import replace_durably, write_atomically
from wire import x509 as wx
from wire.key_rotation import KeyIntroduction, possession
from wire.keys import KeyRing, SigningKey
from wire.lease_request import AnswerCode, RenewAnswer, RenewRequest

log = logging.getLogger(__name__)

ROTATION_REASON = "key rotation"
PEM_KEY_MODE = 0o600
NEXT_SUFFIX = ".next"


class KeyRotationError(AgentError):
    """The rotation did not finish; the message says where it stands and what to do."""


@dataclass(frozen=True)
class Rotated:
    """A finished rotation: the gateway, its old and new kid, the last seq the old key signs, the leases closed."""

    gw: str
    old_kid: str
    new_kid: str
    seq: int | None  # None when an earlier run's introduction was accepted (the platform's key history has it)
    closed: tuple[LeaseClose, ...]
    resumed: bool  # the platform had accepted the introduction of an earlier, interrupted run


def introduction(
    identity: GatewayIdentity, new: SigningKey, seq: int, head: bytes, *, clock: Callable[[], float] = time.time
) -> Signed[KeyIntroduction]:
    """The introduction of `new`, signed by the current key and counter-signed by `new`, at journal head seq/head."""
    gw = identity.gw
    pop = possession(new, gw=gw, old_kid=identity.key.kid, seq=seq, head=head)
    return signed_request(
        KeyIntroduction, identity.key, gw=gw, clock=clock, new_key=new.public.raw, seq=seq, head=head,
        csr=wx.gateway_csr(new, gw), possession=pop,
    )  # fmt: skip


def pending_rotation(state_dir: Path) -> bool:
    """Whether a new key waits to be switched to (an interrupted `rotate-key`)."""
    return (state_dir / NEXT_KEY_FILE).exists()


def _next_cert(tls: TlsConfig) -> Path:
    return tls.cert_file.with_name(tls.cert_file.name + NEXT_SUFFIX)


def finish_switch(config: AgentConfig, key: SigningKey) -> bool:
    """After the switch-over: put the new key's certificate and PEM key in place if a crash left them (and say so)."""
    tls = config.mqtt.tls
    if tls is None:
        return False
    pending = _next_cert(tls)
    if not pending.exists():
        return False
    try:
        public = x509.load_pem_x509_certificate(pending.read_bytes()).public_key()
    except ValueError:
        public = None
    if not isinstance(public, Ed25519PublicKey) or public.public_bytes_raw() != key.public.raw:
        return False  # for a key not switched to (yet): a resumed rotation writes it again
    write_atomically(tls.key_file, wx.gateway_key_pem(key), PEM_KEY_MODE)
    replace_durably(pending, tls.cert_file)
    log.info("key rotation: %s and %s now hold the new key %s", tls.cert_file, tls.key_file, key.kid.hex())
    return True


def settle_rotation(config: AgentConfig) -> None:
    """At the agent's start: finish a switch-over a crash interrupted; say so when a rotation is pending."""
    state = config.gateway.state_dir
    identity = GatewayIdentity.load_or_create(state)
    if finish_switch(config, identity.key):
        log.warning("key rotation: finished moving the new key's TLS files into place after an interruption")
    if pending_rotation(state):
        log.warning(
            "a key rotation is pending (%s exists): the agent runs with key %s; stop it and run "
            "'rebadge agent rotate-key' to finish the rotation", state / NEXT_KEY_FILE, identity.key.kid.hex(),
        )  # fmt: skip


def switch_over(config: AgentConfig, new: SigningKey, certificate: bytes | None) -> None:
    """The switch-over, after the platform accepted `new`: certificate beside, the key rename, then the TLS files."""
    state = config.gateway.state_dir
    tls = config.mqtt.tls
    if tls is not None:
        if certificate is None:
            raise KeyRotationError(
                "the platform accepted the new key but sent no client certificate for it; nothing switched yet: "
                "run 'rebadge agent rotate-key' again against a platform with its CA"
            )
        write_atomically(_next_cert(tls), certificate, CERT_MODE)
    replace_durably(state / NEXT_KEY_FILE, state / KEY_FILE)  # the one switch-over point
    finish_switch(config, new)


def _refusal(what: str, answer: RenewAnswer) -> KeyRotationError:
    advice = {
        AnswerCode.RETIRED_KEY: "this gateway's current key was already retired by a rotation this gateway did not "
        "finish: its key may be stolen; have the gateway revoked and enrol a new one",
        AnswerCode.PENDING: "the platform has not stored the journal up to its head yet; run rotate-key again",
        AnswerCode.REFUSED: "see the platform's message",
    }.get(answer.code) or ANSWER_ADVICE.get(answer.code, "see the platform's message")
    return KeyRotationError(
        f"the platform answered {answer.code.value} to {what} ({answer.message}); {advice}. The old key stays in "
        "force; run 'rebadge agent rotate-key' again when that is settled"
    )


async def _accepted_already(uplink: Uplink, gw: str, new: SigningKey, timeout: float) -> RenewAnswer | None:
    """Ask, signed by the new key, for its certificate: `ok` means an earlier introduction was accepted."""
    probe = signed_request(RenewRequest, new, gw=gw, csr=wx.gateway_csr(new, gw))
    answer = await uplink.request_renew(probe, timeout)
    if answer.ok:
        return answer
    if answer.code is AnswerCode.BAD_SIGNATURE:  # the platform does not know the new key
        return None
    raise _refusal("a renewal signed by the new key", answer)


async def _introduce(
    config: AgentConfig, journal: Journal, identity: GatewayIdentity, issuers: KeyRing, new: SigningKey, resumed: bool
) -> tuple[RenewAnswer, int | None, bool]:
    seq, head = await journal.head()
    timeout = config.lease.request_timeout_s
    async with cli_uplink(config, journal, identity, issuers) as uplink:
        # First, as the old key's records after an accepted introduction are never acked: did an earlier run finish?
        answer = await _accepted_already(uplink, identity.gw, new, timeout) if resumed else None
        if answer is not None:
            return answer, None, True
        try:
            await uplink.wait_acked(seq, timeout)
        except AckTimeoutError as exc:
            raise KeyRotationError(
                f"the platform has not acknowledged the journal up to its head (seq {seq}): {exc}. The old key stays "
                "in force; run the agent until its records are acknowledged, then rotate-key again"
            ) from exc
        answer = await uplink.request_rotate(introduction(identity, new, seq, head), timeout)
        if not answer.ok:
            raise _refusal(f"the introduction of key {new.kid.hex()} at seq {seq}", answer)
        return answer, seq, False


async def rotate_once(
    config: AgentConfig, journal: Journal, identity: GatewayIdentity, issuers: KeyRing, *, force: bool = False
) -> Rotated:
    """Close the old key's leases, introduce a new key over MQTT and switch to it once the platform accepted it."""
    state = config.gateway.state_dir
    if journal.frozen is not None:
        raise KeyRotationError("the platform has frozen this gateway; a platform admin must reinstate it first")
    closed = tuple(
        [
            await journal.close_lease(lease.lease_id, ROTATION_REASON, force=force)
            for lease in await journal.leases(active_only=False)
            if lease.closed_seq is None
        ]
    )
    await asyncio.to_thread(write_gateway_id, state, identity.gw)
    resumed = pending_rotation(state)
    next_path = state / NEXT_KEY_FILE
    new = await asyncio.to_thread(read_key if resumed else new_key_file, next_path)
    answer, seq, accepted_before = await _introduce(config, journal, identity, issuers, new, resumed)
    await asyncio.to_thread(switch_over, config, new, answer.certificate)
    log.warning("gateway %s: switched from key %s to key %s (the old one signs up to seq %s)",
                identity.gw, identity.key.kid.hex(), new.kid.hex(), seq)  # fmt: skip
    return Rotated(identity.gw, identity.key.kid.hex(), new.kid.hex(), seq, closed, accepted_before)


async def rotate_key(config: AgentConfig, *, force: bool = False) -> Rotated:
    """`rebadge agent rotate-key`: finish an interrupted switch-over, then rotate (the agent must be stopped)."""
    await asyncio.to_thread(settle_rotation, config)
    identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
    journal = await open_journal(config, identity)
    try:
        return await rotate_once(config, journal, identity, pinned_issuers(config), force=force)
    finally:
        await journal.close()
