"""PIDs and SNs: what is accepted, and refusals that name the field and the value."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from wire.errors import MalformedError
from wire.ids import PID_ALPHABET, SHORT_PID_LEN, Pid, Sn, check_pid, check_sn


@pytest.mark.parametrize("pid", ["abcdefgh", "0123456789abcdef", "00000000", "zzzzzzzzzzzzzzzz"])
def test_valid_pids(pid: str) -> None:
    assert check_pid(pid) == pid


@pytest.mark.parametrize(
    "pid", ["", "abcdefg", "abcdefghi", "abcdefghijklmno", "abcdefghijklmnopq", "ABCDEFGH", "abcd-fgh", "abcdéfgh"]
)
def test_invalid_pid_is_refused_naming_field_and_value(pid: str) -> None:
    with pytest.raises(MalformedError) as caught:
        check_pid(pid, field="new_pid")
    assert caught.value.field == "new_pid"
    assert f"new_pid {pid!r}" in str(caught.value)
    assert "8 or 16 characters" in str(caught.value)


def test_pid_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(MalformedError):
        check_pid("abcdefgh\n")


@pytest.mark.parametrize("sn", ["SN01", "a" * 28, "6c1a2b3c4d5e6f70", "SN-2026_000.123"])
def test_valid_sns(sn: str) -> None:
    assert check_sn(sn) == sn


@pytest.mark.parametrize("sn", ["", "SN0", "a" * 29, "-SN0001", ".SN0001", "SN 0001", "SN/0001", "SN0001\n"])
def test_invalid_sn_is_refused_naming_field_and_value(sn: str) -> None:
    with pytest.raises(MalformedError) as caught:
        check_sn(sn, field="scan")
    assert caught.value.field == "scan"
    assert f"scan {sn!r}" in str(caught.value)
    assert "4 to 28" in str(caught.value)


class _Ids(BaseModel):
    pid: Pid
    sn: Sn


def test_annotated_types_validate_inside_models() -> None:
    assert _Ids(pid="abcdefgh", sn="SN0001").pid == "abcdefgh"
    with pytest.raises(ValidationError, match=r"pid 'ABC' is not a product ID"):
        _Ids(pid="ABC", sn="SN0001")
    with pytest.raises(ValidationError, match=r"sn '!' is not a serial number"):
        _Ids(pid="abcdefgh", sn="!")


def test_the_pid_alphabet_is_exactly_what_a_pid_accepts() -> None:
    """The platform draws PIDs from PID_ALPHABET: each of its characters is accepted, every other one refused."""
    for char in map(chr, range(32, 127)):
        accepted = True
        try:
            check_pid(char * SHORT_PID_LEN)
        except MalformedError:
            accepted = False
        assert accepted == (char in PID_ALPHABET), char
