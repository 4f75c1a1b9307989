"""The count holds end to end, with the real agent, a real mosquitto and the platform: an honest line offline past
its lease's expiry, and a gateway whose journal is restored from a backup."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from agent.service import load_lease_file
from cloud_bridge.accounts import Actor, Role
from cloud_bridge.errors import NoSlotsLeftError
from rebadge.broker import PrivateBroker
from tests.e2e_support import (
    NEW_PID,
    Gateway,
    running_agent,
    running_cloud,
    running_goods,
    units,
    until_async,
)
from wire.keys import SigningKey
from wire.refusals import RefusalReason
from wire.topics import Result


async def test_an_offline_line_past_its_lease_keeps_its_slots(tmp_path: Path, broker: PrivateBroker) -> None:
    specs = units(5)
    async with running_cloud(tmp_path, broker, quantity=4) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public, valid_s=3600))
        async with running_goods(cloud.issuer, specs, gateway.discovery_port), running_agent(gateway.config) as agent:
            broker.stop()  # the line goes offline and keeps working
            events = [await agent.scan(u.sn) for u in specs]
            assert [e.result for e in events] == [Result.CONFIRMED] * 4 + [Result.REFUSED]
            # A day later the platform is past the lease's expiry; nothing came back, so nobody can re-lease it.
            later = time.time() + 2 * 86_400
            cloud.platform._clock = lambda: later  # the platform's own clock, moved by the test
            with pytest.raises(NoSlotsLeftError):
                await cloud.platform.issue_lease(cloud.cert.cert_no, SigningKey.generate().public, 4)
            assert await cloud.platform.stale_holds(cloud.cert.cert_no) == 4
            broker.start()
            await agent.synced()
            assert await cloud.confirmed_count() == 4
            activated = 0
            for unit, event in zip(specs, events, strict=False):
                if event.result is Result.CONFIRMED:
                    receipt = (await agent.journal.confirmed_attempt(unit.sn, NEW_PID)).grant  # type: ignore[union-attr]
                    activated += (await cloud.platform.activate(unit.sn, NEW_PID, receipt)).accepted
            assert activated == 4


async def test_a_restored_journal_freezes_the_gateway_until_an_admin_rebases_it(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    specs = units(4)
    async with running_cloud(tmp_path, broker, quantity=10, sweep_s=0.1) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public))
        backup = tmp_path / "backup"
        async with running_goods(cloud.issuer, specs, gateway.discovery_port) as goods:
            async with running_agent(gateway.config) as agent:
                assert (await agent.scan(specs[0].sn)).result is Result.CONFIRMED
                await agent.synced()
            shutil.copytree(gateway.state_dir, backup)  # the nightly backup
            async with running_agent(gateway.config) as agent:
                for unit in specs[1:3]:
                    assert (await agent.scan(unit.sn)).result is Result.CONFIRMED
                await agent.synced()
            assert await cloud.confirmed_count() == 3
            shutil.rmtree(gateway.state_dir)
            shutil.copytree(backup, gateway.state_dir)  # the disk dies; the backup comes back
            async with running_agent(gateway.config) as agent:
                await until_async(lambda: _frozen(agent), "the restored agent learns the platform holds more")
                refused = await agent.scan(specs[3].sn)
                assert refused.result is Result.REFUSED
                assert refused.reason == RefusalReason.JOURNAL_RESTORED
                assert "restored from a backup" in refused.message
                again = await agent.scan(specs[1].sn)  # a unit the lost journal rebadged: nothing spent again
                assert again.result is Result.REFUSED
                assert goods[specs[3].sn].firmware.rebadge_requests == 0
                # An admin checks what happened and rebases the gateway on the journal it now holds.
                head = await agent.head()
                await asyncio.sleep(1.1)  # acks carry whole seconds; a reinstatement comes after the freezing ack
                admin = Actor(Role.ADMIN, None, name="admin")
                assert await cloud.platform.reinstate_gateway(admin, gateway.gw, "disk replaced", seq=head) == head
                await until_async(lambda: _lifted(agent), "the agent hears the rebased head and goes on")
                leases = await agent.journal.leases(active_only=False)
                assert leases
                assert all(lease.closed_seq is not None for lease in leases)  # written off by the reinstatement
                after = await agent.scan(specs[3].sn)
                assert after.reason == RefusalReason.NO_LEASE  # it needs a fresh lease, no longer frozen
            assert await cloud.confirmed_count() == 3  # the lost branch's rebadges still count, once
            history = await cloud.platform.gateway_history(gateway.gw)
            assert [(h.kind, h.actor) for h in history] == [("written_off", "admin"), ("reinstated", "admin")]


async def _lifted(agent: object) -> bool:
    return not await _frozen(agent)


async def _frozen(agent: object) -> bool:
    return getattr(agent, "journal").frozen is not None  # noqa: B009 - RunningAgent.journal, read as it changes
