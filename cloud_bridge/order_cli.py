"""`rebadge cloud order ...`: the purchase module from the platform host, as an account under the API's rules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from cloud_bridge import buyers, order_test_data, orders
from cloud_bridge.accounts import Actor
from cloud_bridge.buyers import GrantKind
from cloud_bridge.cli import _acting, _date, _run, _with_platform, as_option, data_dir_option, db_url_option
from cloud_bridge.orders import Draft, OrderKind, PayMethod
from cloud_bridge.platform import Platform


@click.group()
def order() -> None:
    """Orders of the purchase module: certification, buyer grants, orders and their steps, test data."""


def _as_account(body: Callable[[Platform, Actor], Awaitable[None]]) -> Callable[[Path, str | None, str], Any]:
    async def run(data_dir: Path, db_url: str | None, account: str) -> None:
        async def with_actor(p: Platform) -> None:
            await body(p, await _acting(p, account))

        await _with_platform(data_dir, db_url, with_actor)

    return run


def _line(row: Any) -> str:
    paid = f", paid {row.paid_cents}/{row.price_cents} {row.currency} {row.pay_method}" if row.price_cents else ""
    cert = f", certificate {row.cert_no}" if row.cert_no else ""
    return f"{row.order_no} {row.state}: {row.kind} x {row.quantity} of {row.pid} ({row.stage}), PO {row.po_no}" + (
        f"{paid}{cert}"
    )


@order.command("certify")
@data_dir_option
@db_url_option
@as_option
@click.argument("org_id", type=click.IntRange(min=1))
@click.option("--note", default="", help="What was checked (kept with the certification).")
@click.option("--withdraw", is_flag=True, help="Withdraw the certification instead: no new orders.")
@_run
async def certify(data_dir: Path, db_url: str | None, account: str, org_id: int, note: str, withdraw: bool) -> None:
    """As a platform admin, record (or withdraw) an organisation's enterprise certification."""

    async def body(p: Platform, actor: Actor) -> None:
        if withdraw:
            await p.run(buyers.withdraw_certification, actor, org_id)
            click.echo(f"organisation {org_id}: certification withdrawn")
        else:
            await p.run(buyers.certify, actor, org_id, note, p.now())
            click.echo(f"organisation {org_id}: certified")

    await _as_account(body)(data_dir, db_url, account)


@order.command("grant")
@data_dir_option
@db_url_option
@as_option
@click.argument("account_id", type=click.IntRange(min=1))
@click.argument("pid")
@click.option("--kind", type=click.Choice([k.value for k in GrantKind]), default=GrantKind.BUYER.value,
              show_default=True, help="buyer: bulk orders, services; rnd (R&D): development orders too.")  # fmt: skip
@click.option("--revoke", is_flag=True, help="Take the grant back instead.")
@_run
async def grant(
    data_dir: Path, db_url: str | None, account: str, account_id: int, pid: str, kind: str, revoke: bool
) -> None:
    """As an admin of your organisation, let one of its accounts order one product (or take it back)."""

    async def body(p: Platform, actor: Actor) -> None:
        if revoke:
            await p.run(buyers.revoke_grant, actor, account_id, pid, GrantKind(kind))
            click.echo(f"account {account_id}: {kind} grant for {pid} revoked")
        else:
            await p.run(buyers.grant, actor, account_id, pid, GrantKind(kind), p.now())
            click.echo(f"account {account_id}: {kind} grant for {pid}")

    await _as_account(body)(data_dir, db_url, account)


@order.command("submit")
@data_dir_option
@db_url_option
@as_option
@click.option("--pid", required=True, help="The product to order (yours, or one your organisation manages).")
@click.option("--kind", type=click.Choice([k.value for k in OrderKind]), required=True,
              help="development: rnd_product, debug_module (R&D staff); trial, mass: bulk, value_added.")  # fmt: skip
@click.option(
    "--quantity", type=click.IntRange(min=1), required=True, help="At most 100 in development, 1000 in trial."
)
@click.option("--po-no", required=True, help="Your purchase order number.")
@click.option("--model-no", required=True, help="The product's model number.")
@click.option("--material-no", required=True, help="The material number.")
@click.option("--batch-no", default="", help="Your batch number.")
@click.option("--service", default="", help="value_added orders: which service.")
@click.option("--delivery-address", default="")
@click.option("--invoice-title", default="", help="The title an invoice is made out to (empty: none).")
@click.option("--invoice-tax-no", default="")
@click.option("--check", "check_only", is_flag=True, help="Run every rule and store nothing; list repeated orders.")
@click.option("--confirm-repeat", is_flag=True, help="Submit although the order repeats earlier ones.")
@_run
async def submit(
    data_dir: Path, db_url: str | None, account: str, pid: str, kind: str, quantity: int, po_no: str, model_no: str,
    material_no: str, batch_no: str, service: str, delivery_address: str, invoice_title: str, invoice_tax_no: str,
    check_only: bool, confirm_repeat: bool,
) -> None:  # fmt: skip
    """Submit an order as a buyer (or R&D staff) of the product; print its number."""
    draft = Draft(pid, OrderKind(kind), quantity, po_no, model_no, material_no, batch_no, service, delivery_address,
                  invoice_title, invoice_tax_no)  # fmt: skip

    async def body(p: Platform, actor: Actor) -> None:
        if check_only:
            checked = await p.run(orders.check, actor, draft)
            repeats = ", ".join(checked.repeats) or "none"
            click.echo(f"would submit: {checked.stage.value}, at most {checked.max_quantity}; repeats: {repeats}")
            return
        click.echo(await p.run(orders.submit, actor, draft, p.now(), confirm_repeat=confirm_repeat))

    await _as_account(body)(data_dir, db_url, account)


@order.command("list")
@data_dir_option
@db_url_option
@as_option
@_run
async def list_orders(data_dir: Path, db_url: str | None, account: str) -> None:
    """Your organisation's orders (platform staff: all), newest first."""

    async def body(p: Platform, actor: Actor) -> None:
        for row in await p.run(orders.list_visible, actor):
            click.echo(_line(row))

    await _as_account(body)(data_dir, db_url, account)


@order.command("show")
@data_dir_option
@db_url_option
@as_option
@click.argument("order_no")
@_run
async def show(data_dir: Path, db_url: str | None, account: str, order_no: str) -> None:
    """One order: its state, what you may do now, and its history."""

    async def body(p: Platform, actor: Actor) -> None:
        seen = await p.run(orders.view, actor, order_no)
        click.echo(_line(seen.row))
        click.echo(f"you may now: {', '.join(seen.mine) or 'nothing'}")
        for e in seen.history:
            click.echo(f"  {_date(e.at)}  {e.action}: {e.from_state} -> {e.to_state} by {e.actor} ({e.role})")

    await _as_account(body)(data_dir, db_url, account)


STEP_ARGS: dict[str, tuple[Callable[..., Awaitable[Any]], tuple[str, ...]]] = {
    "confirm-price": (orders.confirm_price, ("price_cents", "currency")),
    "confirm-software": (orders.confirm_software, ("software_version",)),
    "contract": (orders.sign_contract, ("contract_no",)),
    "pay": (orders.pay, ("amount_cents", "method", "reference")),
    "start-production": (orders.start_production, ()),
    "ship": (orders.ship, ("batches", "carrier", "tracking_no")),
    "link-certificate": (orders.link_certificate, ("cert_no",)),
    "publish-test-data": (orders.publish_test_data, ()),
    "invoice": (orders.invoice, ("invoice_no",)),
    "complete": (orders.complete, ()),
    "cancel": (orders.cancel, ("reason",)),
}


def _step_values(step: str, given: dict[str, Any]) -> list[Any]:
    values = []
    for name in STEP_ARGS[step][1]:
        if given.get(name) in (None, ()):
            raise click.UsageError(f"{step} needs --{name.replace('_', '-')}")
        value = given[name]
        values.append(PayMethod(value) if name == "method" else list(value) if name == "batches" else value)
    return values


@order.command("step")
@data_dir_option
@db_url_option
@as_option
@click.argument("order_no")
@click.argument("step", type=click.Choice(list(STEP_ARGS)))
@click.option("--price-cents", type=click.IntRange(min=1), help="confirm-price: the total, in cents.")
@click.option("--currency", help="confirm-price: ISO 4217, e.g. EUR.")
@click.option("--software-version", help="confirm-software.")
@click.option("--contract-no", help="contract.")
@click.option("--amount-cents", type=click.IntRange(min=1), help="pay: a deposit or the full price, then the balance.")
@click.option("--method", type=click.Choice([m.value for m in PayMethod]), help="pay: online or offline, never both.")
@click.option("--reference", help="pay: the bank's or payment provider's reference.")
@click.option("--batches", multiple=True, help="ship: a batch number (repeat the option for each).")
@click.option("--carrier", help="ship.")
@click.option("--tracking-no", help="ship.")
@click.option("--cert-no", help="link-certificate: the certificate applied for with this order.")
@click.option("--invoice-no", help="invoice.")
@click.option("--reason", help="cancel.")
@_run
async def step(data_dir: Path, db_url: str | None, account: str, order_no: str, step: str, **given: Any) -> None:
    """Take one step of an order (the order's page says who may take which, and when)."""
    op, _ = STEP_ARGS[step]
    values = _step_values(step, given)

    async def body(p: Platform, actor: Actor) -> None:
        row = await p.run(op, actor, order_no, *values, p.now())
        click.echo(_line(row))

    await _as_account(body)(data_dir, db_url, account)


@order.command("test-data")
@data_dir_option
@db_url_option
@as_option
@click.argument("order_no")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="File (default: stdout).")
@_run
async def test_data(
    data_dir: Path, db_url: str | None, account: str, order_no: str, fmt: str, out: Path | None
) -> None:
    """The order's test data: each unit its certificate's ledger confirmed (SN, PIDs, gateway, slot, times)."""

    async def body(p: Platform, actor: Actor) -> None:
        _, units = await p.run(order_test_data.units, actor, order_no)
        text = order_test_data.to_csv(units) if fmt == "csv" else order_test_data.to_json(units)
        if out is None:
            click.echo(text, nl=False)
        else:
            await asyncio.to_thread(out.write_text, text)
            click.echo(f"{len(units)} units written to {out}")

    await _as_account(body)(data_dir, db_url, account)
