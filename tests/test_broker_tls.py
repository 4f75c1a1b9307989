"""A real mosquitto on the configuration `rebadge provision broker-config` writes: mTLS, the ACL, no plaintext."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import getpass
import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest

from agent.config import MqttConfig, TlsConfig
from agent.errors import ConfigError
from agent.uplink.connection import LastWill, make_client, tls_context
from agent.uplink.discovery import config_topic
from cloud_bridge import accounts, enrolment
from cloud_bridge.ca import load_or_create
from cloud_bridge.errors import ConfigError as CloudConfigError
from cloud_bridge.mqtt_tls import ServiceTls, service_context
from cloud_bridge.platform import Platform
from cloud_bridge.scan_relay import ScanRelay
from cloud_bridge.worker import IngestWorker
from durable.files import write_atomically
from provisioning.broker_config import BrokerSettings, acl, write_broker_config
from provisioning.enrolment import (
    CA_CERT_FILE,
    CLIENT_CERT_FILE,
    CLIENT_KEY_FILE,
    PUBLIC_MODE,
    SECRET_MODE,
    load_or_create_key,
)
from rebadge.broker import PrivateBroker, free_port
from tests.e2e_support import until
from tests.test_cloud_helpers import NEW_PID, OLD_PID, Journal
from wire import topics
from wire import x509 as wx
from wire.keys import KeyRing
from wire.scan_command import SCAN_OP, NonceWindow, check_scan
from wire.tokens import Ack, verify
from wire.topics import Result, ScanEvent

pytestmark = pytest.mark.slow

# A refused or dead connection is seen well within this; nothing here waits on a healthy broker longer.
CONNECT_TIMEOUT_S = 5.0
# How long a message allowed through would take to arrive at the most (loopback, idle broker).
DELIVERY_TIMEOUT_S = 3.0
# The broker never answers a client it refuses; the client gives up after this.
REFUSED_S = 1.5


@dataclass(frozen=True)
class Gateway:
    """An enrolled gateway's files."""

    gw: str
    state_dir: Path

    @property
    def tls(self) -> TlsConfig:
        d = self.state_dir
        return TlsConfig(ca_file=d / CA_CERT_FILE, cert_file=d / CLIENT_CERT_FILE, key_file=d / CLIENT_KEY_FILE)


@dataclass
class Site:
    """The platform (with its CA), a TLS broker on the generated configuration, and a way to enrol gateways."""

    platform: Platform
    broker: PrivateBroker
    broker_dir: Path
    tmp: Path
    org_id: int

    async def enrol(self, name: str) -> Gateway:
        now = self.platform.now()
        token, _ = await self.platform.run(enrolment.create_token, accounts.SYSTEM, name, 600, now, org_id=self.org_id)
        state = self.tmp / name
        key = load_or_create_key(state)
        done = await self.platform.enrol(token, wx.gateway_csr(key))
        write_atomically(state / CLIENT_KEY_FILE, wx.gateway_key_pem(key), SECRET_MODE)
        write_atomically(state / CLIENT_CERT_FILE, done.certificate, PUBLIC_MODE)
        write_atomically(state / CA_CERT_FILE, done.ca_certificate, PUBLIC_MODE)
        return Gateway(done.gw, state)

    @property
    def service_tls(self) -> ServiceTls:
        d = self.broker_dir
        return ServiceTls(ca_file=d / "ca.crt", cert_file=d / "platform.crt", key_file=d / "platform.key")

    def platform_context(self) -> ssl.SSLContext:
        return service_context(self.service_tls)


def tls_broker(ca_dir: Path, out: Path) -> PrivateBroker:
    """mosquitto on a fresh generated configuration for a free loopback port."""
    port = free_port()
    write_broker_config(ca_dir, BrokerSettings(out, port=port, bind="127.0.0.1", user=getpass.getuser()))
    return PrivateBroker(out, port, config_file=out / "mosquitto.conf")


@pytest.fixture(name="site")
async def fixture_site(tmp_path: Path) -> AsyncIterator[Site]:
    platform = await Platform.open(tmp_path / "cloud")
    org_id = await platform.run(accounts.create_org, accounts.SYSTEM, "factory", accounts.OrgKind.FACTORY, 0)
    broker = tls_broker(tmp_path / "cloud", tmp_path / "broker")
    broker.start()
    try:
        yield Site(platform, broker, tmp_path / "broker", tmp_path, org_id)
    finally:
        broker.stop()
        await platform.close()


def client(
    site: Site, identifier: str, context: ssl.SSLContext | None, port: int | None = None,
    timeout: float = CONNECT_TIMEOUT_S,
) -> aiomqtt.Client:  # fmt: skip
    return aiomqtt.Client(
        "127.0.0.1", port or site.broker.port, identifier=identifier, tls_context=context, timeout=timeout
    )


@contextlib.asynccontextmanager
async def running_worker(site: Site) -> AsyncIterator[IngestWorker]:
    """The real ingest worker with the platform's identity, as `rebadge cloud worker --mqtt-ca/...` builds it."""
    worker = IngestWorker(
        site.platform, host="127.0.0.1", port=site.broker.port, tls_context=service_context(site.service_tls),
        reconnect_min_s=0.05, reconnect_max_s=0.2,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def gateway_context(g: Gateway) -> ssl.SSLContext:
    context = tls_context(MqttConfig(tls=g.tls))
    assert context is not None
    return context


async def refused(c: aiomqtt.Client) -> BaseException:
    """The error connecting `c` ends with; the test fails if it connects."""
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError, TimeoutError)) as caught:
        async with asyncio.timeout(CONNECT_TIMEOUT_S * 2), c:
            pytest.fail("connected")
    return caught.value


def test_the_acl_confines_each_gateway_to_its_own_topics() -> None:
    text = acl("rebadge-platform")
    assert "pattern write rebadge/v1/gw/%u/#\n" in text
    assert "pattern read rebadge/v1/cloud/gw/%u/#\n" in text
    assert "pattern read rebadge/v1/gw/%u/res/#\n" in text
    assert "pattern read rebadge/v1/cloud/ready\n" in text
    assert "user rebadge-platform\ntopic read rebadge/v1/gw/+/#\n" in text
    assert "pattern write homeassistant/+/%u/#\n" in text
    assert "pattern readwrite" not in text
    assert "topic write rebadge/v1/cloud/#" in text or "topic readwrite rebadge/v1/cloud/#" in text


def test_the_configuration_requires_certificates_and_persists(tmp_path: Path) -> None:
    load_or_create(tmp_path / "cloud", 0)
    files = write_broker_config(tmp_path / "cloud", BrokerSettings(tmp_path / "b"))
    conf = (tmp_path / "b" / "mosquitto.conf").read_text()
    wanted = (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "persistence true",
        "autosave_on_changes true",
        "autosave_interval 1",
        "listener 8883 0.0.0.0",
    )
    for line in wanted:
        assert f"\n{line}\n" in conf
    modes = {p.name: p.stat().st_mode & 0o777 for p in files}
    assert modes == {"acl": 0o644, "ca.crt": 0o644, "mosquitto.conf": 0o644, "platform.crt": 0o644,
                     "platform.key": 0o600, "server.crt": 0o644, "server.key": 0o600}  # fmt: skip


async def test_a_gateway_cannot_speak_for_another(site: Site) -> None:
    a, b = await site.enrol("line-a"), await site.enrol("line-b")
    got: list[tuple[str, bytes]] = []
    async with client(site, "platform", site.platform_context()) as platform:
        await platform.subscribe(f"{topics.BASE}/gw/+/#", qos=1)
        async with client(site, a.gw, gateway_context(a)) as gw_a:
            await gw_a.publish(topics.records(b.gw), b"forged", qos=1)
            await gw_a.publish(topics.status(b.gw), b"forged", qos=1, retain=True)
            await gw_a.publish(topics.records(a.gw), b"own", qos=1)
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            async for message in platform.messages:
                assert isinstance(message.payload, bytes)
                got.append((message.topic.value, message.payload))
                if message.payload == b"own":
                    break
    # In order on one connection: had the forged ones passed, they would have come first.
    assert got == [(topics.records(a.gw), b"own")]


async def test_a_gateway_reads_only_its_own_acks(site: Site) -> None:
    a, b = await site.enrol("line-a"), await site.enrol("line-b")
    async with client(site, "platform", site.platform_context()) as platform:
        await platform.publish(topics.ack(b.gw), b"ack of b", qos=1, retain=True)
        await platform.publish(topics.ack(a.gw), b"ack of a", qos=1, retain=True)
    async with client(site, a.gw, gateway_context(a)) as gw_a:
        await gw_a.subscribe(f"{topics.BASE}/cloud/gw/+/ack", qos=1)
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            message = await anext(aiter(gw_a.messages))
        assert (message.topic.value, message.payload) == (topics.ack(a.gw), b"ack of a")


async def test_without_a_certificate_or_in_plaintext_the_broker_refuses(site: Site) -> None:
    # Both end by the client's timeout (the broker never answers CONNECT), so it is short; an accepted connection
    # would take milliseconds on loopback, which the enrolled gateway's own client shows first.
    enrolled = await site.enrol("line-a")
    async with client(site, enrolled.gw, gateway_context(enrolled), timeout=REFUSED_S):
        pass
    no_cert = ssl.create_default_context(cafile=str(site.broker_dir / "ca.crt"))
    await refused(client(site, "anonymous", no_cert, timeout=REFUSED_S))
    await refused(client(site, "plaintext", None, timeout=REFUSED_S))


async def test_the_agent_connects_with_its_enrolled_files(site: Site) -> None:
    g = await site.enrol("line-a")
    config = MqttConfig(host="127.0.0.1", port=site.broker.port, tls=g.tls)
    will = LastWill(topics.status(g.gw), b"offline")
    agent = make_client(config, g.gw, aiomqtt.ProtocolVersion.V5, will, CONNECT_TIMEOUT_S, tls_context(config))
    async with client(site, "platform", site.platform_context()) as platform:
        await platform.subscribe(topics.status(g.gw), qos=1)
        async with agent:
            await agent.publish(topics.status(g.gw), b"online", qos=1, retain=True)
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            message = await anext(aiter(platform.messages))
    assert message.payload == b"online"


async def test_the_agent_never_falls_back_to_plaintext(site: Site, broker: PrivateBroker) -> None:
    """A plaintext broker, or one whose certificate another CA signed, is refused; nothing is tried without TLS."""
    g = await site.enrol("line-a")
    will = LastWill(topics.status(g.gw), b"offline")
    load_or_create(site.tmp / "other-ca", site.platform.now())
    other = tls_broker(site.tmp / "other-ca", site.tmp / "other-broker")
    other.start()
    try:
        for port in (broker.port, other.port):
            config = MqttConfig(host="127.0.0.1", port=port, tls=g.tls)
            error = await refused(make_client(config, g.gw, aiomqtt.ProtocolVersion.V5, will, CONNECT_TIMEOUT_S,
                                              tls_context(config)))  # fmt: skip
            assert "CERTIFICATE_VERIFY_FAILED" in str(error) or port == broker.port
    finally:
        other.stop()
    assert "New client connected" not in (broker.workdir / "mosquitto.log").read_text()
    with pytest.raises(ConfigError, match="refusing to connect in plaintext"):
        make_client(MqttConfig(port=broker.port, tls=g.tls), g.gw, aiomqtt.ProtocolVersion.V5, will, 1.0, None)


def test_an_expired_certificate_is_named_with_its_dates(tmp_path: Path) -> None:
    ca = load_or_create(tmp_path / "cloud", 0)
    key = load_or_create_key(tmp_path / "state")
    cert = ca.issue_gateway(
        key.kid.hex(), key.public, 3600, int(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC).timestamp())
    )
    g = Gateway(key.kid.hex(), tmp_path / "state")
    write_atomically(g.tls.cert_file, wx.pem(cert), PUBLIC_MODE)
    write_atomically(g.tls.key_file, wx.gateway_key_pem(key), SECRET_MODE)
    write_atomically(g.tls.ca_file, ca.cert_pem, PUBLIC_MODE)
    with pytest.raises(ConfigError) as caught:
        tls_context(MqttConfig(tls=g.tls))
    message = str(caught.value)
    assert str(g.tls.cert_file) in message
    assert f"CN={key.kid.hex()}" in message
    assert "2020-01-01T01:00:00+00:00" in message
    assert "rebadge provision enrol" in message


async def test_the_worker_ingests_over_mtls_with_the_platform_identity(site: Site) -> None:
    """The real worker, with the context `rebadge cloud worker --mqtt-ca/--mqtt-cert/--mqtt-key` builds."""
    g = await site.enrol("line-a")
    j = Journal(load_or_create_key(g.state_dir), old_pid=OLD_PID)
    cert, _ = await site.platform.issue_certificate(factory="factory", original_pid=OLD_PID, new_pid=NEW_PID,
                                                    quantity=5)  # fmt: skip
    lease, _, _ = await site.platform.issue_lease(cert.cert_no, j.key.public, 2)
    j.confirm(lease.lease_id, 0, "SN0001")
    async with running_worker(site) as worker:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await worker.ready.wait()
        async with client(site, g.gw, gateway_context(g)) as gw:
            await gw.subscribe(topics.ack(g.gw), qos=1)
            await gw.publish(topics.records(g.gw), j.batch(), qos=1)
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                message = await anext(aiter(gw.messages))
    assert isinstance(message.payload, bytes)
    ack = verify(message.payload, Ack, KeyRing([site.platform.issuer.public]))
    assert (ack.gw, ack.seq, ack.head) == (g.gw, len(j.records), j.head)


async def test_only_the_platform_tells_gateways_it_is_ready(site: Site) -> None:
    a, b = await site.enrol("line-a"), await site.enrol("line-b")
    async with client(site, a.gw, gateway_context(a)) as gw_a:
        await gw_a.subscribe(topics.CLOUD_READY, qos=1)
        async with client(site, b.gw, gateway_context(b)) as gw_b:
            await gw_b.publish(topics.CLOUD_READY, b"forged", qos=1)  # the ACL drops it
        async with running_worker(site), asyncio.timeout(DELIVERY_TIMEOUT_S):
            message = await anext(aiter(gw_a.messages))
    assert isinstance(message.payload, bytes)
    assert (message.topic.value, message.retain) == (topics.CLOUD_READY, False)
    assert set(json.loads(message.payload)) == {"at"}


def test_an_expired_service_certificate_is_named_and_nothing_connects(site: Site) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(CloudConfigError) as caught:
        service_context(site.service_tls, now=later)
    message = str(caught.value)
    assert str(site.service_tls.cert_file) in message
    assert "CN=rebadge-platform" in message
    assert "expired or not yet valid" in message
    files = site.service_tls
    with pytest.raises(CloudConfigError, match="--mqtt-key"):
        service_context(ServiceTls(files.ca_file, files.cert_file, site.broker_dir / "server.key"))


async def test_a_gateway_writes_only_its_own_discovery_configs(site: Site) -> None:
    a, b = await site.enrol("line-a"), await site.enrol("line-b")
    own, forged = config_topic(a.gw, "RC000001", "confirmed"), config_topic(b.gw, "RC000001", "confirmed")
    async with client(site, "platform", site.platform_context()) as platform:
        await platform.subscribe("homeassistant/#", qos=1)
        async with client(site, a.gw, gateway_context(a)) as gw_a:
            await gw_a.publish(forged, b"forged", qos=1, retain=True)
            await gw_a.publish(own, b"own", qos=1, retain=True)
        async with asyncio.timeout(DELIVERY_TIMEOUT_S):
            message = await anext(aiter(platform.messages))
    assert (message.topic.value, message.payload) == (own, b"own")


def _event(sn: str, request_id: str, message: str) -> bytes:
    return ScanEvent(sn=sn, result=Result.CONFIRMED, message=message, id=request_id).model_dump_json().encode()


async def test_the_console_sends_signed_scans_over_mtls_and_takes_only_that_gateways_answer(site: Site) -> None:
    """The web console's relay, as the platform's identity: it may write cmd/scan, and of the events carrying its
    request id only the addressed gateway's counts (another gateway can neither write there nor answer for it)."""
    a, b = await site.enrol("line-a"), await site.enrol("line-b")
    relay = ScanRelay("127.0.0.1", site.broker.port, tls_context=site.platform_context(), reconnect_min_s=0.05)
    task = asyncio.create_task(relay.run())
    try:
        await until(lambda: relay.connected, "the relay connected", CONNECT_TIMEOUT_S)
        async with client(site, a.gw, gateway_context(a)) as gw_a, client(site, b.gw, gateway_context(b)) as gw_b:
            await gw_a.subscribe(topics.command(a.gw, SCAN_OP), qos=1)
            await gw_b.publish(topics.command(a.gw, SCAN_OP), b"from another gateway", qos=1)  # the ACL drops it
            sent = await relay.send(site.platform.issuer, a.gw, "SN-00001", "tom")
            async with asyncio.timeout(DELIVERY_TIMEOUT_S):
                message = await anext(aiter(gw_a.messages))
            assert isinstance(message.payload, bytes)
            ring = KeyRing([site.platform.issuer.public])
            command = check_scan(message.payload, ring, a.gw, site.platform.now(), NonceWindow())
            assert (command.sn, command.id) == ("SN-00001", sent.request_id)
            await gw_b.publish(topics.events(b.gw), _event("SN-00001", sent.request_id, "b's own topic"), qos=1)
            await gw_b.publish(topics.events(a.gw), _event("SN-00001", sent.request_id, "a's topic, by b"), qos=1)
            await gw_a.publish(topics.events(a.gw), _event("SN-00001", sent.request_id, "a's answer"), qos=1)
            await gw_a.publish(topics.events(a.gw), _event("SN-00001", sent.request_id, "a's second"), qos=1)
            await until(lambda: relay.results(a.gw)[0].event is not None, "a's answer taken", DELIVERY_TIMEOUT_S)
            await asyncio.sleep(0.2)  # anything later that was wrongly taken would have replaced it by now
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (answered,) = relay.results(a.gw)
    assert answered.event is not None
    assert (answered.event.message, answered.sent_by) == ("a's answer", "tom")
    assert relay.results(b.gw) == []
