"""`rebadge demo`: a whole line on this machine — private mosquitto, the platform on SQLite, simulated goods,
the agent — with a certificate issued, every unit scanned, each result shown as it happens, and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from agent.config import AgentConfig, parse_config
from agent.console import ScanConsole
from agent.service import AgentService, load_lease_file
from cloud_bridge.platform import Platform
from cloud_bridge.worker import IngestWorker
from rebadge.broker import PrivateBroker, free_port
from rebadge.demo_line import DemoGoods, plan_units, start_goods
from wire.device import Radio
from wire.topics import Result, ScanEvent

log = logging.getLogger(__name__)

ORIGINAL_PID = "stock001"
NEW_PID = "brand001"
READY_TIMEOUT_S = 20.0
ACK_TIMEOUT_S = 20.0


@dataclass
class Tally:
    """Counts of the run, as the summary shows them."""

    units: int
    quota: int
    confirmed: int = 0
    already: int = 0
    in_doubt: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    by_radio: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, event: ScanEvent, radio: str) -> None:
        slot = self.by_radio.setdefault(radio, {"confirmed": 0, "refused": Counter()})
        if event.result is Result.CONFIRMED:
            self.confirmed += 1
            slot["confirmed"] += 1
        elif event.result is Result.ALREADY_REBADGED:
            self.already += 1
        elif event.result is Result.IN_DOUBT:
            self.in_doubt += 1
        else:
            self.refused[event.reason] += 1
            slot["refused"][event.reason] += 1

    def summary(self, platform_confirmed: int, cert_no: str) -> dict[str, Any]:
        return {
            "units": self.units,
            "quota": self.quota,
            "certificate": cert_no,
            "confirmed": self.confirmed,
            "refused": dict(self.refused),
            "in_doubt": self.in_doubt,
            "already_rebadged": self.already,
            "platform_confirmed": platform_confirmed,
            "by_radio": {
                r: {"confirmed": v["confirmed"], "refused": dict(v["refused"])} for r, v in self.by_radio.items()
            },
        }


def _agent_config(workdir: Path, issuer_hex: str, broker: PrivateBroker, radios: list[Radio]) -> AgentConfig:
    return parse_config(
        {
            "gateway": {"name": "demo-line", "state_dir": str(workdir / "agent")},
            "trust": {"issuer_keys": [issuer_hex]},
            "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 2.0},
            "line": {
                "radios": [r.value for r in radios],
                "find_timeout_s": 5.0,
                "info_timeout_s": 2.0,
                "rebadge_timeout_s": 3.0,
            },
            "wifi": {"discovery_port": free_port(), "bind_address": "127.0.0.1"},
            "scanner": {"mqtt": True},
        },
        "demo",
        env={},
    )


@contextlib.asynccontextmanager
async def _running(coro: Any, name: str) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro, name=name)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_demo(
    workdir: Path, units: int, quota: int, radios: list[Radio], screen: ScanConsole | None
) -> dict[str, Any]:
    """Run the whole line once and return the summary."""
    with PrivateBroker(workdir / "broker") as broker:
        platform = await Platform.open(workdir / "platform")
        try:
            return await _run_line(workdir, platform, broker, units, quota, radios, screen)
        finally:
            await platform.close()


async def _run_line(
    workdir: Path, platform: Platform, broker: PrivateBroker, units: int, quota: int, radios: list[Radio],
    screen: ScanConsole | None,
) -> dict[str, Any]:  # fmt: skip
    config = _agent_config(workdir, platform.issuer.public.raw.hex(), broker, radios)
    cert, cert_token = await platform.issue_certificate(
        factory="demo-factory", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=quota,
        protocols=[r.value for r in radios],
    )  # fmt: skip
    plan = plan_units(units, ORIGINAL_PID, radios)
    tally = Tally(units=units, quota=quota)
    worker = IngestWorker(platform, host=broker.host, port=broker.port)
    async with (
        _running(worker.run(), "demo:worker"),
        start_goods(plan, platform.issuer.public, config) as goods,
    ):
        service = AgentService(config, radios=goods.radios)
        _, _, bundle = await platform.issue_lease(cert.cert_no, service.identity.public, quota)
        (workdir / "certificate.cose").write_bytes(cert_token)
        (workdir / "lease.cbor").write_bytes(bundle)  # a lease file, as `rebadge agent load-lease` takes it
        await load_lease_file(config, bundle)
        async with _running(service.run(), "demo:agent") as agent_task:
            await _wait_ready(service, agent_task)
            await _scan_all(service, goods, tally, screen)
            assert service.journal is not None
            assert service.uplink is not None
            seq, _ = await service.journal.head()
            await service.uplink.wait_acked(seq, ACK_TIMEOUT_S)
    return tally.summary(await platform.confirmed_count(cert.cert_no), cert.cert_no)


async def _wait_ready(service: AgentService, agent_task: asyncio.Task[Any]) -> None:
    async with asyncio.timeout(READY_TIMEOUT_S):
        ready = asyncio.create_task(service.ready.wait())
        done, _ = await asyncio.wait({ready, agent_task}, return_when=asyncio.FIRST_COMPLETED)
        if agent_task in done:
            ready.cancel()
            agent_task.result()
            raise RuntimeError("the agent stopped before it was ready")


async def _scan_all(service: AgentService, goods: DemoGoods, tally: Tally, screen: ScanConsole | None) -> None:
    for sn, radio in goods.scan_order():
        event = await service.scan(sn)
        tally.add(event, radio.value)
        if screen is not None:
            screen.show(event)


def _print_summary(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title=f"certificate {summary['certificate']}: {summary['units']} units, quota {summary['quota']}")
    table.add_column("radio")
    table.add_column("confirmed", justify="right")
    table.add_column("refused")
    for radio, row in summary["by_radio"].items():
        refused = ", ".join(f"{k} {v}" for k, v in row["refused"].items()) or "-"
        table.add_row(radio, str(row["confirmed"]), refused)
    console.print(table)
    console.print(
        f"confirmed {summary['confirmed']}, in doubt {summary['in_doubt']}, "
        f"refused {sum(summary['refused'].values())}; the platform counted {summary['platform_confirmed']} "
        "from verified records"
    )


@click.command("demo")
@click.option(
    "--units", default=12, show_default=True, type=click.IntRange(1, 10_000), help="Finished goods on the line."
)
@click.option(
    "--quota", default=10, show_default=True, type=click.IntRange(1, 10_000), help="Units the certificate allows."
)
@click.option(
    "--radios",
    default="wifi,ble,zigbee",
    show_default=True,
    help="Comma-separated radios of the simulated line: wifi, ble, zigbee.",
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep keys, tokens, databases and logs in this directory.",
)
@click.option("--json", "as_json", is_flag=True, help="Print only the final summary, as one JSON object.")
def command(units: int, quota: int, radios: str, keep: Path | None, as_json: bool) -> None:
    """Run a whole simulated line on this machine and show each scan's result and a summary."""
    try:
        radio_list = [Radio(r.strip()) for r in radios.split(",") if r.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; use wifi, ble or zigbee", param_hint="--radios") from exc
    workdir = keep or Path(tempfile.mkdtemp(prefix="rebadge-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(workdir / "demo.log")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for handler in root.handlers:  # the terminal keeps the level asked for with -v; the file gets INFO
        handler.setLevel(root.level)
    root.addHandler(log_file)
    root.setLevel(min(root.level, logging.INFO))
    console = Console(stderr=as_json, highlight=False)
    screen = None if as_json else ScanConsole(console, bell=False)
    if not as_json:
        console.print(f"rebadge demo: {units} units, quota {quota}, radios {', '.join(r.value for r in radio_list)}")
    try:
        summary = asyncio.run(run_demo(workdir, units, quota, radio_list, screen))
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _print_summary(console, summary)
        if keep is not None:
            console.print(f"keys, tokens, databases and logs are in {keep}")
