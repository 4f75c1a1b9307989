"""`rebadge provision enrol` against the platform's API on a real loopback port: the files, their modes, the config."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from click.testing import CliRunner, Result
from cryptography import x509

from cloud_bridge.api.app import create_app
from cloud_bridge.platform import Platform
from provisioning.cli import group
from rebadge.broker import free_port
from tests.test_cloud_serve import KEY_LINE, _stop, _wait_serving
from wire.keys import SigningKey

SERVE_TIMEOUT_S = 5.0


@dataclass
class Api:
    """The platform's API on a loopback port, with a factory admin's key."""

    platform: Platform
    url: str
    factory_admin: str

    async def token(self) -> str:
        async with httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": self.factory_admin}) as c:
            r = await c.post("/v1/enrolment-tokens", json={"line": "hall2-line3", "valid_s": 600})
            r.raise_for_status()
            return str(r.json()["token"])


@pytest.fixture(name="api")
async def fixture_api(tmp_path: Path) -> AsyncIterator[Api]:
    platform = await Platform.open(tmp_path / "cloud")
    admin = await platform.bootstrap_admin()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(platform), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(SERVE_TIMEOUT_S):
            while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
                await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": str(admin)}) as c:
            org = (await c.post("/v1/orgs", json={"name": "factory", "kind": "factory"})).json()["id"]
            made = await c.post("/v1/accounts", json={"org_id": org, "name": "fa", "role": "factory_admin"})
        yield Api(platform, url, made.json()["api_key"])
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await platform.close()


async def run(*args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, group, list(args))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_enrol_writes_the_files_and_prints_the_config(api: Api, tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = await run("enrol", "--state-dir", str(state), "--platform", api.url, "--token", await api.token())
    assert result.exit_code == 0, result.output
    key = SigningKey((state / "gateway.key").read_bytes())
    assert f"enrolled gateway {key.kid.hex()}" in result.output
    assert f'cert_file = "{state / "client.crt"}"' in result.output
    assert "[mqtt.tls]" in result.output
    assert {p.name: mode(p) for p in state.iterdir()} == {
        "gateway.key": 0o600, "client.key": 0o600, "client.crt": 0o644, "ca.crt": 0o644,
    }  # fmt: skip
    assert mode(state) == 0o700
    cert = x509.load_pem_x509_certificate((state / "client.crt").read_bytes())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate((state / "ca.crt").read_bytes()))
    gws = await api.platform.run(lambda conn: conn.exec_driver_sql("SELECT gw, name FROM gateways"))
    assert [tuple(r) for r in gws] == [(key.kid.hex(), "hall2-line3")]


async def test_enrol_keeps_an_existing_key_and_a_used_token_is_refused(api: Api, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    key = SigningKey.generate()
    (state / "gateway.key").write_bytes(key.seed)
    (state / "gateway.key").chmod(0o600)
    token = await api.token()
    first = await run("enrol", "--state-dir", str(state), "--platform", api.url, "--token", token)
    assert f"enrolled gateway {key.kid.hex()}" in first.output
    again = await run("enrol", "--state-dir", str(state), "--platform", api.url, "--token", token)
    assert again.exit_code == 1
    assert "refused the enrolment (403): enrolment token is unknown, used or expired" in again.output


async def test_enrol_refuses_a_loose_key_file(api: Api, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "gateway.key").write_bytes(SigningKey.generate().seed)
    (state / "gateway.key").chmod(0o644)
    result = await run("enrol", "--state-dir", str(state), "--platform", api.url, "--token", await api.token())
    assert result.exit_code == 1
    assert "chmod 600" in result.output


@pytest.mark.slow
def test_enrol_against_rebadge_cloud_serve(tmp_path: Path) -> None:
    """The real `rebadge cloud serve` process, with shorter certificates, and the enrol command on a gateway."""
    port = free_port()
    cmd = [sys.executable, "-c", "from rebadge.cli import main; main()", "cloud", "serve", "--data-dir",
           str(tmp_path / "cloud"), "--port", str(port), "--no-worker", "--client-cert-days", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        lines = _wait_serving(proc, port)
        assert any(line.startswith(KEY_LINE) for line in lines)
        admin = (tmp_path / "cloud" / "admin-key").read_text().strip()
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, headers={"X-API-Key": admin}) as c:
            org = c.post("/v1/orgs", json={"name": "factory", "kind": "factory"}).json()["id"]
            made = c.post("/v1/enrolment-tokens", json={"org_id": org, "line": "l1", "valid_s": 600}).json()
        result = CliRunner().invoke(
            group, ["enrol", "--state-dir", str(tmp_path / "gw"), "--platform", url, "--token", made["token"]]
        )
        assert result.exit_code == 0, result.output
        cert = x509.load_pem_x509_certificate((tmp_path / "gw" / "client.crt").read_bytes())
        lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds()
        assert 2 * 86400 <= lifetime <= 2 * 86400 + 600
    finally:
        assert _stop(proc) == 0
