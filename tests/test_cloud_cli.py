"""`rebadge cloud ...` end to end on SQLite: init, certificate, lease file the agent accepts, status."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from agent.certs.leases import check_bundle
from rebadge.cli import main
from wire.keys import KeyRing, PublicKey, SigningKey


def run(*args: str) -> str:
    result = CliRunner().invoke(main, ["cloud", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_cli_issues_a_lease_file_the_agent_accepts(tmp_path: Path) -> None:
    data = str(tmp_path / "cloud")
    issuer = PublicKey(bytes.fromhex(run("init", "--data-dir", data)))
    assert (tmp_path / "cloud" / "issuer.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cloud").stat().st_mode & 0o777 == 0o700
    cert_no = run(
        "cert", "issue", "--data-dir", data, "--factory", "F1", "--original-pid", "abcd1234",
        "--new-pid", "wxyz5678", "--quantity", "20", "--protocols", "wifi,ble",
    )  # fmt: skip
    assert cert_no == "RC000001"
    gateway = SigningKey.generate().public
    out = tmp_path / "lease.cbor"
    said = run(
        "lease", "issue", "--data-dir", data, "--cert", cert_no, "--gateway-key", gateway.raw.hex(),
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


def test_cli_errors_are_plain(tmp_path: Path) -> None:
    data = str(tmp_path / "cloud")
    runner = CliRunner()
    bad_pid = runner.invoke(
        main,
        ["cloud", "cert", "issue", "--data-dir", data, "--factory", "F", "--original-pid", "X!",
         "--new-pid", "wxyz5678", "--quantity", "1"],
    )  # fmt: skip
    assert bad_pid.exit_code != 0
    assert "original_pid 'X!' is not a product ID" in bad_pid.output
    no_cert = runner.invoke(
        main,
        ["cloud", "lease", "issue", "--data-dir", data, "--cert", "RC999999", "--gateway-key", "11" * 32,
         "--slots", "1", "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert no_cert.exit_code != 0
    assert "certificate 'RC999999' does not exist" in no_cert.output
    assert "Traceback" not in no_cert.output
