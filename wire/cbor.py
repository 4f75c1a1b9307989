"""Deterministic CBOR (RFC 8949 §4.2.1) out, and strict decoding in."""

from __future__ import annotations

from functools import lru_cache
from itertools import pairwise
from typing import Any

import cbor2

from wire.errors import MalformedError

# Large enough for a full batch of MAX_BATCH_RECORDS records of the largest size the Record model allows.
MAX_CBOR_BYTES = 1024 * 1024
# Everything cbor2 raises for bad input: decimal errors from tags 4/5 (ArithmeticError), and RuntimeError when a
# tag used as a map key fails to hash (cbor2 5.9 then keeps raising it for such keys; RecursionError is one too).
DECODE_ERRORS = (cbor2.CBORDecodeError, ValueError, TypeError, ArithmeticError, RuntimeError)
_INT_LIMIT = 2**64


def dumps(value: Any) -> bytes:
    """Encode `value` deterministically: shortest forms, map keys sorted by their encoding."""
    return cbor2.dumps(value, canonical=True)


def loads_map(data: bytes, what: str) -> dict[str, Any]:
    """Decode one deterministic CBOR map with text keys; anything else is a MalformedError naming `what`."""
    if len(data) > MAX_CBOR_BYTES:
        raise MalformedError(f"{what}: {len(data)} bytes is over the {MAX_CBOR_BYTES}-byte limit", field=what)
    try:
        value = cbor2.loads(data)
    except DECODE_ERRORS as exc:
        raise MalformedError(f"{what}: not valid CBOR ({exc})", field=what) from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedError(f"{what}: expected a CBOR map with text keys", field=what)
    if _is_flat(value):
        canonical = _flat_is_deterministic(value, data, what)
    else:
        _check_plain(value, len(data), what)
        canonical = dumps(value) == data
    if not canonical:
        raise MalformedError(f"{what}: CBOR is not in deterministic encoding (RFC 8949 §4.2.1)", field=what)
    return value


def _is_flat(value: dict[str, Any]) -> bool:
    """Whether every value is text, bytes or an int that fits in 64 bits (what records, tokens and batches hold)."""
    for item in value.values():
        kind = type(item)
        if kind is not str and kind is not bytes and (kind is not int or not -_INT_LIMIT <= item < _INT_LIMIT):
            return False
    return True


def _flat_is_deterministic(value: dict[str, Any], data: bytes, what: str) -> bool:
    """`_check_plain` then `dumps(value) == data`, for a flat map, in a third of the time.

    Deterministic encoding differs from cbor2's plain one only in map key order (and floats and sets, which a flat
    map does not hold), so the plain encoding of a map whose keys come in deterministic order is the deterministic
    one; cbor2 keeps the order the keys came in.
    """
    least = 1 + sum(2 + len(k) for k in value) + sum(len(v) for v in value.values() if type(v) is not int)
    if least > len(data):
        raise MalformedError(f"{what}: CBOR is not in deterministic encoding (shared or referenced values)", field=what)
    return _in_key_order(tuple(value)) and bool(cbor2.dumps(value) == data)


@lru_cache(maxsize=256)
def _in_key_order(keys: tuple[str, ...]) -> bool:
    """Whether text keys come in deterministic order: shorter encoding first, then bytewise (RFC 8949 §4.2.1)."""
    encoded = [(len(k.encode()), k.encode()) for k in keys]
    return all(a < b for a, b in pairwise(encoded))


def _check_plain(value: Any, size: int, what: str) -> None:
    """Refuse what our messages never hold (tags, simple values, ints past 64 bits) before re-encoding it.

    Shared values (tags 28/29) and string references (tag 256/25) would re-encode to far more than `size`
    bytes, so the walk stops as soon as a lower bound of the encoded length passes `size`.
    """
    stack, least = [value], 0
    while stack:
        item = stack.pop()
        least += 1
        if isinstance(item, str | bytes):
            least += len(item)
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool) and not -_INT_LIMIT <= item < _INT_LIMIT:
            raise MalformedError(f"{what}: an integer of {item.bit_length()} bits does not fit in 64 bits", field=what)
        elif not isinstance(item, int | float) and item is not None:
            raise MalformedError(
                f"{what}: a {type(item).__name__} (CBOR tag or simple value) is not allowed", field=what
            )
        if least > size:
            raise MalformedError(
                f"{what}: CBOR is not in deterministic encoding (shared or referenced values)", field=what
            )
