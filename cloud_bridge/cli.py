"""`rebadge cloud ...`: set up the platform, issue certificates and lease files, run the ingest worker."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from cloud_bridge import accounts
from cloud_bridge.accounts import Actor
from cloud_bridge.admin_key import bootstrap_admin_key, renew_admin_key
from cloud_bridge.ca import DEFAULT_CLIENT_CERT_VALID_S
from cloud_bridge.certificates import Application
from cloud_bridge.certificates import issue_as as issue_certificate_as
from cloud_bridge.errors import CloudError
from cloud_bridge.leases import issue_as as issue_lease_as
from cloud_bridge.mqtt_tls import ServiceTls, service_context
from cloud_bridge.platform import DEFAULT_CERT_VALID_S, DEFAULT_LEASE_VALID_S, Platform
from cloud_bridge.service import ServeConfig, listen, signal_event, until_signalled
from cloud_bridge.service import serve as serve_platform
from cloud_bridge.store.queries import confirmed_per_cert
from cloud_bridge.store.schema import (
    anomalies,
    certificates,
    gateway_heads,
    gateways,
    issuer_keys,
    leases,
)
from cloud_bridge.worker import IngestWorker
from wire.errors import MalformedError
from wire.keys import KEY_BYTES, PublicKey
from wire.times import utc_iso

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    envvar="REBADGE_DATA_DIR",
    help="Platform directory: issuer key (issuer.key) and, by default, the SQLite database. Env: REBADGE_DATA_DIR.",
)
db_url_option = click.option(
    "--db-url",
    envvar="REBADGE_DB_URL",
    default=None,
    help="Database URL instead of SQLite in the data dir, e.g. postgresql://user@host/db. Env: REBADGE_DB_URL.",
)


def _run(coro: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """Run an async command body; platform errors become plain one-line messages."""

    @functools.wraps(coro)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(coro(*args, **kwargs))
        except CloudError as exc:
            raise click.ClickException(str(exc)) from exc
        except SQLAlchemyError as exc:
            raise click.ClickException(f"database error: {exc.__class__.__name__}: {exc}") from exc

    return wrapper


async def _with_platform(
    data_dir: Path,
    db_url: str | None,
    body: Callable[[Platform], Awaitable[T]],
    *,
    client_cert_valid_s: int = DEFAULT_CLIENT_CERT_VALID_S,
) -> T:
    platform = await Platform.open(data_dir, db_url=db_url, client_cert_valid_s=client_cert_valid_s)
    try:
        return await body(platform)
    finally:
        await platform.close()


@click.group()
def group() -> None:
    """Run the platform: certificates, leases, ingest of gateway records."""


@group.command()
@data_dir_option
@db_url_option
@_run
async def init(data_dir: Path, db_url: str | None) -> None:
    """Create the data dir, issuer key and database; print the issuer public key for gateways to pin.

    A new platform's first admin key goes to DATA_DIR/admin-key (0600); its path is said on stderr.
    """

    async def body(p: Platform) -> None:
        click.echo(p.issuer.public.raw.hex())
        await _bootstrap_admin(p, data_dir)

    await _with_platform(data_dir, db_url, body)


async def _bootstrap_admin(p: Platform, data_dir: Path) -> None:
    """On a platform with no accounts: the first admin, its key written to the data dir (never printed)."""
    path = await bootstrap_admin_key(p, data_dir)
    if path is not None:
        click.echo(f"first admin API key written to {path} (0600); 'rebadge cloud admin-key' renews it", err=True)


@group.command("admin-key")
@data_dir_option
@db_url_option
@_run
async def admin_key(data_dir: Path, db_url: str | None) -> None:
    """Give the first admin account a new API key, in DATA_DIR/admin-key (0600); its old key stops working.

    Made for a lost or leaked key; the key is never printed, only the file's path.
    """

    async def body(p: Platform) -> None:
        path = await renew_admin_key(p, data_dir)
        click.echo(f"new API key of the first admin written to {path} (0600); the old key no longer works")

    await _with_platform(data_dir, db_url, body)


as_option = click.option(
    "--as",
    "account",
    required=True,
    envvar="REBADGE_ACCOUNT",
    help="The account (id or name, as GET /v1/accounts lists them) the command acts as; its role decides what it "
    "may do, exactly as over the API. Env: REBADGE_ACCOUNT.",
)


async def _acting(p: Platform, account: str) -> Actor:
    return await p.run(accounts.acting_as, account)


@group.group()
def cert() -> None:
    """Replacement certificates."""


@cert.command("issue")
@data_dir_option
@db_url_option
@as_option
@click.option("--factory", required=True, help="Name of the factory organisation that may rebadge.")
@click.option("--original-pid", required=True, help="The factory's product the goods are now (in trial or mass).")
@click.option("--new-pid", required=True, help="The factory's product the goods become.")
@click.option("--quantity", type=click.IntRange(min=1), required=True, help="How many units may be rebadged.")
@click.option("--protocols", default="wifi", show_default=True, help="Comma-separated radios: wifi, ble, zigbee.")
@click.option("--valid-days", type=click.IntRange(min=1), default=DEFAULT_CERT_VALID_S // 86400, show_default=True)
@click.option("--reason", required=True, help="Why the replacement is needed (kept with the certificate).")
@_run
async def cert_issue(
    data_dir: Path,
    db_url: str | None,
    account: str,
    factory: str,
    original_pid: str,
    new_pid: str,
    quantity: int,
    protocols: str,
    valid_days: int,
    reason: str,
) -> None:
    """As platform staff (admin or auditor), apply for a factory and approve at once; print the number.

    Every rule of an application over the API holds: the factory exists, both PIDs are its products, the original
    one in trial or mass production, a quantity and a reason.
    """

    async def body(p: Platform) -> None:
        application = Application(
            original_pid, new_pid, quantity, reason, tuple(x.strip() for x in protocols.split(",") if x.strip()),
            valid_days * 86400,
        )  # fmt: skip
        actor = await _acting(p, account)
        cert, _ = await p.run(issue_certificate_as, actor, factory, application, issuer=p.issuer, now=p.now())
        click.echo(cert.cert_no)

    await _with_platform(data_dir, db_url, body)


def _date(at: int) -> str:
    return utc_iso(at)


def _gateway_key(value: str) -> PublicKey:
    try:
        raw = bytes.fromhex(value)
        return PublicKey(raw)
    except (ValueError, MalformedError) as exc:
        raise click.BadParameter(
            f"{value!r} is not a gateway public key: give the {KEY_BYTES * 2} hex digits that "
            "'rebadge agent' prints as the gateway key",
            param_hint="--gateway-key",
        ) from exc


@group.group()
def lease() -> None:
    """Leases of certificate slots for gateways."""


@lease.command("issue")
@data_dir_option
@db_url_option
@as_option
@click.option("--cert", "cert_no", required=True, help="Certificate number, e.g. RC000001.")
@click.option("--gateway-key", required=True, help="The gateway's Ed25519 public key in hex (64 digits).")
@click.option("--slots", type=click.IntRange(min=1), required=True, help="How many slots to lease.")
@click.option("--valid-hours", type=click.IntRange(min=1), default=DEFAULT_LEASE_VALID_S // 3600, show_default=True)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Lease file to write, for 'rebadge agent load-lease FILE'.",
)
@_run
async def lease_issue(
    data_dir: Path,
    db_url: str | None,
    account: str,
    cert_no: str,
    gateway_key: str,
    slots: int,
    valid_hours: int,
    out: Path,
) -> None:
    """Lease slots to a gateway and write the lease file (lease + certificate) for an air-gapped line.

    As over the API: a factory admin or technician of the certificate's factory (or an admin); the gateway is
    registered to the account's organisation on first use.
    """
    key = _gateway_key(gateway_key)

    async def body(p: Platform) -> None:
        granted, _, bundle = await p.run(
            issue_lease_as,
            await _acting(p, account),
            cert_no,
            key,
            slots,
            valid_s=valid_hours * 3600,
            policy=p.policy,
            issuer=p.issuer,
            now=p.now(),
        )
        await asyncio.to_thread(out.write_bytes, bundle)
        click.echo(
            f"lease {granted.lease_id}: slots [{granted.slot_lo}, {granted.slot_hi}) of {cert_no} "
            f"for gateway key {key.kid.hex()}, expires {utc_iso(granted.exp)}, written to {out}"
        )

    await _with_platform(data_dir, db_url, body)


@lease.command("write-off")
@data_dir_option
@db_url_option
@as_option
@click.argument("lease_id")
@click.option("--reason", required=True, help="Why the gateway is given up on (kept in its history for audit).")
@_run
async def lease_write_off(data_dir: Path, db_url: str | None, account: str, lease_id: str, reason: str) -> None:
    """As an auditor or admin, write off a lease whose gateway never came back; print the slots returned.

    Only slots confirmed or activated under the lease stay spent; no record on it after the platform's head of that
    gateway counts, and its other slots never activate under it.
    """

    async def body(p: Platform) -> None:
        returned = await p.write_off_lease(await _acting(p, account), lease_id, reason)
        click.echo(f"lease {lease_id} written off: {returned} slots back to its certificate")

    await _with_platform(data_dir, db_url, body)


@group.group()
def gateway() -> None:
    """Gateways: reinstating one frozen after its journal forked, its history and its keys."""


@gateway.command("reinstate")
@data_dir_option
@db_url_option
@as_option
@click.argument("gw")
@click.option("--reason", required=True, help="What was checked, and why the gateway may go on (kept for audit).")
@click.option(
    "--seq",
    type=click.IntRange(min=0),
    default=None,
    help="For a gateway that stopped because its restored journal is behind: the head seq it holds, as "
    "'rebadge agent status' shows it there. Leave out for a gateway the platform froze on a fork.",
)
@_run
async def gateway_reinstate(
    data_dir: Path, db_url: str | None, account: str, gw: str, reason: str, seq: int | None
) -> None:
    """As an admin, lift a fork's freeze (or rebase a gateway behind): its open leases are written off, its own
    chain goes on, and the worker tells the gateway at its next sweep."""

    async def body(p: Platform) -> None:
        base = await p.reinstate_gateway(await _acting(p, account), gw, reason, seq=seq)
        click.echo(f"gateway {gw} reinstated: its chain goes on after seq {base}; it needs new leases")

    await _with_platform(data_dir, db_url, body)


@gateway.command("history")
@data_dir_option
@db_url_option
@click.argument("gw")
@_run
async def gateway_history(data_dir: Path, db_url: str | None, gw: str) -> None:
    """The gateway's audit history: frozen, leases written off, reinstated."""

    async def body(p: Platform) -> None:
        for h in await p.gateway_history(gw):
            where = f" seq {h.seq}" if h.seq is not None else ""
            lease = f" lease {h.lease_id}" if h.lease_id else ""
            click.echo(f"{_date(h.at)}  {h.kind}{where}{lease}  {h.actor or '-'}: {h.reason}")

    await _with_platform(data_dir, db_url, body)


@gateway.command("keys")
@data_dir_option
@db_url_option
@click.argument("gw")
@_run
async def gateway_keys(data_dir: Path, db_url: str | None, gw: str) -> None:
    """Every key the gateway has had (key rotation), oldest first, with the journal seqs each may sign."""

    async def body(p: Platform) -> None:
        keys = await p.gateway_keys(gw)
        if not keys:
            raise click.ClickException(f"gateway {gw!r} has no keys here; 'rebadge cloud status' lists the gateways")
        for k in keys:
            until = "current" if k.to_seq is None else f"to seq {k.to_seq}, retired {_date(k.retired_at)}"
            click.echo(f"{k.kid}  from seq {k.from_seq} {until}  (introduced {_date(k.introduced_at)})")

    await _with_platform(data_dir, db_url, body)


_FILE = click.Path(dir_okay=False, exists=True, path_type=Path)


def mqtt_tls_options(command: Callable[P, T]) -> Callable[P, T]:
    """--mqtt-ca, --mqtt-cert and --mqtt-key: the platform's service identity on the broker (all three or none)."""
    for name, env, what in reversed((
        ("--mqtt-ca", "REBADGE_MQTT_CA", "CA that signed the broker's certificate (ca.crt of broker-config)"),
        ("--mqtt-cert", "REBADGE_MQTT_CERT", "the platform's client certificate (platform.crt of broker-config)"),
        ("--mqtt-key", "REBADGE_MQTT_KEY", "its key (platform.key of broker-config)"),
    )):  # fmt: skip
        command = click.option(name, type=_FILE, envvar=env, default=None, help=f"mTLS: {what}. Env: {env}.")(command)
    return command


def _service_tls(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    given = [f is not None for f in (ca, cert, key)]
    if not any(given):
        return None
    if ca is None or cert is None or key is None:
        raise click.UsageError("give --mqtt-ca, --mqtt-cert and --mqtt-key together (or none, for a plaintext broker)")
    return service_context(ServiceTls(ca, cert, key))


@group.command()
@data_dir_option
@db_url_option
@click.option("--mqtt-host", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@mqtt_tls_options
@click.option("--shared-group", default=None, help="Share the load with other workers (MQTT 5 $share/GROUP/...).")
@_run
async def worker(
    data_dir: Path, db_url: str | None, mqtt_host: str, mqtt_port: int, mqtt_ca: Path | None,
    mqtt_cert: Path | None, mqtt_key: Path | None, shared_group: str | None,
) -> None:  # fmt: skip
    """Ingest gateways' record batches from MQTT and publish signed acks, until stopped."""
    tls = _service_tls(mqtt_ca, mqtt_cert, mqtt_key)

    async def body(p: Platform) -> None:
        click.echo(f"ingesting from {mqtt_host}:{mqtt_port}{' (mTLS)' if tls else ''}; stop with Ctrl-C")
        work = IngestWorker(p, host=mqtt_host, port=mqtt_port, shared_group=shared_group, tls_context=tls)
        await until_signalled(work.run())

    await _with_platform(data_dir, db_url, body)


@group.command()
@data_dir_option
@db_url_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HTTP API listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option("--mqtt-host", default="127.0.0.1", show_default=True)
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=1883, show_default=True)
@mqtt_tls_options
@click.option("--no-worker", is_flag=True, help="Serve only the API; run 'rebadge cloud worker' elsewhere.")
@click.option("--shared-group", default=None, help="Share the ingest load with other workers (MQTT 5 $share).")
@click.option("--client-cert-days", type=click.IntRange(1, 365), default=DEFAULT_CLIENT_CERT_VALID_S // 86400,
              show_default=True, help="How long the client certificates of enrolled gateways last.")  # fmt: skip
@_run
async def serve(
    data_dir: Path,
    db_url: str | None,
    host: str,
    port: int,
    mqtt_host: str,
    mqtt_port: int,
    mqtt_ca: Path | None,
    mqtt_cert: Path | None,
    mqtt_key: Path | None,
    no_worker: bool,
    shared_group: str | None,
    client_cert_days: int,
) -> None:
    """Run the HTTP API (OpenAPI at /openapi.json) and the MQTT worker; a new platform's first admin key is written
    to DATA_DIR/admin-key (0600), and only its path printed."""
    config = ServeConfig(
        host=host,
        port=port,
        mqtt_host=None if no_worker else mqtt_host,
        mqtt_port=mqtt_port,
        shared_group=shared_group,
        mqtt_tls=None if no_worker else _service_tls(mqtt_ca, mqtt_cert, mqtt_key),
    )

    async def body(p: Platform) -> None:
        # Listen first: a port in use must not make the first admin of a platform that does not serve.
        with listen(host, port) as sock:
            await _bootstrap_admin(p, data_dir)
            click.echo(f"serving http://{host}:{port} (OpenAPI at /openapi.json); stop with Ctrl-C", nl=True)
            with signal_event() as stop:
                await serve_platform(p, config, stop, sock=sock)

    await _with_platform(data_dir, db_url, body, client_cert_valid_s=client_cert_days * 86400)


@group.command()
@data_dir_option
@db_url_option
@click.option("--cert", "cert_no", default=None, help="Show one certificate with its leases.")
@_run
async def status(data_dir: Path, db_url: str | None, cert_no: str | None) -> None:
    """Print certificates with verified counts, gateways with their acked heads, and anomalies."""

    async def body(p: Platform) -> None:
        async with p.engine.connect() as conn:
            for line in await _status_lines(conn, cert_no):
                click.echo(line)

    await _with_platform(data_dir, db_url, body)


async def _status_lines(conn: Any, cert_no: str | None) -> list[str]:
    lines = [f"issuer key: {await _issuer_hex(conn)}"]
    counted = confirmed_per_cert()
    query = select(certificates, func.coalesce(counted.c.n, 0).label("confirmed")).outerjoin(
        counted, counted.c.cert_no == certificates.c.cert_no
    )
    if cert_no is not None:
        query = query.where(certificates.c.cert_no == cert_no)
    rows = (await conn.execute(query.order_by(certificates.c.id))).all()
    if cert_no is not None and not rows:
        raise click.ClickException(f"certificate {cert_no!r} does not exist")
    for r in rows:
        lines.append(
            f"certificate {r.cert_no} {r.status}: {r.original_pid} -> {r.new_pid}, "
            f"{r.confirmed}/{r.quantity} confirmed, factory {r.factory}"
        )
        if cert_no is not None:
            for ls in await conn.execute(select(leases).where(leases.c.cert_no == cert_no)):
                lines.append(f"  lease {ls.lease_id} {ls.state}: [{ls.slot_lo}, {ls.slot_hi}) gateway {ls.gw}")
    heads = await conn.execute(select(gateways, gateway_heads.c.seq).join(gateway_heads))
    lines.extend(
        f"gateway {g.gw} {'REVOKED' if g.revoked else 'active'} {g.name}: acked up to seq {g.seq}" for g in heads
    )
    n_anomalies = (await conn.execute(select(func.count()).select_from(anomalies))).scalar_one()
    lines.append(f"anomalies: {n_anomalies}")
    return lines


async def _issuer_hex(conn: Any) -> str:
    row = (await conn.execute(select(issuer_keys.c.public_key).where(issuer_keys.c.active))).first()
    return bytes(row.public_key).hex() if row else "none"


def _add_order_commands() -> None:
    # Imported here: the order commands use this module's options and runner.
    from cloud_bridge.order_cli import order  # noqa: PLC0415

    group.add_command(order)


def _add_product_commands() -> None:
    # Imported here: the product commands use this module's options and runner.
    from cloud_bridge.product_cli import product  # noqa: PLC0415

    group.add_command(product)


def _add_account_commands() -> None:
    # Imported here: the account commands use this module's options and runner.
    from cloud_bridge.account_cli import account  # noqa: PLC0415

    group.add_command(account)


_add_order_commands()
_add_product_commands()
_add_account_commands()
