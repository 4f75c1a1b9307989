"""What the BLE radio adds to the radio's own time: a unit's wall time against the simulated air's time.

Run: `python benchmarks/bench_ble.py [--units N] [--bystanders K]`.
Per unit, as the line does it: the unit is put on the bench (it starts advertising), then BleRadio finds it by
SN (connect + `info` probe), reads `info`, sends a rebadge with a real lease and grant, reads `info` back and
disconnects. The simulated air imposes realistic delays (about 1 s to connect, one fragment per 7.5-30 ms
connection interval, 100 ms until the running scan hears a new advertiser) and adds up what it imposed; the
ratio is wall time / that radio time, so 1.00 means the agent adds nothing. Units run one after another.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass

from common import BENCH_ISSUER, BENCH_LEASE_ID, bench_tokens, ratio_line

from agent.config import BleConfig
from agent.radios.ble.radio import BleRadio
from simulator.ble import BleLine, BleUnit, Latency, build_ble_line
from wire.device import Status
from wire.keys import KeyRing, SigningKey
from wire.tokens import Grant, sign

ISSUER = BENCH_ISSUER
GATEWAY = SigningKey(bytes([2]) * 32)
OLD, NEW = "aaaaaaaa", "bbbbbbbb"
FIND_S = 30.0


@dataclass
class Unit:
    wall_s: float
    radio_s: float


async def series(att_mtu: int, units: int, bystanders: int) -> list[Unit]:
    """Rebadge `units` units one at a time at this ATT MTU, with `bystanders` known units also in range."""
    line = build_ble_line(
        KeyRing([ISSUER.public]),
        [BleUnit(f"BY-{i:04d}", OLD, att_mtu=att_mtu) for i in range(bystanders)],
        latency=Latency.realistic(),
    )
    radio = BleRadio(BleConfig(), **line.radio_kwargs)
    lease = bench_tokens(GATEWAY, units, protocols=("ble",), old=OLD, new=NEW)[1]
    await radio.start()
    try:
        for i in range(bystanders):  # a bench the radio already knows
            async with radio.connect(f"BY-{i:04d}", FIND_S):
                pass
        return [await one_unit(radio, line, lease, f"SN-{att_mtu}-{n:04d}", n, att_mtu) for n in range(units)]
    finally:
        await radio.stop()


async def one_unit(radio: BleRadio, line: BleLine, lease: bytes, sn: str, slot: int, att_mtu: int) -> Unit:
    grant = sign(Grant(lease_id=BENCH_LEASE_ID, slot=slot, sn=sn, new_pid=NEW, iat=0), GATEWAY)
    line.place(BleUnit(sn, OLD, att_mtu=att_mtu))
    radio0, t0 = line.air.radio_time_s, time.perf_counter()
    async with radio.connect(sn, FIND_S) as link:
        await link.info()
        answer = await link.rebadge(lease, grant)
        after = await link.info()
    wall = time.perf_counter() - t0
    radio_s = line.air.radio_time_s - radio0
    if answer.status is not Status.OK or after.receipt != grant:
        raise SystemExit(f"{sn}: rebadge failed: {answer.status.value}")
    line.take_away(sn)
    return Unit(wall, radio_s)


def report(att_mtu: int, units: list[Unit]) -> float:
    ratio, text = ratio_line([(u.wall_s, u.radio_s) for u in units])
    print(f"ATT MTU {att_mtu:3d} ({att_mtu - 3:3d}-byte fragments): {len(units)} units, {text}")
    return ratio


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=8, help="units per MTU series")
    parser.add_argument("--bystanders", type=int, default=2, help="other units in range, already known")
    args = parser.parse_args()
    ratios = [report(mtu, await series(mtu, args.units, args.bystanders)) for mtu in (23, 247)]
    verdict = "meets" if max(ratios) <= 1.10 else "MISSES"
    print(f"target ratio <= 1.10: {verdict} (worst series {max(ratios):.3f})")


if __name__ == "__main__":
    asyncio.run(main())
