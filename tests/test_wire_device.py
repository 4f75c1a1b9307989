"""Device messages: round trips, strict decoding by name, unknown operations, and request ids read from junk."""

from __future__ import annotations

from typing import Any

import pytest

from wire import device
from wire.cbor import dumps
from wire.device import Firmware, Radio, Status
from wire.errors import MalformedError

LEASE, GRANT = b"\xd2" + b"\x01" * 250, b"\xd2" + b"\x02" * 150


def test_status_codes_are_the_shared_enum() -> None:
    assert [s.value for s in Status] == [
        "ok",
        "bad_signature",
        "unknown_key",
        "wrong_sn",
        "wrong_pid",
        "slot_out_of_range",
        "unsupported_firmware",
        "already_done",
        "busy",
        "malformed",
    ]


def test_requests_round_trip() -> None:
    info = device.InfoRequest(id=7)
    rebadge = device.RebadgeRequest(id=8, lease=LEASE, grant=GRANT)
    assert device.decode_request(info.to_cbor()) == info
    assert device.decode_request(rebadge.to_cbor()) == rebadge
    assert dumps({"id": 7, "op": "info"}) == info.to_cbor()


@pytest.mark.parametrize("receipt", [None, GRANT])
def test_info_response_round_trip(receipt: bytes | None) -> None:
    response = device.InfoResponse(
        id=1,
        sn="SN0001",
        pid="stock001",
        firmware=Firmware.GENERAL,
        fw_version="2.1",
        radio=Radio.WIFI,
        receipt=receipt,
    )
    decoded = device.decode_info(response.to_cbor())
    assert decoded == response
    assert decoded.firmware is Firmware.GENERAL
    assert decoded.radio is Radio.WIFI


@pytest.mark.parametrize("status", list(Status))
def test_rebadge_response_round_trip(status: Status) -> None:
    response = device.RebadgeResponse(id=2**32 - 1, status=status, pid="brand001")
    assert device.decode_rebadge(response.to_cbor()).status is status


@pytest.mark.parametrize("op", ["reboot", "", None, 1, "INFO"])
def test_unknown_op_is_refused_naming_op(op: object) -> None:
    with pytest.raises(MalformedError, match="unknown operation") as caught:
        device.decode_request(dumps({"id": 1, "op": op}))
    assert caught.value.field == "op"
    assert repr(op) in str(caught.value)


def test_missing_op_is_an_unknown_op() -> None:
    with pytest.raises(MalformedError) as caught:
        device.decode_request(dumps({"id": 1}))
    assert caught.value.field == "op"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"id": -1, "op": "info"}, "id"),
        ({"id": 2**32, "op": "info"}, "id"),
        ({"id": True, "op": "info"}, "id"),
        ({"id": "1", "op": "info"}, "id"),
        ({"id": 1, "op": "info", "extra": 0}, "extra"),
        ({"id": 1, "op": "rebadge", "lease": LEASE}, "grant"),
        ({"id": 1, "op": "rebadge", "lease": b"", "grant": GRANT}, "lease"),
        ({"id": 1, "op": "rebadge", "lease": "text", "grant": GRANT}, "lease"),
    ],
)
def test_bad_request_is_refused_naming_the_field(message: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedError) as caught:
        device.decode_request(dumps(message))
    assert caught.value.field == field


def test_oversize_request_is_refused_before_decoding() -> None:
    with pytest.raises(MalformedError, match=f"over {device.MAX_MESSAGE_BYTES}"):
        device.decode_request(b"\xa0" * (device.MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"pid": "BRAND001"}, "pid"),
        ({"id": None}, "id"),
    ],
)
def test_bad_rebadge_response_is_refused_naming_the_field(message: dict[str, Any], field: str) -> None:
    good = device.RebadgeResponse(id=1, status=Status.OK, pid="brand001").model_dump(mode="python")
    with pytest.raises(MalformedError) as caught:
        device.decode_rebadge(dumps({**good, **message}))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("message", "field"),
    [({"firmware": "rom"}, "firmware"), ({"radio": "lora"}, "radio"), ({"fw_version": ""}, "fw_version")],
)
def test_bad_info_response_is_refused_naming_the_field(message: dict[str, Any], field: str) -> None:
    good = device.InfoResponse(
        id=1, sn="SN0001", pid="stock001", firmware=Firmware.OEM, fw_version="1", radio=Radio.BLE
    ).model_dump(mode="python")
    with pytest.raises(MalformedError) as caught:
        device.decode_info(dumps({**good, **message}))
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (dumps({"id": 5, "op": "reboot"}), 5),
        (dumps({"id": 5, "op": "rebadge", "lease": "not bytes"}), 5),
        (dumps({"id": 0}), 0),
        (dumps({"id": 2**32 - 1, "junk": [1, 2]}), 2**32 - 1),
        (dumps({"id": 2**32}), None),
        (dumps({"id": -1}), None),
        (dumps({"id": True}), None),
        (dumps({"id": "5"}), None),
        (dumps({"op": "info"}), None),
        (dumps([5]), None),
        (b"", None),
        (b"\xff\x00garbled\x13", None),
        (dumps({"id": 5}) + b"\x00", None),
    ],
)
def test_request_id_of_junk(data: bytes, expected: int | None) -> None:
    assert device.request_id_of(data) == expected


def test_a_malformed_answer_can_always_be_built_from_request_id_of() -> None:
    req_id = device.request_id_of(dumps({"id": 9, "op": "nope"}))
    assert req_id is not None
    answer = device.RebadgeResponse(id=req_id, status=Status.MALFORMED, pid="stock001")
    assert device.decode_rebadge(answer.to_cbor()).status is Status.MALFORMED
