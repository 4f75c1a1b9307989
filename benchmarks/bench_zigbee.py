"""What the Zigbee radio adds to the radio's own time: a unit's wall time against the simulated air's time.

Run: `python benchmarks/bench_zigbee.py [--units N] [--bystanders K] [--latency-ms 30]`.
Per unit, as the line does it: the unit is put on the line (powered on, it joins while the permit window is
open), then ZigbeeRadio finds it by SN (zigpy's real join handling and interview: Node_Desc, Active_EP,
Simple_Desc, Basic reads; then our `info` probe over the rebadge cluster), reads `info` (plus a fresh Basic
ManufacturerName read), sends a rebadge with a real lease and grant in chunks, and reads `info` back. Every frame
on the simulated air takes `--latency-ms` (about 30 ms: air time plus APS ACK); the air adds up the time it was
busy. The ratio is wall time / that radio time, so 1.00 means the agent and zigpy add nothing. Units run one
after another on one coordinator, with zigpy's database on disk.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import BENCH_ISSUER, BENCH_LEASE_ID, bench_tokens, ratio_line

from agent.config import ZigbeeConfig
from agent.radios.zigbee.radio import ZigbeeRadio
from simulator.zigbee import SimulatedZigbeeLine, ZigbeeUnit, build_zigbee_line
from wire.device import Status
from wire.keys import KeyRing, SigningKey
from wire.tokens import Grant, sign

ISSUER = BENCH_ISSUER
GATEWAY = SigningKey(bytes([2]) * 32)
OLD, NEW = "aaaaaaaa", "bbbbbbbb"
FIND_S = 30.0
TARGET = 1.10


@dataclass
class Unit:
    wall_s: float
    radio_s: float
    frames: int


async def one_unit(radio: ZigbeeRadio, line: SimulatedZigbeeLine, lease: bytes, sn: str, slot: int) -> Unit:
    grant = sign(Grant(lease_id=BENCH_LEASE_ID, slot=slot, sn=sn, new_pid=NEW, iat=0), GATEWAY)
    air, frames0 = line.network, line.network.frames
    radio0, t0 = air.air_time_s, time.perf_counter()
    line.place(ZigbeeUnit(sn, OLD))
    async with radio.connect(sn, FIND_S) as link:
        await link.info()
        answer = await link.rebadge(lease, grant)
        after = await link.info()
    wall = time.perf_counter() - t0
    if answer.status is not Status.OK or after.receipt != grant or after.pid != NEW:
        raise SystemExit(f"{sn}: rebadge failed: {answer.status.value}")
    line.take_away(sn)
    return Unit(wall, air.air_time_s - radio0, air.frames - frames0)


async def series(units: int, bystanders: int, latency_s: float, state_dir: Path) -> list[Unit]:
    """Rebadge `units` units one at a time, with `bystanders` known units also on the network."""
    line = build_zigbee_line(
        [ZigbeeUnit(f"BY-{i:04d}", OLD) for i in range(bystanders)], KeyRing([ISSUER.public]), latency_s=latency_s
    )
    radio = ZigbeeRadio(ZigbeeConfig(permit_join_s=254), state_dir=state_dir, **line.radio_kwargs())
    lease = bench_tokens(GATEWAY, units, protocols=("zigbee",), old=OLD, new=NEW)[1]
    await radio.start()
    try:
        for i in range(bystanders):  # a network the radio already knows
            async with radio.connect(f"BY-{i:04d}", FIND_S):
                pass
        return [await one_unit(radio, line, lease, f"ZB-{n:04d}", n) for n in range(units)]
    finally:
        await radio.stop()


def report(latency_s: float, units: list[Unit]) -> float:
    ratio, text = ratio_line([(u.wall_s, u.radio_s) for u in units])
    frames = statistics.mean(u.frames for u in units)
    print(f"{latency_s * 1000:.0f} ms/frame: {len(units)} units, {frames:.0f} frames/unit, {text}")
    return ratio


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--bystanders", type=int, default=2, help="other units on the network, already known")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="time of one frame on the air")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        units = await series(args.units, args.bystanders, args.latency_ms / 1000, Path(tmp))
    ratio = report(args.latency_ms / 1000, units)
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"target ratio <= {TARGET:.2f}: {verdict} ({ratio:.3f})")


if __name__ == "__main__":
    asyncio.run(main())
