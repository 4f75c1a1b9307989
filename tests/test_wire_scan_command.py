"""The platform's signed scan command: what the gateway accepts and why it refuses the rest."""

from __future__ import annotations

import pytest

from wire.keys import KeyRing, SigningKey
from wire.refusals import RefusalReason
from wire.scan_command import COMMAND_WINDOW_S, CommandRefusal, NonceWindow, check_scan, sign_scan

NOW = 1_800_000_000
PLATFORM = SigningKey.generate()
RING = KeyRing([PLATFORM.public])


def refusal(token: bytes, *, gw: str = "gw-1", now: int = NOW, seen: NonceWindow | None = None) -> CommandRefusal:
    with pytest.raises(CommandRefusal) as caught:
        check_scan(token, RING, gw, now, seen or NonceWindow())
    return caught.value


def test_a_fresh_command_for_this_gateway_verifies_once() -> None:
    seen = NonceWindow()
    token = sign_scan(PLATFORM, "gw-1", "SN-0001", "req-1", NOW)
    cmd = check_scan(token, RING, "gw-1", NOW + COMMAND_WINDOW_S, seen)
    assert (cmd.gw, cmd.sn, cmd.id) == ("gw-1", "SN-0001", "req-1")
    again = refusal(token, now=NOW + 1, seen=seen)
    assert again.reason is RefusalReason.BAD_COMMAND
    assert "seen before" in again.message
    assert again.request_id == "req-1"


def test_two_commands_for_the_same_unit_have_their_own_nonces() -> None:
    seen = NonceWindow()
    for request_id in ("a", "b"):
        check_scan(sign_scan(PLATFORM, "gw-1", "SN-0001", request_id, NOW), RING, "gw-1", NOW, seen)


def test_a_nonce_is_forgotten_only_once_its_command_is_outside_the_window() -> None:
    seen = NonceWindow(window_s=10)
    assert seen.remember(b"n" * 16, NOW, NOW)
    assert not seen.remember(b"n" * 16, NOW, NOW + 10)
    assert seen.remember(b"n" * 16, NOW, NOW + 11)  # by then the command's time itself is refused


def test_a_command_from_before_the_agent_started_is_refused_though_in_the_window() -> None:
    # The nonces seen are kept in memory: after a restart, only the start time tells a replay from a new command.
    token = sign_scan(PLATFORM, "gw-1", "SN-0001", "before", NOW - 1)
    got = refusal(token, seen=NonceWindow(not_before=NOW))
    assert got.reason is RefusalReason.STALE_COMMAND
    assert "before this gateway's agent started (2027-01-15T08:00:00Z)" in got.message
    assert got.request_id == "before"
    assert check_scan(sign_scan(PLATFORM, "gw-1", "SN-0001", "r", NOW), RING, "gw-1", NOW, NonceWindow(not_before=NOW))


@pytest.mark.parametrize("skew", [COMMAND_WINDOW_S + 1, -COMMAND_WINDOW_S - 1])
def test_a_command_outside_the_window_is_stale(skew: int) -> None:
    got = refusal(sign_scan(PLATFORM, "gw-1", "SN-0001", "r", NOW + skew))
    assert got.reason is RefusalReason.STALE_COMMAND
    assert f"{skew:+d} s off" in got.message
    assert got.sn == "SN-0001"


def test_another_gateways_command_is_refused_naming_both() -> None:
    got = refusal(sign_scan(PLATFORM, "gw-2", "SN-0001", "r", NOW))
    assert got.reason is RefusalReason.BAD_COMMAND
    assert "for gateway gw-2, this is gateway gw-1" in got.message


def test_a_forged_command_is_refused_with_what_it_claimed() -> None:
    got = refusal(sign_scan(SigningKey.generate(), "gw-1", "SN-0001", "forged", NOW))
    assert got.reason is RefusalReason.BAD_COMMAND
    assert "unknown key" in got.message
    assert (got.sn, got.request_id) == ("SN-0001", "forged")


@pytest.mark.parametrize("payload", [b"", b'{"sn": "SN-0001"}', b"\xd2\x84"])
def test_unsigned_payloads_are_refused_claiming_nothing(payload: bytes) -> None:
    got = refusal(payload)
    assert got.reason is RefusalReason.BAD_COMMAND
    assert (got.sn, got.request_id) == ("", None)
    assert "signed by the platform" in got.message


def test_the_platform_signs_only_a_valid_sn() -> None:
    with pytest.raises(ValueError, match="sn"):
        sign_scan(PLATFORM, "gw-1", "SN 0001", "r", NOW)
