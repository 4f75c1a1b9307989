"""A scan command signed by the platform (MQTT `cmd/scan`): rebadge this SN on this gateway, now.

The console's *Perform replacement* page sends one per SN. It is a COSE_Sign1 token signed by the platform's issuer
key, the key that signs its certificates, leases and acks, which every gateway pins already. The gateway scans only
a command that verifies with a pinned key, names the gateway itself, carries a time within `COMMAND_WINDOW_S` of
its clock, not before the agent started, and a nonce it has not seen in that window; anything else it answers with a
REFUSED scan event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from wire.errors import MalformedError, TokenError
from wire.ids import Sn
from wire.keys import KeyRing, SigningKey
from wire.lease_request import NONCE_BYTES, new_nonce
from wire.refusals import RefusalReason
from wire.times import utc_iso
from wire.tokens import UINT32_END, Kind, Payload, decode_payload, sign, sign1_payload, verify

SCAN_OP = "scan"
# How far a command's time may lie from the gateway's clock; its nonce is remembered this long on either side.
COMMAND_WINDOW_S = 120
MAX_REQUEST_ID = 64


class SignedScan(Payload):
    """Rebadge `sn` on gateway `gw`; `id` comes back in the scan event that answers it."""

    KIND: ClassVar[Kind] = Kind.SCAN_COMMAND
    gw: str = Field(alias="gw", min_length=1, max_length=64)
    sn: Sn = Field(alias="sn")
    id: str = Field(alias="id", min_length=1, max_length=MAX_REQUEST_ID)
    nonce: bytes = Field(alias="n", min_length=NONCE_BYTES, max_length=NONCE_BYTES)
    at: int = Field(alias="at", ge=0, lt=UINT32_END)


def sign_scan(key: SigningKey, gw: str, sn: str, request_id: str, at: int) -> bytes:
    """A scan command for gateway `gw`, signed by the platform's `key`, with a fresh nonce."""
    return sign(SignedScan(gw=gw, sn=sn, id=request_id, nonce=new_nonce(), at=at), key)


@dataclass(frozen=True)
class CommandRefusal(Exception):  # noqa: N818 - a refusal, carried as data
    """Why a scan command was not carried out: the event's reason and a message naming what to do."""

    reason: RefusalReason
    message: str
    sn: str = ""
    request_id: str | None = None

    def __str__(self) -> str:
        return self.message


class NonceWindow:
    """The nonces seen within the window, each kept until its command's time is outside it.

    They are kept in memory only, so a command timed before `not_before` (when the memory began: the agent's start)
    is refused as well: one the agent carried out before a restart cannot be carried out again after it (a replay,
    or the broker delivering it again).
    """

    def __init__(self, window_s: int = COMMAND_WINDOW_S, *, not_before: int = 0) -> None:
        self.window_s = window_s
        self.not_before = not_before
        self._seen: dict[bytes, int] = {}

    def remember(self, nonce: bytes, at: int, now: int) -> bool:
        """Record `nonce` (of a command timed `at`); False when it was seen already."""
        self._seen = {n: t for n, t in self._seen.items() if abs(now - t) <= self.window_s}
        if nonce in self._seen:
            return False
        self._seen[nonce] = at
        return True


def check_scan(token: bytes, ring: KeyRing, gw: str, now: int, seen: NonceWindow) -> SignedScan:
    """The verified command for gateway `gw` at time `now`, or CommandRefusal saying why not."""
    try:
        cmd = verify(token, SignedScan, ring)
    except TokenError as exc:
        sn, request_id = _claimed(token)
        raise CommandRefusal(
            RefusalReason.BAD_COMMAND,
            f"scan command refused: {exc}; only commands signed by the platform's issuer key are carried out",
            sn,
            request_id,
        ) from exc
    except MalformedError as exc:
        raise CommandRefusal(
            RefusalReason.BAD_COMMAND,
            f"scan command refused: {exc}; send a command signed by the platform (wire.scan_command)",
        ) from exc
    if cmd.gw != gw:
        raise CommandRefusal(
            RefusalReason.BAD_COMMAND,
            f"scan command refused: it is for gateway {cmd.gw}, this is gateway {gw}",
            cmd.sn,
            cmd.id,
        )
    if abs(now - cmd.at) > seen.window_s:
        raise CommandRefusal(
            RefusalReason.STALE_COMMAND,
            f"scan command refused: its time {utc_iso(cmd.at)} is {cmd.at - now:+d} s off this gateway's clock, "
            f"outside {seen.window_s} s; check the clocks of the gateway and the platform (NTP)",
            cmd.sn,
            cmd.id,
        )
    if cmd.at < seen.not_before:
        raise CommandRefusal(
            RefusalReason.STALE_COMMAND,
            f"scan command refused: its time {utc_iso(cmd.at)} is before this gateway's agent started "
            f"({utc_iso(seen.not_before)}), which forgot the commands it carried out; send the scan again from the "
            "console (if this repeats, check the clocks of the gateway and the platform: NTP)",
            cmd.sn,
            cmd.id,
        )
    if not seen.remember(cmd.nonce, cmd.at, now):
        raise CommandRefusal(
            RefusalReason.BAD_COMMAND,
            "scan command refused: its nonce was seen before (a replay); send the scan again from the console",
            cmd.sn,
            cmd.id,
        )
    return cmd


def _claimed(token: bytes) -> tuple[str, str | None]:
    """The SN and id a command whose signature failed claims, so the sender can match the refusal (never trusted)."""
    try:
        claimed = decode_payload(sign1_payload(token), SignedScan)
    except MalformedError:
        return "", None
    return claimed.sn, claimed.id
