"""What the uplink tests stand on: a platform stand-in that verifies batches and signs acks, a TCP proxy in front
of mosquitto (to cut a connection without a DISCONNECT, or to refuse MQTT 5 as a 3.1.1-only broker does), records
written through the real journal, and mTLS material."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.journal import Journal
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire import topics
from wire.chain import ChainChecker, ChainError
from wire.keys import KeyRing, SigningKey
from wire.records import GENESIS, Batch, Record, batch_from_cbor, record_from_cbor
from wire.tokens import Ack, Checkpoint, Grant, sign, verify

RECONNECT_S = 0.05
WAIT_S = 10.0
POLL_S = 0.01


async def eventually(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll until `check()` holds: state owned by other tasks (log records, counters) that has nothing to await."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - there is no event to wait on for these
            await asyncio.sleep(POLL_S)


# -- the gateway's side -----------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """A gateway key, its journal, and the certificate its lease comes from."""

    key: SigningKey
    journal: Journal
    issuer: Issuer
    scans: int = 0

    @property
    def gw(self) -> str:
        return self.key.kid.hex()

    @property
    def ring(self) -> KeyRing:
        return KeyRing([self.key.public])

    def sign_checkpoint(self, seq: int, head: bytes) -> bytes:
        return sign(Checkpoint(gw=self.gw, seq=seq, head=head, at=int(time.time())), self.key)

    async def add_lease(self, quantity: int = 1000) -> None:
        cert, cert_token = self.issuer.certificate(quantity)
        lease, lease_token = self.issuer.lease(cert, cert_token, self.key.public)
        await self.journal.add_lease(lease, lease_token, cert, cert_token)

    async def scan(self, n: int) -> int:
        """Reserve and confirm `n` new SNs (two records each); the journal's head seq after."""
        for _ in range(n):
            sn = f"SN{self.scans:06d}"
            self.scans += 1

            def sign_grant(lease_id: str, slot: int, sn: str = sn) -> bytes:
                grant = Grant(lease_id=lease_id, slot=slot, sn=sn, new_pid=NEW_PID, iat=int(time.time()))
                return sign(grant, self.key)

            attempt = await self.journal.reserve("RC000001", sn, ORIGINAL_PID, NEW_PID, "wifi", sign_grant)
            assert attempt is not None
            await self.journal.confirm(attempt.id)
        seq, _ = await self.journal.head()
        return seq


# -- the platform's side ----------------------------------------------------------------------------------------


@dataclass
class Platform:
    """Verifies every batch (checkpoint signature, chain) like the platform does, and acks its head if asked."""

    host: str
    port: int
    gw: str
    gateway_ring: KeyRing
    issuer: SigningKey
    auto_ack: bool = True
    batches: list[Batch] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    head_seq: int = 0
    head_digest: bytes = GENESIS
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Subscribe to the gateway's records; reconnect when the broker goes away."""
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await client.subscribe(topics.records(self.gw), qos=1)
                    self.subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        await self._on_batch(client, message.payload)
            except aiomqtt.MqttError:
                self.subscribed.clear()
                await asyncio.sleep(RECONNECT_S)

    async def _on_batch(self, client: aiomqtt.Client, payload: bytes) -> None:
        batch = batch_from_cbor(payload)
        records = [record_from_cbor(r) for r in batch.records]
        checkpoint = verify(batch.checkpoint, Checkpoint, self.gateway_ring)
        self.batches.append(batch)
        self.checkpoints.append(checkpoint)
        self.seen.extend(r.seq for r in records)
        self._check(batch, records, checkpoint)
        self._apply(records)
        self._changed.set()
        if self.auto_ack and self.head_seq:
            await self.ack(client, self.head_seq, self.head_digest)

    def _check(self, batch: Batch, records: list[Record], checkpoint: Checkpoint) -> None:
        chain = ChainChecker.segment(self.gw, batch.from_seq)
        try:
            for body in batch.records:
                chain.feed(body)
        except ChainError as exc:
            self.errors.append(f"batch from {batch.from_seq}: {exc}")
        if checkpoint.seq != records[-1].seq or checkpoint.head != records[-1].digest() or checkpoint.gw != self.gw:
            self.errors.append(f"checkpoint {checkpoint} does not name the batch's last record")

    def _apply(self, records: list[Record]) -> None:
        for rec in records:
            if rec.seq == self.head_seq + 1 and rec.prev == self.head_digest:
                self.head_seq, self.head_digest = rec.seq, rec.digest()

    async def ack(self, client: aiomqtt.Client, seq: int, head: bytes) -> None:
        token = sign(Ack(gw=self.gw, seq=seq, head=head, at=int(time.time())), self.issuer)
        await client.publish(topics.ack(self.gw), token, qos=1, retain=True)

    async def wait_head(self, seq: int, timeout: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout):
            while self.head_seq < seq:
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def running(coro: object, name: str) -> AsyncIterator[asyncio.Task[None]]:
    """Run a coroutine as a task for the block; cancel it and wait for it after, re-raising its failure."""
    task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- a proxy in front of the broker -----------------------------------------------------------------------------


CONNACK_BAD_PROTOCOL = b"\x20\x02\x00\x01"  # MQTT 3.1.1: "unacceptable protocol level"


class MqttProxy:
    """Forwards TCP to the broker; `cut()` drops every link without a DISCONNECT, `accepting` turns new links
    away, `refuse_v5` answers an MQTT 5 CONNECT as a 3.1.1-only broker does."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.accepting = True
        self.refuse_v5 = False
        self.refused_v5 = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.accepting:
            return
        connect = await _read_packet(reader)
        level = connect[connect.index(b"MQTT") + 4]
        if level == 5 and self.refuse_v5:
            self.refused_v5 += 1
            writer.write(CONNACK_BAD_PROTOCOL)
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links.update({writer, up_writer})
        up_writer.write(connect)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.transport.abort()


async def _read_packet(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(1)
    length, shift, raw = 0, 0, b""
    while True:
        byte = await reader.readexactly(1)
        raw += byte
        length |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            break
    return head + raw + await reader.readexactly(length)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.transport.abort()


# -- mTLS material ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rebadge test CA")])
    ca = _cert(ca_name, ca_name, ca_key, ca_key, ca=True)
    files = TlsFiles(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, san in (
        (files.server_cert, files.server_key, "127.0.0.1", True),
        (files.client_cert, files.client_key, "gateway", False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = _cert(name, ca_name, key, ca_key, ca=False, ip_san=san)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return files


def _cert(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, signer: ec.EllipticCurvePrivateKey,
    *, ca: bool, ip_san: bool = False,
) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip_san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def tls_listener(files: TlsFiles, port: int) -> str:
    """mosquitto config for a second listener that demands a client certificate."""
    return (
        f"listener {port} 127.0.0.1\ncafile {files.ca}\ncertfile {files.server_cert}\nkeyfile {files.server_key}\n"
        "require_certificate true\n"
    )
