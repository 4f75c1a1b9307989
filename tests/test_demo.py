"""`rebadge demo` as a person runs it: a real process, its JSON summary, and what --keep leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DEMO_TIMEOUT_S = 90


def run_demo(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "rebadge.cli", "demo", "--json", *args],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def test_demo_wifi_line_with_the_defaults_of_the_first_issue(tmp_path: Path) -> None:
    summary = run_demo("--radios", "wifi", "--keep", str(tmp_path / "kept"))
    assert summary["units"] == 12
    assert summary["quota"] == 10
    assert summary["confirmed"] == 10
    assert summary["refused"] == {"quota_exhausted": 2}
    assert summary["in_doubt"] == 0
    assert summary["platform_confirmed"] == 10
    kept = tmp_path / "kept"
    for name in ("lease.cbor", "certificate.cose", "demo.log", "agent/journal.sqlite", "agent/gateway.key"):
        assert (kept / name).exists(), name
    assert "DEMO-WIFI-0011" in (kept / "demo.log").read_text()


def test_demo_mixed_line_refuses_the_general_firmware_ble_unit() -> None:
    summary = run_demo("--units", "9", "--quota", "9")
    by_radio = summary["by_radio"]
    assert isinstance(by_radio, dict)
    assert set(by_radio) == {"wifi", "ble", "zigbee"}
    assert by_radio["ble"]["refused"] == {"unsupported_firmware": 1}
    assert summary["confirmed"] == 8
    assert summary["refused"] == {"unsupported_firmware": 1}
    assert summary["platform_confirmed"] == 8
    assert by_radio["wifi"]["confirmed"] == 3
    assert by_radio["zigbee"]["confirmed"] == 3
