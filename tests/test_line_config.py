"""`rebadge provision line-config`: the commented example edited with tomlkit (every comment kept), any name written
as valid TOML, the result validated by the agent's AgentConfig (a refused value names its option and writes
nothing), an existing file never replaced without --force, and the file 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import EXAMPLE_CONFIG
from agent.config import load_config
from rebadge.cli import main
from rebadge.line_config import edit_example

KEY = "ab" * 32


def line_config(out: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["provision", "line-config", "--issuer-key", KEY, "--out", str(out), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def test_the_values_given_are_set_the_comments_kept_and_the_file_is_0600(tmp_path: Path) -> None:
    out = tmp_path / "agent.toml"
    name = 'hall "2" \\ line\'3'
    code, text = line_config(
        out, "--name", name, "--certificate", "RC000042", "--mqtt-host", "broker.lan", "--mqtt-port", "8883",
        "--radios", "wifi, zigbee", "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert code == 0, text
    assert text == f"wrote {out}; check it with: rebadge agent check-config {out}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    config = load_config(out, env={})
    assert config.gateway.name == name
    assert config.line.certificate == "RC000042"
    assert (config.mqtt.host, config.mqtt.port) == ("broker.lan", 8883)
    assert [r.value for r in config.line.radios] == ["wifi", "zigbee"]
    assert config.trust.issuer_keys == (KEY,)
    assert comments(out.read_text()) == comments(EXAMPLE_CONFIG.read_text())
    assert config.line.find_timeout_s == load_config(EXAMPLE_CONFIG, env={}).line.find_timeout_s
    assert not (tmp_path / "state").exists()


def test_an_existing_file_is_kept_unless_force_is_given(tmp_path: Path) -> None:
    out = tmp_path / "agent.toml"
    out.write_text("# edited by hand\n[gateway]\nname = 'mine'\n")
    code, text = line_config(out, "--name", "hall2")
    assert code == 2
    assert f"{out} exists" in text
    assert "--force" in text
    assert out.read_text() == "# edited by hand\n[gateway]\nname = 'mine'\n"
    code, text = line_config(out, "--name", "hall2", "--force")
    assert code == 0, text
    assert load_config(out, env={}).gateway.name == "hall2"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_a_value_the_agent_would_refuse_names_its_option_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "agent.toml"
    cases = {
        ("--issuer-key", "zz"): "64 hex characters",
        ("--radios", "wifi,lora"): "'lora'",
        ("--certificate", "RC 1"): "not a certificate number",
        ("--mqtt-port", "70000"): "less than or equal to 65535",
        ("--name", "x" * 65): "at most 64 characters",
    }
    for (option, value), said in cases.items():
        args = ["--name", "hall2", option, value] if option != "--name" else [option, value]
        code, text = line_config(out, *args)
        assert code == 2, (option, text)
        assert "the agent would refuse these values; nothing written" in text
        (line,) = [line for line in text.splitlines() if line.startswith(f"  {option} ")]
        assert said in line
        assert "Traceback" not in text
        assert not out.exists(), option
    code, text = line_config(out, "--name", "hall2", "--radios", "lora", "--certificate", "RC 1", "--mqtt-port", "0")
    assert code == 2
    assert [line.split()[0] for line in text.splitlines() if line.startswith("  ")] == [
        "--mqtt-port",
        "--certificate",
        "--radios",
    ]  # every refused value at once, in the config's order
    code, text = line_config(tmp_path / "no" / "dir.toml", "--name", "hall2")
    assert code == 1
    assert "cannot write" in text


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=64))
def test_any_printable_name_round_trips(name: str) -> None:
    text = edit_example(EXAMPLE_CONFIG.read_text(), {"--name": name, "--issuer-key": [KEY]})
    assert __import__("tomllib").loads(text)["gateway"]["name"] == name
    assert comments(text) == comments(EXAMPLE_CONFIG.read_text())
