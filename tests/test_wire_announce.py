"""Wi-Fi announcements: Tuya-style JSON datagrams, extra fields ignored, anything wrong refused by name."""

from __future__ import annotations

import json

import pytest

from wire.announce import MAX_ANNOUNCE_BYTES, parse_announce
from wire.errors import MalformedError

GOOD = {"sn": "SN-2026-000123", "productKey": "stock001", "ip": "192.168.4.23", "port": 6668, "version": "3.3"}


def datagram(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_round_trip() -> None:
    announce = parse_announce(datagram())
    assert (announce.sn, announce.pid, announce.ip, announce.port, announce.version) == tuple(GOOD.values())
    assert parse_announce(announce.to_bytes()) == announce
    assert json.loads(announce.to_bytes()) == GOOD


def test_extra_fields_are_ignored() -> None:
    announce = parse_announce(datagram(gwId="abc", active=2, encrypt=True, ability=0, token=None))
    assert announce.pid == "stock001"
    assert "gwId" not in json.loads(announce.to_bytes())


def test_version_is_optional() -> None:
    data = {k: v for k, v in GOOD.items() if k != "version"}
    assert parse_announce(json.dumps(data).encode()).version == ""


@pytest.mark.parametrize("pid", ["STOCK001", "stock01", "stock0001", "", 12345678, None])
def test_bad_product_key_is_refused(pid: object) -> None:
    with pytest.raises(MalformedError) as caught:
        parse_announce(datagram(productKey=pid))
    assert caught.value.field == "productKey"
    assert "productKey" in str(caught.value)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sn": "x"}, "sn"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "6668x"}, "port"),
        ({"ip": "1.2.3"}, "ip"),
        ({"version": "v" * 33}, "version"),
    ],
)
def test_bad_fields_are_refused_by_name(changes: dict[str, object], field: str) -> None:
    with pytest.raises(MalformedError) as caught:
        parse_announce(datagram(**changes))
    assert caught.value.field == field


def test_missing_field_is_refused_by_name() -> None:
    data = {k: v for k, v in GOOD.items() if k != "ip"}
    with pytest.raises(MalformedError) as caught:
        parse_announce(json.dumps(data).encode())
    assert caught.value.field == "ip"


@pytest.mark.parametrize("junk", [b"", b"not json", b"[1,2]", b"\xff\xfe", b'{"sn":', b"null"])
def test_junk_is_malformed(junk: bytes) -> None:
    with pytest.raises(MalformedError):
        parse_announce(junk)


def test_oversize_datagram_is_refused_before_parsing() -> None:
    big = datagram(padding="x" * MAX_ANNOUNCE_BYTES)
    with pytest.raises(MalformedError, match=f"over {MAX_ANNOUNCE_BYTES}"):
        parse_announce(big)
