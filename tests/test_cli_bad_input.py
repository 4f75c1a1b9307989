"""A wrong value on the command line is one plain error naming the option or file and what is wrong, never a
traceback: one table over the command groups, each case run in this process through click."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agent.cli import group as agent
from cloud_bridge.cli import group as cloud
from provisioning.cli import group as provision
from simulator.cli import group as sim

KEY = "ab" * 32


@dataclass(frozen=True)
class Case:
    name: str
    group: click.Group
    args: tuple[str, ...]  # {tmp} stands for the test's directory
    said: tuple[str, ...]  # each of these is in the error line


CASES = [
    Case(
        "a certificate number with a space",
        agent,
        ("request-lease", "-c", "{tmp}/agent.toml", "--cert", "bad cert!"),
        ("--cert", "'bad cert!' is not a certificate number: use 1 to 12 letters"),
    ),
    Case(
        "a lease file that is not one",
        agent,
        ("load-lease", "-c", "{tmp}/agent.toml", "{tmp}/junk"),
        ("{tmp}/junk: not a lease file",),
    ),
    Case("a config that is not TOML", agent, ("status", "-c", "{tmp}/junk"), ("{tmp}/junk: not valid TOML",)),
    Case(
        "a config that does not exist",
        agent,
        ("status", "-c", "{tmp}/none.toml"),
        ("{tmp}/none.toml: no such config file", "rebadge agent config-example"),
    ),
    Case(
        "a platform CA that is no certificate",
        provision,
        (
            "enrol",
            "--state-dir",
            "{tmp}/state",
            "--platform",
            "https://127.0.0.1:9",
            "--token",
            "t",
            "--platform-ca",
            "{tmp}/junk",
        ),
        ("--platform-ca {tmp}/junk: no CA certificate in it",),
    ),
    Case(
        "a platform URL of another scheme",
        provision,
        ("enrol", "--state-dir", "{tmp}/state", "--platform", "ftp://127.0.0.1:9", "--token", "t"),
        ("--platform 'ftp://127.0.0.1:9' is not an http:// or https:// URL",),
    ),
    Case(
        "broker files under a file",
        provision,
        ("broker-config", "--ca-dir", "{tmp}/cloud", "--out", "{tmp}/junk/b"),
        ("--out {tmp}/junk/b: the broker's files cannot be written there",),
    ),
    Case(
        "a gateway key that is not hex",
        cloud,
        (
            "lease",
            "issue",
            "--data-dir",
            "{tmp}/cloud",
            "--as",
            "a",
            "--cert",
            "RC1",
            "--gateway-key",
            "zz",
            "--slots",
            "1",
            "--out",
            "{tmp}/l",
        ),
        ("--gateway-key", "'zz' is not a gateway public key"),
    ),
    Case(
        "a database URL that is not one",
        cloud,
        ("status", "--data-dir", "{tmp}/cloud", "--db-url", "not a url"),
        ("database URL 'not a url' is not a URL; use sqlite:///FILE or postgresql://USER@HOST/DB",),
    ),
    Case(
        "a certificate that does not exist",
        cloud,
        ("status", "--data-dir", "{tmp}/cloud", "--cert", "RC9"),
        ("certificate 'RC9' does not exist",),
    ),
    Case(
        "an account that does not exist",
        cloud,
        ("lease", "write-off", "L1", "--data-dir", "{tmp}/cloud", "--as", "nobody", "--reason", "r"),
        ("no active account has the id or name 'nobody'",),
    ),
    Case(
        "a gateway with no keys",
        cloud,
        ("gateway", "keys", "gw!", "--data-dir", "{tmp}/cloud"),
        ("gateway 'gw!' has no keys here; 'rebadge cloud status' lists the gateways",),
    ),
    Case(
        "an issuer key that is not hex",
        sim,
        ("wifi", "--units", "1", "--issuer-key", "zz"),
        ("give the platform's issuer key as 64 hex characters",),
    ),
]


@pytest.fixture(name="bench", scope="module")
def fixture_bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with an agent config, a junk file and a platform's data dir, shared by the cases."""
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "junk").write_text("not what it should be\n")
    state = tmp / "state"
    (tmp / "agent.toml").write_text(
        f'[gateway]\nstate_dir = "{state}"\n[trust]\nissuer_keys = ["{KEY}"]\n[line]\nradios = []\n'
    )
    made = CliRunner().invoke(cloud, ["init", "--data-dir", str(tmp / "cloud")])
    assert made.exit_code == 0, made.output
    return tmp


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_wrong_value_is_one_plain_error(case: Case, bench: Path) -> None:
    result = CliRunner().invoke(case.group, [a.replace("{tmp}", str(bench)) for a in case.args])
    assert isinstance(result.exception, SystemExit), result.exception  # click's exit, not an exception of ours
    assert result.exit_code in {1, 2}, result.output  # 2: click's usage error
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    for said in case.said:
        assert said.replace("{tmp}", str(bench)) in errors[0]
