"""`rebadge cloud product ...`: products and OEM links from the platform host, as an account under the API's rules."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from cloud_bridge import oem, products
from cloud_bridge.accounts import Actor
from cloud_bridge.cli import _acting, _date, _run, _with_platform, as_option, data_dir_option, db_url_option
from cloud_bridge.errors import InvalidRequestError
from cloud_bridge.platform import Platform
from cloud_bridge.products import Changes, DataPoint, FirmwareKind, Protocol, Service, Spec, Stage


@click.group()
def product() -> None:
    """Products (the platform issues each PID) and OEM links."""


async def _as(
    data_dir: Path, db_url: str | None, account: str, body: Callable[[Platform, Actor], Awaitable[None]]
) -> None:
    async def with_actor(p: Platform) -> None:
        await body(p, await _acting(p, account))

    await _with_platform(data_dir, db_url, with_actor)


def _data_points(raw: str | None) -> tuple[DataPoint, ...] | None:
    if raw is None:
        return None
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    try:
        points = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"--data-points is not JSON ({exc.msg} at {exc.pos})", field="data_points") from exc
    if not isinstance(points, list):
        raise InvalidRequestError("--data-points must be a JSON list of data points", field="data_points")
    return products.parse_data_points(points)


def _services(values: tuple[str, ...]) -> frozenset[Service]:
    return frozenset(Service(v) for v in values)


def _summary(row: Any) -> str:
    managed = f", managed by organisation {row.managed_by} (from {row.source_pid})" if row.managed_by else ""
    return (
        f"{row.pid} {row.stage}: {row.name} (model {row.model_no}), {row.protocol}, {row.firmware} firmware, "
        f"organisation {row.org_id}{managed}"
    )


def _details(row: Any) -> list[str]:
    config = products.configuration(row)
    points = ", ".join(f"{p['id']}:{p['code']}({p['type']},{p['mode']})" for p in config["data_points"]) or "none"
    return [
        _summary(row),
        f"  firmware version: {row.firmware_version or '-'}; panel: {row.panel or '-'}; module: {row.module or '-'}",
        f"  data points: {points}",
        f"  services: {', '.join(config['services']) or 'none'}",
        f"  data owner: organisation {row.data_owner}",
    ]


def _no_pid(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        raise click.BadParameter(
            "not accepted: the platform issues each product's PID; leave --pid out and read the PID it prints",
            param_hint="--pid",
        )


services_option = click.option(
    "--service", "services", multiple=True, type=click.Choice([s.value for s in Service]),
    help="An enabled service (repeat for more).",
)  # fmt: skip
data_points_option = click.option(
    "--data-points", default=None, help='JSON list, e.g. \'[{"id":1,"code":"switch","type":"bool"}]\', or @file.'
)


@product.command("create")
@data_dir_option
@db_url_option
@as_option
@click.option("--name", required=True)
@click.option("--model-no", required=True, help="Your internal model number (unique in your organisation).")
@click.option("--protocol", type=click.Choice([p.value for p in Protocol]), default=Protocol.WIFI.value,
              show_default=True, help="wifi: a 16-character PID; ble, zigbee: 8.")  # fmt: skip
@click.option("--firmware", type=click.Choice([f.value for f in FirmwareKind]), default=FirmwareKind.OEM.value,
              show_default=True, help="oem: the platform's; mcu: general firmware with an MCU; custom.")  # fmt: skip
@click.option("--firmware-version", default="")
@data_points_option
@click.option("--panel", default="")
@click.option("--module", default="")
@services_option
@click.option("--org-id", type=click.IntRange(min=1), default=None, help="Admins only: the owning organisation.")
@click.option("--pid", hidden=True, expose_value=False, callback=_no_pid)
@_run
async def create(
    data_dir: Path, db_url: str | None, account: str, name: str, model_no: str, protocol: str, firmware: str,
    firmware_version: str, data_points: str | None, panel: str, module: str, services: tuple[str, ...],
    org_id: int | None,
) -> None:  # fmt: skip
    """Create a product in development; print the PID the platform issued for it."""
    spec = Spec(
        name=name, model_no=model_no, protocol=Protocol(protocol), firmware=FirmwareKind(firmware),
        firmware_version=firmware_version, data_points=_data_points(data_points) or (), panel=panel, module=module,
        services=_services(services),
    )  # fmt: skip

    async def body(p: Platform, actor: Actor) -> None:
        click.echo(await p.run(products.create, actor, spec, p.now(), org_id=org_id))

    await _as(data_dir, db_url, account, body)


@product.command("list")
@data_dir_option
@db_url_option
@as_option
@_run
async def list_products(data_dir: Path, db_url: str | None, account: str) -> None:
    """The products you may see: your organisation's and those it manages."""

    async def body(p: Platform, actor: Actor) -> None:
        for row in await p.run(products.list_visible, actor):
            click.echo(_summary(row))

    await _as(data_dir, db_url, account, body)


@product.command("show")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@_run
async def show(data_dir: Path, db_url: str | None, account: str, pid: str) -> None:
    """One product with its configuration."""

    async def body(p: Platform, actor: Actor) -> None:
        click.echo("\n".join(_details(await p.run(products.get, actor, pid))))

    await _as(data_dir, db_url, account, body)


@product.command("edit")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@click.option("--name", default=None)
@click.option("--model-no", default=None)
@click.option("--protocol", type=click.Choice([p.value for p in Protocol]), default=None)
@click.option("--firmware", type=click.Choice([f.value for f in FirmwareKind]), default=None)
@click.option("--firmware-version", default=None)
@data_points_option
@click.option("--panel", default=None)
@click.option("--module", default=None)
@services_option
@click.option("--no-services", is_flag=True, help="Disable every service.")
@_run
async def edit(
    data_dir: Path, db_url: str | None, account: str, pid: str, name: str | None, model_no: str | None,
    protocol: str | None, firmware: str | None, firmware_version: str | None, data_points: str | None,
    panel: str | None, module: str | None, services: tuple[str, ...], no_services: bool,
) -> None:  # fmt: skip
    """Change fields; those the product's stage locks are refused with the way back."""
    changes = Changes(
        name=name, model_no=model_no, protocol=Protocol(protocol) if protocol else None,
        firmware=FirmwareKind(firmware) if firmware else None, firmware_version=firmware_version,
        data_points=_data_points(data_points), panel=panel, module=module,
        services=frozenset() if no_services else (_services(services) if services else None),
    )  # fmt: skip

    async def body(p: Platform, actor: Actor) -> None:
        click.echo("\n".join(_details(await p.run(products.edit, actor, pid, changes, p.now()))))

    await _as(data_dir, db_url, account, body)


@product.command("stage")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@click.argument("stage", type=click.Choice([s.value for s in Stage]))
@_run
async def stage(data_dir: Path, db_url: str | None, account: str, pid: str, stage: str) -> None:
    """Move a product: development -> trial (completing development) -> mass, or trial back to development."""

    async def body(p: Platform, actor: Actor) -> None:
        click.echo(_summary(await p.run(products.set_stage, actor, pid, Stage(stage), p.now())))

    await _as(data_dir, db_url, account, body)


@product.command("delete")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@_run
async def delete(data_dir: Path, db_url: str | None, account: str, pid: str) -> None:
    """Delete a product in development that nothing names; its PID is never issued again."""

    async def body(p: Platform, actor: Actor) -> None:
        await p.run(products.remove, actor, pid, p.now())
        click.echo(f"product {pid} deleted; its PID stays issued")

    await _as(data_dir, db_url, account, body)


@product.command("oem-link")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@click.option("--valid-days", type=click.IntRange(1, oem.MAX_VALID_S // 86400), default=oem.DEFAULT_VALID_S // 86400,
              show_default=True)  # fmt: skip
@_run
async def oem_link(data_dir: Path, db_url: str | None, account: str, pid: str, valid_days: int) -> None:
    """As the factory's admin, make a one-time OEM link to a product in mass production on oem firmware."""

    async def body(p: Platform, actor: Actor) -> None:
        token, expires_at = await p.run(oem.create_link, actor, pid, p.now(), valid_s=valid_days * 86400)
        click.echo(token)
        click.echo(f"single use, valid until {_date(expires_at)}; send it to your customer (it is shown this once)")

    await _as(data_dir, db_url, account, body)


@product.command("oem-links")
@data_dir_option
@db_url_option
@as_option
@click.argument("pid")
@_run
async def oem_links(data_dir: Path, db_url: str | None, account: str, pid: str) -> None:
    """The OEM links made for a product and what became of them."""

    async def body(p: Platform, actor: Actor) -> None:
        for row in await p.run(oem.links_of, actor, pid):
            state = f"redeemed {_date(row.used_at)} into {row.new_pid}" if row.used_at else "unused"
            click.echo(f"link {row.id}: made {_date(row.created_at)}, expires {_date(row.expires_at)}, {state}")

    await _as(data_dir, db_url, account, body)


@product.command("redeem")
@data_dir_option
@db_url_option
@as_option
@click.argument("token")
@click.option("--name", required=True, help="Your name for the new product.")
@click.option("--model-no", required=True, help="Your model number for it.")
@click.option("--service", "services", multiple=True, type=click.Choice([s.value for s in Service]),
              help="Enable only these of the factory product's services (default: all of them).")  # fmt: skip
@_run
async def redeem(
    data_dir: Path, db_url: str | None, account: str, token: str, name: str, model_no: str, services: tuple[str, ...]
) -> None:
    """As a customer, redeem an OEM link: print the PID of your new product, which the factory manages."""
    choice = oem.Redemption(name, model_no, _services(services) if services else None)

    async def body(p: Platform, actor: Actor) -> None:
        click.echo(await p.run(oem.redeem, actor, token, choice, p.now()))

    await _as(data_dir, db_url, account, body)
