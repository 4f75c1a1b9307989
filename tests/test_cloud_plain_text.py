"""Text with control characters in any request body is refused with the field named, on SQLite and PostgreSQL
(which refuses a NUL in text outright, so such a request ended in a server error there), and stores nothing."""

from __future__ import annotations

from typing import Any

from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.keys import SigningKey


async def test_control_characters_are_refused_in_every_body_and_store_nothing(world: World) -> None:
    w = world
    cases: list[tuple[str, str, str, dict[str, Any], str]] = [
        ("factory_admin", "/products", "name", {"name": "lamp\x00", "model_no": "m-nul"}, "/products"),
        ("factory_admin", "/products", "model_no", {"name": "lamp", "model_no": "m\x1b[2J"}, "/products"),
        ("factory_admin", "/products", "data_points", {"name": "lamp", "model_no": "m-dp", "panel": "p\x9b"}, ""),
        ("factory_admin", "/gateways", "name", {"public_key": SigningKey.generate().public.raw.hex(), "name": "g\x00"},
         "/gateways"),
        ("factory_admin", "/enrolment-tokens", "line", {"line": "hall\x00", "valid_s": 600}, ""),
        ("factory_admin", "/certificates", "reason",
         {"original_pid": w.cert_pid, "new_pid": w.new_pid, "quantity": 1, "reason": "stock\x00"}, "/certificates"),
        ("admin", "/orgs", "name", {"name": "org\x00", "kind": "factory"}, "/orgs"),
        ("admin", "/accounts", "name", {"org_id": w.org["factory"], "name": "tech\x07", "role": "technician"},
         "/accounts"),
    ]  # fmt: skip
    for who, path, field, body, listing in cases:
        before = (await w.ok(who, "GET", listing)) if listing else None
        r = await w.call(who, "POST", path, body)
        assert r.status_code == 422, (path, r.status_code, r.text)
        problem = r.json()
        expected = "panel" if field == "data_points" else field
        assert problem["field"] == expected, (path, problem)
        assert "control character" in problem["detail"]
        assert "plain text" in problem["detail"]
        if listing:
            assert await w.ok(who, "GET", listing) == before, path
    # Line breaks and tabs are text: a reason over several lines is taken.
    made = await w.ok(
        "factory_admin", "POST", "/certificates",
        {"original_pid": w.cert_pid, "new_pid": w.new_pid, "quantity": 1, "reason": "stock\r\nfor\tthe brand"},
    )  # fmt: skip
    assert made["status"] == "pending"
