"""`rebadge agent ...`: run the gateway agent, load leases, inspect the journal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import click
from rich.console import Console

from agent.certs.identity import GatewayIdentity
from agent.certs.leases import CheckedLease
from agent.config import AgentConfig, load_config
from agent.config_check import check_config_file, check_startable
from agent.console import STOPPED, ScanConsole
from agent.console_live import run_console
from agent.errors import AgentError
from agent.key_rotation import rotate_key, settle_rotation
from agent.leases import Released, keeper_certificate, release_once, request_once
from agent.mes_lines import MesLines
from agent.service import JOURNAL_FILE, AgentService, load_lease_file, open_journal, pinned_issuers
from mqtt_link.runner import reasons
from wire.errors import MalformedError
from wire.ids import CERT_NO
from wire.lease_request import AnswerCode
from wire.times import utc_iso
from wire.topics import ScanEvent

CONFIG_OPTION = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="REBADGE_CONFIG",
    help="Agent config file (TOML). Default: built-in defaults plus REBADGE_* environment overrides.",
)
EXAMPLE_CONFIG = Path(__file__).with_name("agent.example.toml")


def _config(path: Path | None) -> AgentConfig:
    try:
        return load_config(path)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc


def _startable_config(path: Path | None) -> AgentConfig:
    """The config, refused before anything is created when the agent could not start with it."""
    config = _config(path)
    try:
        check_startable(config)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc
    return config


def _cert_no(value: str | None) -> str | None:
    try:
        return None if value is None else CERT_NO.check(value, "--cert")
    except MalformedError as exc:
        raise click.BadParameter(f"{value!r} is not a {CERT_NO.name}: use {CERT_NO.rule}") from exc


@click.group()
def group() -> None:
    """Run the gateway agent and manage its journal and leases."""


@group.command("run")
@CONFIG_OPTION
@click.option("--console/--no-console", default=True, help="Show one line per scan on this terminal.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per scan on stdout for a MES (logs stay on stderr)."
)
def run_cmd(config_path: Path | None, console: bool, as_json: bool) -> None:
    """Run the agent until SIGTERM or Ctrl-C (systemd: Type=notify, WatchdogSec)."""
    config = _startable_config(config_path)
    screen = ScanConsole() if console and not as_json else None
    mes: MesLines | None = None

    async def show(event: ScanEvent) -> None:
        if screen is not None:
            screen.show(event)
        if mes is not None:
            mes.write(event)

    async def main() -> None:
        await asyncio.to_thread(settle_rotation, config)
        nonlocal mes
        service = AgentService(config, on_event=show, notify_socket=os.environ.get("NOTIFY_SOCKET"))
        if as_json:
            mes = MesLines(config, service.gw, sys.stdout)
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            if screen is not None:
                screen.stopping()
            task.cancel()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        helpers = [asyncio.create_task(mes.run(), name="mes lines")] if mes is not None else []
        if screen is not None:
            helpers.append(asyncio.create_task(screen.follow(service), name="console lines"))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await service.run()
        finally:
            for helper in helpers:
                helper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await helper

    try:
        asyncio.run(main())
    except* AgentError as group:  # also from inside the service's TaskGroup (a bad mqtt.tls file)
        raise click.ClickException(reasons(group)) from None
    if screen is not None:
        screen.say(STOPPED)


@group.command("console")
@CONFIG_OPTION
@click.option("--bell/--no-bell", default=True, help="Ring the terminal bell on a refusal or a RESCAN.")
def console_cmd(config_path: Path | None, bell: bool) -> None:
    """Run the agent with a full-screen technician's console (works offline: no broker needed to show it)."""
    config = _startable_config(config_path)
    screen = Console(highlight=False)

    async def main() -> None:
        await asyncio.to_thread(settle_rotation, config)
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await run_console(config, screen, bell=bell)

    try:
        asyncio.run(main())
    except* AgentError as group:
        raise click.ClickException(reasons(group)) from None
    screen.print(f"console {STOPPED}")


@group.command("init")
@CONFIG_OPTION
def init_cmd(config_path: Path | None) -> None:
    """Create the gateway key (if missing) and print the gateway id and public key for enrolment."""
    config = _config(config_path)
    try:
        identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"gw": identity.gw, "public_key": identity.public.raw.hex()}))


@group.command("load-lease")
@CONFIG_OPTION
@click.argument("lease_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
def load_lease_cmd(config_path: Path | None, lease_file: Path) -> None:
    """Check a lease file from the platform (air-gapped lines) and store it in the journal."""
    config = _config(config_path)
    try:
        checked = asyncio.run(load_lease_file(config, lease_file.read_bytes()))
    except AgentError as exc:
        raise click.ClickException(f"{lease_file}: {exc}") from exc
    lease = checked.lease
    click.echo(
        f"lease {lease.lease_id} loaded: certificate {lease.cert_no}, {lease.original_pid} -> {lease.new_pid}, "
        f"slots {lease.slot_lo}..{lease.slot_hi - 1} ({lease.size}), expires {utc_iso(lease.exp)}"
    )


@group.command("request-lease")
@CONFIG_OPTION
@click.option(
    "--cert", "cert_no", default=None, callback=lambda _ctx, _param, value: _cert_no(value),
    help="Certificate number. Default: lease.cert_no, else line.certificate.",
)  # fmt: skip
@click.option("--slots", type=click.IntRange(1, 10_000_000), default=None, help="Default: lease.request_slots.")
def request_lease_cmd(config_path: Path | None, cert_no: str | None, slots: int | None) -> None:
    """Ask the platform for a lease over MQTT, check it and store it in the journal (run with the agent stopped)."""
    config = _config(config_path)
    cert_no = cert_no or keeper_certificate(config)
    if cert_no is None:
        raise click.UsageError("no certificate given: pass --cert, or set lease.cert_no or line.certificate")
    wanted = slots or config.lease.request_slots

    async def ask() -> CheckedLease:
        identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
        issuers = pinned_issuers(config)
        journal = await open_journal(config, identity)
        try:
            return await request_once(config, journal, identity, issuers, cert_no, wanted)
        finally:
            await journal.close()

    try:
        checked = asyncio.run(ask())
    except AgentError as exc:
        raise click.ClickException(f"no lease stored: {exc}") from exc
    lease = checked.lease
    click.echo(
        f"lease {lease.lease_id} stored: certificate {lease.cert_no}, {lease.original_pid} -> {lease.new_pid}, "
        f"slots {lease.slot_lo}..{lease.slot_hi - 1} ({lease.size} of {wanted} asked for), "
        f"expires {utc_iso(lease.exp)}"
    )


@group.command("release-lease")
@CONFIG_OPTION
@click.argument("lease_id")
@click.option("--reason", default="released by hand", show_default=True, help="Kept in the lease's closed record.")
@click.option("--force", is_flag=True, help="Close even with attempts in doubt; they then stay in doubt for good.")
def release_lease_cmd(config_path: Path | None, lease_id: str, reason: str, force: bool) -> None:
    """Close a lease (no slot of it is spent any more) and ask the platform to take back its unused slots.

    Run with the agent stopped. The close is chained in the journal first; when the broker answers, the records
    and a signed release go to the platform, and its answer is printed. Running it again only asks again.
    """
    config = _config(config_path)

    async def release() -> Released:
        identity = GatewayIdentity.load_or_create(config.gateway.state_dir)
        journal = await open_journal(config, identity)
        try:
            return await release_once(
                config, journal, identity, pinned_issuers(config), lease_id, reason=reason, force=force
            )
        finally:
            await journal.close()

    try:
        released = asyncio.run(release())
    except AgentError as exc:
        raise click.ClickException(f"lease {lease_id} not released: {exc}") from exc
    for line in released_lines(released):
        click.echo(line)


def released_lines(released: Released) -> list[str]:
    """What `release-lease` prints: the close, units left in doubt, and the platform's answer or what to do."""
    close, answer = released.close, released.answer
    lease_id, again = close.lease.lease_id, f"run 'rebadge agent release-lease {close.lease.lease_id}' again"
    lines = [
        f"lease {lease_id} closed at seq {close.seq} ({close.reason}); no slot of it is spent any more"
        if close.new
        else f"lease {lease_id} was closed already at seq {close.seq} ({close.reason})"
    ]
    lines += [f"left in doubt for good: {a.sn} (slot {a.slot}); its slot counts as spent" for a in close.in_doubt]
    if answer is None:
        lines.append(
            "the MQTT broker is not reachable: the close stays in the journal and reaches the platform with the "
            f"records when the agent runs; {again} then to see what came back"
        )
    elif answer.code == AnswerCode.OK:
        lines.append(f"the platform took back {answer.returned} unused slots of lease {lease_id}")
    else:
        lines.append(
            f"pending: the platform has not yet stored this gateway's journal up to seq {close.seq}, so nothing has "
            f"come back yet; start the agent (it sends the records), then {again}"
        )
    return lines


@group.command("rotate-key")
@CONFIG_OPTION
@click.option("--force", is_flag=True, help="Close leases even with attempts in doubt (they stay in doubt for good).")
def rotate_key_cmd(config_path: Path | None, force: bool) -> None:
    """Give the gateway a new key, introduced by the old one; the gateway id stays (run with the agent stopped).

    Closes every lease of the old key in the journal first, sends the records, then the introduction; switches to
    the new key only once the platform has accepted it. Interrupted, it is safe to run again: it finishes.
    """
    config = _config(config_path)
    try:
        rotated = asyncio.run(rotate_key(config, force=force))
    except AgentError as exc:
        raise click.ClickException(f"key not rotated: {exc}") from exc
    for close in rotated.closed:
        click.echo(f"lease {close.lease.lease_id} closed at seq {close.seq} ({close.reason})")
    since = "" if rotated.seq is None else f" after seq {rotated.seq}"
    click.echo(
        f"gateway {rotated.gw}: key {rotated.new_kid} is in force; key {rotated.old_kid} is retired{since}"
        + (" (the platform had accepted an earlier run's introduction)" if rotated.resumed else "")
    )
    if rotated.closed:
        click.echo("the agent asks for new leases, bound to the new key, when it runs (or: agent request-lease)")


@group.command("status")
@CONFIG_OPTION
def status_cmd(config_path: Path | None) -> None:
    """Print the journal's head, acked sequence, freeze, leases and each certificate's counts as JSON."""
    config = _config(config_path)
    state = config.gateway.state_dir

    async def read() -> dict[str, object]:
        identity = GatewayIdentity.load_existing(state)
        if identity is None or not (state / JOURNAL_FILE).exists():
            missing = "gateway key" if identity is None else "journal"
            raise click.ClickException(
                f"no {missing} in {state} (gateway.state_dir): the agent has not run with this config yet; "
                "nothing to show (start it with 'rebadge agent run')"
            )
        journal = await open_journal(config, identity)
        try:
            seq, head = await journal.head()
            certs = {c: vars(await journal.counts(c)) for c in await journal.cert_nos()}
            leases = [
                {"lease_id": lease.lease_id, "cert_no": lease.cert_no, "slots": [lease.slot_lo, lease.slot_hi],
                 "expires": utc_iso(lease.exp), "closed_seq": lease.closed_seq}
                for lease in await journal.leases(active_only=False)
            ]  # fmt: skip
            frozen = None if journal.frozen is None else _dated(journal.frozen.as_dict(), "ack_at", "since")
            return {
                "gw": identity.gw, "seq": seq, "head": head.hex(), "acked": await journal.acked(), "frozen": frozen,
                "certs": certs, "leases": leases,
            }  # fmt: skip
        finally:
            await journal.close()

    try:
        click.echo(json.dumps(asyncio.run(read()), indent=2))
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc


def _dated(fields: dict[str, object], *names: str) -> dict[str, object]:
    """`fields` with the Unix times under `names` as ISO dates, for people reading `status`."""
    return fields | {n: utc_iso(v) for n in names if isinstance(v := fields.get(n), int | float)}


@group.command("check-config")
@click.argument("config_file", type=click.Path(path_type=Path, dir_okay=False))
def check_config_cmd(config_file: Path) -> None:
    """Check a config file (under the REBADGE_* environment) as the agent's start would; print every problem.

    Exits 1 with each problem on its own line (key, file and line, or variable); 0 with a one-line summary. Creates
    nothing: no state dir, key or journal. The agent's unit runs it before starting (ExecStartPre).
    """
    try:
        checked = check_config_file(config_file)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(checked.summary(str(config_file)))


@group.command("config-example")
def config_example_cmd() -> None:
    """Print a commented example config file."""
    sys.stdout.write(EXAMPLE_CONFIG.read_text())
