"""`rebadge sim ...`: run simulated finished goods in their own process (for benchmarks, manual tests and demos)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

import click

from simulator.goods import UnitSpec, build_wifi_line
from wire.device import Firmware
from wire.errors import MalformedError
from wire.keys import KeyRing, PublicKey


def _issuers(keys: tuple[str, ...]) -> KeyRing:
    try:
        return KeyRing([PublicKey(bytes.fromhex(k)) for k in keys])
    except (ValueError, MalformedError) as exc:
        raise click.BadParameter(f"{exc}; give the platform's issuer key as 64 hex characters") from exc


@click.group()
def group() -> None:
    """Run simulated finished goods for tests and demos."""


@group.command("wifi")
@click.option("--units", default=10, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--prefix", default="SIM", show_default=True, help="SNs are PREFIX-00000, PREFIX-00001, ...")
@click.option("--pid", default="stock001", show_default=True, help="The PID every unit carries at start.")
@click.option("--firmware", type=click.Choice([f.value for f in Firmware]), default="oem", show_default=True)
@click.option("--issuer-key", "issuer_keys", multiple=True, required=True, help="Issuer key the goods pin (hex).")
@click.option("--announce-to", default=None, help="HOST:PORT to send UDP announcements to (the agent's discovery).")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0), help="Delay of every answer.")
def wifi_cmd(
    units: int, prefix: str, pid: str, firmware: str, issuer_keys: tuple[str, ...], announce_to: str | None,
    latency_ms: float,
) -> None:  # fmt: skip
    """Run Wi-Fi goods on loopback until SIGTERM or Ctrl-C; print one JSON line per unit, then "ready"."""
    issuers = _issuers(issuer_keys)
    target = None
    if announce_to:
        host, _, port = announce_to.rpartition(":")
        if not host or not port.isdigit():
            raise click.BadParameter(f"{announce_to!r} is not HOST:PORT", param_hint="--announce-to")
        target = (host, int(port))
    try:
        specs = [UnitSpec(sn=f"{prefix}-{i:05d}", pid=pid, firmware=Firmware(firmware)) for i in range(units)]
    except MalformedError as exc:
        raise click.BadParameter(str(exc)) from exc

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
        async with build_wifi_line(issuers, specs, announce_to=target, latency_s=latency_ms / 1000) as line:
            for sn, device in line.items():
                host, port = device.address
                sys.stdout.write(json.dumps({"sn": sn, "host": host, "port": port}) + "\n")
            sys.stdout.write("ready\n")
            sys.stdout.flush()
            await asyncio.Event().wait()

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(main())
