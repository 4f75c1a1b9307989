"""What the web console's browser tests stand on: a platform with organisations, accounts and products, served by
a real `rebadge cloud serve` on a private mosquitto, a real agent process and simulated Wi-Fi goods, and Debian's
chromium driven by Playwright. Every part is the real code; only the goods are simulated."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from playwright.async_api import Browser, BrowserContext, Page

from agent.certs.identity import GatewayIdentity
from agent.service import load_lease_file
from cloud_bridge import accounts, gateways, logins, products
from cloud_bridge.accounts import SYSTEM, OrgKind, Role
from cloud_bridge.platform import Platform
from cloud_bridge.products import Spec
from cloud_bridge.seed import factory_with_products
from rebadge.broker import PrivateBroker, free_port
from tests.e2e_support import REPO, _child_env, agent_command, agent_settings, free_udp_port, to_config, write_toml
from tests.helpers import NEW_PID, ORIGINAL_PID

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright never downloads a browser here
START_S = 30.0  # a process (serve, agent, goods) is up within this
POLL_S = 0.1
PASSWORD = "correct horse battery staple"
OUT = REPO / "test-output" / "console"  # screenshots of every page (git-ignored)
UNITS = 3
UNIT_PREFIX = "LAMP"
QUOTA = 5


@dataclass(frozen=True)
class Account:
    """A seeded account: its user name, role and API key (for asking the API the same question)."""

    name: str
    role: Role
    api_key: str
    org: str


@dataclass
class Site:
    """The running platform, agent and goods, and who may log in."""

    url: str
    accounts: dict[str, Account]
    gw: str
    other_gw: str  # another factory's gateway (no agent behind it)
    cert_no: str  # acme's approved certificate, leased to the gateway
    other_cert_no: str  # another factory's certificate
    workdir: Path
    logs: dict[str, Path] = field(default_factory=dict)

    def api(self, account: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """Ask the HTTP API as `account`: (status, JSON answer)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"X-API-Key": self.accounts[account].api_key, "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def log_tail(self, name: str, lines: int = 40) -> str:
        """The end of one process's output, for assertion messages."""
        text = self.logs[name].read_text(errors="replace") if self.logs[name].exists() else ""
        return "\n".join(text.splitlines()[-lines:])


PEOPLE = {  # user name: (role, organisation)
    "first admin": (Role.ADMIN, "platform"),
    "audrey-auditor": (Role.AUDITOR, "platform"),
    "fiona-factory": (Role.FACTORY_ADMIN, "acme"),
    "tom-technician": (Role.TECHNICIAN, "acme"),
    "bob-buyer": (Role.BUYER, "acme"),
    "olga-other": (Role.FACTORY_ADMIN, "other"),
    "carla-customer": (Role.CUSTOMER, "brandco"),
    "tina-throttled": (Role.TECHNICIAN, "acme"),  # the login throttle's test locks her out
    "bea-business": (Role.BUSINESS_MANAGER, "platform"),
    "pat-project": (Role.PROJECT_MANAGER, "platform"),
}


async def _seed(data_dir: Path, gateway_key: Any, other_key: Any) -> tuple[dict[str, Account], str, str, str, str]:
    platform = await Platform.open(data_dir)
    try:
        admin_key = await platform.bootstrap_admin()
        assert admin_key is not None
        now = platform.now()
        made: dict[str, Account] = {"first admin": Account("first admin", Role.ADMIN, admin_key, "platform")}
        async with platform.engine.begin() as conn:
            orgs = {"platform": int((await accounts.org_named(conn, accounts.PLATFORM_ORG)).id)}
            orgs["acme"] = await factory_with_products(conn, "acme", (ORIGINAL_PID, NEW_PID), now)
            orgs["other"] = await factory_with_products(conn, "other", ("othr0001", "othr0002"), now)
            orgs["brandco"] = await accounts.create_org(conn, SYSTEM, "brandco", OrgKind.BRAND, now)
            for name, (role, org) in PEOPLE.items():
                if name in made:  # the first admin, made by bootstrap_admin
                    account_id = (await accounts.acting_as(conn, name)).account_id
                else:
                    account_id, key = await accounts.create_account(conn, SYSTEM, orgs[org], name, role, now)
                    made[name] = Account(name, role, key, org)
                assert account_id is not None
                await logins.set_password(conn, SYSTEM, account_id, PASSWORD)
            # One product still in development: not replaceable, so the products tab must leave it out.
            await products.create(conn, SYSTEM, Spec(name="prototype", model_no="PROTO-1"), now, org_id=orgs["acme"])
            fiona = await accounts.acting_as(conn, "fiona-factory")
            gw = await gateways.register_as(conn, fiona, gateway_key, "line-1", now)
            olga = await accounts.acting_as(conn, "olga-other")
            other_gw = await gateways.register_as(conn, olga, other_key, "other-line", now)
        cert, _ = await platform.issue_certificate(
            factory="acme", original_pid=ORIGINAL_PID, new_pid=NEW_PID, quantity=QUOTA, actor=SYSTEM
        )
        other, _ = await platform.issue_certificate(
            factory="other", original_pid="othr0001", new_pid="othr0002", quantity=3, actor=SYSTEM
        )
        return made, gw, other_gw, cert.cert_no, other.cert_no
    finally:
        await platform.close()


async def _lease(data_dir: Path, cert_no: str, gateway_key: Any, settings: dict[str, Any]) -> None:
    platform = await Platform.open(data_dir)
    try:
        _, _, bundle = await platform.issue_lease(cert_no, gateway_key, QUOTA, valid_s=3600)
    finally:
        await platform.close()
    await load_lease_file(to_config(settings), bundle)


def _wait_http(url: str, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(POLL_S)
    raise AssertionError(f"{what} did not answer within {START_S}s:\n{log.read_text(errors='replace')[-3000:]}")


def _wait_text(log: Path, text: str, what: str) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(POLL_S)
    raise AssertionError(f"{what} not within {START_S}s:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def _process(stack: ExitStack, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    out: BinaryIO = stack.enter_context(log.open("ab"))
    proc = subprocess.Popen(args, stdout=out, stderr=out, cwd=REPO, env=_child_env())
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def running_site(workdir: Path) -> Iterator[Site]:
    """Broker, seeded platform served on a free port, agent and goods; all stopped on exit."""
    broker = PrivateBroker(workdir / "broker")
    broker.start()
    with ExitStack() as stack:
        stack.callback(broker.stop)
        data_dir, state_dir = workdir / "platform", workdir / "gateway"
        identity = GatewayIdentity.load_or_create(state_dir)
        other_key = GatewayIdentity.load_or_create(workdir / "other-gateway").public
        made, gw, other_gw, cert_no, other = asyncio.run(_seed(data_dir, identity.public, other_key))
        assert gw == identity.gw
        settings = agent_settings(state_dir, _issuer_key(data_dir), broker, free_udp_port())
        settings["line"]["find_timeout_s"] = 1.5
        asyncio.run(_lease(data_dir, cert_no, identity.public, settings))
        port = free_port()
        site = Site(f"http://127.0.0.1:{port}", made, gw, other_gw, cert_no, other, workdir)
        rebadge = [sys.executable, "-m", "rebadge.cli"]
        site.logs = {name: workdir / f"{name}.log" for name in ("serve", "goods", "agent")}
        serve = [*rebadge, "cloud", "serve", "--data-dir", str(data_dir), "--port", str(port),
                 "--mqtt-host", broker.host, "--mqtt-port", str(broker.port)]  # fmt: skip
        config = write_toml(workdir / "agent.toml", settings)
        agent = agent_command(config)
        goods = [*rebadge, "sim", "wifi", "--units", str(UNITS), "--prefix", UNIT_PREFIX, "--pid", ORIGINAL_PID,
                 "--issuer-key", _issuer_key(data_dir).raw.hex(),
                 "--announce-to", f"127.0.0.1:{settings['wifi']['discovery_port']}"]  # fmt: skip
        # The platform and the agent start side by side (each needs only the broker); the goods announce to the
        # agent once it listens.
        stack.enter_context(_process(stack, serve, site.logs["serve"]))
        stack.enter_context(_process(stack, agent, site.logs["agent"]))
        _wait_text(site.logs["agent"], "ready", "the agent")
        stack.enter_context(_process(stack, goods, site.logs["goods"]))
        _wait_http(f"{site.url}/v1/health", "rebadge cloud serve", site.logs["serve"])
        _wait_text(site.logs["goods"], "ready", "the simulated goods")
        yield site


def _issuer_key(data_dir: Path) -> Any:
    from cloud_bridge.issuer import load_or_create  # noqa: PLC0415

    return load_or_create(data_dir).public


def unit_sn(n: int) -> str:
    """The SN `rebadge sim wifi` gives unit `n`."""
    return f"{UNIT_PREFIX}-{n:05d}"


async def log_in(browser: Browser, site: Site, name: str, password: str = PASSWORD) -> tuple[BrowserContext, Page]:
    """A fresh browser context (its own cookies) logged in as `name` through the login form."""
    context = await browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    await page.goto("/console/login")
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("#login")
    await page.wait_for_load_state()
    return context, page


async def nav_labels(page: Page) -> list[str]:
    """The navigation the page shows, in order."""
    return await page.locator("header nav a").all_inner_texts()


async def shot(page: Page, name: str) -> Path:
    """Keep a screenshot of the page as test-output/console/NAME.png."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
