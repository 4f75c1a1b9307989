"""*Perform replacement*: who may send a gateway a scan, and the results it answered (API and console alike)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud_bridge import gateways
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import ConflictError, InvalidRequestError
from cloud_bridge.platform import Platform
from cloud_bridge.scan_relay import ScanRelay, SentScan
from wire.errors import MalformedError
from wire.ids import check_sn

# The factory's own people run its line; platform staff do not scan goods.
MAY_SCAN = (Role.FACTORY_ADMIN, Role.TECHNICIAN)


async def scannable(conn: AsyncConnection, actor: Actor, gw: str) -> Row[Any]:
    """A gateway of the actor's factory that may be sent scans; refusals name the gateway."""
    actor.require(*MAY_SCAN)
    row = await gateways.get_visible(conn, actor, gw)
    if row.revoked:
        raise ConflictError(f"gateway {gw} is revoked; it rebadges nothing. Use another gateway")
    return row


def _relay(relay: ScanRelay | None) -> ScanRelay:
    if relay is None:
        raise ConflictError("this platform serves without an MQTT broker (--no-worker), so it cannot send scans")
    return relay


async def send_scan(platform: Platform, relay: ScanRelay | None, actor: Actor, gw: str, sn: str) -> SentScan:
    """Send gateway `gw` one signed scan of `sn` on behalf of `actor`."""
    sn = sn.strip()
    try:
        check_sn(sn)
    except MalformedError as exc:
        raise InvalidRequestError(str(exc), field="sn") from exc
    await platform.run(scannable, actor, gw)
    return await _relay(relay).send(platform.issuer, gw, sn, actor.name)


async def scan_results(platform: Platform, relay: ScanRelay | None, actor: Actor, gw: str) -> list[SentScan]:
    """The scans sent to `gw` this process still keeps, newest first, each with its event once it came."""
    await platform.run(scannable, actor, gw)
    return _relay(relay).results(gw)
