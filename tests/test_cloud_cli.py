"""`rebadge cloud ...` end to end on SQLite: init, certificate and lease file as an account, status; refusals."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.certs.leases import check_bundle
from cloud_bridge import accounts, products
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.platform import Platform
from cloud_bridge.products import Protocol, Spec, Stage
from rebadge.cli import main
from wire.keys import KeyRing, PublicKey, SigningKey

OLD, NEW, OTHER = "abcd1234", "wxyz5678", "brand001"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["cloud", *args])


def run(*args: str) -> str:
    result = CliRunner().invoke(main, ["cloud", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


async def _world(data: Path) -> None:
    """A factory F1 with OLD (trial) and NEW, a brand with OTHER, and accounts of each role the tests act as."""
    p = await Platform.open(data)
    try:
        await p.bootstrap_admin()  # account 1, "first admin"

        async def build(conn: object) -> None:
            now = p.now()
            f1 = await accounts.create_org(conn, SYSTEM, "F1", OrgKind.FACTORY, now)  # type: ignore[arg-type]
            brand = await accounts.create_org(conn, SYSTEM, "B1", OrgKind.BRAND, now)  # type: ignore[arg-type]
            for pid, org in ((OLD, f1), (NEW, f1), (OTHER, brand), ("dev00001", f1)):
                spec = Spec(name="lamp", model_no=pid, protocol=Protocol.BLE)  # goods that carry these PIDs
                await products.create_with_pid(conn, pid, org, spec, now)  # type: ignore[arg-type]
            await products.set_stage(conn, SYSTEM, OLD, Stage.TRIAL, now)  # type: ignore[arg-type]
            await accounts.create_account(conn, SYSTEM, f1, "tech", Role.TECHNICIAN, now)  # type: ignore[arg-type]

        await p.run(build)
    finally:
        await p.close()


@pytest.fixture
def data(tmp_path: Path) -> str:
    path = tmp_path / "cloud"
    run("init", "--data-dir", str(path))
    asyncio.run(_world(path))
    return str(path)


def cert_issue(data: str, *extra: str, **options: str) -> Result:
    given = {"as": "first admin", "factory": "F1", "original-pid": OLD, "new-pid": NEW, "quantity": "20",
             "reason": "stock"} | options  # fmt: skip
    flags = [x for k, v in given.items() for x in (f"--{k}", v)]
    return invoke("cert", "issue", "--data-dir", data, *flags, *extra)


def test_cli_issues_a_lease_file_the_agent_accepts(data: str, tmp_path: Path) -> None:
    issuer = PublicKey(bytes.fromhex(run("init", "--data-dir", data)))
    assert (Path(data) / "issuer.key").stat().st_mode & 0o777 == 0o600
    assert Path(data).stat().st_mode & 0o777 == 0o700
    issued = cert_issue(data, "--protocols", "wifi,ble")
    assert issued.exit_code == 0, issued.output
    cert_no = issued.output.strip()
    assert cert_no == "RC000001"
    gateway = SigningKey.generate().public
    out = tmp_path / "lease.cbor"
    said = run(
        "lease", "issue", "--data-dir", data, "--as", "tech", "--cert", cert_no, "--gateway-key", gateway.raw.hex(),
        "--slots", "8", "--out", str(out),
    )  # fmt: skip
    assert "[0, 8)" in said
    checked = check_bundle(out.read_bytes(), KeyRing([issuer]), gateway, time.time())
    assert checked.cert.cert_no == cert_no
    assert (checked.lease.slot_lo, checked.lease.slot_hi) == (0, 8)
    status = run("status", "--data-dir", data, "--cert", cert_no)
    assert f"certificate {cert_no} approved" in status
    assert "0/20 confirmed" in status
    assert checked.lease.lease_id in status


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"factory": "nobody"}, "organisation 'nobody' does not exist"),
        ({"factory": "B1"}, "organisation B1 is a brand; only a factory can hold a certificate"),
        ({"original-pid": "zzzz9999"}, "original_pid 'zzzz9999' is not a product of organisation F1"),
        ({"new-pid": OTHER}, f"new_pid '{OTHER}' is not a product of organisation F1"),  # the brand's, not F1's
        ({"new-pid": "zzzz9999"}, "new_pid 'zzzz9999' is not a product of organisation F1"),
        ({"original-pid": "dev00001"}, "product dev00001 is in development"),
        ({"quantity": "10000001"}, "quantity 10000001 must lie between 1"),
        ({"reason": ""}, "reason must be 1 to 1000 characters"),
        ({"as": "tech"}, "role technician may not do this"),
        ({"as": "nobody"}, "no active account has the id or name 'nobody'"),
        ({"original-pid": "X!"}, "original_pid 'X!' is not a product ID"),
    ],
)
def test_cli_certificate_obeys_the_api_rules(data: str, options: dict[str, str], said: str) -> None:
    refused = cert_issue(data, **options)
    assert refused.exit_code != 0
    assert said in refused.output
    assert "Traceback" not in refused.output
    assert "certificate" not in run("status", "--data-dir", data).split("issuer key")[1].split("gateway")[0]


def test_cli_acts_as_an_account_by_id_and_records_it(data: str) -> None:
    cert_no = cert_issue(data, **{"as": "1"}).output.strip()
    status = run("status", "--data-dir", data, "--cert", cert_no)
    assert f"certificate {cert_no} approved" in status


def test_cli_errors_are_plain(data: str, tmp_path: Path) -> None:
    no_cert = invoke(
        "lease", "issue", "--data-dir", data, "--as", "tech", "--cert", "RC999999", "--gateway-key", "11" * 32,
        "--slots", "1", "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert no_cert.exit_code != 0
    assert "certificate 'RC999999' does not exist" in no_cert.output
    assert "Traceback" not in no_cert.output


def test_cli_writes_off_a_lease_and_reinstates_only_as_the_roles_allow(data: str, tmp_path: Path) -> None:
    cert_no = cert_issue(data).output.strip()
    gateway = SigningKey.generate().public
    said = run(
        "lease", "issue", "--data-dir", data, "--as", "tech", "--cert", cert_no, "--gateway-key", gateway.raw.hex(),
        "--slots", "5", "--out", str(tmp_path / "lease.cbor"),
    )  # fmt: skip
    lease_id = said.split()[1].rstrip(":")
    refused = invoke("lease", "write-off", "--data-dir", data, "--as", "tech", lease_id, "--reason", "gone")
    assert refused.exit_code != 0
    assert "technician may not do this" in refused.output
    done = run("lease", "write-off", "--data-dir", data, "--as", "first admin", lease_id, "--reason", "burnt")
    assert done == f"lease {lease_id} written off: 5 slots back to its certificate"
    gw = gateway.kid.hex()
    not_frozen = invoke("gateway", "reinstate", "--data-dir", data, "--as", "first admin", gw, "--reason", "checked")
    assert not_frozen.exit_code != 0
    assert "is not frozen" in not_frozen.output
    history = run("gateway", "history", "--data-dir", data, gw)
    assert f"written_off seq 0 lease {lease_id}  first admin: burnt" in history


def test_worker_tls_needs_all_three_files_and_names_a_bad_one(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate")
    partial = invoke("worker", "--data-dir", str(tmp_path / "cloud"), "--mqtt-ca", str(ca))
    assert partial.exit_code == 2
    assert "--mqtt-ca, --mqtt-cert and --mqtt-key together" in partial.output
    bad = invoke("worker", "--data-dir", str(tmp_path / "cloud"), "--mqtt-ca", str(ca), "--mqtt-cert", str(ca),
                 "--mqtt-key", str(ca))  # fmt: skip
    assert bad.exit_code == 1
    assert f"--mqtt-ca {ca}: cannot load the broker's CA" in bad.output
