"""`rebadge cloud order ...` on SQLite: an order's steps as accounts, refusals as one-line messages, test data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloud_bridge.platform import Platform
from rebadge.cli import main
from tests.orders_support import MASS_PID, make_shop


def invoke(data: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["cloud", "order", args[0], "--data-dir", str(data), *args[1:]])


def run(data: Path, *args: str) -> str:
    result = invoke(data, *args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


async def _shop(data: Path) -> None:
    platform = await Platform.open(data)
    try:
        await make_shop(platform)
    finally:
        await platform.close()


@pytest.fixture(name="data")
def fixture_data(tmp_path: Path) -> Path:
    path = tmp_path / "cloud"
    asyncio.run(_shop(path))
    return path


def test_an_order_through_the_cli(data: Path) -> None:
    form = ("--pid", MASS_PID, "--kind", "bulk", "--quantity", "5", "--po-no", "PO-1", "--model-no", "M",
            "--material-no", "MAT")  # fmt: skip
    assert (
        run(data, "submit", "--as", "buyer", *form, "--check") == "would submit: mass, at most 10000000; repeats: none"
    )
    order_no = run(data, "submit", "--as", "buyer", *form)
    assert order_no == "OR000001"
    repeated = invoke(data, "submit", "--as", "buyer", *form)
    assert repeated.exit_code == 1
    assert "repeats order(s) OR000001" in repeated.output
    assert "Traceback" not in repeated.output
    run(data, "step", "--as", "bm", order_no, "confirm-price", "--price-cents", "500", "--currency", "EUR")
    run(data, "step", "--as", "pm", order_no, "confirm-software", "--software-version", "1.0")
    missing = invoke(data, "step", "--as", "bm", order_no, "contract")
    assert missing.exit_code == 2
    assert "contract needs --contract-no" in missing.output
    run(data, "step", "--as", "bm", order_no, "contract", "--contract-no", "C1")
    paid = run(data, "step", "--as", "bm", order_no, "pay", "--amount-cents", "200", "--method", "offline",
               "--reference", "bank")  # fmt: skip
    assert paid.endswith("OR000001 paid: bulk x 5 of mas00001 (mass), PO PO-1, paid 200/500 EUR offline")
    mixed = invoke(data, "step", "--as", "bm", order_no, "pay", "--amount-cents", "300", "--method", "online",
                   "--reference", "psp")  # fmt: skip
    assert mixed.exit_code == 1
    assert "never both" in mixed.output
    not_mine = invoke(data, "step", "--as", "buyer", order_no, "start-production")
    assert "start_production is taken by the project_manager" in not_mine.output
    shown = run(data, "show", "--as", "buyer", order_no)
    assert "you may now: cancel" in shown  # before production
    assert "pay: contracted -> paid by bm (business_manager)" in shown
    assert run(data, "list", "--as", "r_buyer") == ""  # another organisation sees none of it
    closed = invoke(data, "test-data", "--as", "buyer", order_no, "--format", "json")
    assert "downloadable once the project manager published it" in closed.output


def test_certify_and_grant_through_the_cli(data: Path) -> None:
    assert "may not do this" in invoke(data, "certify", "--as", "bm", "2").output
    assert run(data, "certify", "--as", "admin", "2", "--withdraw") == "organisation 2: certification withdrawn"
    form = ("--pid", MASS_PID, "--kind", "bulk", "--quantity", "5", "--po-no", "P", "--model-no", "M",
            "--material-no", "MAT")  # fmt: skip
    assert "enterprise certification" in invoke(data, "submit", "--as", "buyer", *form).output
    run(data, "certify", "--as", "admin", "2", "--note", "checked")
    assert "not a buyer" in invoke(data, "submit", "--as", "plain_buyer", *form).output
    plain = "9"  # plain_buyer's account id: the ninth account of the shop
    assert run(data, "grant", "--as", "f_admin", plain, MASS_PID) == f"account 9: buyer grant for {MASS_PID}"
    assert run(data, "submit", "--as", "plain_buyer", *form).startswith("OR")
    listed = run(data, "list", "--as", "bm")
    assert listed.startswith("OR000001 intention: bulk x 5")
