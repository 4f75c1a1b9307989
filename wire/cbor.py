"""Deterministic CBOR (RFC 8949 §4.2.1) out, and strict decoding in."""

from __future__ import annotations

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
    _check_plain(value, len(data), what)
    if dumps(value) != data:
        raise MalformedError(f"{what}: CBOR is not in deterministic encoding (RFC 8949 §4.2.1)", field=what)
    return value


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
