"""The flat-map fast path of wire.cbor.loads_map decides exactly as the general walk and canonical re-encode."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.cbor import DECODE_ERRORS, _check_plain, dumps, loads_map
from wire.errors import MalformedError

flat_values = st.one_of(
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.integers(min_value=2**64, max_value=2**70),  # past 64 bits: the fast path must hand these to the walk
    st.booleans(),
    st.none(),
)
flat_maps = st.dictionaries(st.text(max_size=6), flat_values, max_size=8)


def _reference(data: bytes) -> str | dict[str, Any]:
    """The general path alone: the walk, then the canonical re-encode; an error's message or the map."""
    value = cbor2.loads(data)
    try:
        _check_plain(value, len(data), "m")
    except MalformedError as exc:
        return str(exc)
    if dumps(value) != data:
        return "m: CBOR is not in deterministic encoding (RFC 8949 §4.2.1)"
    assert isinstance(value, dict)
    return value


def _decided(data: bytes) -> str | dict[str, Any]:
    try:
        return loads_map(data, "m")
    except MalformedError as exc:
        return str(exc)


def _encodings(value: dict[str, Any], order: list[int]) -> list[bytes]:
    """The map deterministic, in another key order, and with string references (shorter than the walk's bound)."""
    items = list(value.items())
    shuffled = dict(items[i] for i in order if i < len(items)) | dict(items)
    return [dumps(value), cbor2.dumps(shuffled), cbor2.dumps(value, string_referencing=True, canonical=True)]


@settings(max_examples=400)
@given(flat_maps, st.permutations(list(range(8))))
def test_fast_path_decides_as_the_walk_and_re_encode(value: dict[str, Any], order: list[int]) -> None:
    for data in _encodings(value, order):
        try:
            cbor2.loads(data)
        except DECODE_ERRORS:
            continue
        assert _decided(data) == _reference(data), data.hex()


def test_non_deterministic_key_order_is_refused() -> None:
    data = cbor2.dumps({"seq": 1, "gw": "a"})  # "gw" sorts first: this order is not deterministic
    assert _reference(data) == _decided(data) == "m: CBOR is not in deterministic encoding (RFC 8949 §4.2.1)"


def test_string_references_are_refused_by_the_bound() -> None:
    data = cbor2.dumps({"a": "x" * 20, "b": "x" * 20}, string_referencing=True, canonical=True)
    assert _decided(data) == _reference(data)
    assert "shared or referenced values" in str(_decided(data))
