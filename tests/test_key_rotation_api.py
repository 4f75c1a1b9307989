"""A rotated gateway over the HTTP API: its key history, its audit history, leases for its current key only, and
nothing of it for another organisation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from agent.certs.identity import GatewayIdentity
from agent.key_rotation import introduction
from cloud_bridge import gateways, leases
from cloud_bridge.platform import Platform
from rebadge.cli import main
from tests.test_cloud_api import World, fixture_world  # noqa: F401  (fixture)
from tests.test_cloud_helpers import (  # noqa: F401  (fixtures)
    Journal,
    fixture_db_url,
    fixture_pg_database,
    fixture_pg_run,
    fixture_platform,
)
from wire.keys import SigningKey


async def _rotated(w: World, platform: Platform) -> tuple[Journal, SigningKey]:
    lease = await platform.run(leases.get, w.lease_id)
    journal = Journal(w.gateway)
    journal.close(w.lease_id, int(lease.slot_hi))  # the old key's lease ends in its chain first
    await platform.ingest(journal.batch(), topic_gw=journal.gw)
    new = SigningKey.generate()
    intro = introduction(GatewayIdentity(w.gateway), new, 1, journal.head).token
    answer = await platform.answer_rotate(journal.gw, intro)
    assert answer.ok, answer.message
    return journal, new


async def test_the_api_shows_a_rotation_and_leases_follow_the_current_key(world: World, platform: Platform) -> None:
    w = world
    journal, new = await _rotated(w, platform)
    gw = journal.gw
    keys = await w.ok("factory_admin", "GET", f"/gateways/{gw}/keys")
    assert [(k["kid"], k["from_seq"], k["to_seq"], k["retired_at"] is None) for k in keys] == [
        (w.gateway.kid.hex(), 0, 1, False),
        (new.kid.hex(), 2, None, True),
    ]
    assert keys[1]["public_key"] == new.public.raw.hex()
    history = await w.ok("auditor", "GET", f"/gateways/{gw}/history")
    assert [(e["kind"], e["seq"]) for e in history if e["kind"] == "key_rotated"] == [("key_rotated", 1)]
    listed = [g for g in await w.ok("technician", "GET", "/gateways") if g["gw"] == gw]
    assert [g["public_key"] for g in listed] == [new.public.raw.hex()]  # one gateway, its current key
    issued = await w.ok(
        "technician", "POST", f"/certificates/{w.cert_no}/leases", {"gateway_key": new.public.raw.hex(), "slots": 2}
    )
    assert issued["gw"] == gw  # the gateway id, not the new key's kid
    retired = await w.call(
        "technician", "POST", f"/certificates/{w.cert_no}/leases",
        {"gateway_key": w.gateway.public.raw.hex(), "slots": 2},
    )  # fmt: skip
    assert retired.status_code == 409, retired.text
    assert "retired" in retired.json()["detail"]
    for path in (f"/gateways/{gw}/keys", f"/gateways/{gw}/history"):
        assert (await w.call("rival", "GET", path)).status_code == 404
        assert (await w.call("technician", "GET", path)).status_code == 403


def test_rebadge_cloud_gateway_keys_lists_the_history_of_keys(tmp_path: Path) -> None:
    data = tmp_path / "cloud"

    async def rotated() -> tuple[str, SigningKey, SigningKey]:
        platform = await Platform.open(data)
        try:
            journal = Journal()
            await platform.run(gateways.register, journal.key.public, "", platform.now())
            new = SigningKey.generate()
            intro = introduction(GatewayIdentity(journal.key), new, 0, journal.head).token
            assert (await platform.answer_rotate(journal.gw, intro)).ok
            return journal.gw, journal.key, new
        finally:
            await platform.close()

    gw, old, new = asyncio.run(rotated())
    result = CliRunner().invoke(main, ["cloud", "gateway", "keys", gw, "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{old.kid.hex()}  from seq 0 to seq 0, retired ")
    assert lines[1].startswith(f"{new.kid.hex()}  from seq 1 current")
    unknown = CliRunner().invoke(main, ["cloud", "gateway", "keys", "00" * 8, "--data-dir", str(data)])
    assert unknown.exit_code == 1
    assert "has no keys here" in unknown.output
