"""Request validation errors answer in the API's one shape, `{"detail", "field"}`, naming the field, the value and
what to send, and store nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from cloud_bridge.api.app import create_app
from cloud_bridge.api.models import Problem
from cloud_bridge.platform import Platform
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)


@pytest.fixture(name="admin")
async def fixture_admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the platform's app with the first admin's key."""
    key = await platform.bootstrap_admin()
    assert key is not None
    transport = httpx.ASGITransport(app=create_app(platform))
    async with httpx.AsyncClient(transport=transport, base_url="http://t", headers={"X-API-Key": key}) as client:
        yield client


async def refused(client: httpx.AsyncClient, path: str, **request: Any) -> dict[str, Any]:
    answer = await client.post(path, **request)
    assert answer.status_code == 422, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) == {"detail", "field"}, body  # exactly the documented shape, not FastAPI's list
    Problem.model_validate(body)
    return body


@pytest.mark.parametrize(
    ("body", "field", "said"),
    [
        ({"name": "north"}, "kind", "kind is required"),
        ({"name": "north", "kind": "moon"}, "kind", "kind: 'moon' is not accepted: input should be 'platform'"),
        ({"name": "", "kind": "factory"}, "name", "name: '' is not accepted: string should have at least 1"),
        ({"name": "north", "kind": "factory", "colour": "red"}, "colour", "colour is not a field of this request"),
        ([{"name": "north"}], None, "the request body is not accepted"),
    ],
)
async def test_a_bad_body_names_the_field_and_the_value_and_stores_nothing(
    admin: httpx.AsyncClient, body: object, field: str | None, said: str
) -> None:
    before = (await admin.get("/v1/orgs")).json()
    problem = await refused(admin, "/v1/orgs", json=body)
    assert problem["field"] == field
    assert problem["detail"].startswith(said), problem
    assert (await admin.get("/v1/orgs")).json() == before


async def test_a_body_that_is_not_json_is_named_as_such_not_as_a_field(admin: httpx.AsyncClient) -> None:
    problem = await refused(admin, "/v1/orgs", content=b'{"name": ', headers={"Content-Type": "application/json"})
    assert problem["field"] is None  # FastAPI puts the character offset where a field name would be
    assert problem["detail"].startswith("the request body is not valid JSON"), problem


async def test_a_missing_body_says_one_is_required(admin: httpx.AsyncClient) -> None:
    problem = await refused(admin, "/v1/orgs")
    assert problem == {"detail": problem["detail"], "field": None}
    assert problem["detail"].startswith("a JSON request body is required")


async def test_a_long_value_is_shown_cut_short(admin: httpx.AsyncClient) -> None:
    problem = await refused(admin, "/v1/enrolment-tokens", json={"valid_s": "9" * 500 + "x"})
    assert problem["field"] == "valid_s"
    assert len(problem["detail"]) < 200, problem
    assert "'99999" in problem["detail"]


async def test_the_openapi_declares_the_problem_shape_for_422(admin: httpx.AsyncClient) -> None:
    spec = (await admin.get("/openapi.json")).json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    orgs = spec["paths"]["/v1/orgs"]["post"]["responses"]["422"]
    assert orgs["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
