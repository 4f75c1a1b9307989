"""The ledger's audited actions: writing off a lease, reinstating a frozen gateway, and a gateway's history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import Field

from cloud_bridge import gateways
from cloud_bridge.accounts import Role
from cloud_bridge.api.deps import ActorDep, PlatformDep
from cloud_bridge.api.models import Body, Out, Problem
from wire.ids import GatewayId, LeaseId

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem} for code in (401, 403, 404, 409, 422)}

ledger = APIRouter(tags=["gateways, leases and anomalies"], responses=ERRORS)


class ReasonIn(Body):
    reason: str = Field(min_length=1, max_length=1000, description="Why, kept in the gateway's history for audit.")


class ReinstateIn(ReasonIn):
    seq: int | None = Field(
        default=None,
        ge=0,
        description="For a gateway that stopped because its restored journal is behind: the head seq it holds "
        "(`rebadge agent status`). Omit for a gateway frozen by a fork.",
    )


class WriteOffOut(Out):
    lease_id: str
    returned: int


class ReinstateOut(Out):
    gw: str
    continues_after_seq: int


class GatewayEventOut(Out):
    kind: str
    seq: int | None
    lease_id: str | None
    actor: str
    reason: str
    at: int


class GatewayKeyOut(Out):
    kid: str
    public_key: str
    from_seq: int = Field(description="The first journal seq whose checkpoint this key may sign.")
    to_seq: int | None = Field(description="The last one; null while it is the gateway's current key.")
    introduced_at: int
    retired_at: int | None


@ledger.post("/leases/{lease_id}/write-off")
async def write_off(
    lease_id: Annotated[LeaseId, Path()], body: ReasonIn, actor: ActorDep, platform: PlatformDep
) -> WriteOffOut:
    """Give up on a lease whose gateway never comes back (auditors, admins): only its confirmed slots stay spent."""
    returned = await platform.write_off_lease(actor, lease_id, body.reason)
    return WriteOffOut(lease_id=lease_id, returned=returned)


@ledger.post("/gateways/{gw}/reinstate")
async def reinstate(
    gw: Annotated[GatewayId, Path()], body: ReinstateIn, actor: ActorDep, platform: PlatformDep
) -> ReinstateOut:
    """Lift the freeze a fork put on a gateway, or rebase one whose restored journal is behind (admins): its open
    leases are written off and its own chain continues."""
    seq = await platform.reinstate_gateway(actor, gw, body.reason, seq=body.seq)
    return ReinstateOut(gw=gw, continues_after_seq=seq)


@ledger.get("/gateways/{gw}/history")
async def history(gw: Annotated[GatewayId, Path()], actor: ActorDep, platform: PlatformDep) -> list[GatewayEventOut]:
    """A gateway's audit history: enrolled, renewed, key rotated (with the old key's last seq), frozen (with the
    fork's seq), reinstated, leases written off."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN)
    await platform.run(gateways.get_visible, actor, gw)
    return [GatewayEventOut.model_validate(dict(r._mapping)) for r in await platform.gateway_history(gw)]


@ledger.get("/gateways/{gw}/keys")
async def keys(gw: Annotated[GatewayId, Path()], actor: ActorDep, platform: PlatformDep) -> list[GatewayKeyOut]:
    """Every key the gateway has had (key rotation), oldest first, with the journal seqs each may sign."""
    actor.require(Role.ADMIN, Role.AUDITOR, Role.FACTORY_ADMIN)
    await platform.run(gateways.get_visible, actor, gw)
    return [
        GatewayKeyOut(
            kid=r.kid, public_key=bytes(r.public_key).hex(), from_seq=r.from_seq, to_seq=r.to_seq,
            introduced_at=r.introduced_at, retired_at=r.retired_at,
        )
        for r in await platform.gateway_keys(gw)
    ]  # fmt: skip
