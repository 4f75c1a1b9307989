"""`rebadge cloud serve` as a real process: the first admin key written once to a 0600 file (only its path printed),
OpenAPI served, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rebadge.broker import PrivateBroker, free_port

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
KEY_LINE = "first admin API key written to "


def _start(data_dir: Path, port: int, broker: PrivateBroker) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", "from rebadge.cli import main; main()", "cloud", "serve", "--data-dir", str(data_dir),
           "--port", str(port), "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )


def _wait_serving(proc: subprocess.Popen[str], port: int) -> list[str]:
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
        if line.startswith("serving"):
            break
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=0.5)
        except httpx.TransportError:
            time.sleep(0.05)
        else:
            return lines
    proc.kill()
    raise AssertionError(f"serve did not come up: {lines}")


def _stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()


def test_serve_writes_the_first_admin_key_once_to_a_0600_file_and_prints_only_its_path(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    port = free_port()
    data = tmp_path / "cloud"
    proc = _start(data, port, broker)
    lines = _wait_serving(proc, port)
    key_file = data / "admin-key"
    assert [line for line in lines if line.startswith(KEY_LINE)] == [
        f"{KEY_LINE}{key_file} (0600); 'rebadge cloud admin-key' renews it"
    ]
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == "rebadge platform"
    assert httpx.get(f"{base}/v1/me", headers={"X-API-Key": key}).json()["role"] == "admin"
    assert httpx.get(f"{base}/v1/me", headers={"X-API-Key": "rbk_wrong"}).status_code == 401
    assert _stop(proc) == 0
    again = _start(data, port, broker)
    assert not any(line.startswith(KEY_LINE) for line in _wait_serving(again, port))
    assert key_file.read_text().strip() == key  # written once
    assert httpx.get(f"{base}/v1/me", headers={"X-API-Key": key}).status_code == 200
    assert _stop(again) == 0
    assert again.stdout is not None
    assert not any(key in line for line in lines)
