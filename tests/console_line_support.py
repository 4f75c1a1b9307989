"""A console site whose agent starts later: the products and orders tests make the certificate the line rebadges
under (to a customer's product made from an OEM link) while the site runs, lease it with the CLI, and only then
start the agent, so its only certificate is that one.

Built from tests/console_support.py's parts: the same seed, processes and waits, plus the platform's business and
project managers, and a second batch of goods on general firmware whose MCU carries another PID.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.certs.identity import GatewayIdentity
from cloud_bridge import accounts, logins
from cloud_bridge.accounts import SYSTEM, Role
from cloud_bridge.platform import Platform
from rebadge.broker import PrivateBroker, free_port
from tests.console_support import (
    PASSWORD,
    UNIT_PREFIX,
    UNITS,
    Account,
    Site,
    _issuer_key,
    _process,
    _seed,
    _wait_http,
    _wait_text,
)
from tests.e2e_support import REPO, _child_env, agent_settings, free_udp_port, write_toml
from tests.helpers import ORIGINAL_PID

STAFF = {"betty-business": Role.BUSINESS_MANAGER, "pete-project": Role.PROJECT_MANAGER}
MCU_PREFIX = "MCU"  # general-firmware goods whose MCU carries OTHER_MCU_PID, not the certificate's original
OTHER_MCU_PID = "mcu00001"
CLI_S = 60.0
FIND_S = 8.0  # a unit is found once its announcement came; the agent has only just started when the first is scanned


@dataclass
class Line:
    """The running site, and what it takes to start its agent later."""

    site: Site
    stack: ExitStack
    settings: dict[str, Any]
    gateway_key_hex: str
    data_dir: Path

    @property
    def config(self) -> Path:
        """The agent's config file."""
        return self.site.workdir / "agent.toml"

    def rebadge(self, *args: str) -> str:
        """Run `rebadge ARGS` to its end; its output, or AssertionError with it."""
        done = subprocess.run(
            [sys.executable, "-m", "rebadge.cli", *args], capture_output=True, text=True, cwd=REPO, env=_child_env(),
            timeout=CLI_S, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"rebadge {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def lease_to_agent(self, cert_no: str, slots: int, as_account: str) -> str:
        """Lease `slots` of the certificate to the gateway with the CLI and load the file into its journal."""
        lease_file = self.site.workdir / f"{cert_no}.lease"
        self.rebadge(
            "cloud", "lease", "issue", "--data-dir", str(self.data_dir), "--as", as_account, "--cert", cert_no,
            "--gateway-key", self.gateway_key_hex, "--slots", str(slots), "--out", str(lease_file),
        )  # fmt: skip
        return self.rebadge("agent", "load-lease", "-c", str(self.config), str(lease_file))

    def start_agent(self) -> None:
        """Start the agent and wait until it is ready."""
        agent = [sys.executable, "-m", "rebadge.cli", "-v", "agent", "run", "-c", str(self.config), "--no-console"]
        self.stack.enter_context(_process(self.stack, agent, self.site.logs["agent"]))
        _wait_text(self.site.logs["agent"], "ready", "the agent")


async def _seed_staff(data_dir: Path) -> dict[str, Account]:
    platform = await Platform.open(data_dir)
    try:
        made = {}
        async with platform.engine.begin() as conn:
            org = int((await accounts.org_named(conn, accounts.PLATFORM_ORG)).id)
            for name, role in STAFF.items():
                account_id, key = await accounts.create_account(conn, SYSTEM, org, name, role, platform.now())
                await logins.set_password(conn, SYSTEM, account_id, PASSWORD)
                made[name] = Account(name, role, key, "platform")
        return made
    finally:
        await platform.close()


def _goods(stack: ExitStack, site: Site, name: str, data_dir: Path, port: int, *options: str) -> None:
    command = [sys.executable, "-m", "rebadge.cli", "sim", "wifi", "--issuer-key", _issuer_key(data_dir).raw.hex(),
               "--announce-to", f"127.0.0.1:{port}", *options]  # fmt: skip
    site.logs[name] = site.workdir / f"{name}.log"
    stack.enter_context(_process(stack, command, site.logs[name]))
    _wait_text(site.logs[name], "ready", f"the simulated goods ({name})")


@contextmanager
def running_line(workdir: Path) -> Iterator[Line]:
    """Broker, seeded platform served on a free port, two batches of goods; the agent waits for `start_agent`."""
    broker = PrivateBroker(workdir / "broker")
    broker.start()
    with ExitStack() as stack:
        stack.callback(broker.stop)
        data_dir, state_dir = workdir / "platform", workdir / "gateway"
        identity = GatewayIdentity.load_or_create(state_dir)
        other_key = GatewayIdentity.load_or_create(workdir / "other-gateway").public
        made, gw, other_gw, cert_no, other = asyncio.run(_seed(data_dir, identity.public, other_key))
        made |= asyncio.run(_seed_staff(data_dir))
        settings = agent_settings(state_dir, _issuer_key(data_dir), broker, free_udp_port())
        settings["line"]["find_timeout_s"] = FIND_S
        port = free_port()
        site = Site(f"http://127.0.0.1:{port}", made, gw, other_gw, cert_no, other, workdir)
        site.logs = {name: workdir / f"{name}.log" for name in ("serve", "agent")}
        serve = [sys.executable, "-m", "rebadge.cli", "cloud", "serve", "--data-dir", str(data_dir), "--port",
                 str(port), "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]  # fmt: skip
        stack.enter_context(_process(stack, serve, site.logs["serve"]))
        _wait_http(f"{site.url}/v1/health", "rebadge cloud serve", site.logs["serve"])
        discovery = settings["wifi"]["discovery_port"]
        _goods(stack, site, "goods", data_dir, discovery, "--units", str(UNITS), "--prefix", UNIT_PREFIX, "--pid",
               ORIGINAL_PID)  # fmt: skip
        _goods(stack, site, "mcu-goods", data_dir, discovery, "--units", "1", "--prefix", MCU_PREFIX, "--pid",
               OTHER_MCU_PID, "--firmware", "general")  # fmt: skip
        write_toml(workdir / "agent.toml", settings)
        yield Line(site, stack, settings, identity.public.raw.hex(), data_dir)
