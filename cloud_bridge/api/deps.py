"""Dependencies of the API routes: the platform, and the actor behind the request's API key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from cloud_bridge.accounts import Actor
from cloud_bridge.platform import Platform

API_KEY_HEADER = "X-API-Key"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="An account's API key.")


def platform_of(request: Request) -> Platform:
    """The platform the app serves."""
    platform: Platform = request.app.state.platform
    return platform


PlatformDep = Annotated[Platform, Depends(platform_of)]


async def current_actor(platform: PlatformDep, api_key: Annotated[str | None, Security(api_key_header)]) -> Actor:
    """The account behind the request's API key (401 without a valid one)."""
    return await platform.authenticate(api_key)


ActorDep = Annotated[Actor, Depends(current_actor)]
