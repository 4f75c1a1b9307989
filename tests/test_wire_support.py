"""The support matrix: every firmware over every radio, and the 8-character PID rule of BLE and Zigbee."""

from __future__ import annotations

import itertools

import pytest

from wire.device import Firmware, Radio
from wire.support import SUPPORTED, unsupported_reason

SHORT, LONG = "brand001", "brand00000000001"
EXPECTED = {
    (Firmware.OEM, Radio.WIFI): True,
    (Firmware.OEM, Radio.BLE): True,
    (Firmware.OEM, Radio.ZIGBEE): True,
    (Firmware.GENERAL, Radio.WIFI): True,
    (Firmware.GENERAL, Radio.BLE): False,
    (Firmware.GENERAL, Radio.ZIGBEE): False,
    (Firmware.CUSTOM, Radio.WIFI): True,
    (Firmware.CUSTOM, Radio.BLE): False,
    (Firmware.CUSTOM, Radio.ZIGBEE): False,
}


def test_matrix_covers_every_pair() -> None:
    assert set(EXPECTED) == set(itertools.product(Firmware, Radio))
    assert {(f, r) for f, radios in SUPPORTED.items() for r in radios} == {p for p, ok in EXPECTED.items() if ok}


@pytest.mark.parametrize(("firmware", "radio"), list(EXPECTED))
def test_each_pair_with_a_short_pid(firmware: Firmware, radio: Radio) -> None:
    reason = unsupported_reason(firmware, radio, SHORT)
    if EXPECTED[firmware, radio]:
        assert reason is None
    else:
        assert reason is not None
        assert firmware.value in reason
        assert radio.value in reason
        assert "wifi only" in reason


@pytest.mark.parametrize("radio", [Radio.BLE, Radio.ZIGBEE])
def test_ble_and_zigbee_need_an_8_character_pid(radio: Radio) -> None:
    reason = unsupported_reason(Firmware.OEM, radio, LONG)
    assert reason is not None
    assert "8 characters" in reason
    assert repr(LONG) in reason
    assert "16" in reason


@pytest.mark.parametrize("firmware", list(Firmware))
def test_wifi_takes_16_character_pids(firmware: Firmware) -> None:
    assert unsupported_reason(firmware, Radio.WIFI, LONG) is None


def test_firmware_rule_is_reported_before_the_pid_rule() -> None:
    reason = unsupported_reason(Firmware.GENERAL, Radio.BLE, LONG)
    assert reason is not None
    assert "general firmware" in reason
