"""The console offers exactly what the API accepts, as a property: for a random product (any stage and firmware,
the factory's own or a customer's copy made from an OEM link) and any account, the product page shows a lifecycle
button for a stage exactly when moving there would be accepted, the OEM link button exactly when making a link
would be, and the page at all exactly when the API lets the account read the product. For an order walked through
random steps by random accounts, its page shows, to any account at any point, a form for exactly the steps that
account would be let take with good arguments. Each "would be accepted" is the store function the API calls, run
in a transaction that is rolled back.

The pages are fetched in-process (httpx on the app, one logged-in client per account); no browser is needed to read
which buttons a page holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_bridge import accounts, logins, oem, orders, products
from cloud_bridge.accounts import SYSTEM, Actor, OrgKind, Role
from cloud_bridge.api.app import create_app
from cloud_bridge.errors import CloudError
from cloud_bridge.order_states import OrderAction
from cloud_bridge.orders import PayMethod
from cloud_bridge.platform import Platform
from cloud_bridge.products import Changes, FirmwareKind, Spec, Stage
from tests.console_login import log_in
from tests.orders_support import FACTORY, MASS_PID, OLD_PID, draft, make_shop

PASSWORD = "a console password for tests"
PEOPLE = {  # name: (role, organisation)
    "admin": (Role.ADMIN, "platform"),
    "auditor": (Role.AUDITOR, "platform"),
    "bm": (Role.BUSINESS_MANAGER, "platform"),
    "f_admin": (Role.FACTORY_ADMIN, "factory"),
    "f_tech": (Role.TECHNICIAN, "factory"),
    "f_buyer": (Role.BUYER, "factory"),
    "r_admin": (Role.FACTORY_ADMIN, "rival"),
    "customer": (Role.CUSTOMER, "brand"),
}
STAGE_BUTTON = re.compile(r'<button type="submit" data-stage="(\w+)"')
PATH_TO = {Stage.DEVELOPMENT: (), Stage.TRIAL: (Stage.TRIAL,), Stage.MASS: (Stage.TRIAL, Stage.MASS)}


@dataclass
class World:
    """A platform served in-process, the accounts as actors and as logged-in console clients."""

    platform: Platform
    actors: dict[str, Actor] = field(default_factory=dict)
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)
    made: int = 0
    reached: set[str] = field(default_factory=set)  # the orders' last states, to show the walks went deep

    async def run(self, op: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return await self.platform.run(op, *args)

    async def accepted(self, op: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Whether the store function the API calls would accept this now; nothing it did is kept."""
        async with self.platform.engine.connect() as conn:
            tx = await conn.begin()
            try:
                await op(conn, *args)
            except CloudError:
                return False
            finally:
                await tx.rollback()
            return True


async def _world(data_dir: Path) -> World:
    platform = await Platform.open(data_dir)
    world = World(platform)
    try:
        await _people(world)
    except BaseException:
        await _close(world)
        raise
    return world


async def _people(world: World) -> None:
    platform = world.platform
    await platform.bootstrap_admin()  # makes the platform's organisation
    now = platform.now()
    orgs = {"platform": int((await world.run(accounts.org_named, accounts.PLATFORM_ORG)).id)}
    for name, kind in (("factory", OrgKind.FACTORY), ("rival", OrgKind.FACTORY), ("brand", OrgKind.BRAND)):
        orgs[name] = await world.run(accounts.create_org, SYSTEM, name, kind, now)
    app = create_app(platform)
    for name, (role, org) in PEOPLE.items():
        account_id, key = await world.run(accounts.create_account, SYSTEM, orgs[org], name, role, now)
        await world.run(logins.set_password, SYSTEM, account_id, PASSWORD)
        world.actors[name] = await platform.authenticate(key)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")
        answer = await log_in(client, name, PASSWORD)
        assert answer.status_code == 303, answer.text
        world.clients[name] = client


async def _close(world: World) -> None:
    for client in world.clients.values():
        await client.aclose()
    await world.platform.close()


async def _product(world: World, stage: Stage, firmware: FirmwareKind, copy: bool) -> str:
    """A factory product in `stage` on `firmware`, or the customer's copy of one made from an OEM link."""
    world.made += 1
    factory, now = world.actors["f_admin"], world.platform.now()
    spec = Spec(name=f"p{world.made}", model_no=f"M-{world.made}", firmware=FirmwareKind.OEM if copy else firmware)
    pid: str = await world.run(products.create, factory, spec, now)
    for later in PATH_TO[Stage.MASS if copy else stage]:
        await world.run(products.set_stage, factory, pid, later, now)
    if not copy:
        return pid
    token, _ = await world.run(oem.create_link, factory, pid, now)
    choice = oem.Redemption(f"copy {world.made}", f"C-{world.made}")
    made: str = await world.run(oem.redeem, world.actors["customer"], token, choice, now)
    return made


async def _check(world: World, viewer: str, stage: Stage, firmware: FirmwareKind, copy: bool) -> None:
    pid = await _product(world, stage, firmware, copy)
    actor, now = world.actors[viewer], world.platform.now()
    page = await world.clients[viewer].get(f"/console/products/{pid}")
    readable = await world.accepted(products.get, actor, pid)
    assert (page.status_code == 200) is readable, (viewer, page.status_code)
    if not readable:
        assert "does not exist in your organisation" in page.text
        return
    shown = set(STAGE_BUTTON.findall(page.text))
    legal = {s.value for s in Stage if await world.accepted(products.set_stage, actor, pid, s, now)}
    assert shown == legal, (viewer, stage, firmware, copy)
    assert ('id="make-link"' in page.text) is await world.accepted(oem.create_link, actor, pid, now)
    assert ('id="edit"' in page.text) is await world.accepted(products.edit, actor, pid, Changes(), now)


@pytest.fixture(name="world_loop")
def fixture_world_loop(tmp_path: Path) -> Iterator[tuple[World, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    world = loop.run_until_complete(_world(tmp_path))
    try:
        yield world, loop
    finally:
        loop.run_until_complete(_close(world))
        loop.close()


def test_product_page_offers_exactly_what_the_api_accepts(world_loop: tuple[World, asyncio.AbstractEventLoop]) -> None:
    world, loop = world_loop

    @settings(
        max_examples=25,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        viewer=st.sampled_from(sorted(PEOPLE)),
        stage=st.sampled_from(list(Stage)),
        firmware=st.sampled_from(list(FirmwareKind)),
        copy=st.booleans(),
    )
    def check(viewer: str, stage: Stage, firmware: FirmwareKind, copy: bool) -> None:
        loop.run_until_complete(_check(world, viewer, stage, firmware, copy))

    check()


# -- orders ------------------------------------------------------------------------------------------------------

ORDER_STEP = re.compile(r'data-step="(\w+)"')
PRICE_CENTS = 300_000


def _step_args(action: OrderAction, row: Any, cert_no: str, deposit: bool) -> tuple[Any, ...]:
    """Good arguments for the step on the order as it is (what a page's form would send)."""
    owed = (row.price_cents or 0) - row.paid_cents
    first = row.paid_cents == 0
    method = row.pay_method or PayMethod.OFFLINE
    amount = owed // 3 if first and deposit else owed
    return {
        OrderAction.CONFIRM_PRICE: (PRICE_CENTS, "EUR"),
        OrderAction.CONFIRM_SOFTWARE: ("v1.2",),
        OrderAction.SIGN_CONTRACT: ("CT-1",),
        OrderAction.PAY: (max(amount, 1), PayMethod(method), "REF-1"),
        OrderAction.SHIP: (["B1"], "DHL", "T-1"),
        OrderAction.LINK_CERTIFICATE: (cert_no,),
        OrderAction.INVOICE: ("INV-1",),
        OrderAction.CANCEL: ("changed our mind",),
    }.get(action, ())


STEP_OF: dict[OrderAction, Callable[..., Awaitable[Any]]] = {
    OrderAction.CONFIRM_PRICE: orders.confirm_price,
    OrderAction.CONFIRM_SOFTWARE: orders.confirm_software,
    OrderAction.SIGN_CONTRACT: orders.sign_contract,
    OrderAction.PAY: orders.pay,
    OrderAction.START_PRODUCTION: orders.start_production,
    OrderAction.SHIP: orders.ship,
    OrderAction.LINK_CERTIFICATE: orders.link_certificate,
    OrderAction.PUBLISH_TEST_DATA: orders.publish_test_data,
    OrderAction.INVOICE: orders.invoice,
    OrderAction.COMPLETE: orders.complete,
    OrderAction.CANCEL: orders.cancel,
}


async def _shop_world(data_dir: Path) -> World:
    platform = await Platform.open(data_dir)
    world = World(platform)
    try:
        shop = await make_shop(platform)
        app = create_app(platform)
        for name, actor in shop.actors.items():
            assert actor.account_id is not None
            await world.run(logins.set_password, SYSTEM, actor.account_id, PASSWORD)
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console.test")
            answer = await log_in(client, name, PASSWORD)
            assert answer.status_code == 303, answer.text
            world.clients[name] = client
        world.actors = dict(shop.actors)
    except BaseException:
        await _close(world)
        raise
    return world


async def _order_steps_shown(world: World, viewer: str, order_no: str, cert_no: str, deposit: bool) -> None:
    actor, now = world.actors[viewer], world.platform.now()
    page = await world.clients[viewer].get(f"/console/orders/{order_no}")
    readable = await world.accepted(orders.get, actor, order_no)
    assert (page.status_code == 200) is readable, (viewer, page.status_code)
    if not readable:
        return
    row = await world.run(orders.get, actor, order_no)
    shown = set(ORDER_STEP.findall(page.text))
    legal = set()
    for action, step in STEP_OF.items():
        if await world.accepted(step, actor, order_no, *_step_args(action, row, cert_no, deposit), now):
            legal.add(action.value)
    assert shown == legal, (viewer, row.state)


async def _walk(world: World, data: st.DataObject) -> None:
    world.made += 1
    now = world.platform.now()
    cert, _ = await world.platform.issue_certificate(
        factory=FACTORY, original_pid=OLD_PID, new_pid=MASS_PID, quantity=10, reason="for the walk"
    )
    order_no = await world.run(orders.submit, world.actors["buyer"], draft(po_no=f"PO-{world.made}"), now)
    deposit = data.draw(st.booleans(), "deposit")
    names = sorted(world.actors)
    for _ in range(data.draw(st.integers(3, 20), "steps")):
        viewer = data.draw(st.sampled_from(names), "viewer")
        await _order_steps_shown(world, viewer, order_no, cert.cert_no, deposit)
        row = await world.run(orders.get, world.actors["admin"], order_no)
        # Mostly a step open now, by an account that may take it, so the walk gets deep into the states.
        open_now = [a for a in orders.open_actions(row) if a is not OrderAction.CANCEL] or list(OrderAction)
        aimed = data.draw(st.integers(0, 4), "aimed") > 0
        action = data.draw(st.sampled_from(open_now if aimed else list(OrderAction)), "action")
        takers = [n for n in names if action in await world.run(orders.my_actions, world.actors[n], row)]
        who = world.actors[data.draw(st.sampled_from(takers if takers and aimed else names), "by")]
        with contextlib.suppress(CloudError):  # a refused step changes nothing; the walk goes on
            await world.run(STEP_OF[action], who, order_no, *_step_args(action, row, cert.cert_no, deposit), now)
    world.reached.add((await world.run(orders.get, world.actors["admin"], order_no)).state)


@pytest.fixture(name="shop_loop")
def fixture_shop_loop(tmp_path: Path) -> Iterator[tuple[World, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    world = loop.run_until_complete(_shop_world(tmp_path))
    try:
        yield world, loop
    finally:
        loop.run_until_complete(_close(world))
        loop.close()


def test_order_page_offers_exactly_the_steps_the_api_accepts(
    shop_loop: tuple[World, asyncio.AbstractEventLoop],
) -> None:
    world, loop = shop_loop

    @settings(
        max_examples=15,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        loop.run_until_complete(_walk(world, data))

    check()
    assert {"shipped", "test_data", "invoiced", "completed"} & world.reached, world.reached  # the walks went deep
