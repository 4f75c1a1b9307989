"""Deterministic CBOR (RFC 8949 §4.2.1) out, and strict decoding in."""

from __future__ import annotations

from typing import Any

import cbor2

from wire.errors import MalformedError

MAX_CBOR_BYTES = 64 * 1024


def dumps(value: Any) -> bytes:
    """Encode `value` deterministically: shortest forms, map keys sorted by their encoding."""
    return cbor2.dumps(value, canonical=True)


def loads_map(data: bytes, what: str) -> dict[str, Any]:
    """Decode one deterministic CBOR map with text keys; anything else is a MalformedError naming `what`."""
    if len(data) > MAX_CBOR_BYTES:
        raise MalformedError(f"{what}: {len(data)} bytes is over the {MAX_CBOR_BYTES}-byte limit", field=what)
    try:
        value = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedError(f"{what}: not valid CBOR ({exc})", field=what) from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise MalformedError(f"{what}: expected a CBOR map with text keys", field=what)
    if dumps(value) != data:
        raise MalformedError(f"{what}: CBOR is not in deterministic encoding (RFC 8949 §4.2.1)", field=what)
    return value
