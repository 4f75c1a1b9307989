"""Agent configuration from a TOML file under REBADGE_* variables: lists and nested sections from the environment,
env > file > defaults, and every error naming its source (file and line, or the variable and its value), with
secrets never echoed."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import EXAMPLE_CONFIG
from agent.config import load_config, parse_config
from agent.config_lines import key_lines
from agent.errors import ConfigError

KEY = "ab" * 32
OTHER_KEY = "cd" * 32


def problems(path: Path | None, env: dict[str, str]) -> list[str]:
    """The problem lines of the ConfigError loading `path` under `env` raises."""
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env)
    head, *lines = str(err.value).splitlines()
    assert head.startswith("the configuration is not valid")
    assert f"({len(lines)} problem" in head
    return [line.strip() for line in lines]


def test_lists_and_nested_sections_come_from_the_environment_as_json_and_by_double_underscore() -> None:
    env = {
        "REBADGE_TRUST__ISSUER_KEYS": f'["{KEY}", "{OTHER_KEY}"]',
        "REBADGE_LINE__RADIOS": '["wifi", "zigbee"]',
        "REBADGE_MQTT__TLS__CA_FILE": "/etc/rebadge/ca.crt",
        "REBADGE_MQTT__TLS__CERT_FILE": "/etc/rebadge/client.crt",
        "REBADGE_MQTT__TLS__KEY_FILE": "/etc/rebadge/client.key",
        "REBADGE_WIFI__STATIC_DEVICES": '[{"sn": "SN-00001", "host": "10.0.0.9"}]',
        "REBADGE_CONFIG": "/etc/rebadge/agent.toml",  # the commands' own variables are not config keys
        "REBADGE_LOG_LEVEL": "INFO",
    }
    config = load_config(EXAMPLE_CONFIG, env=env)
    assert config.trust.issuer_keys == (KEY, OTHER_KEY)
    assert [r.value for r in config.line.radios] == ["wifi", "zigbee"]
    assert config.mqtt.tls is not None
    assert str(config.mqtt.tls.ca_file) == "/etc/rebadge/ca.crt"
    assert config.wifi.static_devices[0].host == "10.0.0.9"


def test_the_environment_wins_over_the_file_and_the_file_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[gateway]\nname = "from-file"\n[trust]\nissuer_keys = ["{KEY}"]\n'
        '[mqtt]\nhost = "file.lan"\n[mqtt.tls]\nca_file = "/f/ca"\ncert_file = "/f/crt"\nkey_file = "/f/key"\n'
    )
    config = load_config(path, env={"REBADGE_MQTT__HOST": "env.lan", "REBADGE_MQTT__TLS__CA_FILE": "/e/ca"})
    assert config.mqtt.host == "env.lan"
    assert config.gateway.name == "from-file"
    assert config.mqtt.tls is not None
    assert (str(config.mqtt.tls.ca_file), str(config.mqtt.tls.cert_file)) == ("/e/ca", "/f/crt")  # merged by key
    assert config.mqtt.port == 1883  # the default, neither file nor env
    assert load_config(path, env={"REBADGE_TRUST__ISSUER_KEYS": "[]"}).trust.issuer_keys == ()


# Keys with a file value and an env value unlike each other and unlike the default: as the file writes it, as a
# variable gives it, and each as the config holds it (in JSON form).
LAYERED = {
    ("mqtt", "host"): ('"file.lan"', "env.lan", "file.lan", "env.lan"),
    ("mqtt", "port"): ("8883", "1884", 8883, 1884),
    ("gateway", "name"): ('"from-file"', "from-env", "from-file", "from-env"),
    ("line", "radios"): ('["ble"]', '["zigbee", "wifi"]', ["ble"], ["zigbee", "wifi"]),
    ("trust", "issuer_keys"): (f'["{KEY}"]', f'["{OTHER_KEY}", "{KEY}"]', [KEY], [OTHER_KEY, KEY]),
    ("mqtt", "tls", "ca_file"): ('"/f/ca"', "/e/ca", "/f/ca", "/e/ca"),
}


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from(list(LAYERED))), st.sets(st.sampled_from(list(LAYERED))))
def test_each_key_takes_the_environment_else_the_file_else_the_default(
    in_file: set[tuple[str, ...]], in_env: set[tuple[str, ...]]
) -> None:
    tables: dict[tuple[str, ...], list[str]] = {}
    for key in in_file:
        tables.setdefault(key[:-1], []).append(f"{key[-1]} = {LAYERED[key][0]}")
    if ("mqtt", "tls") in tables or ("mqtt", "tls", "ca_file") in in_env:  # a TLS section needs all three files
        tables.setdefault(("mqtt", "tls"), []).extend(['cert_file = "/f/crt"', 'key_file = "/f/key"'])
    text = "".join(f"[{'.'.join(t)}]\n" + "\n".join(lines) + "\n" for t, lines in sorted(tables.items()))
    env = {"REBADGE_" + "__".join(k).upper(): LAYERED[k][1] for k in in_env}
    config = parse_config(tomllib.loads(text), "agent.toml", env=env, lines=key_lines(text))
    got, defaults = config.model_dump(mode="json"), parse_config({}, "defaults", env={}).model_dump(mode="json")
    for key, (_, _, from_file, from_env) in LAYERED.items():
        value, default = got, defaults
        for part in key:
            value = None if value is None else value[part]
            default = None if default is None else default[part]
        assert value == (from_env if key in in_env else from_file if key in in_file else default), key


def test_errors_of_variables_name_the_variable_its_value_and_json_for_lists() -> None:
    lines = problems(
        None,
        {"REBADGE_TRUST__ISSUER_KEYS": KEY, "REBADGE_MQTT__PORT": "70000", "REBADGE_MQTT__HOTS": "x",
         "REBADGE_MQTTT__HOST": "x"},
    )  # fmt: skip
    by_var = {line.split("=")[0].split(":")[0]: line for line in lines}
    assert set(by_var) == {"REBADGE_TRUST__ISSUER_KEYS", "REBADGE_MQTT__PORT", "REBADGE_MQTT__HOTS",
                           "REBADGE_MQTTT__HOST"}  # fmt: skip
    keys = by_var["REBADGE_TRUST__ISSUER_KEYS"]
    assert f"'{KEY}'" in keys
    assert "trust.issuer_keys" in keys
    assert "as JSON" in keys
    assert """REBADGE_TRUST__ISSUER_KEYS='["first", "second"]'""" in keys
    assert "'70000'" in by_var["REBADGE_MQTT__PORT"]
    assert "mqtt.port" in by_var["REBADGE_MQTT__PORT"]
    assert "unknown key" in by_var["REBADGE_MQTT__HOTS"]
    assert "no config section 'mqttt'" in by_var["REBADGE_MQTTT__HOST"]
    assert not any("defaults" in line for line in lines)


def test_a_section_the_environment_starts_names_the_variables_still_missing() -> None:
    lines = problems(None, {"REBADGE_MQTT__TLS__CA_FILE": "/etc/rebadge/ca.crt"})
    assert len(lines) == 2
    for line, key in zip(lines, ("CERT_FILE", "KEY_FILE"), strict=True):
        assert line.startswith("REBADGE_MQTT__TLS__CA_FILE:")
        assert f"set REBADGE_MQTT__TLS__{key} too" in line


def test_errors_of_the_file_name_the_file_the_key_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        "# a hand-edited config\n"          # 1
        "[mqtt]\n"                          # 2
        "port = 70000\n"                    # 3
        "tls.ca_file = 5\n"                 # 4: a dotted key making [mqtt.tls], missing cert_file and key_file
        "[line]\n"                          # 5
        "radios = [\n"                      # 6
        '  "wifi",  # [not a table]\n'      # 7
        '  "lora",\n'                       # 8
        "]\n"                               # 9
        'work_order = """WO\n'              # 10
        "[fake]\n"                          # 11: inside the string
        '"""\n'                             # 12
        "[[wifi.static_devices]]\n"         # 13
        'sn = "SN-00001"\n'                 # 14
        'host = "a"\n'                      # 15
        "[[wifi.static_devices]]\n"         # 16
        'sn = "SN-00002"\n'                 # 17
        "port = 0\n"                        # 18
        "[zigbee]\n"                        # 19
        "radio_typ = 'ezsp'\n"              # 20
    )  # fmt: skip
    lines = problems(path, {"REBADGE_GATEWAY__NAME": "hall-2"})
    expected = {
        "mqtt.port": (3, "70000"),
        "mqtt.tls.ca_file": (4, "5"),
        "mqtt.tls.cert_file": (4, "Field required"),
        "mqtt.tls.key_file": (4, "Field required"),
        "line.radios.1": (6, "'lora'"),
        "line.work_order": (10, "control character"),
        "wifi.static_devices.1.host": (16, "Field required"),
        "wifi.static_devices.1.port": (18, "(got 0)"),
        "zigbee.radio_typ": (20, "unknown key"),
    }
    assert len(lines) == len(expected), lines
    for key, (line, detail) in expected.items():
        match = [text for text in lines if text.startswith(f"{path}:{line}: {key}: ")]
        assert len(match) == 1, (key, lines)
        assert detail in match[0]


def test_an_error_of_a_section_the_file_holds_names_the_variables_that_joined_in(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[lease]\nretry_max_s = 10.0\n")
    (line,) = problems(path, {"REBADGE_LEASE__RETRY_MIN_S": "20"})
    assert line.startswith(f"{path}:1: lease: ")
    assert "retry_max_s (10.0) is below retry_min_s (20.0)" in line
    assert "with REBADGE_LEASE__RETRY_MIN_S='20'" in line


def test_secrets_are_never_echoed_in_errors_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret, other = "hunter2-file", "hunter2-env"
    path = tmp_path / "agent.toml"
    path.write_text(f'[mqtt]\npassword = ["{secret}"]\n[wifi]\nap_password = {{ key = "{secret}" }}\n')
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={"REBADGE_LINE": f'{{"radios": "wifi", "password": "{other}"}}'})
    text = str(err.value)
    assert f"{path}:2: mqtt.password: Input should be a valid string (got <hidden>)" in text
    assert f"{path}:4: wifi.ap_password: Input should be a valid string (got <hidden>)" in text
    assert """REBADGE_LINE='{"radios": "wifi", "password": "<hidden>"}': line.radios""" in text
    assert "line.password: unknown key" in text
    with pytest.raises(ConfigError) as err2:  # a whole section as JSON, with a bad key beside the secret
        load_config(None, env={"REBADGE_MQTT": f'{{"password": "{other}", "port": 0}}'})
    assert "mqtt.port" in str(err2.value)
    config = load_config(None, env={"REBADGE_MQTT__USERNAME": "gw", "REBADGE_MQTT__PASSWORD": other})
    assert config.mqtt.password is not None
    assert config.mqtt.password.get_secret_value() == other
    logging.getLogger("test").info("config %s / %r", config, config)
    for shown in (text, str(err2.value), repr(config), str(config), caplog.text):
        assert secret not in shown
        assert other not in shown


def test_unreadable_and_undecodable_files_say_what_to_do(tmp_path: Path) -> None:
    binary = tmp_path / "agent.toml"
    binary.write_bytes(b"\xff\xfe[mqtt]\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(binary, env={})
    binary.write_text("[mqtt]\nport = = 1\n")
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 2"):
        load_config(binary, env={})


# Keys the property below scatters over tables and dotted keys: some with a value the model refuses, the others
# valid, two of them running over several lines with text that looks like tables and keys.
BAD_VALUES = {
    ("mqtt", "port"): "0",
    ("mqtt", "keepalive_s"): "1",
    ("line", "max_in_flight"): "0",
    ("journal", "min_free_mb"): "-1",
    ("ble", "adapter"): '"usb0"',
    ("zigbee", "permit_join_s"): "0",
}
GOOD_VALUES = {
    ("mqtt", "host"): '"h"',
    ("line", "find_timeout_s"): "1.0",
    ("scanner", "serial_ports"): '[\n  "[not.a.table]",\n  "port = 0",\n]',
    ("gateway", "name"): '"""\nhall [x]\n[[y.z]]\n"""',
}


@st.composite
def scattered_configs(draw: st.DrawFn) -> tuple[str, dict[str, int]]:
    """A TOML text holding the keys above in any order, each under its `[section]` or as a dotted `section.key`
    at the top, with comments between; and the line of each key that holds a bad value."""
    keys = draw(st.permutations([*BAD_VALUES, *GOOD_VALUES]))
    bad = draw(st.sets(st.sampled_from(list(BAD_VALUES)), min_size=1))
    dotted_sections = draw(st.sets(st.sampled_from(sorted({k[0] for k in keys}))))  # TOML: one way per table
    dotted = [k for k in keys if k[0] in dotted_sections]
    tables: dict[str, list[str]] = {}
    for key in keys:
        if key not in dotted:
            tables.setdefault(key[0], []).append(key[1])
    devices, bad_device = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    text: list[str] = []
    where: dict[str, int] = {}

    def add(line: str, key: tuple[str, str] | None = None) -> None:
        if key is not None:
            value = BAD_VALUES[key] if key in bad else GOOD_VALUES.get(key) or {"ble": '"hci1"'}.get(key[0], "5")
            line += f" = {value}"
            if key in bad:
                where[".".join(key)] = len(text) + 1
        text.extend(line.split("\n"))
        if draw(st.booleans()):
            text.append(draw(st.sampled_from(["", "# [comment.table]", "# key = 1  [x]"])))

    for key in dotted:
        add(f"{key[0]}.{key[1]}", key)
    for section, names in tables.items():
        add(f"[{section}]")
        for name in names:
            add(name, (section, name))
    for n in range(devices):
        add("[[wifi.static_devices]]")
        add(f'sn = "SN-{n:05}"')
        if n == bad_device:
            where[f"wifi.static_devices.{n}.port"] = len(text) + 1
        add(f"port = {0 if n == bad_device else 6668}")
        add('host = "10.0.0.1"')
    return "\n".join(text) + "\n", where


@settings(max_examples=60, deadline=None)
@given(scattered_configs())
def test_the_line_named_is_the_line_of_the_bad_key_however_the_file_is_laid_out(
    case: tuple[str, dict[str, int]],
) -> None:
    text, where = case
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text), "agent.toml", env={}, lines=key_lines(text))
    found: dict[str, str] = {}
    for line in str(err.value).splitlines()[1:]:
        source, key, _ = line.strip().split(": ", 2)
        found[key] = source
    assert found == {key: f"agent.toml:{line}" for key, line in where.items()}
