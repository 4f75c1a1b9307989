"""The agent's edges: config loading, the technician's screen, systemd notify, simulated goods (line-config:
test_line_config.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from agent.cli import EXAMPLE_CONFIG
from agent.config import load_config, parse_config
from agent.console import ScanConsole, event_line
from agent.errors import ConfigError
from agent.systemd_notify import Notifier
from wire.topics import RESULT_WORDS, Result, ScanEvent


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


def test_each_line_says_the_word_the_web_console_says_in_one_column() -> None:
    lines = {r: event_line(ScanEvent(sn="SN-0005", result=r, message="m")).plain for r in Result}
    assert {r: line.split()[0] for r, line in lines.items()} == RESULT_WORDS
    assert len({line.index("SN-0005") for line in lines.values()}) == 1  # the SN column never moves


def test_systemd_notify_reaches_the_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        Notifier(path).send(READY="1", STATUS="ready")
        assert sock.recv(100) == b"READY=1\nSTATUS=ready"
    Notifier(None).send(READY="1")  # outside systemd: nothing to do, no error
    Notifier(str(tmp_path / "gone")).send(READY="1")  # systemd restarting: ignored


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
