"""Request validation errors as the API's one error shape, `{"detail", "field"}`, saying what to send instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Where FastAPI says a value came from; not part of the field's name.
SOURCES = ("body", "path", "query", "header", "cookie")
SHOWN_VALUE_CHARS = 60
SCHEMA_HINT = "see /openapi.json for this request's fields"


def field_of(loc: tuple[Any, ...]) -> str | None:
    """`("body", "items", 0, "sn")` -> `"items.0.sn"`; None for the body as a whole."""
    parts = [str(part) for part in loc[1:]] if loc and loc[0] in SOURCES else [str(p) for p in loc]
    return ".".join(parts) or None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def detail_of(error: Mapping[str, Any], field: str | None) -> str:
    """One sentence: the field, the value given and what is expected."""
    kind, msg = str(error.get("type", "")), str(error.get("msg", "invalid request"))
    if kind == "value_error":
        return msg.removeprefix("Value error, ")  # our own validators' messages name the field and the fix
    if field is None:
        return _body_detail(error, kind, msg)
    if kind == "missing":
        return f"{field} is required; {SCHEMA_HINT}"
    if kind == "extra_forbidden":
        return f"{field} is not a field of this request: leave it out; {SCHEMA_HINT}"
    return f"{field}: {_shown(error.get('input'))} is not accepted: {msg[0].lower()}{msg[1:]}"


def _body_detail(error: Mapping[str, Any], kind: str, msg: str) -> str:
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", msg)
        return f"the request body is not valid JSON ({reason}); send a JSON object"
    if kind == "missing":
        return f"a JSON request body is required; {SCHEMA_HINT}"
    return f"the request body is not accepted ({msg}): send a JSON object; {SCHEMA_HINT}"


async def validation_problem(_request: Request, exc: Exception) -> JSONResponse:
    """422 with the first problem only, in the same `{"detail", "field"}` shape as every other error."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    field = None if first.get("type") == "json_invalid" else field_of(tuple(first.get("loc", ())))
    return JSONResponse({"detail": detail_of(first, field), "field": field}, status_code=422)
