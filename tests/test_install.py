"""provisioning/install.sh into a throwaway root, twice: the venv runs `rebadge`, the configs are 0600 and an edited
one is kept, the state dirs and units are there, the units pass `systemd-analyze verify` and the agent's exposure
score is 2.5 or less."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECKOUT = Path(__file__).resolve().parent.parent
INSTALL = CHECKOUT / "provisioning" / "install.sh"
UNITS = CHECKOUT / "systemd"
INSTALL_TIMEOUT_S = 240
ANALYZE_TIMEOUT_S = 60
MAX_AGENT_EXPOSURE = 2.5
MAX_PLATFORM_EXPOSURE = 2.5
# What a system install writes; an install under --root must leave them as they were.
HOST_PATHS = tuple(
    Path(p)
    for p in ("/etc/rebadge/agent.toml", "/etc/rebadge/cloud.env", "/opt/rebadge/.venv", "/var/lib/rebadge-cloud",
              "/etc/systemd/system/rebadge-agent.service", "/usr/local/bin/rebadge")
)  # fmt: skip
HAS_ANALYZE = shutil.which("systemd-analyze") is not None
NEEDS_ANALYZE = pytest.mark.skipif(not HAS_ANALYZE, reason="systemd-analyze is not installed on this machine")


def install(root: Path, role: str) -> str:
    """Run the script as a test can: under --root, the dependencies taken from this environment (--deps-from)."""
    done = subprocess.run(
        [INSTALL, "--role", role, "--root", str(root), "--deps-from", sys.executable],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def exposure(unit: Path) -> float:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1))


def verify(root: Path, unit: str) -> str:
    """`systemd-analyze verify` of the installed unit, its /opt/rebadge read as root/opt/rebadge; its complaints."""
    text = (root / "etc/systemd/system" / unit).read_text().replace("/opt/rebadge/", f"{root}/opt/rebadge/")
    checked = root.parent / "checked" / unit
    checked.parent.mkdir(exist_ok=True)
    checked.write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(checked)],
        capture_output=True, text=True, timeout=ANALYZE_TIMEOUT_S, check=False,
    )  # fmt: skip
    return (done.stdout + done.stderr).strip() if done.returncode == 0 else f"exit {done.returncode}: {done.stderr}"


@pytest.fixture(scope="module", name="root")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with both roles installed, then the gateway installed again over a config edited in between."""
    root = tmp_path_factory.mktemp("install") / "root"
    had_build = (CHECKOUT / "build").exists()
    host_had = {p: p.exists() for p in HOST_PATHS}
    first = install(root, "gateway")
    assert "wrote " in first
    assert "edit it before starting" in first
    assert f"check it with: rebadge agent check-config {root}/etc/rebadge/agent.toml" in first
    config = root / "etc/rebadge/agent.toml"
    config.write_text(config.read_text().replace('name = "line-1"', 'name = "hall2-line3"'))
    config.chmod(0o644)  # as an editor saving a new file might leave it
    install(root, "platform")
    second = install(root, "gateway")
    assert f"kept {config}" in second, second
    assert f"{config} was readable by other users: now 600" in second, second
    assert (CHECKOUT / "build").exists() == had_build  # the build ran in a copy, not in the checkout
    assert {p: p.exists() for p in HOST_PATHS} == host_had  # --root wrote nothing on this machine
    return root


def test_the_venv_runs_rebadge_from_the_checkout(root: Path) -> None:
    rebadge = root / "opt/rebadge/.venv/bin/rebadge"
    done = subprocess.run([rebadge, "agent", "--help"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "request-lease" in done.stdout
    where = subprocess.run(
        [root / "opt/rebadge/.venv/bin/python", "-c", "import rebadge; print(rebadge.__file__)"],
        capture_output=True, text=True, timeout=30, check=False, cwd=root,  # not the checkout, which is importable
    )  # fmt: skip
    assert where.stdout.startswith(str(root / "opt/rebadge/.venv")), where  # installed, not the checkout's copy
    assert (root / "usr/local/bin/rebadge").readlink() == Path("/opt/rebadge/.venv/bin/rebadge")


def test_configs_are_0600_and_an_edited_one_is_kept(root: Path) -> None:
    agent = root / "etc/rebadge/agent.toml"
    cloud = root / "etc/rebadge/cloud.env"
    assert (mode(agent), mode(cloud)) == (0o600, 0o600)
    assert 'name = "hall2-line3"' in agent.read_text()  # the second run kept the edit
    assert "[mqtt]" in agent.read_text()
    assert "#REBADGE_MQTT_CA=" in cloud.read_text()
    assert not list((root / "etc/rebadge").glob("*.new"))


def test_state_dirs_and_the_platforms_data(root: Path) -> None:
    assert mode(root / "var/lib/rebadge") == 0o700
    data = root / "var/lib/rebadge-cloud"
    assert mode(data) == 0o700
    for name in ("issuer.key", "ca.key", "platform.db", "admin-key"):
        assert mode(data / name) == 0o600, name


def test_units_are_installed_as_shipped(root: Path) -> None:
    for unit in ("rebadge-agent.service", "rebadge-cloud.service"):
        installed = root / "etc/systemd/system" / unit
        assert installed.read_text() == (UNITS / unit).read_text()
        assert mode(installed) == 0o644


@NEEDS_ANALYZE
@pytest.mark.parametrize("unit", ["rebadge-agent.service", "rebadge-cloud.service"])
def test_units_pass_systemd_analyze_verify(root: Path, unit: str) -> None:
    assert verify(root, unit) == ""


@NEEDS_ANALYZE
def test_the_agents_exposure_is_at_most_2_5_and_the_platforms_too(root: Path) -> None:
    installed = root / "etc/systemd/system"
    assert exposure(installed / "rebadge-agent.service") <= MAX_AGENT_EXPOSURE
    assert exposure(installed / "rebadge-cloud.service") <= MAX_PLATFORM_EXPOSURE


@NEEDS_ANALYZE
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check the script relies on: a setting systemd cannot parse is reported, though verify exits 0."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "opt/rebadge/.venv/bin").mkdir(parents=True)
    fake = root / "opt/rebadge/.venv/bin/rebadge"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    unit = (UNITS / "rebadge-agent.service").read_text().replace("ProtectSystem=strict", "ProtectSystem=stricter")
    (root / "etc/systemd/system/rebadge-agent.service").write_text(unit)
    assert "protect system value" in verify(root, "rebadge-agent.service")


def test_bad_arguments_are_named() -> None:
    for args, said in (
        ([], "--role is required"),
        (["--role", "broker"], "--role 'broker' is not known"),
        (["--role", "gateway", "--extras", "ble;rm"], "--extras 'ble;rm'"),
    ):
        done = subprocess.run([INSTALL, *args], capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode != 0
        assert said in done.stderr, done.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser")
def test_a_system_install_needs_root() -> None:
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "sh", str(INSTALL), "--role", "gateway"],
        capture_output=True, text=True, timeout=30, check=False, cwd="/",
    )  # fmt: skip
    assert done.returncode != 0
    assert "run as root" in done.stderr, done.stderr


def test_the_agents_unit_checks_its_config_before_each_start(root: Path, tmp_path: Path) -> None:
    """ExecStartPre runs check-config on the installed config: the example as installed pins no issuer, so the start
    is refused there, naming the key, before anything is made; a start limit ends the tries (it is no main process,
    so RestartPreventExitStatus= does not cover it)."""
    unit = (root / "etc/systemd/system/rebadge-agent.service").read_text()
    found = re.search(r"^ExecStartPre=(.+)$", unit, re.MULTILINE)
    assert found
    assert re.search(r"^StartLimitBurst=\d+$", unit, re.MULTILINE)
    command = found.group(1).replace("/opt/rebadge/", f"{root}/opt/rebadge/").split()
    config = root / "etc/rebadge/agent.toml"
    assert command[-1] == "/etc/rebadge/agent.toml"
    local = tmp_path / "agent.toml"  # the installed config, its state dir moved where the test may look
    local.write_text(config.read_text().replace('"/var/lib/rebadge"', f'"{tmp_path / "state"}"'))
    refused = subprocess.run([*command[:-1], str(local)], capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "trust.issuer_keys is empty" in refused.stderr
    assert not (tmp_path / "state").exists()
    local.write_text(local.read_text().replace("issuer_keys = []", f'issuer_keys = ["{"ab" * 32}"]'))
    done = subprocess.run([*command[:-1], str(local)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{local}: OK: gateway not made yet")
    assert not (tmp_path / "state").exists()
