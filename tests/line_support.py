"""A gateway holding one lease, for tests of what the line shows (console, MES lines, metrics)."""

from __future__ import annotations

from pathlib import Path

from agent.service import load_lease_file
from cloud_bridge.platform import Platform
from rebadge.broker import PrivateBroker
from tests.e2e_support import Gateway
from tests.helpers import NEW_PID, ORIGINAL_PID
from wire.keys import PublicKey


async def leased_gateway(
    tmp_path: Path, slots: int = 5, broker: PrivateBroker | None = None
) -> tuple[Gateway, PublicKey]:
    """A gateway (station ST-3, work order WO-42) with one lease of `slots` slots, and the issuer the goods trust.

    Without `broker` it points at one that never runs, so its uplink stays down.
    """
    platform = await Platform.open(tmp_path / "platform")
    try:
        cert, _ = await platform.issue_certificate(
            factory="line-factory", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=slots, protocols=("wifi",)
        )
        gateway = Gateway.create(tmp_path, platform.issuer.public, broker or PrivateBroker(tmp_path / "no-broker"))
        gateway.settings["line"].update(station="ST-3", work_order="WO-42")
        _, _, bundle = await platform.issue_lease(cert.cert_no, gateway.identity.public, slots, valid_s=3600)
        await load_lease_file(gateway.config, bundle)
        return gateway, platform.issuer.public
    finally:
        await platform.close()
