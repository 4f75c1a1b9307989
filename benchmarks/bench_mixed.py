"""A mixed line: Wi-Fi, BLE and Zigbee goods through one real Line, each radio working alone and all three at once.

Run: `python benchmarks/bench_mixed.py [--window S] [--rounds N] [--wifi-ms 5] [--zigbee-ms 30] [--dir DIR]
[--doc docs/benchmarks.md]`.

One `Line` (journal on disk with WAL and synchronous=FULL, one lease covering the three protocols, the Wi-Fi, BLE
and Zigbee radios built by the registry in that order) rebadges simulated goods at realistic latencies: Wi-Fi
devices answer after `--wifi-ms` (a round trip on a busy 2.4 GHz network), the BLE air costs about 1 s to connect
and one 7.5-30 ms connection interval per fragment (`Latency.realistic()`), every Zigbee frame takes `--zigbee-ms`.
Each radio has a station: it puts a fresh unit in front of the line (a Wi-Fi device already announced, a BLE good
that starts advertising, a Zigbee good that powers on and joins), scans its SN with `Line.scan`, checks the unit is
confirmed and takes it away; it starts units until the window closes. The Wi-Fi goods of a phase run in a process of
their own (`rebadge sim wifi`); the BLE and Zigbee goods live in this process, since their simulated air is the
bleak backend and the zigpy app the radios drive.

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
import os
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from common import BENCH_ISSUER, bench_tokens, machine, sim_wifi_goods, write_section

from agent.certs.identity import GatewayIdentity
from agent.config import AgentConfig, parse_config
from agent.journal import Journal
from agent.line import Line
from agent.radios.base import Radio as AgentRadio
from agent.radios.registry import create_radio
from agent.radios.wifi import WifiRadio
from rebadge.broker import free_port
from simulator.ble import BleLine, BleUnit, Latency, build_ble_line
from simulator.zigbee import SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from wire.device import Radio
from wire.keys import KeyRing
from wire.topics import ProgressPayload, Result, ScanEvent

ISSUER = BENCH_ISSUER
OLD, NEW = "stock001", "brand001"
QUOTA = 1_000_000
SECTION = "## Mixed line (Wi-Fi + BLE + Zigbee)"
ANSWERS_PER_WIFI_UNIT = 3  # info, rebadge, info
# Bounds on one scan's steps: generous, a realistic BLE connect alone takes about 1 s.
FIND_S = 30.0
STEP_S = 10.0
STOCK_TIMEOUT_S = 60.0
TARGET_RATIO = 1.10
TARGET_MIXED = 0.90


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
    """Wi-Fi goods in a process of their own, started (and announced) before a phase; each answer waits
    `latency_s`."""

    kind = Radio.WIFI

    def __init__(self, radio: WifiRadio, discovery: tuple[str, int], latency_s: float) -> None:
        super().__init__()
        self.radio, self.discovery, self.latency_s = radio, discovery, latency_s
        self._stocks = itertools.count(1)
        self._ready: list[str] = []
        self._used = 0

    @asynccontextmanager
    async def stocked(self, units: int) -> AsyncIterator[None]:
        """`units` devices running and known to the radio for the duration; stopped afterwards."""
        prefix = f"MIX-WIFI-{next(self._stocks):03d}"
        async with sim_wifi_goods(
            ISSUER.public, prefix, units, pid=OLD, latency_s=self.latency_s, announce_to=self.discovery
        ) as found:
            async with asyncio.timeout(STOCK_TIMEOUT_S):
                for sn in found:
                    await self.radio.table.wait_for(sn)
            self._ready = list(found)
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
    cpu_s: float = 0.0  # this process's CPU time during the whole phase (shared by the phase's runs)

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
    def cpu_share(self) -> float:
        """This process's CPU time over the phases' wall time (1.0 = one core busy)."""
        return sum(r.cpu_s for r in self.runs) / sum(r.span_s for r in self.runs)

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
    start, cpu = time.perf_counter(), time.process_time()
    runs = [Run(start) for _ in stations]
    async with asyncio.TaskGroup() as tg:
        for station, run in zip(stations, runs, strict=True):
            tg.create_task(work(line, station, run, start + window_s), name=f"station-{station.kind.value}")
    for run in runs:
        run.cpu_s = time.process_time() - cpu
    return runs


def agent_config(root: Path) -> AgentConfig:
    return parse_config(
        {
            "gateway": {"state_dir": str(root / "gateway")},
            "line": {
                "radios": ["wifi", "ble", "zigbee"], "find_timeout_s": FIND_S,
                "info_timeout_s": STEP_S, "rebadge_timeout_s": STEP_S,
            },
            "wifi": {"discovery_port": free_port(), "bind_address": "127.0.0.1"},
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
        await journal.add_lease(
            *bench_tokens(identity.key, QUOTA, protocols=("wifi", "ble", "zigbee"), old=OLD, new=NEW)
        )
        line = Line(journal, radios, identity, issuers, config.line, on_event=sink)
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


def _rate(run: Run) -> float:
    return len(run.units) / run.span_s


def report(results: Results, args: argparse.Namespace, load: tuple[float, float]) -> list[str]:
    """The figures as a Markdown table plus the two targets."""
    lines = [
        "`python benchmarks/bench_mixed.py --doc docs/benchmarks.md` rewrites this section. One real `Line` (journal",
        "on disk with WAL and synchronous=FULL, the Wi-Fi, BLE and Zigbee radios from the registry, in that order)",
        "rebadges simulated goods; each radio has a station that puts a fresh unit in front of the line, scans it,",
        "checks it is confirmed and takes it away, until the window closes. Each round runs every station alone,",
        "then the three at once, on the same Line. A station's throughput is its units / (end of its last unit -",
        "start of the phase); every station works until the window closes, so in the mixed phase each figure is",
        f"taken while the other two work. Latencies: Wi-Fi devices answer after {args.wifi_ms:g} ms (they run in a",
        "process of their own, `rebadge sim wifi`); BLE `Latency.realistic()` (1 s connect, 7.5-30 ms per fragment,",
        f"100 ms until heard); Zigbee {args.zigbee_ms:g} ms per frame. The BLE and Zigbee goods and their air are",
        "simulated inside the agent's process (the bleak backend and the zigpy app), so their CPU counts against it.",
        "Ratio = unit wall time / simulated radio time (sums over units); CPU = this process's CPU time / wall time.",
        "",
        f"Machine: {machine()}. {args.rounds} rounds of {args.window:g} s windows; load average (1 min) "
        f"{load[0]:.2f} at the start, {load[1]:.2f} at the end.",
        "",
        "| radio | alone: units | alone: ms/unit (radio ms) | alone: ratio | alone: units/s | alone: CPU "
        "| mixed: units | mixed: ratio | mixed: units/s | mixed / alone |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst_ratio = 0.0
    for kind in Radio:
        alone, mixed = results.alone[kind], results.mixed[kind]
        wall, radio, ratio = alone.per_unit()
        worst_ratio = max(worst_ratio, ratio)
        lines.append(
            f"| {kind.value} | {alone.count} | {wall * 1e3:.1f} ({radio * 1e3:.1f}) | {ratio:.3f} | {alone.rate:.2f} "
            f"| {alone.cpu_share:.0%} | {mixed.count} | {mixed.per_unit()[2]:.3f} | {mixed.rate:.2f} "
            f"| {mixed.rate / alone.rate:.3f} |"
        )
    alone_sum = sum(results.alone[k].rate for k in Radio)
    mixed_sum = sum(results.mixed[k].rate for k in Radio)
    share = mixed_sum / alone_sum
    per_round = [
        sum(_rate(results.mixed[k].runs[n]) for k in Radio) / sum(_rate(results.alone[k].runs[n]) for k in Radio)
        for n in range(args.rounds)
    ]
    lines += [
        "",
        f"- Per-radio ratio alone (target <= {TARGET_RATIO:.2f}): worst **{worst_ratio:.3f}** "
        f"({'meets' if worst_ratio <= TARGET_RATIO else 'MISSES'}).",
        f"- Mixed line: **{mixed_sum:.2f} units/s** with the three radios at once, against **{alone_sum:.2f}** for the "
        f"sum of each radio alone: **{share:.3f}** of the sum (target >= {TARGET_MIXED:.2f}: "
        f"{'meets' if share >= TARGET_MIXED else 'MISSES'}); round by round "
        f"{', '.join(f'{r:.3f}' for r in per_round)}. CPU of this process in the mixed phases: "
        f"{results.mixed[Radio.WIFI].cpu_share:.0%}.",
    ]
    for kind in Radio:
        wall, radio, ratio = results.alone[kind].per_unit()
        if ratio > TARGET_RATIO:
            lines.append(
                f"- {kind.value} misses the per-radio target: a unit costs {(wall - radio) * 1e3:.1f} ms over its "
                f"{radio * 1e3:.1f} ms of radio time. That is a fixed cost per unit, not a wait on the radio (where "
                "it goes is broken down under 'Agent per unit (Wi-Fi)': the journal's two fsynced transactions, the "
                "TCP connect and frames, the lease check and reads), so the ratio falls as the radio time grows; BLE "
                "and Zigbee units carry the same kind of cost over 1-2 s of radio time."
            )
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=8.0, help="seconds each phase keeps starting units")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of (each alone, then all three at once)")
    parser.add_argument("--wifi-ms", type=float, default=5.0, help="ms each Wi-Fi device answer waits")
    parser.add_argument("--zigbee-ms", type=float, default=30.0, help="ms of one Zigbee frame on the air")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the journal and zigpy's database")
    parser.add_argument("--doc", type=Path, default=None, help="write the results into this Markdown file")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        results = await measure(Path(tmp), args.window, args.rounds, args.wifi_ms / 1e3, args.zigbee_ms / 1e3)
    lines = report(results, args, (load_start, os.getloadavg()[0]))
    print("\n".join(lines))
    if args.doc is not None:
        write_section(args.doc, SECTION, lines)


if __name__ == "__main__":
    asyncio.run(main())
