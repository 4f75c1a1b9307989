"""A purchase-module world for the order tests: a certified factory with products in each stage, its buyer and R&D
staff, the platform's business and project managers, and a rival factory; all made through the store functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloud_bridge import accounts, buyers, orders, products
from cloud_bridge.accounts import SYSTEM, Actor, OrgKind, Role
from cloud_bridge.buyers import GrantKind
from cloud_bridge.orders import Draft, OrderKind
from cloud_bridge.platform import Platform
from cloud_bridge.products import Stage

FACTORY = "F1"
RIVAL = "rival"
DEV_PID = "dev00001"
TRIAL_PID = "tri00001"
MASS_PID = "mas00001"
OLD_PID = "old00001"  # the stock the factory builds, rebadged to MASS_PID
RIVAL_PID = "riv00001"


@dataclass
class Shop:
    """Actors by name and the ids the tests need."""

    platform: Platform
    actors: dict[str, Actor] = field(default_factory=dict)
    org: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # API keys by account name

    async def run(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        """A store function in one transaction (a refusal rolls it back)."""
        return await self.platform.run(op, *args, **kwargs)

    async def account(self, org: str, name: str, role: Role) -> Actor:
        """A real account, authenticated by its API key."""
        _, key = await self.run(accounts.create_account, SYSTEM, self.org[org], name, role, self.platform.now())
        actor: Actor = await self.platform.authenticate(key)
        self.actors[name] = actor
        self.keys[name] = key
        return actor

    async def product(self, org_admin: str, pid: str, stage: Stage) -> None:
        """A product of the admin's organisation under a fixed PID (as the seed registers one), moved to `stage`."""
        actor = self.actors[org_admin]
        assert actor.org_id is not None
        spec = products.Spec(name=f"product {pid}", model_no=f"model {pid}", protocol=products.Protocol.BLE)
        await self.run(products.create_with_pid, pid, actor.org_id, spec, self.platform.now())
        path = [Stage.TRIAL, Stage.MASS][: [Stage.DEVELOPMENT, Stage.TRIAL, Stage.MASS].index(stage)]
        for later in path:
            await self.run(products.set_stage, actor, pid, later, self.platform.now())

    async def grant(self, admin: str, account: str, pid: str, kind: GrantKind) -> None:
        """The organisation admin grants an account the right to order a product."""
        who = self.actors[account].account_id
        assert who is not None
        await self.run(buyers.grant, self.actors[admin], who, pid, kind, self.platform.now())

    async def submit(self, who: str, draft: Draft, *, confirm_repeat: bool = False) -> str:
        """Submit an order as `who`; its number."""
        number: str = await self.run(
            orders.submit, self.actors[who], draft, self.platform.now(), confirm_repeat=confirm_repeat
        )
        return number


def draft(pid: str = MASS_PID, kind: OrderKind = OrderKind.BULK, quantity: int = 10, **more: Any) -> Draft:
    """An order form with the required numbers filled in."""
    fields = {"po_no": "PO-1", "model_no": "M-1", "material_no": "MAT-1"} | more
    return Draft(pid=pid, kind=kind, quantity=quantity, **fields)


async def make_shop(platform: Platform) -> Shop:
    """The world every order test starts from."""
    shop = Shop(platform)
    await platform.bootstrap_admin()
    now = platform.now()
    shop.org["platform"] = int((await shop.run(accounts.org_named, accounts.PLATFORM_ORG)).id)
    for name in (FACTORY, RIVAL):
        shop.org[name] = await shop.run(accounts.create_org, SYSTEM, name, OrgKind.FACTORY, now)
    await shop.account("platform", "admin", Role.ADMIN)
    await shop.account("platform", "auditor", Role.AUDITOR)
    await shop.account("platform", "bm", Role.BUSINESS_MANAGER)
    await shop.account("platform", "pm", Role.PROJECT_MANAGER)
    await shop.account(FACTORY, "f_admin", Role.FACTORY_ADMIN)
    await shop.account(FACTORY, "buyer", Role.BUYER)
    await shop.account(FACTORY, "rnd", Role.TECHNICIAN)
    await shop.account(FACTORY, "plain_buyer", Role.BUYER)  # holds no grant
    await shop.account(RIVAL, "r_admin", Role.FACTORY_ADMIN)
    await shop.account(RIVAL, "r_buyer", Role.BUYER)
    for pid, stage in ((DEV_PID, Stage.DEVELOPMENT), (TRIAL_PID, Stage.TRIAL), (MASS_PID, Stage.MASS),
                       (OLD_PID, Stage.MASS)):  # fmt: skip
        await shop.product("f_admin", pid, stage)
    await shop.product("r_admin", RIVAL_PID, Stage.MASS)
    for pid in (DEV_PID, TRIAL_PID, MASS_PID):
        await shop.grant("f_admin", "buyer", pid, GrantKind.BUYER)
        await shop.grant("f_admin", "rnd", pid, GrantKind.RND)
    await shop.grant("r_admin", "r_buyer", RIVAL_PID, GrantKind.BUYER)
    for org in (FACTORY, RIVAL):
        await shop.run(buyers.certify, shop.actors["admin"], shop.org[org], "documents checked", now)
    return shop
