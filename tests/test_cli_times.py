"""Commands print times as ISO dates in UTC, never as Unix epoch numbers."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.certs.leases import check_window
from agent.cli import group as agent
from agent.errors import LeaseError
from cloud_bridge.cli import group as cloud
from cloud_bridge.platform import Platform
from tests.helpers import NEW_PID, ORIGINAL_PID, Issuer
from wire.keys import PublicKey, SigningKey
from wire.scan_command import CommandRefusal, NonceWindow, check_scan, sign_scan
from wire.times import utc_iso

EPOCH_LIKE = re.compile(r"\b1[5-9]\d{8}\b")  # ten digits: a Unix time between 2017 and 2033


def test_utc_iso_is_to_the_second_in_utc() -> None:
    assert utc_iso(0) == "1970-01-01T00:00:00Z"
    assert utc_iso(1796195972.9) == "2026-12-02T07:19:32Z"


def epoch_numbers(value: object) -> list[object]:
    """Every int in a JSON value that looks like a Unix time."""
    if isinstance(value, dict):
        return [n for v in value.values() for n in epoch_numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in epoch_numbers(v)]
    return [value] if isinstance(value, int) and EPOCH_LIKE.fullmatch(str(value)) else []


def test_agent_lease_and_status_show_the_expiry_as_a_date(tmp_path: Path) -> None:
    issuer = Issuer()
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[trust]\nissuer_keys = ["{issuer.key.public.raw.hex()}"]\n'
    )
    runner = CliRunner()
    made = runner.invoke(agent, ["init", "-c", str(config)])
    assert made.exit_code == 0, made.output
    gateway = PublicKey(bytes.fromhex(json.loads(made.output)["public_key"]))
    exp = int(time.time()) + 7200
    lease_file = tmp_path / "lease.cbor"
    lease_file.write_bytes(issuer.bundle(gateway, exp=exp))

    loaded = runner.invoke(agent, ["load-lease", "-c", str(config), str(lease_file)])
    assert loaded.exit_code == 0, loaded.output
    assert f"expires {utc_iso(exp)}" in loaded.output
    assert not EPOCH_LIKE.search(loaded.output), loaded.output

    status = runner.invoke(agent, ["status", "-c", str(config)])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.output)
    assert shown["leases"][0]["expires"] == utc_iso(exp)
    assert epoch_numbers(shown) == []


def test_a_refused_certificate_or_lease_names_its_times_as_dates() -> None:
    issuer = Issuer()
    gateway = SigningKey.generate().public
    now = int(time.time())
    cases = [
        ({"nbf": now + 3600}, {}, "is not valid before"),
        ({"exp": now - 10}, {}, "expired at"),
        ({}, {"exp": now - 10}, "expired at"),
    ]
    for cert_kw, lease_kw, said in cases:
        cert, cert_token = issuer.certificate(**cert_kw)  # type: ignore[arg-type]
        lease, _ = issuer.lease(cert, cert_token, gateway, **lease_kw)  # type: ignore[arg-type]
        with pytest.raises(LeaseError) as refused:
            check_window(lease, cert, now)
        shown = str(refused.value)
        when = cert_kw.get("nbf") or cert_kw.get("exp") or lease_kw["exp"]
        assert f"{said} {utc_iso(when)}" in shown
        assert not EPOCH_LIKE.search(shown), shown


def test_a_stale_scan_command_names_its_time_as_a_date() -> None:
    issuer, gw, now = Issuer(), "0123456789abcdef", int(time.time())
    token = sign_scan(issuer.key, gw, "SN-1", "s1", now - 3600)
    with pytest.raises(CommandRefusal) as refused:
        check_scan(token, issuer.ring, gw, now, NonceWindow())
    assert f"its time {utc_iso(now - 3600)} is -3600 s off this gateway's clock" in str(refused.value)
    assert not EPOCH_LIKE.search(str(refused.value))


async def _platform_with_a_certificate(data_dir: Path) -> str:
    platform = await Platform.open(data_dir)
    try:
        await platform.bootstrap_admin()
        cert, _ = await platform.issue_certificate(
            factory="Acme", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=5
        )
        return cert.cert_no
    finally:
        await platform.close()


def test_the_platform_commands_show_a_lease_and_a_gateway_key_with_dates(tmp_path: Path) -> None:
    data_dir = tmp_path / "cloud"
    cert_no = asyncio.run(_platform_with_a_certificate(data_dir))
    gateway = SigningKey.generate().public
    runner = CliRunner()
    before = int(time.time())
    issued = runner.invoke(cloud, [
        "lease", "issue", "--data-dir", str(data_dir), "--as", "first admin", "--cert", cert_no, "--gateway-key",
        gateway.raw.hex(), "--slots", "2", "--valid-hours", "2", "--out", str(tmp_path / "lease.cbor"),
    ])  # fmt: skip
    assert issued.exit_code == 0, issued.output
    expires = re.search(r"expires (\S+),", issued.output)
    assert expires is not None, issued.output
    assert expires.group(1) in {utc_iso(before + 7200 + d) for d in range(int(time.time()) - before + 1)}
    keys = runner.invoke(cloud, ["gateway", "keys", gateway.kid.hex(), "--data-dir", str(data_dir)])
    assert keys.exit_code == 0, keys.output
    assert re.search(r"\(introduced \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)", keys.output), keys.output
    for shown in (issued.output, keys.output):
        assert not EPOCH_LIKE.search(shown), shown
