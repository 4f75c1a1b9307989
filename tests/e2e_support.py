"""What the end-to-end tests stand on: the platform with its ingest worker on a private mosquitto, simulated Wi-Fi
goods on loopback, the agent in this process or as a real process, and readers of the platform's store and of the
agent's journal file. Everything here is the real code; only the goods are simulated."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from sqlalchemy import func, select

from agent.certs.identity import GatewayIdentity
from agent.config import AgentConfig, parse_config
from agent.journal import Counts, Journal
from agent.radios.base import Radio as AgentRadio
from agent.service import JOURNAL_FILE, AgentService, load_lease_file
from cloud_bridge.platform import Platform
from cloud_bridge.store.schema import confirmations, gateway_heads, records
from cloud_bridge.worker import SWEEP_S, IngestWorker
from rebadge.broker import PrivateBroker
from simulator.firmware import DeviceState, Firmware
from simulator.goods import UnitSpec, WifiLine, build_wifi_line
from simulator.wifi import WifiDevice
from tests.helpers import NEW_PID, ORIGINAL_PID
from wire import topics
from wire.device import Firmware as FirmwareKind
from wire.device import Radio
from wire.keys import KeyRing, PublicKey, SigningKey
from wire.records import Record, batch_from_cbor, record_from_cbor
from wire.scan_command import sign_scan
from wire.tokens import Certificate
from wire.topics import ScanEvent

REPO = Path(__file__).resolve().parent.parent
# Bound on any wait for the system to settle (acks, a process starting, a record arriving).
WAIT_S = 15.0
# How often polled state (a journal file, a simulated device) is looked at.
POLL_S = 0.02
# The agent is killed or stopped within this.
STOP_S = 10.0
ANNOUNCE_S = 0.05
# Small radio timeouts: a silent device costs a scan REBADGE_S.
FIND_S = 3.0
INFO_S = 1.0
REBADGE_S = 0.5
# The worker retries a lost broker this often; the agent backs off from AGENT_RECONNECT_MIN_S.
WORKER_RECONNECT_S = 0.05
AGENT_RECONNECT_MIN_S = 0.1
AGENT_RECONNECT_MAX_S = 0.4

__all__ = ["NEW_PID", "ORIGINAL_PID"]


def units(n: int, prefix: str = "E2E", **spec: Any) -> list[UnitSpec]:
    """`n` Wi-Fi goods with the certificate's original PID."""
    return [UnitSpec(sn=f"{prefix}-{i:04d}", pid=ORIGINAL_PID, **spec) for i in range(1, n + 1)]


async def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll state owned by the code under test (a simulated device, a file) until `condition` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polling state that has no event of its own
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout}s") from None


async def until_async(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT_S) -> None:
    """Poll an async condition (a database, a file read in a thread) until it holds."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - polling state that has no event of its own
                await asyncio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout}s") from None


# -- the agent's configuration ------------------------------------------------------------------------------------


def free_udp_port() -> int:
    """A UDP port free on loopback right now (the agent's discovery listener binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_settings(
    state_dir: Path, issuer: PublicKey, broker: PrivateBroker, discovery_port: int, **debug: float
) -> dict[str, dict[str, Any]]:
    """The agent's config as the TOML file holds it, with every timing shrunk for tests."""
    return {
        "gateway": {"name": "e2e-line", "state_dir": str(state_dir)},
        "trust": {"issuer_keys": [issuer.raw.hex()]},
        "mqtt": {
            "host": broker.host,
            "port": broker.port,
            "reconnect_min_s": AGENT_RECONNECT_MIN_S,
            "reconnect_max_s": AGENT_RECONNECT_MAX_S,
        },
        "line": {
            "radios": ["wifi"],
            "find_timeout_s": FIND_S,
            "info_timeout_s": INFO_S,
            "rebadge_timeout_s": REBADGE_S,
        },
        "wifi": {"discovery_port": discovery_port, "bind_address": "127.0.0.1"},
        "scanner": {"mqtt": True},
        "debug": dict(debug),
    }


def to_config(settings: Mapping[str, Any]) -> AgentConfig:
    """The settings validated as the agent validates its file (no environment overrides)."""
    return parse_config(settings, "e2e", env={})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def write_toml(path: Path, settings: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write `settings` (sections of scalars and lists) as a TOML file."""
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


# -- the platform -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRecord:
    """One record as the platform stored it."""

    seq: int
    kind: str
    sn: str
    lease_id: str
    slot: int


@dataclass
class Cloud:
    """The platform on SQLite with its ingest worker on the broker, and one certificate it issued."""

    platform: Platform
    worker: IngestWorker
    cert: Certificate
    cert_token: bytes

    @property
    def issuer(self) -> PublicKey:
        """The issuer key the agent pins and the goods trust."""
        return self.platform.issuer.public

    async def lease_bundle(self, gateway: PublicKey, slots: int | None = None, *, valid_s: int = 3600) -> bytes:
        """A lease file of this certificate for `gateway`, as `rebadge cloud lease` writes it."""
        _, _, bundle = await self.platform.issue_lease(
            self.cert.cert_no, gateway, slots or self.cert.quantity, valid_s=valid_s
        )
        return bundle

    async def confirmed_count(self) -> int:
        """Slots of the certificate confirmed by verified records."""
        return await self.platform.confirmed_count(self.cert.cert_no)

    async def head(self, gw: str) -> int:
        """The gateway's head seq in the platform's ledger (0 before its first batch)."""
        async with self.platform.engine.connect() as conn:
            row = (await conn.execute(select(gateway_heads.c.seq).where(gateway_heads.c.gw == gw))).first()
        return 0 if row is None else int(row.seq)

    async def rows_per_seq(self, gw: str) -> dict[int, int]:
        """How many rows the platform's store holds for each seq of the gateway."""
        async with self.platform.engine.connect() as conn:
            rows = await conn.execute(
                select(records.c.seq, func.count()).where(records.c.gw == gw).group_by(records.c.seq)
            )
            return {int(seq): int(n) for seq, n in rows}

    async def records(self, gw: str, sn: str | None = None) -> list[StoredRecord]:
        """The gateway's stored records (of one SN if given), by seq."""
        query = select(records.c.seq, records.c.kind, records.c.sn, records.c.lease_id, records.c.slot).where(
            records.c.gw == gw
        )
        if sn is not None:
            query = query.where(records.c.sn == sn)
        async with self.platform.engine.connect() as conn:
            rows = await conn.execute(query.order_by(records.c.seq))
            return [StoredRecord(int(r.seq), r.kind, r.sn, r.lease_id, int(r.slot)) for r in rows]

    async def confirmations(self, sn: str | None = None) -> list[tuple[str, int, str]]:
        """(lease, slot, sn) the platform counts as spent for this certificate."""
        query = select(confirmations.c.lease_id, confirmations.c.slot, confirmations.c.sn).where(
            confirmations.c.cert_no == self.cert.cert_no
        )
        if sn is not None:
            query = query.where(confirmations.c.sn == sn)
        async with self.platform.engine.connect() as conn:
            return [(r.lease_id, int(r.slot), r.sn) for r in await conn.execute(query)]


@asynccontextmanager
async def running_cloud(
    workdir: Path, broker: PrivateBroker, *, quantity: int = 10, protocols: Sequence[str] = ("wifi",),
    sweep_s: float = SWEEP_S, worker_reconnect_s: float = WORKER_RECONNECT_S,
) -> AsyncIterator[Cloud]:  # fmt: skip
    """Open the platform, issue one certificate, and run the ingest worker until exit."""
    platform = await Platform.open(workdir / "platform")
    try:
        cert, token = await platform.issue_certificate(
            factory="e2e-factory", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=quantity, protocols=protocols
        )
        worker = IngestWorker(
            platform, host=broker.host, port=broker.port,
            reconnect_min_s=worker_reconnect_s, reconnect_max_s=worker_reconnect_s, sweep_s=sweep_s,
        )  # fmt: skip
        async with running(worker.run(), "e2e:worker"):
            async with asyncio.timeout(WAIT_S):
                await worker.ready.wait()
            yield Cloud(platform, worker, cert, token)
    finally:
        await platform.close()


@asynccontextmanager
async def running(coro: Any, name: str) -> AsyncIterator[asyncio.Task[Any]]:
    """Run `coro` as a task until exit, then cancel it and wait for it."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- the goods ----------------------------------------------------------------------------------------------------


@asynccontextmanager
async def running_goods(issuer: PublicKey, specs: Sequence[UnitSpec], discovery_port: int) -> AsyncIterator[WifiLine]:
    """Simulated Wi-Fi goods announcing themselves to the agent's discovery port."""
    async with build_wifi_line(
        KeyRing([issuer]), specs, announce_to=("127.0.0.1", discovery_port), announce_interval=ANNOUNCE_S
    ) as line:
        yield line


@asynccontextmanager
async def odd_device(
    issuer: PublicKey, sn: str, discovery_port: int, *, firmware: FirmwareKind, radio: Radio
) -> AsyncIterator[WifiDevice]:
    """A Wi-Fi reachable device that reports another firmware kind or radio (the agent trusts what it reports)."""
    state = DeviceState(sn=sn, pid=ORIGINAL_PID, firmware=firmware, radio=radio)
    device = WifiDevice(
        Firmware(state, KeyRing([issuer])), announce_to=("127.0.0.1", discovery_port), announce_interval=ANNOUNCE_S
    )
    async with device:
        yield device


# -- the agent in this process ------------------------------------------------------------------------------------


@dataclass
class Gateway:
    """One gateway's state directory and config; its identity is created as `rebadge agent init` creates it."""

    state_dir: Path
    settings: dict[str, dict[str, Any]]
    identity: GatewayIdentity = field(init=False)

    def __post_init__(self) -> None:
        self.identity = GatewayIdentity.load_or_create(self.state_dir)

    @classmethod
    def create(
        cls, workdir: Path, issuer: PublicKey, broker: PrivateBroker, *, mqtt: Mapping[str, Any] | None = None,
        **debug: float,
    ) -> Gateway:  # fmt: skip
        """A new gateway under `workdir` pinning `issuer`, listening for announcements on a free port."""
        state_dir = workdir / "gateway"
        settings = agent_settings(state_dir, issuer, broker, free_udp_port(), **debug)
        settings["mqtt"].update(mqtt or {})
        return cls(state_dir, settings)

    @property
    def gw(self) -> str:
        return self.identity.gw

    @property
    def config(self) -> AgentConfig:
        return to_config(self.settings)

    @property
    def discovery_port(self) -> int:
        return int(self.settings["wifi"]["discovery_port"])

    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL_FILE

    def with_debug(self, **debug: float) -> dict[str, dict[str, Any]]:
        """The settings with other [debug] pauses."""
        return {**self.settings, "debug": dict(debug)}


@dataclass
class RunningAgent:
    """An AgentService running in this process."""

    service: AgentService

    @property
    def journal(self) -> Journal:
        assert self.service.journal is not None
        return self.service.journal

    async def scan(self, sn: str) -> ScanEvent:
        return await self.service.scan(sn)

    async def counts(self, cert_no: str) -> Counts:
        return await self.journal.counts(cert_no)

    async def head(self) -> int:
        return (await self.journal.head())[0]

    async def synced(self, timeout: float = WAIT_S) -> int:
        """Wait until the platform's acks cover the journal's head; return that seq."""
        seq = await self.head()
        assert self.service.uplink is not None
        await self.service.uplink.wait_acked(seq, timeout)
        return seq


@asynccontextmanager
async def running_agent(config: AgentConfig, radios: Sequence[AgentRadio] | None = None) -> AsyncIterator[RunningAgent]:
    """The agent service built from `config` (its own radios, or `radios`), ready to scan; stopped on exit."""
    service = AgentService(config, radios=radios)
    async with running(service.run(), "e2e:agent") as task:
        ready = asyncio.create_task(service.ready.wait(), name="e2e:agent-ready")
        try:
            async with asyncio.timeout(WAIT_S):
                await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if task.done():
            task.result()
            raise AssertionError("the agent stopped before it was ready")
        assert service.uplink is not None
        await service.uplink.wait_connected(WAIT_S)
        yield RunningAgent(service)


@dataclass
class Line:
    """Cloud, gateway, goods and a running agent, set up in that order."""

    cloud: Cloud
    gateway: Gateway
    goods: WifiLine
    agent: RunningAgent


@asynccontextmanager
async def running_line(
    workdir: Path, broker: PrivateBroker, specs: Sequence[UnitSpec], *, quota: int = 10,
    mqtt: Mapping[str, Any] | None = None, worker_reconnect_s: float = WORKER_RECONNECT_S, **debug: float,
) -> AsyncIterator[Line]:  # fmt: skip
    """A whole line: certificate of `quota` slots, one lease of all of them loaded, goods, agent."""
    async with AsyncExitStack() as stack:
        cloud = await stack.enter_async_context(
            running_cloud(workdir, broker, quantity=quota, worker_reconnect_s=worker_reconnect_s)
        )
        gateway = Gateway.create(workdir, cloud.issuer, broker, mqtt=mqtt, **debug)
        await load_lease_file(gateway.config, await cloud.lease_bundle(gateway.identity.public))
        goods = await stack.enter_async_context(running_goods(cloud.issuer, specs, gateway.discovery_port))
        agent = await stack.enter_async_context(running_agent(gateway.config))
        yield Line(cloud, gateway, goods, agent)


# -- the journal file, read from outside --------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalFile:
    """What the journal file says, read read-only while the agent (maybe) runs."""

    head_seq: int
    retired_seq: int
    attempts: list[tuple[str, int, str]]  # (sn, slot, state), oldest first


def _read_journal(path: Path) -> JournalFile:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=STOP_S)
    try:
        head_seq, retired_seq = db.execute("SELECT head_seq, retired_seq FROM chain").fetchone()
        attempts = db.execute("SELECT sn, slot, state FROM attempts ORDER BY id").fetchall()
    finally:
        db.close()
    return JournalFile(int(head_seq), int(retired_seq), [(str(a), int(b), str(c)) for a, b, c in attempts])


async def read_journal(path: Path) -> JournalFile:
    """The journal's chain row and attempts, through a read-only connection (never on the event loop)."""
    return await asyncio.to_thread(_read_journal, path)


# -- the agent as a real process ----------------------------------------------------------------------------------


class AgentProcess:
    """`python -m rebadge.cli agent run -c FILE --no-console`, its output in a log file."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.config_file = config_file
        self.log_file = log_file
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        """Start the agent (stdout and stderr go to the log file)."""
        with self.log_file.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *agent_command(self.config_file), stdout=log, stderr=log, cwd=REPO, env=_child_env()
            )

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no DISCONNECT, no journal close."""
        await self._signal(signal.SIGKILL)

    async def terminate(self) -> int:
        """SIGTERM and wait; return the exit code."""
        return await self._signal(signal.SIGTERM)

    async def _signal(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        async with asyncio.timeout(STOP_S):
            return await self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the agent's output, for assertion messages."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def close(self) -> None:
        """Make sure the process is gone (a failed test must not leave it running)."""
        if self.proc is not None and self.proc.returncode is None:
            await self.kill()


def agent_command(config_file: Path) -> list[str]:
    return [sys.executable, "-m", "rebadge.cli", "-v", "agent", "run", "-c", str(config_file), "--no-console"]


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def run_agent_to_exit(config_file: Path, timeout: float = WAIT_S) -> tuple[int, str]:
    """Run the agent process expecting it to stop by itself; return (exit code, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *agent_command(config_file),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env=_child_env(),
    )
    try:
        async with asyncio.timeout(timeout):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the agent did not stop by itself within {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


# -- what the gateway publishes, as a dashboard sees it -----------------------------------------------------------


@dataclass
class Heard:
    """Messages under the gateway's topic prefix, in arrival order."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    pulse: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self.pulse.set()

    async def wait_for(self, find: Callable[[str, bytes], bool], what: str, timeout: float = WAIT_S) -> bytes:
        """The first message (heard so far or later) for which `find` holds."""
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for topic, payload in self.messages[seen:]:
                        if find(topic, payload):
                            return payload
                    seen = len(self.messages)
                    self.pulse.clear()
                    await self.pulse.wait()
        except TimeoutError:
            raise AssertionError(f"{what}: not heard within {timeout}s") from None


def records_in(payload: bytes) -> list[Record]:
    """The records of one `records` batch."""
    return [record_from_cbor(r) for r in batch_from_cbor(payload).records]


def is_record(gw: str, sn: str, kind: str) -> Callable[[str, bytes], bool]:
    """Matches a batch holding a record of `kind` for `sn`."""
    return lambda topic, payload: (
        topic == topics.records(gw) and any(r.sn == sn and r.kind == kind for r in records_in(payload))
    )


def is_health_of(gw: str, pid: int) -> Callable[[str, bytes], bool]:
    """Matches the health a given agent process publishes once it is connected (it carries its pid)."""
    return lambda topic, payload: topic == topics.health(gw) and json.loads(payload).get("pid") == pid


def is_event(gw: str, request_id: str) -> Callable[[str, bytes], bool]:
    """Matches the scan event answering the scan command with this id."""
    return lambda topic, payload: topic == topics.events(gw) and ScanEvent.model_validate_json(payload).id == request_id


@asynccontextmanager
async def listening(broker: PrivateBroker, gw: str) -> AsyncIterator[tuple[Heard, aiomqtt.Client]]:
    """Subscribe to everything the gateway publishes; the client can publish commands to it."""
    heard = Heard()
    async with aiomqtt.Client(broker.host, broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{topics.gw_prefix(gw)}/#", qos=1)

        async def pump() -> None:
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                heard.add(message.topic.value, payload)

        async with running(pump(), "e2e:listen"):
            yield heard, client


async def send_scan(client: aiomqtt.Client, gw: str, sn: str, request_id: str, key: SigningKey) -> None:
    """A scan command signed by the platform's issuer `key`, as the console's Perform replacement page sends it."""
    command = sign_scan(key, gw, sn, request_id, int(time.time()))
    await client.publish(topics.command(gw, "scan"), command, qos=1)
