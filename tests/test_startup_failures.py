"""A service that cannot start says so in a plain line naming the setting, the value and what to do; no traceback.

The agent's cases, the serve whose port is taken and the services without a broker run the real `rebadge` command as
a process, as a technician or an operator would meet it; the platform's other cases run its command in this process
(the same code, without paying the platform's start-up time once more per case).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cloud_bridge.cli import group as cloud
from cloud_bridge.platform import Platform
from provisioning.cli import group as provision
from rebadge.broker import PrivateBroker, free_port
from tests.e2e_support import REPO, write_toml
from tests.test_cloud_helpers import fixture_pg_run, pg_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

RUN_S = 60.0  # bound on one command that fails at start
# Long enough for several reconnect attempts at the delays below (the first warning comes within a second).
RETRIES_S = 3.0
ISSUER_KEY = "ab" * 32


def rebadge(*args: str, timeout: float = RUN_S, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run `rebadge ARGS` to its end, without any REBADGE_* setting of this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "rebadge.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a command that stopped at start: exit 1, no traceback, nothing else on stderr."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, lines
    return errors[0]


def refused_here(result: Result) -> str:
    """As `refused`, for a command run in this process: a plain error (click's exit), not an exception."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


def agent_config(tmp_path: Path, state_dir: Path, **sections: Mapping[str, object]) -> Path:
    settings: dict[str, dict[str, object]] = {
        "gateway": {"state_dir": str(state_dir)},
        "trust": {"issuer_keys": [ISSUER_KEY]},
        "line": {"radios": []},
    }
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    return write_toml(tmp_path / "agent.toml", settings)


def test_a_state_dir_that_is_a_file_is_named_with_its_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    line = refused(rebadge("agent", "run", "--no-console", "-c", str(agent_config(tmp_path, state))))
    assert f"gateway.state_dir {state} is a file, not a directory" in line
    assert "move the file away, or set gateway.state_dir to a directory" in line
    assert state.read_text() == "not a directory"  # nothing lost


def test_a_state_dir_under_a_file_names_the_file_in_the_way(tmp_path: Path) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("")
    state = blocker / "lib" / "rebadge"
    line = refused(rebadge("agent", "init", "-c", str(agent_config(tmp_path, state))))
    assert f"gateway.state_dir {state} cannot be created: {blocker} is a file, not a directory" in line


def test_a_missing_parent_is_made_not_refused(tmp_path: Path) -> None:
    state = tmp_path / "new" / "deeper" / "state"
    made = rebadge("agent", "init", "-c", str(agent_config(tmp_path, state)))
    assert made.returncode == 0, made.stderr
    assert (state / "gateway.key").stat().st_mode & 0o777 == 0o600


def _without_root_powers() -> tuple[str, ...]:
    """A command prefix that runs as this root user without the powers to write where the mode bits forbid it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv: as another user the directory's mode already refuses")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--")


def test_a_state_dir_this_user_cannot_write_says_how_to_give_it(tmp_path: Path) -> None:
    prefix = _without_root_powers()
    state = tmp_path / "state"
    state.mkdir(mode=0o500)
    config = agent_config(tmp_path, state)
    line = refused(rebadge("agent", "run", "--no-console", "-c", str(config), prefix=prefix))
    assert f"gateway.state_dir {state} is not writable by user root: give it to that user (chown root {state})" in line
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o500)
    config = agent_config(tmp_path, parent / "state")
    line = refused(rebadge("agent", "init", "-c", str(config), prefix=prefix))
    assert f"gateway.state_dir {parent / 'state'} cannot be created (Permission denied)" in line
    assert f"install -d -m 700 -o root {parent / 'state'}" in line


def test_an_unreadable_broker_ca_stops_the_agent_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    tls = {"ca_file": str(junk), "cert_file": str(junk), "key_file": str(junk)}
    config = agent_config(tmp_path, tmp_path / "state", **{"mqtt.tls": tls})
    line = refused(rebadge("agent", "run", "--no-console", "-c", str(config)))
    assert f"mqtt.tls.ca_file {junk}: cannot load the broker's CA" in line
    assert "rebadge provision enrol" in line


def _warned_then_stopped(args: list[str]) -> tuple[list[str], list[str]]:
    """Run a service whose broker is not there for RETRIES_S after its first warning, stop it; its warning lines
    and its retries logged at debug."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")}
    log = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebadge.cli", "-vv", *args], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + RUN_S
        while " WARNING " not in (line := proc.stderr.readline()) and line and time.monotonic() < deadline:
            log.append(line)  # its start: the signal handlers are set once it tries the broker
        log.append(line)
        time.sleep(RETRIES_S)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=RUN_S)
    assert proc.returncode == 0, err
    lines = [*log, *err.splitlines()]
    assert not any("Traceback" in x for x in lines)
    return [x for x in lines if " WARNING " in x], [x for x in lines if " DEBUG " in x and "again; reconnecting" in x]


def test_an_agent_without_its_broker_says_once_which_settings_name_it(tmp_path: Path) -> None:
    port = free_port()
    mqtt = {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    config = agent_config(tmp_path, tmp_path / "state", mqtt=mqtt, lease={"auto_request": False})
    warnings, retries = _warned_then_stopped(["agent", "run", "--no-console", "-c", str(config)])
    broker = [w for w in warnings if f"mqtt broker 127.0.0.1:{port}" in w]
    assert len(broker) == 1, warnings  # one warning per cause, however often it retries
    assert "Connection refused" in broker[0]
    assert "records wait in the journal until it is reached" in broker[0]
    assert "start the broker, or correct mqtt.host and mqtt.port" in broker[0]
    assert len(retries) >= 2


def test_a_worker_without_its_broker_names_its_options_once(tmp_path: Path) -> None:
    port = free_port()
    args = ["cloud", "worker", "--data-dir", str(tmp_path / "cloud"), "--mqtt-port", str(port)]
    warnings, retries = _warned_then_stopped(args)
    broker = [w for w in warnings if f"MQTT broker 127.0.0.1:{port}" in w]
    assert len(broker) == 1, warnings
    assert "start the broker, or correct --mqtt-host and --mqtt-port" in broker[0]
    assert len(retries) >= 1


def test_a_database_nobody_serves_is_named_by_its_option(tmp_path: Path) -> None:
    url = f"postgresql://rebadge:secret@127.0.0.1:{free_port()}/rebadge"
    line = refused_here(CliRunner().invoke(cloud, ["init", "--data-dir", str(tmp_path / "cloud"), "--db-url", url]))
    shown = url.replace(":secret@", ":***@")
    assert f"cannot open the database {shown} (--db-url / REBADGE_DB_URL): nothing accepts connections there" in line
    assert "start the database server, or correct --db-url" in line
    assert "secret" not in line


def test_a_database_that_does_not_exist_is_told_as_postgresql_says_it(tmp_path: Path, pg_run: str) -> None:
    url = pg_url(f"{pg_run}_never_made")
    line = refused_here(CliRunner().invoke(cloud, ["init", "--data-dir", str(tmp_path / "cloud"), "--db-url", url]))
    assert f'database "{pg_run}_never_made" does not exist; correct --db-url / REBADGE_DB_URL' in line


def test_a_sqlite_url_in_a_missing_folder_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nowhere' / 'cloud.sqlite'}"
    line = refused_here(CliRunner().invoke(cloud, ["init", "--data-dir", str(tmp_path / "cloud"), "--db-url", url]))
    assert f"cannot open the database {url} (--db-url / REBADGE_DB_URL): unable to open database file" in line
    assert "its folder must exist" in line


def test_a_data_dir_under_a_file_is_named_by_its_option(tmp_path: Path) -> None:
    blocker = tmp_path / "srv"
    blocker.write_text("")
    line = refused_here(CliRunner().invoke(cloud, ["init", "--data-dir", str(blocker / "cloud")]))
    assert f"--data-dir / REBADGE_DATA_DIR {blocker / 'cloud'} cannot be created: {blocker} is a file" in line


def test_serve_on_a_port_in_use_says_so_before_it_makes_the_first_admin(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = rebadge("cloud", "serve", "--data-dir", str(tmp_path / "cloud"), "--port", str(port), "--no-worker")
    line = refused(result)
    assert f"--port {port}: 127.0.0.1:{port} is in use by another program ('ss -ltnp sport = :{port}'" in line
    assert "or choose another --port" in line
    assert not (tmp_path / "cloud" / "admin-key").exists()  # the first admin waits for a serve that runs
    assert asyncio.run(_first_admin_key(tmp_path / "cloud")) is not None


async def _first_admin_key(data_dir: Path) -> str | None:
    platform = await Platform.open(data_dir)
    try:
        return await platform.bootstrap_admin()
    finally:
        await platform.close()


def test_serve_on_an_address_not_of_this_machine_names_host(tmp_path: Path) -> None:
    serve = ["serve", "--data-dir", str(tmp_path / "cloud"), "--host", "nosuch.invalid", "--no-worker"]
    line = refused_here(CliRunner().invoke(cloud, serve))
    assert "--host nosuch.invalid: not an address or a known name" in line


def test_enrol_into_a_state_dir_under_a_file_names_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "var"
    blocker.write_text("")
    enrol = ["enrol", "--state-dir", str(blocker / "state"), "--platform", "http://127.0.0.1:9", "--token", "x"]
    line = refused_here(CliRunner().invoke(provision, enrol))
    assert f"--state-dir {blocker / 'state'} cannot be created: {blocker} is a file, not a directory" in line


def test_the_one_line_console_says_ready_each_uplink_change_and_its_stop(tmp_path: Path, broker: PrivateBroker) -> None:
    mqtt = {"port": broker.port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.2}
    config = agent_config(tmp_path, tmp_path / "state", mqtt=mqtt, lease={"auto_request": False})
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBADGE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rebadge.cli", "agent", "run", "-c", str(config)], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    where = f"mqtt broker 127.0.0.1:{broker.port}"
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("ready: gateway "), ready
        assert f"radios none, uplink connected to {where}; scan now" in ready
        broker.stop()
        assert proc.stdout.readline().startswith(f"uplink: lost {where}; reconnecting (scans go on offline")
        broker.start()
        assert proc.stdout.readline() == f"uplink: connected to {where}\n"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=RUN_S)
    assert proc.returncode == 0, err
    assert out == "stopped: the agent shut down cleanly and its journal is closed\n"  # not its own disconnect
    assert "Traceback" not in err
