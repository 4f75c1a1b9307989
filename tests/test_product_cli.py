"""`rebadge cloud product ...`: the product lifecycle and an OEM link from the platform host, as accounts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloud_bridge import accounts
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.platform import Platform
from rebadge.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["cloud", "product", *args])


def run(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


async def _world(data: Path) -> None:
    p = await Platform.open(data)
    try:
        now = p.now()
        factory = await p.run(accounts.create_org, SYSTEM, "F1", OrgKind.FACTORY, now)
        brand = await p.run(accounts.create_org, SYSTEM, "B1", OrgKind.BRAND, now)
        await p.run(accounts.create_account, SYSTEM, factory, "fa", Role.FACTORY_ADMIN, now)
        await p.run(accounts.create_account, SYSTEM, brand, "cu", Role.CUSTOMER, now)
    finally:
        await p.close()


@pytest.fixture
def data(tmp_path: Path) -> str:
    path = tmp_path / "cloud"
    assert CliRunner().invoke(main, ["cloud", "init", "--data-dir", str(path)]).exit_code == 0
    asyncio.run(_world(path))
    return str(path)


def test_lifecycle_and_oem_link(data: str) -> None:
    fa, cu = ("--data-dir", data, "--as", "fa"), ("--data-dir", data, "--as", "cu")
    points = '[{"id": 1, "code": "switch", "type": "bool"}]'
    pid = run("create", *fa, "--name", "lamp", "--model-no", "L-1", "--protocol", "ble", "--data-points", points,
              "--service", "ota", "--service", "voice_alexa")  # fmt: skip
    assert len(pid) == 8
    typed = invoke("create", *fa, "--name", "x", "--model-no", "x", "--pid", "abcd1234")
    assert typed.exit_code == 2
    assert "Invalid value for --pid: not accepted: the platform issues each product's PID" in typed.output
    assert "trial" in run("stage", *fa, pid, "trial")
    locked = invoke("edit", *fa, pid, "--panel", "p2")
    assert locked.exit_code == 1
    assert "panel is locked in trial production; move the product back to development to change it" in locked.output
    bad = invoke("edit", *fa, pid, "--name", "y", "--data-points", "[1")
    assert (bad.exit_code, "--data-points is not JSON" in bad.output) == (1, True)
    run("stage", *fa, pid, "mass")
    token = run("oem-link", *fa, pid, "--valid-days", "2").splitlines()[0]
    assert token.startswith("rbo_")
    assert "unused" in run("oem-links", *fa, pid)
    own = invoke("redeem", *fa, token, "--name", "mine", "--model-no", "M")
    assert "made by your own organisation" in own.output
    copy = run("redeem", *cu, token, "--name", "brand lamp", "--model-no", "B-1", "--service", "voice_alexa")
    assert len(copy) == 8
    assert copy != pid
    shown = run("show", *fa, copy)  # the factory manages the customer's product
    assert f"(from {pid})" in shown
    assert "services: voice_alexa" in shown
    assert "1:switch(bool,rw)" in shown
    again = invoke("redeem", *cu, token, "--name", "again", "--model-no", "B-2")
    assert "this OEM link was used on" in again.output
    assert copy in run("list", *fa)
    assert [line.split()[0] for line in run("list", *cu).splitlines()] == [copy]  # not the factory's own
    dev = run("create", *cu, "--name", "draft", "--model-no", "D-1")
    assert f"product {dev} deleted" in run("delete", *cu, dev)
