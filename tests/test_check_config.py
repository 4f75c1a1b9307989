"""`rebadge agent check-config`, and the commands that only read: every problem at once with its source, a one-line
summary for a good config, and nothing created (no state dir, key or journal) by check-config, status, or a run
refused for its config."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.certs.identity import GatewayIdentity
from agent.cli import EXAMPLE_CONFIG
from agent.cli import group as agent_cli
from agent.config import config_fingerprint, load_config
from agent.service import open_journal

KEY = "ab" * 32


def write_config(tmp_path: Path, *, issuer: bool = True, extra: str = "") -> tuple[Path, Path]:
    """The example config with its state dir in tmp_path (not made) and, if `issuer`, an issuer key pinned."""
    state = tmp_path / "state"
    text = EXAMPLE_CONFIG.read_text().replace('state_dir = "/var/lib/rebadge"', f'state_dir = "{state}"')
    if issuer:
        text = text.replace("issuer_keys = []", f'issuer_keys = ["{KEY}"]')
    path = tmp_path / "agent.toml"
    path.write_text(text + extra)
    return path, state


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(agent_cli, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def _no_rebadge_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("REBADGE_")]:
        monkeypatch.delenv(name)


def test_a_good_config_prints_one_line_with_gateway_radios_and_fingerprint(tmp_path: Path) -> None:
    path, state = write_config(tmp_path)
    code, out = invoke("check-config", str(path), env={"REBADGE_LINE__RADIOS": '["wifi", "ble"]'})
    assert code == 0, out
    fingerprint = config_fingerprint(load_config(path, env={"REBADGE_LINE__RADIOS": '["wifi", "ble"]'}))
    assert out == f"{path}: OK: gateway not made yet (the first start makes its key), radios wifi, ble, " \
        f"fingerprint {fingerprint}\n"  # fmt: skip
    assert not state.exists()
    identity = GatewayIdentity.load_or_create(state)
    code, out = invoke("check-config", str(path))
    assert code == 0
    assert f"gateway {identity.gw}, radios wifi," in out
    assert sorted(p.name for p in state.iterdir()) == ["gateway.key"]  # nothing more made


def test_every_problem_is_printed_at_once_with_its_line_or_variable_and_exit_1(tmp_path: Path) -> None:
    path, state = write_config(tmp_path, extra='[[wifi.static_devices]]\nsn = "SN-00001"\nport = 0\n')
    lines = path.read_text().splitlines()
    lines[lines.index("port = 1883")] = "port = 70000"
    path.write_text("\n".join(lines) + "\n")
    code, out = invoke("check-config", str(path), env={"REBADGE_LINE__MAX_IN_FLIGHT": "0"})
    assert code == 1
    assert "(4 problems)" in out
    port_line = lines.index("port = 70000") + 1
    assert f"{path}:{port_line}: mqtt.port: Input should be less than or equal to 65535 (got 70000)" in out
    assert "REBADGE_LINE__MAX_IN_FLIGHT='0': line.max_in_flight: Input should be greater than or equal to 1" in out
    device = len(lines) - 2
    assert f"{path}:{device}: wifi.static_devices.0.host: Field required" in out
    assert f"{path}:{device + 2}: wifi.static_devices.0.port" in out
    assert "Traceback" not in out
    assert not state.exists()


def test_what_would_stop_the_start_is_reported_too(tmp_path: Path) -> None:
    path, state = write_config(tmp_path, issuer=False)
    code, out = invoke("check-config", str(path), env={"REBADGE_MQTT__PASSWORD": "hunter2"})
    assert code == 1
    assert "the agent cannot start with this configuration" in out
    assert "trust.issuer_keys is empty" in out
    assert "REBADGE_TRUST__ISSUER_KEYS='[" in out  # how to give it from the environment, which now works
    assert "mqtt.password is set without mqtt.username" in out
    assert "hunter2" not in out
    assert not state.exists()
    code, out = invoke("check-config", str(tmp_path / "missing.toml"))
    assert code == 1
    assert "no such config file" in out


@pytest.mark.parametrize("command", ["run", "console", "status"])
def test_commands_refused_for_their_config_create_nothing(tmp_path: Path, command: str) -> None:
    path, state = write_config(tmp_path, issuer=command == "status", extra="[mqtt.tls]\nca_file = 1\n")
    code, out = invoke(command, "-c", str(path))
    assert code == 1
    assert f"{path}:" in out
    assert "mqtt.tls.ca_file" in out
    assert not state.exists()
    if command != "status":
        path, state = write_config(tmp_path, issuer=False)  # valid, but no issuer to check leases against
        code, out = invoke(command, "-c", str(path))
        assert code == 1
        assert "trust.issuer_keys is empty" in out
        assert not state.exists()


def test_status_of_a_gateway_that_never_ran_creates_nothing_and_says_so(tmp_path: Path) -> None:
    path, state = write_config(tmp_path)
    code, out = invoke("status", "-c", str(path))
    assert code == 1
    assert f"no gateway key in {state}" in out
    assert not state.exists()
    state.mkdir(mode=0o700)
    GatewayIdentity.load_or_create(state)
    code, out = invoke("status", "-c", str(path))
    assert code == 1
    assert f"no journal in {state}" in out
    assert sorted(p.name for p in state.iterdir()) == ["gateway.key"]


def test_status_reads_a_journal_the_agent_made(tmp_path: Path) -> None:
    path, state = write_config(tmp_path)

    async def make() -> None:
        journal = await open_journal(load_config(path, env={}), GatewayIdentity.load_or_create(state))
        await journal.close()

    asyncio.run(make())
    made = sorted(p.name for p in state.iterdir())
    code, out = invoke("status", "-c", str(path))
    assert code == 0, out
    assert json.loads(out)["seq"] == 0
    assert sorted(p.name for p in state.iterdir()) == made


@pytest.mark.parametrize("command", ["run", "status"])
def test_with_no_config_file_at_all_nothing_is_created(tmp_path: Path, command: str) -> None:
    """Built-in defaults only (the state dir moved by its variable, as the default /var/lib/rebadge cannot be
    watched here): run has no issuer to pin, status no gateway; neither makes the state dir."""
    state = tmp_path / "state"
    code, out = invoke(command, env={"REBADGE_GATEWAY__STATE_DIR": str(state)})
    assert code == 1
    assert ("trust.issuer_keys is empty" if command == "run" else f"no gateway key in {state}") in out
    assert not state.exists()
