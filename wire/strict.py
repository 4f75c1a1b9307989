"""Strict decoding of deterministic CBOR maps into pydantic models, with errors that name the field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from wire.cbor import loads_map
from wire.errors import MalformedError

M = TypeVar("M", bound=BaseModel)


def decode_model(data: bytes, cls: type[M], what: str) -> M:
    """Decode `data` as one `cls`; unknown, missing or mistyped fields raise MalformedError naming the field."""
    fields = loads_map(data, what)
    try:
        return cls.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        value = first.get("input")
        shown = repr(value)[:60] if value is not None and first["type"] != "missing" else "nothing"
        raise MalformedError(f"{what} field {where!r}: {first['msg']} (got {shown})", field=where) from exc
