"""The agent's edges: config loading, scanners (a real pty), the technician's screen, systemd notify, provisioning."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tty
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from agent.cli import EXAMPLE_CONFIG
from agent.config import load_config, parse_config
from agent.console import ScanConsole, event_line
from agent.errors import ConfigError
from agent.scanner import clean_line, read_serial
from agent.systemd_notify import Notifier
from provisioning.cli import group as provision
from wire.topics import Result, ScanEvent

SCAN_TIMEOUT_S = 5.0


def test_example_config_is_valid_and_env_overrides_it() -> None:
    config = load_config(EXAMPLE_CONFIG, env={"REBADGE_MQTT__PORT": "8883", "REBADGE_GATEWAY__NAME": "hall-2"})
    assert config.mqtt.port == 8883
    assert config.gateway.name == "hall-2"
    assert config.line.radios[0].value == "wifi"


def test_bad_config_names_field_value_and_source(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[mqtt]\nport = 70000\n[line]\nradios = ["lora"]\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    text = str(err.value)
    assert str(path) in text
    assert "mqtt.port" in text
    assert "70000" in text
    assert "line.radios" in text
    with pytest.raises(ConfigError, match="unknown"):
        parse_config({"mqtt": {"hots": "x"}}, "test", env={})


def test_missing_and_broken_config_files_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config-example"):
        load_config(tmp_path / "nope.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken, env={})


@pytest.mark.parametrize(
    ("raw", "sn"),
    [(b"SN-0001\r", "SN-0001"), (b"  SN-0002 \n", "SN-0002"), (b"\x00\r\n", None), (b"\xff\xfe", None), (b"", None)],
)
def test_scanner_lines_are_cleaned(raw: bytes, sn: str | None) -> None:
    assert clean_line(raw) == sn


async def test_serial_barcode_scanner_on_a_real_pty() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    got: list[str] = []
    done = asyncio.Event()

    async def handle(sn: str) -> None:
        got.append(sn)
        if len(got) == 3:
            done.set()

    task = asyncio.create_task(read_serial(os.ttyname(slave), 9600, handle))
    try:
        await asyncio.sleep(0.1)
        # CR-terminated, LF-terminated, split across writes, and junk in between
        for chunk in (b"SN-0001\r", b"SN-00", b"02\n\xff\xfe\r\n", b"SN-0003\r\n"):
            os.write(master, chunk)
            await asyncio.sleep(0.02)
        async with asyncio.timeout(SCAN_TIMEOUT_S):
            await done.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        os.close(master)
        os.close(slave)
    assert got == ["SN-0001", "SN-0002", "SN-0003"]


def test_screen_shows_an_unmistakable_word_per_outcome() -> None:
    console = Console(record=True, width=120, color_system=None)
    screen = ScanConsole(console, bell=False)
    screen.show(ScanEvent(sn="SN-0001", result=Result.CONFIRMED, old_pid="stock001", new_pid="brand001", slot=3))
    screen.show(ScanEvent(sn="SN-0002", result=Result.REFUSED, reason="quota_exhausted", message="quota exhausted"))
    screen.show(ScanEvent(sn="SN-0003", result=Result.IN_DOUBT, message="scan it again"))
    text = console.export_text()
    assert "OK" in text.splitlines()[0]
    assert "stock001 -> brand001" in text
    assert "REFUSED" in text.splitlines()[1]
    assert "quota exhausted" in text
    assert "RESCAN" in text.splitlines()[2]
    assert event_line(ScanEvent(sn="SN-0004", result=Result.ALREADY_REBADGED)).plain.strip().startswith("DONE")


def test_systemd_notify_reaches_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        Notifier(path).send(READY="1", STATUS="ready")
        assert sock.recv(100) == b"READY=1\nSTATUS=ready"
    Notifier(None).send(READY="1")  # outside systemd: nothing to do, no error
    Notifier(str(tmp_path / "gone")).send(READY="1")  # systemd restarting: ignored


def test_line_config_is_written_with_its_comments_and_loads(tmp_path: Path) -> None:
    out = tmp_path / "line.toml"
    key = "ab" * 32
    result = CliRunner().invoke(
        provision,
        ["line-config", "--name", "hall2-line3", "--issuer-key", key, "--mqtt-host", "broker.lan",
         "--radios", "wifi,ble", "--state-dir", str(tmp_path / "state"), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "# " in text
    config = load_config(out, env={})
    assert config.gateway.name == "hall2-line3"
    assert config.trust.issuer_keys == (key,)
    assert config.mqtt.host == "broker.lan"
    assert [r.value for r in config.line.radios] == ["wifi", "ble"]
    bad = CliRunner().invoke(provision, ["line-config", "--name", "x", "--issuer-key", "zz", "--out", str(out)])
    assert bad.exit_code != 0
    assert "64 hex" in bad.output


def test_sim_wifi_runs_goods_in_their_own_process() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebadge.cli", "sim", "wifi", "--units", "2", "--issuer-key", "cd" * 32],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[2] == "ready"
        for line in lines[:2]:
            assert '"sn": "SIM-0000' in line
            port = int(line.rsplit(":", 1)[1].strip(" }"))
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        proc.stdout.close()
