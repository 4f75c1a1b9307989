"""*Perform replacement* over the API: send a gateway a signed scan, and read what it answered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from pydantic import Field

from cloud_bridge import replacement
from cloud_bridge.api.deps import ActorDep, PlatformDep
from cloud_bridge.api.models import Body, Out, Problem
from cloud_bridge.scan_relay import ScanRelay, SentScan
from wire.ids import GatewayId
from wire.topics import ScanEvent

scans = APIRouter(
    tags=["perform replacement"], responses={c: {"model": Problem} for c in (401, 403, 404, 409, 413, 422)}
)


def relay_of(request: Request) -> ScanRelay | None:
    """The app's scan relay (None when it serves without a broker)."""
    relay: ScanRelay | None = getattr(request.app.state, "scan_relay", None)
    return relay


RelayDep = Annotated[ScanRelay | None, Depends(relay_of)]


class ScanIn(Body):
    """One SN to rebadge on the gateway."""

    sn: str = Field(min_length=1, max_length=64)


class ScanOut(Out):
    """A scan command sent, with the gateway's scan event once it answered (null until then)."""

    request_id: str
    gw: str
    sn: str
    sent_at: int
    sent_by: str
    event: ScanEvent | None


def scan_out(sent: SentScan) -> ScanOut:
    """The API's view of a sent scan."""
    return ScanOut(
        request_id=sent.request_id, gw=sent.gw, sn=sent.sn, sent_at=sent.sent_at, sent_by=sent.sent_by,
        event=sent.event,
    )  # fmt: skip


@scans.post("/gateways/{gw}/scans", status_code=202)
async def send_scan(
    gw: Annotated[GatewayId, Path()], body: ScanIn, actor: ActorDep, platform: PlatformDep, relay: RelayDep
) -> ScanOut:
    """Send the gateway a scan command signed by the platform (factory admins, technicians); poll for its result."""
    return scan_out(await replacement.send_scan(platform, relay, actor, gw, body.sn))


@scans.get("/gateways/{gw}/scans")
async def scan_results(
    gw: Annotated[GatewayId, Path()], actor: ActorDep, platform: PlatformDep, relay: RelayDep
) -> list[ScanOut]:
    """The scans this server sent the gateway (the last 1000 of all gateways), newest first, with their events."""
    return [scan_out(s) for s in await replacement.scan_results(platform, relay, actor, gw)]
