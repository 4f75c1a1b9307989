"""Deterministic CBOR out, strict decoding in: anything but one deterministic map of text keys is a MalformedError."""

from __future__ import annotations

import contextlib
import threading
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.cbor import MAX_CBOR_BYTES, dumps, loads_map
from wire.errors import MalformedError

# A map {"a": <value>} is a1 61 61 <value>.
A = b"\xa1\x61a"


def test_map_keys_are_sorted_by_their_encoding() -> None:
    # Shorter text keys first (their head byte is smaller), then bytewise: RFC 8949 §4.2.1.
    assert dumps({"bb": 1, "c": 2, "a": 3}) == bytes.fromhex("a3 6161 03 6163 02 626262 01".replace(" ", ""))


@pytest.mark.parametrize(
    ("value", "encoded"),
    [(0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (2**32 - 1, "1affffffff"), (-1, "20")],
)
def test_integers_take_their_shortest_form(value: int, encoded: str) -> None:
    assert dumps(value).hex() == encoded


@pytest.mark.parametrize(
    "value",
    [{}, {"a": 1}, {"b": b"\x00" * 40, "a": [1, "x", None, True]}, {"nested": {"k": [{"z": 1}]}}, {"t": "é" * 30}],
)
def test_round_trip(value: dict[str, Any]) -> None:
    assert loads_map(dumps(value), "thing") == value


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (bytes.fromhex("a2616201616101"), "keys out of order"),
        (bytes.fromhex("a3616101616101616202")[:-2], "truncated"),
        (bytes.fromhex("a2616101616102"), "duplicate key"),
        (A + bytes.fromhex("1801"), "1 in two bytes"),
        (A + bytes.fromhex("1a00000001"), "1 in five bytes"),
        (A + bytes.fromhex("7801") + b"x", "text length in two bytes"),
        (bytes.fromhex("bf616101ff"), "indefinite-length map"),
        (A + bytes.fromhex("7f6178ff"), "indefinite-length text"),
        (A + bytes.fromhex("fb3ff0000000000000"), "1.0 as a double"),
        (dumps({"a": 1}) + b"\x00", "trailing byte"),
        (dumps({"a": 1}) + dumps({"b": 2}), "two maps"),
    ],
)
def test_non_deterministic_or_broken_cbor_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedError) as caught:
        loads_map(data, "lease")
    assert caught.value.field == "lease", why
    assert str(caught.value).startswith("lease: "), why


@pytest.mark.parametrize("value", [[1, 2], 5, "text", b"bytes", None, {1: "int key"}, {b"k": 1}])
def test_non_map_or_non_text_keys_are_refused(value: object) -> None:
    with pytest.raises(MalformedError, match="expected a CBOR map with text keys"):
        loads_map(dumps(value), "grant")


def test_oversize_is_refused_before_decoding() -> None:
    data = dumps({"a": b"\x00" * MAX_CBOR_BYTES})
    with pytest.raises(MalformedError, match=f"over the {MAX_CBOR_BYTES}-byte limit"):
        loads_map(data, "batch")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (A + bytes.fromhex("c11a69571890"), "tag 1 epoch time"),
        (A + bytes.fromhex("c249010000000000000000"), "tag 2 bignum 2**64"),
        (A + bytes.fromhex("c582 1b7fffffffffffffff 01".replace(" ", "")), "tag 5 bigfloat that overflows"),
        (A + bytes.fromhex("c482 1b7fffffffffffffff 01".replace(" ", "")), "tag 4 decimal that overflows"),
        (A + bytes.fromhex("d9010280"), "tag 258 set"),
        (A + bytes.fromhex("d8186161"), "tag 24 embedded CBOR"),
        (A + bytes.fromhex("f0"), "simple value 16"),
        (A + bytes.fromhex("f7"), "undefined"),
        (A + bytes.fromhex("d81ca16162d81d00"), "a map that contains itself (tags 28/29)"),
        (A + bytes.fromhex("c249" + "01" + "00" * 8), "tag 2 bignum 2**64, 9 bytes"),
    ],
)
def test_tags_and_simple_values_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(MalformedError):
        loads_map(data, "record")


def test_string_references_cannot_blow_up_memory() -> None:
    # One 30 kB string, then 11,000 three-byte references to it: naive re-encoding would build 330 MB.
    body = b"\x79" + (30_000).to_bytes(2, "big") + b"x" * 30_000 + b"\xd8\x19\x00" * 11_000
    data = A + b"\xd9\x01\x00\x99" + (11_001).to_bytes(2, "big") + body
    tracemalloc.start()
    try:
        with pytest.raises(MalformedError):
            loads_map(data, "record")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_shared_values_cannot_blow_up() -> None:
    # Each level is an array holding the level below twice: 2**22 leaves from 130 bytes.
    level = b"\xd8\x1c\x80"
    for i in range(22):
        level = b"\xd8\x1c\x82" + level + b"\xd8\x1d" + bytes([i])
    with pytest.raises(MalformedError):
        loads_map(A + level, "record")


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(MalformedError):
        loads_map(A + b"\x81" * 5000 + b"\x00", "record")


def test_integers_beyond_64_bits_are_refused_without_printing_them() -> None:
    data = A + b"\xc2\x59\x20\x00" + b"\xff" * 0x2000  # a 65,536-bit bignum
    with pytest.raises(MalformedError, match="65536 bits does not fit in 64 bits"):
        loads_map(data, "record")


def test_64_bit_extremes_are_accepted() -> None:
    value = {"max": 2**64 - 1, "min": -(2**64)}
    assert loads_map(dumps(value), "record") == value


@given(st.binary(max_size=200))
def test_any_bytes_give_a_map_or_a_malformed_error(data: bytes) -> None:
    try:
        value = loads_map(data, "fuzz")
    except MalformedError:
        return
    assert dumps(value) == data


@given(st.binary(max_size=60))
def test_any_bytes_inside_a_map_give_a_map_or_a_malformed_error(tail: bytes) -> None:
    # Starting with a map head reaches the value decoders (tags, floats, nesting) far more often.
    with contextlib.suppress(MalformedError):
        loads_map(A + tail, "fuzz")


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=8), plain, max_size=6))
def test_any_plain_map_round_trips(value: dict[str, Any]) -> None:
    assert loads_map(dumps(value), "fuzz") == value


def test_cbor2_decodes_what_we_encode_with_any_decoder() -> None:
    assert cbor2.loads(dumps({"b": 1, "a": [b"x"]})) == {"a": [b"x"], "b": 1}


def test_a_tag_key_that_fails_to_hash_stays_a_malformed_error() -> None:
    # cbor2 5.9 raises TypeError the first time and RuntimeError after that (its per-thread set of tags being hashed
    # is left dirty); run in a throwaway thread so the rest of this process keeps a clean one.
    data = bytes.fromhex("a16161d823d820823bffffffffffffffff1bf27d5183a51b9c7e")
    outcomes: list[str] = []

    def decode_twice() -> None:
        for _ in range(2):
            try:
                loads_map(data, "record")
            except MalformedError:
                outcomes.append("malformed")
            except Exception as exc:
                outcomes.append(repr(exc))

    worker = threading.Thread(target=decode_twice)
    worker.start()
    worker.join(timeout=10)
    assert outcomes == ["malformed", "malformed"]
