"""Short-lived client certificates renewed over the gateway's mTLS session, with a real mosquitto on the generated
configuration, the real worker with the platform's identity, and the real agent scanning simulated goods."""

from __future__ import annotations

import asyncio
import stat
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from sqlalchemy import select

from agent.certs.renewal import CERT_MODE
from agent.errors import RenewalError
from agent.service import load_lease_file
from cloud_bridge import accounts, enrolment
from cloud_bridge.mqtt_tls import ServiceTls, service_context
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import anomalies
from cloud_bridge.worker import IngestWorker
from durable.files import write_atomically
from rebadge.broker import PrivateBroker
from tests.e2e_support import (
    NEW_PID,
    ORIGINAL_PID,
    Gateway,
    running,
    running_agent,
    running_goods,
    units,
    until,
    until_async,
)
from tests.test_broker_tls import tls_broker
from wire import x509 as wx
from wire.keys import SigningKey
from wire.lease_request import AnswerCode, RenewRequest, new_nonce, renew_answer_from_cbor
from wire.tokens import sign

pytestmark = pytest.mark.slow

FACTORY = "e2e-factory"
# Client certificates last this long here (days in production), and are renewed this long before they end.
CERT_S = 6
RENEW_BEFORE_S = 4.0
WAIT_S = 15.0


@dataclass
class TlsSite:
    """Platform (short client certificates), TLS broker on the generated configuration, worker with its identity."""

    platform: Platform
    broker: PrivateBroker
    worker: IngestWorker
    org_id: int

    async def enrol(self, gateway: Gateway) -> None:
        """Enrol the gateway as `rebadge provision enrol` does and write its files where its config says."""
        tls = gateway.config.mqtt.tls
        assert tls is not None
        now = self.platform.now()
        token, _ = await self.platform.run(
            enrolment.create_token, accounts.SYSTEM, "line", 600, now, org_id=self.org_id
        )
        done = await self.platform.enrol(token, wx.gateway_csr(gateway.identity.key))
        write_atomically(tls.key_file, wx.gateway_key_pem(gateway.identity.key), 0o600)
        write_atomically(tls.cert_file, done.certificate, CERT_MODE)
        write_atomically(tls.ca_file, done.ca_certificate, CERT_MODE)


@asynccontextmanager
async def tls_site(tmp: Path, *, cert_s: int = CERT_S) -> AsyncIterator[TlsSite]:
    platform = await Platform.open(tmp / "platform", client_cert_valid_s=cert_s)
    org_id = await platform.run(accounts.create_org, accounts.SYSTEM, FACTORY, accounts.OrgKind.FACTORY, 0)
    broker = tls_broker(tmp / "platform", tmp / "broker")
    broker.start()
    d = tmp / "broker"
    worker = IngestWorker(
        platform, host=broker.host, port=broker.port, reconnect_min_s=0.05, reconnect_max_s=0.2,
        tls_context=service_context(ServiceTls(d / "ca.crt", d / "platform.crt", d / "platform.key")),
    )  # fmt: skip
    try:
        async with running(worker.run(), "renewal:worker"):
            async with asyncio.timeout(WAIT_S):
                await worker.ready.wait()
            yield TlsSite(platform, broker, worker, org_id)
    finally:
        broker.stop()
        await platform.close()


def tls_gateway(tmp: Path, site: TlsSite) -> Gateway:
    state = tmp / "gateway"
    tls = {"ca_file": str(state / "ca.crt"), "cert_file": str(state / "client.crt"),
           "key_file": str(state / "client.key"), "renew_before_s": RENEW_BEFORE_S, "renew_retry_s": 0.5,
           "renew_timeout_s": 5.0}  # fmt: skip
    return Gateway.create(tmp, site.platform.issuer.public, site.broker, mqtt={"tls": tls})


def not_after(path: Path) -> float:
    return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_after_utc.timestamp()


async def test_a_certificate_is_renewed_before_expiry_while_the_line_keeps_scanning(tmp_path: Path) -> None:
    specs = units(4)
    async with tls_site(tmp_path) as site:
        gateway = tls_gateway(tmp_path, site)
        await site.enrol(gateway)
        tls = gateway.config.mqtt.tls
        assert tls is not None
        first_end = not_after(tls.cert_file)
        cert, _ = await site.platform.issue_certificate(
            factory=FACTORY, original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=10
        )
        _, _, bundle = await site.platform.issue_lease(cert.cert_no, gateway.identity.public, 10, valid_s=3600)
        await load_lease_file(gateway.config, bundle)
        async with (
            running_goods(site.platform.issuer.public, specs, gateway.discovery_port),
            running_agent(gateway.config) as agent,
        ):
            renewer = agent.service.renewer
            assert renewer is not None
            assert (await agent.scan(specs[0].sn)).result == "confirmed"
            await agent.synced()
            await until(lambda: renewer.renewed >= 1, "a renewal", timeout=CERT_S)
            assert not_after(tls.cert_file) > first_end
            assert time.time() < first_end  # renewed before the old one ended
            assert stat.S_IMODE(tls.cert_file.stat().st_mode) == CERT_MODE
            assert (await agent.scan(specs[1].sn)).result == "confirmed"
            await agent.synced()
            # Past the first certificate's end, a new connection only works with a renewed one.
            await until(lambda: time.time() > first_end + 1, "the first certificate's end", timeout=CERT_S + 2)
            connections = agent.service.uplink.connections if agent.service.uplink else 0
            site.broker.stop()
            site.broker.start()
            await until(lambda: agent.service.uplink is not None and agent.service.uplink.connections > connections,
                        "the agent's reconnection")  # fmt: skip
            assert (await agent.scan(specs[2].sn)).result == "confirmed"
            await agent.synced()
        history = await site.platform.gateway_history(gateway.gw)
        assert [h.kind for h in history][:2] == ["enrolled", "renewed"]


async def test_a_revoked_gateways_renewal_is_refused_and_stored_as_an_anomaly(tmp_path: Path) -> None:
    async with tls_site(tmp_path) as site:
        gateway = tls_gateway(tmp_path, site)
        await site.enrol(gateway)
        await site.platform.revoke_gateway(gateway.gw)
        tls = gateway.config.mqtt.tls
        assert tls is not None
        before = tls.cert_file.read_bytes()

        async def refusals() -> list[str]:
            query = select(anomalies.c.message).where(
                anomalies.c.gw == gateway.gw, anomalies.c.kind == "revoked_gateway"
            )
            async with site.platform.engine.connect() as conn:
                return [str(m) for m in (await conn.execute(query)).scalars()]

        async with running_agent(gateway.config) as agent:  # the broker lets it in: revocation is non-renewal
            renewer = agent.service.renewer
            assert renewer is not None
            await until_async(lambda: _any(refusals()), "a refused renewal", timeout=CERT_S)
            assert renewer.renewed == 0
            with pytest.raises(RenewalError, match="refused"):
                await renewer.renew()
        assert tls.cert_file.read_bytes() == before
        assert "renewal refused: gateway" in (await refusals())[0]
        # A forgery on the revoked gateway's topic (its kid, a broken signature) is no evidence against it.
        genuine = sign(
            RenewRequest(id="renew-9", gw=gateway.gw, nonce=new_nonce(), at=site.platform.now(),
                         csr=wx.gateway_csr(gateway.identity.key)),
            gateway.identity.key,
        )  # fmt: skip
        stored = len(await refusals())
        answer = await site.platform.answer_renew(gateway.gw, genuine[:-1] + bytes([genuine[-1] ^ 1]))
        assert answer.code == AnswerCode.BAD_SIGNATURE
        assert len(await refusals()) == stored


async def _any(pending: Awaitable[list[str]]) -> bool:
    return bool(await pending)


async def test_a_renewal_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    async with tls_site(tmp_path) as site:
        gateway = tls_gateway(tmp_path, site)
        await site.enrol(gateway)
        other = SigningKey.generate()
        forged = RenewRequest(id="renew-1", gw=gateway.gw, nonce=new_nonce(), at=site.platform.now(),
                              csr=wx.gateway_csr(other))  # fmt: skip
        answer = await site.platform.answer_renew(gateway.gw, sign(forged, other))
        assert answer.code == AnswerCode.BAD_SIGNATURE
        own = RenewRequest(id="renew-2", gw=gateway.gw, nonce=new_nonce(), at=site.platform.now(),
                           csr=wx.gateway_csr(other))  # fmt: skip
        answer = await site.platform.answer_renew(gateway.gw, sign(own, gateway.identity.key))
        assert answer.code == AnswerCode.MALFORMED
        assert "not gateway" in answer.message
        assert renew_answer_from_cbor(answer.to_cbor()) == answer


async def test_a_renew_before_longer_than_the_certificates_does_not_loop(tmp_path: Path) -> None:
    async with tls_site(tmp_path) as site:
        gateway = tls_gateway(tmp_path, site)
        gateway.settings["mqtt"]["tls"] |= {"renew_before_s": 3600.0, "renew_retry_s": 60.0}
        await site.enrol(gateway)
        async with running_agent(gateway.config) as agent:
            renewer = agent.service.renewer
            assert renewer is not None
            await until(lambda: renewer.renewed >= 1, "a first renewal")
            await asyncio.sleep(1.0)
            assert renewer.renewed == 1  # waits renew_retry_s before the next, instead of asking in a tight loop
