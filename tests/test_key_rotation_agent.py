"""`rebadge agent rotate-key` end to end: a real mosquitto on the generated mTLS configuration, the real worker, the
real agent scanning simulated goods; and the states a crash can leave at each step of the rotation."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from agent.certs.identity import (
    GATEWAY_ID_FILE,
    KEY_FILE,
    NEXT_KEY_FILE,
    GatewayIdentity,
    new_key_file,
    read_key,
    write_gateway_id,
)
from agent.key_rotation import KeyRotationError, introduction, rotate_key, settle_rotation
from agent.service import load_lease_file
from cloud_bridge import accounts, certificates, gateways
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies
from cloud_bridge.worker import IngestWorker
from durable.files import replace_durably, write_atomically
from rebadge.broker import PrivateBroker
from tests.e2e_support import (
    NEW_PID,
    ORIGINAL_PID,
    REPO,
    Gateway,
    running,
    running_agent,
    running_cloud,
    running_goods,
    units,
    until,
    write_toml,
)
from tests.test_cert_renewal import TlsSite, tls_gateway, tls_site
from wire import x509 as wx
from wire.keys import SigningKey
from wire.lease_request import AnswerCode

pytestmark = pytest.mark.slow

CERT_S = 3600  # no renewal comes due during a test
COMMAND_TIMEOUT_S = 30.0


@dataclass
class Line:
    site: TlsSite
    gateway: Gateway
    cert_no: str

    @property
    def state(self) -> Path:
        return self.gateway.state_dir

    def identity(self) -> GatewayIdentity:
        return GatewayIdentity.load_or_create(self.state)

    async def lease(self, slots: int = 3) -> str:
        """A lease for the gateway's current key, loaded as `rebadge agent load-lease` does."""
        _, _, bundle = await self.site.platform.issue_lease(self.cert_no, self.identity().public, slots, valid_s=3600)
        return (await load_lease_file(self.gateway.config, bundle)).lease.lease_id

    async def scan(self, *sns: str) -> int:
        """Run the agent, scan each SN (each must be confirmed), wait for the platform's ack; the acked seq."""
        async with running_agent(self.gateway.config) as agent:
            for sn in sns:
                assert (await agent.scan(sn)).result == "confirmed", sn
            return await agent.synced()

    async def accepted_not_switched(self) -> tuple[SigningKey, bytes]:
        """Where rotate-key stands when killed after the platform accepted its introduction (at the fresh journal's
        head, seq 0): gateway.id and gateway.key.next written, the old key still in gateway.key."""
        identity = self.identity()
        write_gateway_id(self.state, identity.gw)
        new = new_key_file(self.state / NEXT_KEY_FILE)
        intro = introduction(identity, new, 0, bytes(32)).token
        answer = await self.site.platform.answer_rotate(identity.gw, intro)
        assert answer.ok, answer.message
        assert answer.certificate is not None
        return new, answer.certificate

    async def anomaly_kinds(self) -> list[str]:
        async with self.site.platform.engine.connect() as conn:
            query = select(anomalies.c.kind).where(anomalies.c.gw == self.gateway.gw)
            return [str(k) for k in (await conn.execute(query)).scalars()]


@asynccontextmanager
async def enrolled_line(tmp: Path) -> AsyncIterator[Line]:
    async with tls_site(tmp, cert_s=CERT_S) as site:
        gateway = tls_gateway(tmp, site)
        await site.enrol(gateway)
        cert, _ = await site.platform.issue_certificate(
            factory="e2e-factory", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=10
        )
        yield Line(site, gateway, cert.cert_no)


def cert_key(path: Path) -> bytes:
    public = x509.load_pem_x509_certificate(path.read_bytes()).public_key()
    assert isinstance(public, Ed25519PublicKey)
    return public.public_bytes_raw()


async def test_a_rotated_gateway_keeps_its_id_and_scanning_goes_on_under_the_new_key(tmp_path: Path) -> None:
    specs = units(5)
    async with (
        enrolled_line(tmp_path) as line,
        running_goods(line.site.platform.issuer.public, specs, line.gateway.discovery_port),
    ):
        platform, gw, old = line.site.platform, line.gateway.gw, line.identity().key
        first_lease = await line.lease(3)
        before = await line.scan(specs[0].sn, specs[1].sn)
        rotated = await rotate_key(line.gateway.config)
        new = line.identity().key
        assert (rotated.gw, rotated.old_kid, rotated.new_kid) == (gw, old.kid.hex(), new.kid.hex())
        assert [c.lease.lease_id for c in rotated.closed] == [first_lease]
        assert rotated.seq == before + 1  # the close of the old key's lease is the old key's last record
        # Same gateway id, new key, its certificate (CN = gateway id) in place for mTLS; nothing left pending.
        assert line.identity().gw == gw
        assert (line.state / GATEWAY_ID_FILE).read_text().strip() == gw
        tls = line.gateway.config.mqtt.tls
        assert tls is not None
        assert cert_key(tls.cert_file) == new.public.raw
        assert x509.load_pem_x509_certificate(tls.cert_file.read_bytes()).subject.rfc4514_string() == f"CN={gw}"
        assert tls.key_file.read_bytes() == wx.gateway_key_pem(new)
        assert not (line.state / NEXT_KEY_FILE).exists()
        assert stat.S_IMODE((line.state / KEY_FILE).stat().st_mode) == 0o600
        # The line goes on: a lease bound to the new key, scans, records the new key signs, acked.
        await line.lease(3)
        after = await line.scan(specs[2].sn, specs[3].sn)
        assert after > rotated.seq
        assert await platform.confirmed_count(line.cert_no) == 4  # two under each key
        (listed,) = await platform.run(certificates.credentials, accounts.SYSTEM, line.cert_no)
        assert (listed.replaced, listed.quantity) == (4, 10)  # the credential list counts both keys' rebadges
        keys = await platform.gateway_keys(gw)
        assert [(k.kid, k.from_seq, k.to_seq) for k in keys] == [
            (old.kid.hex(), 0, rotated.seq),
            (new.kid.hex(), rotated.seq + 1, None),
        ]
        assert [g.gw for g in await platform.run(gateways.list_visible, accounts.SYSTEM)] == [gw]
        kinds = [h.kind for h in await platform.gateway_history(gw)]
        assert kinds.count("key_rotated") == 1
        assert await line.anomaly_kinds() == []


async def test_a_crash_before_the_introduction_leaves_the_old_key_working(tmp_path: Path) -> None:
    specs = units(3)
    async with (
        enrolled_line(tmp_path) as line,
        running_goods(line.site.platform.issuer.public, specs, line.gateway.discovery_port),
    ):
        old = line.identity().key
        await line.lease(3)
        # What rotate-key leaves when killed right after making the new key: gateway.key.next, nothing sent.
        waiting = new_key_file(line.state / NEXT_KEY_FILE)
        settle_rotation(line.gateway.config)  # the agent's start: nothing to finish, the old key stays
        assert line.identity().key == old
        await line.scan(specs[0].sn)
        rotated = await rotate_key(line.gateway.config)
        assert not rotated.resumed  # the platform did not know the key: introduced now
        assert rotated.new_kid == waiting.kid.hex()
        await line.lease(3)
        await line.scan(specs[1].sn)
        assert await line.site.platform.confirmed_count(line.cert_no) == 2


async def test_a_crash_after_the_platform_accepted_is_finished_by_running_rotate_key_again(tmp_path: Path) -> None:
    specs = units(3)
    async with (
        enrolled_line(tmp_path) as line,
        running_goods(line.site.platform.issuer.public, specs, line.gateway.discovery_port),
    ):
        platform, identity = line.site.platform, line.identity()
        # rotate-key killed after the platform accepted, before the switch: the platform has the new key, the
        # gateway still signs with the old one, which the platform now refuses.
        new, _ = await line.accepted_not_switched()
        rotated = await rotate_key(line.gateway.config)
        assert rotated.resumed  # asked first, signed by the new key: no second introduction
        assert line.identity().key == new
        assert len(await platform.gateway_keys(identity.gw)) == 2
        await line.lease(3)
        await line.scan(specs[0].sn)
        assert await platform.confirmed_count(line.cert_no) == 1
        assert await line.anomaly_kinds() == []


async def test_a_crash_right_after_the_switch_over_is_finished_at_the_agents_start(tmp_path: Path) -> None:
    specs = units(2)
    async with (
        enrolled_line(tmp_path) as line,
        running_goods(line.site.platform.issuer.public, specs, line.gateway.discovery_port),
    ):
        platform, identity = line.site.platform, line.identity()
        tls = line.gateway.config.mqtt.tls
        assert tls is not None
        new, certificate = await line.accepted_not_switched()
        # Killed after the key's rename, before the TLS files moved: the new certificate waits beside client.crt.
        pending = tls.cert_file.with_name(tls.cert_file.name + ".next")
        write_atomically(pending, certificate, 0o644)
        replace_durably(line.state / NEXT_KEY_FILE, line.state / KEY_FILE)
        assert cert_key(tls.cert_file) == identity.public.raw  # client.crt/client.key: still the old pair
        settle_rotation(line.gateway.config)  # what `rebadge agent run` does first
        assert cert_key(tls.cert_file) == new.public.raw
        assert tls.key_file.read_bytes() == wx.gateway_key_pem(new)
        assert not pending.exists()
        await line.lease(2)
        await line.scan(specs[0].sn)  # over mTLS with the new files
        assert await platform.confirmed_count(line.cert_no) == 1


async def test_a_refused_introduction_keeps_the_old_key(tmp_path: Path) -> None:
    async with enrolled_line(tmp_path) as line:
        old = line.identity().key
        await line.site.platform.revoke_gateway(line.gateway.gw)
        with pytest.raises(KeyRotationError, match="refused") as caught:
            await rotate_key(line.gateway.config)
        assert "old key stays in force" in str(caught.value)
        assert line.identity().key == old
        assert read_key(line.state / NEXT_KEY_FILE) != old  # kept for a later run
        assert AnswerCode.REFUSED.value in str(caught.value)


def _command(config_file: Path) -> list[str]:
    return [sys.executable, "-m", "rebadge.cli", "agent", "rotate-key", "-c", str(config_file)]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")}


async def _rotate_key_command(line: Line) -> tuple[int, str, str]:
    """`rebadge agent rotate-key` as a process of its own, with the gateway's config in a TOML file."""
    settings = {k: dict(v) for k, v in line.gateway.settings.items()}
    tls = settings["mqtt"].pop("tls")
    config_file = write_toml(line.state.parent / "agent.toml", {**settings, "mqtt.tls": tls})
    proc = await asyncio.create_subprocess_exec(
        *_command(config_file), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=_env()
    )
    async with asyncio.timeout(COMMAND_TIMEOUT_S):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_rotate_key_command_says_what_it_did_or_why_not(tmp_path: Path) -> None:
    async with enrolled_line(tmp_path) as line:
        gw, old = line.gateway.gw, line.identity().key
        lease_id = await line.lease(2)
        code, out, err = await _rotate_key_command(line)
        assert code == 0, err
        new = line.identity().key
        assert f"lease {lease_id} closed at seq 1 (key rotation)" in out
        assert f"gateway {gw}: key {new.kid.hex()} is in force; key {old.kid.hex()} is retired after seq 1" in out
        await line.site.platform.revoke_gateway(gw)
        code, out, err = await _rotate_key_command(line)
        assert code == 1
        assert "key not rotated: the platform answered refused" in err
        assert "Traceback" not in err
        assert line.identity().key == new


async def test_a_gateway_on_a_plaintext_broker_rotates_too(tmp_path: Path, broker: PrivateBroker) -> None:
    specs = units(3)
    async with running_cloud(tmp_path, broker) as cloud:
        gateway = Gateway.create(tmp_path, cloud.issuer, broker)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public, 2))
        async with running_goods(cloud.issuer, specs, gateway.discovery_port):
            async with running_agent(gateway.config) as agent:
                assert (await agent.scan(specs[0].sn)).result == "confirmed"
                await agent.synced()
            rotated = await rotate_key(gateway.config)
            new = GatewayIdentity.load_or_create(gateway.state_dir)
            assert (new.gw, new.key.kid.hex()) == (gateway.gw, rotated.new_kid)
            await load_lease_file(gateway.config, await cloud.lease_bundle(new.public, 2))
            async with running_agent(gateway.config) as agent:
                assert (await agent.scan(specs[1].sn)).result == "confirmed"
                await agent.synced()
        assert await cloud.confirmed_count() == 2
        stored = await cloud.records(gateway.gw)
        assert rotated.seq is not None
        assert [r.seq for r in stored] == list(range(1, len(stored) + 1))  # one chain across both keys
        assert stored[-1].seq > rotated.seq


async def test_rotate_key_killed_while_waiting_for_the_platform_finishes_when_run_again(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    specs = units(2)
    platform = await Platform.open(tmp_path / "platform")
    try:
        cert, _ = await platform.issue_certificate(
            factory="e2e-factory", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=10
        )
        gateway = Gateway.create(tmp_path, platform.issuer.public, broker)
        _, _, bundle = await platform.issue_lease(cert.cert_no, gateway.identity.public, 2, valid_s=3600)
        await load_lease_file(gateway.config, bundle)
        config_file = write_toml(tmp_path / "agent.toml", gateway.settings)
        # No worker yet: the command connects, sends the close and waits for an ack that does not come. SIGKILL.
        proc = await asyncio.create_subprocess_exec(
            *_command(config_file), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=REPO,
            env=_env(),
        )  # fmt: skip
        await until((gateway.state_dir / NEXT_KEY_FILE).exists, "the new key file")
        await asyncio.sleep(0.5)  # connecting, or waiting for the ack
        proc.kill()
        await proc.wait()
        old = GatewayIdentity.load_or_create(gateway.state_dir)
        assert old.key == gateway.identity.key  # the old key is still in force
        waiting = read_key(gateway.state_dir / NEXT_KEY_FILE)
        worker = IngestWorker(platform, host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2)
        async with running(worker.run(), "rotation:worker"):
            async with asyncio.timeout(COMMAND_TIMEOUT_S):
                await worker.ready.wait()
            rotated = await rotate_key(gateway.config)
            assert not rotated.resumed  # the platform never saw the introduction: made now, with the same new key
            new = GatewayIdentity.load_or_create(gateway.state_dir)
            assert new.key == waiting
            assert rotated.new_kid == waiting.kid.hex()
            _, _, bundle = await platform.issue_lease(cert.cert_no, new.public, 2, valid_s=3600)
            await load_lease_file(gateway.config, bundle)
            async with (
                running_goods(platform.issuer.public, specs, gateway.discovery_port),
                running_agent(gateway.config) as agent,
            ):
                assert (await agent.scan(specs[0].sn)).result == "confirmed"
                await agent.synced()
        assert await platform.confirmed_count(cert.cert_no) == 1
    finally:
        await platform.close()
