"""A mixed line: Wi-Fi, BLE and Zigbee goods through one real Line, each radio working alone and all three at once.

Run: `python benchmarks/bench_mixed.py [--window S] [--rounds N] [--wifi-ms 5] [--zigbee-ms 30] [--dir DIR]
[--doc docs/benchmarks.md]`.

One `Line` (journal on disk with WAL and synchronous=FULL, one lease covering the three protocols, the Wi-Fi, BLE
and Zigbee radios built by the registry in that order) rebadges simulated goods at realistic latencies: Wi-Fi
devices answer after `--wifi-ms` (a round trip on a busy 2.4 GHz network), the BLE air costs about 1 s to connect
and one 7.5-30 ms connection interval per fragment (`Latency.realistic()`), every Zigbee frame takes `--zigbee-ms`.
Each radio has a station: it puts a fresh unit in front of the line (a Wi-Fi device already announced, a BLE good
that starts advertising, a Zigbee good that powers on and joins), scans its SN with `Line.scan`, checks the unit is
confirmed and takes it away; it starts units until the window closes.

A phase is one station alone or the three at once; every round runs the three alone and then the mixed phase, on
the same Line. A station's throughput is its units / (end of its last unit - start of the phase): every station
keeps working until the window closes, so in the mixed phase each one's figure is taken while the other two work.
Per unit, the ratio is wall time / the simulated radio time (Wi-Fi: three answers; BLE and Zigbee: what the
simulated air added up), as in bench_ble.py and bench_zigbee.py.
"""

from __future__ import annotations

import abc
import argparse
import asyncio
import itertools
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import machine, write_section

from agent.certs.identity import GatewayIdentity
from agent.config import AgentConfig, parse_config
from agent.journal import Journal
from agent.line import Line
from agent.radios.base import Radio as AgentRadio
from agent.radios.registry import create_radio
from agent.radios.wifi import WifiRadio
from rebadge.broker import free_port
from simulator.ble import BleLine, BleUnit, Latency, build_ble_line
from simulator.firmware import DeviceState, Firmware
from simulator.wifi import WifiDevice
from simulator.zigbee import SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from wire.device import Radio
from wire.keys import KeyRing, SigningKey
from wire.tokens import Certificate, Lease, sign, token_hash
from wire.topics import ProgressPayload, Result, ScanEvent

ISSUER = SigningKey(bytes([1]) * 32)
OLD, NEW = "stock001", "brand001"
FAR = 4_000_000_000
QUOTA = 1_000_000
SECTION = "## Mixed line (Wi-Fi + BLE + Zigbee)"
ANSWERS_PER_WIFI_UNIT = 3  # info, rebadge, info
# Bounds on one scan's steps: generous, a realistic BLE connect alone takes about 1 s.
FIND_S = 30.0
STEP_S = 10.0
# Wi-Fi goods of a phase announce once when stocked; the radio keeps them known for the whole phase.
ANNOUNCE_EVERY_S = 600.0
STOCK_TIMEOUT_S = 60.0
TARGET_RATIO = 1.10
TARGET_MIXED = 0.90


def tokens(gateway: SigningKey) -> tuple[Lease, bytes, Certificate, bytes]:
    """A certificate for the three radios and one lease of all its slots for `gateway`."""
    cert = Certificate(
        cert_no="MIX1", factory="bench", original_pid=OLD, new_pid=NEW, quantity=QUOTA,
        protocols=("wifi", "ble", "zigbee"), nbf=0, exp=FAR,
    )  # fmt: skip
    cert_token = sign(cert, ISSUER)
    lease = Lease(
        lease_id="ML1", cert_no="MIX1", cert_hash=token_hash(cert_token), original_pid=OLD, new_pid=NEW,
        gateway_key=gateway.public.raw, gateway_kid=gateway.kid, slot_lo=0, slot_hi=QUOTA, exp=FAR,
    )  # fmt: skip
    return lease, sign(lease, ISSUER), cert, cert_token


# -- stations: one radio's goods, put in front of the line one at a time -------------------------------------------


class Station(abc.ABC):
    """Puts one fresh unit of its radio in front of the line at a time, and adds up the radio time it cost."""

    kind: Radio

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def next_sn(self) -> str:
        return f"MIX-{self.kind.value.upper()}-{next(self._numbers):06d}"

    @abc.abstractmethod
    async def put(self) -> str:
        """A fresh unit in front of the line; its SN."""

    @abc.abstractmethod
    def take(self, sn: str) -> None:
        """The unit leaves the line."""

    @property
    @abc.abstractmethod
    def radio_time_s(self) -> float:
        """Simulated radio time spent so far."""


class WifiStation(Station):
    """Wi-Fi goods started (and announced) before a phase; each answer waits `latency_s`."""

    kind = Radio.WIFI

    def __init__(self, radio: WifiRadio, discovery: tuple[str, int], latency_s: float) -> None:
        super().__init__()
        self.radio, self.discovery, self.latency_s = radio, discovery, latency_s
        self._ready: list[str] = []
        self._used = 0

    @asynccontextmanager
    async def stocked(self, units: int) -> AsyncIterator[None]:
        """`units` devices running and known to the radio for the duration; stopped afterwards."""
        async with AsyncExitStack() as stack:
            for _ in range(units):
                state = DeviceState(sn=self.next_sn(), pid=OLD, radio=Radio.WIFI)
                device = WifiDevice(
                    Firmware(state, KeyRing([ISSUER.public])), announce_to=self.discovery,
                    announce_interval=ANNOUNCE_EVERY_S, latency_s=self.latency_s,
                )  # fmt: skip
                await stack.enter_async_context(device)
                self._ready.append(device.sn)
            async with asyncio.timeout(STOCK_TIMEOUT_S):
                for sn in self._ready:
                    await self.radio.table.wait_for(sn)
            try:
                yield
            finally:
                self._ready.clear()

    async def put(self) -> str:
        if not self._ready:
            raise SystemExit("wifi: the stock of announced devices ran out; the window is too long for it")
        self._used += 1
        return self._ready.pop(0)

    def take(self, sn: str) -> None:
        """The device stays up until the phase ends (it would only be stopped)."""

    @property
    def radio_time_s(self) -> float:
        return self._used * ANSWERS_PER_WIFI_UNIT * self.latency_s


class BleStation(Station):
    """BLE goods that start advertising when put in front of the line."""

    kind = Radio.BLE

    def __init__(self, goods: BleLine) -> None:
        super().__init__()
        self.goods = goods

    async def put(self) -> str:
        sn = self.next_sn()
        self.goods.place(BleUnit(sn, OLD))
        return sn

    def take(self, sn: str) -> None:
        self.goods.take_away(sn)

    @property
    def radio_time_s(self) -> float:
        return self.goods.air.radio_time_s


class ZigbeeStation(Station):
    """Zigbee goods that power on (and join) when put in front of the line."""

    kind = Radio.ZIGBEE

    def __init__(self, goods: SimulatedZigbeeLine) -> None:
        super().__init__()
        self.goods = goods

    async def put(self) -> str:
        sn = self.next_sn()
        self.goods.place(ZigbeeUnit(sn, OLD))
        return sn

    def take(self, sn: str) -> None:
        self.goods.take_away(sn)

    @property
    def radio_time_s(self) -> float:
        return self.goods.network.air_time_s


# -- phases ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    wall_s: float
    radio_s: float
    end: float


@dataclass
class Run:
    """One station's units in one phase."""

    start: float
    units: list[Unit] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        return self.units[-1].end - self.start if self.units else 0.0


@dataclass
class Tally:
    """One station's runs in one kind of phase, over all rounds."""

    runs: list[Run] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(r.units) for r in self.runs)

    @property
    def rate(self) -> float:
        """Units per second over every run."""
        return self.count / sum(r.span_s for r in self.runs)

    def per_unit(self) -> tuple[float, float, float]:
        """Mean wall time, mean radio time, and the ratio of their sums."""
        units = [u for r in self.runs for u in r.units]
        wall, radio = sum(u.wall_s for u in units), sum(u.radio_s for u in units)
        return wall / len(units), radio / len(units), wall / radio


async def sink(_: ScanEvent | ProgressPayload) -> None:
    """Where the service would hand events and progress to the uplink (its queue is not measured)."""


async def work(line: Line, station: Station, run: Run, deadline: float) -> None:
    """Put, scan and take units one after another until the deadline."""
    while time.perf_counter() < deadline:
        t0, r0 = time.perf_counter(), station.radio_time_s
        sn = await station.put()
        event = await line.scan(sn)
        end = time.perf_counter()
        if event.result is not Result.CONFIRMED:
            raise SystemExit(f"{sn}: {event.result.value} {event.reason}: {event.message}")
        run.units.append(Unit(end - t0, station.radio_time_s - r0, end))
        station.take(sn)


async def phase(line: Line, stations: Sequence[Station], window_s: float) -> list[Run]:
    """The stations working at once for `window_s`; one run each."""
    start = time.perf_counter()
    runs = [Run(start) for _ in stations]
    async with asyncio.TaskGroup() as tg:
        for station, run in zip(stations, runs, strict=True):
            tg.create_task(work(line, station, run, start + window_s), name=f"station-{station.kind.value}")
    return runs


def agent_config(root: Path) -> AgentConfig:
    return parse_config(
        {
            "gateway": {"state_dir": str(root / "gateway")},
            "line": {
                "radios": ["wifi", "ble", "zigbee"], "find_timeout_s": FIND_S,
                "info_timeout_s": STEP_S, "rebadge_timeout_s": STEP_S,
            },
            "wifi": {"discovery_port": free_port(), "bind_address": "127.0.0.1", "announce_ttl_s": ANNOUNCE_EVERY_S},
            "zigbee": {"permit_join_s": 254},
        },
        "bench_mixed",
        env={},
    )  # fmt: skip


@dataclass
class Results:
    alone: dict[Radio, Tally] = field(default_factory=lambda: {r: Tally() for r in Radio})
    mixed: dict[Radio, Tally] = field(default_factory=lambda: {r: Tally() for r in Radio})


async def measure(root: Path, window_s: float, rounds: int, wifi_s: float, zigbee_s: float) -> Results:
    """`rounds` x (each station alone, then the three at once) on one Line."""
    config = agent_config(root)
    identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
    issuers = KeyRing([ISSUER.public])
    ble_goods = build_ble_line(issuers, [], latency=Latency.realistic())
    zigbee_goods = build_zigbee_line([], issuers, latency_s=zigbee_s)
    radios: list[AgentRadio] = [
        create_radio(Radio.WIFI, config),
        create_radio(Radio.BLE, config, **ble_goods.radio_kwargs),
        create_radio(Radio.ZIGBEE, config, **zigbee_goods.radio_kwargs()),
    ]
    wifi_radio = radios[0]
    assert isinstance(wifi_radio, WifiRadio)
    wifi = WifiStation(wifi_radio, ("127.0.0.1", config.wifi.discovery_port), wifi_s)
    stations: list[Station] = [wifi, BleStation(ble_goods), ZigbeeStation(zigbee_goods)]
    # Enough announced Wi-Fi goods for a window: at most one unit per three answers.
    stock = int(window_s / (ANSWERS_PER_WIFI_UNIT * wifi_s)) + 10
    results = Results()
    async with await Journal.open(root / "journal.sqlite", identity.gw, min_free_bytes=0) as journal:
        await journal.add_lease(*tokens(identity.key))
        line = Line(journal, radios, identity, issuers, config.line, on_event=sink, on_progress=sink)
        for radio in radios:
            await radio.start()
        try:
            for n in range(rounds):
                for station in stations:
                    async with AsyncExitStack() as stack:
                        if station is wifi:
                            await stack.enter_async_context(wifi.stocked(stock))
                        (run,) = await phase(line, [station], window_s)
                    results.alone[station.kind].runs.append(run)
                    print(f"round {n + 1}: {station.kind.value} alone: {len(run.units)} units in {run.span_s:.2f} s")
                async with wifi.stocked(stock):
                    runs = await phase(line, stations, window_s)
                for station, run in zip(stations, runs, strict=True):
                    results.mixed[station.kind].runs.append(run)
                done = ", ".join(f"{s.kind.value} {len(r.units)}" for s, r in zip(stations, runs, strict=True))
                print(f"round {n + 1}: mixed: {done} units")
        finally:
            for radio in radios:
                await radio.stop()
    return results


def report(results: Results, window_s: float, rounds: int, wifi_s: float, zigbee_s: float) -> list[str]:
    """The figures as a Markdown table plus the two targets."""
    lines = [
        "`python benchmarks/bench_mixed.py --doc docs/benchmarks.md` rewrites this section. One real `Line` (journal",
        "on disk with WAL and synchronous=FULL, the Wi-Fi, BLE and Zigbee radios from the registry, in that order)",
        "rebadges simulated goods; each radio has a station that puts a fresh unit in front of the line, scans it,",
        "checks it is confirmed and takes it away, until the window closes. Each round runs every station alone,",
        "then the three at once, on the same Line. Latencies: Wi-Fi devices answer after "
        f"{wifi_s * 1e3:g} ms; BLE `Latency.realistic()` (1 s connect, 7.5-30 ms per fragment, 100 ms until heard);",
        f"Zigbee {zigbee_s * 1e3:g} ms per frame. Ratio = unit wall time / simulated radio time (sums over units).",
        "",
        f"Machine: {machine()}. {rounds} round(s) of {window_s:g} s windows.",
        "",
        "| radio | alone: units | alone: ms/unit (radio ms) | alone: ratio | alone: units/s "
        "| mixed: units | mixed: ratio | mixed: units/s | mixed / alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    alone_sum = mixed_sum = 0.0
    worst_ratio = 0.0
    for kind in Radio:
        alone, mixed = results.alone[kind], results.mixed[kind]
        wall, radio, ratio = alone.per_unit()
        _, _, mixed_ratio = mixed.per_unit()
        worst_ratio = max(worst_ratio, ratio)
        alone_sum += alone.rate
        mixed_sum += mixed.rate
        lines.append(
            f"| {kind.value} | {alone.count} | {wall * 1e3:.1f} ({radio * 1e3:.1f}) | {ratio:.3f} | {alone.rate:.2f} "
            f"| {mixed.count} | {mixed_ratio:.3f} | {mixed.rate:.2f} | {mixed.rate / alone.rate:.3f} |"
        )
    share = mixed_sum / alone_sum
    lines += [
        "",
        f"- Per-radio ratio alone (target <= {TARGET_RATIO:.2f}): worst **{worst_ratio:.3f}** "
        f"({'meets' if worst_ratio <= TARGET_RATIO else 'MISSES'}).",
        f"- Mixed line: **{mixed_sum:.2f} units/s** with the three radios at once, against **{alone_sum:.2f}** for the "
        f"sum of each radio alone: **{share:.3f}** of the sum (target >= {TARGET_MIXED:.2f}: "
        f"{'meets' if share >= TARGET_MIXED else 'MISSES'}).",
    ]
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds each phase keeps starting units")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (each alone, then all three at once)")
    parser.add_argument("--wifi-ms", type=float, default=5.0, help="ms each Wi-Fi device answer waits")
    parser.add_argument("--zigbee-ms", type=float, default=30.0, help="ms of one Zigbee frame on the air")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the journal and zigpy's database")
    parser.add_argument("--doc", type=Path, default=None, help="write the results into this Markdown file")
    args = parser.parse_args()
    wifi_s, zigbee_s = args.wifi_ms / 1e3, args.zigbee_ms / 1e3
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = await measure(Path(tmp), args.window, args.rounds, wifi_s, zigbee_s)
    lines = report(results, args.window, args.rounds, wifi_s, zigbee_s)
    print("\n".join(lines))
    if args.doc is not None:
        write_section(args.doc, SECTION, lines)


if __name__ == "__main__":
    asyncio.run(main())
