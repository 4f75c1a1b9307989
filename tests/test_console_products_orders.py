"""The console's products and orders pages in Debian's headless chromium (Playwright, no browser download), on a
real `rebadge cloud serve`, mosquitto, agent and simulated goods: each role sees only what it may; every refusal
shows its message on the page and changes nothing (checked through the API); and the whole way from an OEM link to
a customer's test data, with the line rebadging from the console's Perform replacement page. A screenshot of every
page goes to test-output/console/."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from cloud_bridge import oem
from cloud_bridge.accounts import acting_as
from cloud_bridge.platform import Platform
from tests import console_support
from tests.console_line_support import MCU_PREFIX, OTHER_MCU_PID, STAFF, Line, running_line
from tests.console_support import CHROMIUM, PASSWORD, PEOPLE, UNITS, Site, log_in, nav_labels, unit_sn
from tests.helpers import ORIGINAL_PID

# One platform, agent and browser for the module; its tests run on one event loop, as the browser needs.
pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's chromium at {CHROMIUM}"),
    pytest.mark.asyncio(loop_scope="module"),
]

WAIT_MS = 15_000  # a page, or the line's answer shown on it
LEDGER_S = 30.0  # the agent's records reach the platform and are verified
POLL_S = 0.2
Login = Callable[[str], Awaitable[Page]]


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    with running_line(tmp_path_factory.mktemp("console-products-orders")) as running:
        yield running


@pytest.fixture(scope="module")
def site(line: Line) -> Site:
    return line.site


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def login(browser: Browser, site: Site) -> AsyncIterator[Login]:
    """A logged-in page per account (one browser context each, kept for the module)."""
    pages: dict[str, Page] = {}

    async def page_of(name: str) -> Page:
        if name not in pages:
            _, page = await log_in(browser, site, name)
            page.set_default_timeout(WAIT_MS)
            await expect(page.locator("#who")).to_contain_text(name)
            pages[name] = page
        return pages[name]

    yield page_of
    for page in pages.values():
        await page.context.close()


async def shot(page: Page, name: str) -> None:
    """Keep a screenshot of the page in the test output."""
    await console_support.shot(page, f"products-orders-{name}")


async def go(page: Page, path: str) -> Page:
    await page.goto(f"/console{path}")
    return page


def ok(site: Site, account: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    status, answer = site.api(account, method, path, body)
    assert status < 300, f"{method} {path} as {account}: {status} {answer}"
    return answer


def pid_named(site: Site, account: str, name: str) -> str:
    return str(next(p["pid"] for p in ok(site, account, "GET", "/v1/products") if p["name"] == name))


async def error_of(page: Page) -> str:
    return await page.locator("#error").inner_text()


async def pids_listed(page: Page) -> set[str]:
    return set(await page.locator("#products tr[data-pid]").evaluate_all("rows => rows.map(r => r.dataset.pid)"))


def orders_of(site: Site) -> list[dict[str, Any]]:
    return list(ok(site, "first admin", "GET", "/v1/orders"))


def certify(site: Site, org_of: str) -> None:
    org_id = ok(site, org_of, "GET", "/v1/me")["org_id"]
    status, answer = site.api("first admin", "POST", "/v1/orders/certifications", {"org_id": org_id})
    assert status == 201 or "certified already" in str(answer), answer


def grant(site: Site, to: str, pid: str, kind: str = "buyer") -> None:
    account_id = ok(site, to, "GET", "/v1/me")["account_id"]
    ok(site, "fiona-factory", "POST", "/v1/orders/grants", {"account_id": account_id, "pid": pid, "kind": kind})


async def order_form(page: Page, pid: str, kind: str, quantity: int, po: str) -> None:
    await page.select_option("#pid", pid)
    await page.select_option("#kind", kind)
    await page.fill("#quantity", str(quantity))
    await page.fill("#po_no", po)
    await page.fill("#model_no", "LAMP-M1")
    await page.fill("#material_no", "MAT-7")


async def step(page: Page, action: str, **inputs: str) -> None:
    form = page.locator(f"form[data-step={action}]")
    for name, value in inputs.items():
        field = form.locator(f"[name={name}]")
        if await field.evaluate("e => e.tagName") == "SELECT":
            await field.select_option(value)
        else:
            await field.fill(value)
    await form.locator("button").click()
    await page.wait_for_load_state()


# -- roles ---------------------------------------------------------------------------------------------------------


async def test_each_role_sees_only_the_products_and_orders_it_may(site: Site, login: Login) -> None:
    everyone = [*PEOPLE, *STAFF]
    acme = {p["pid"] for p in ok(site, "fiona-factory", "GET", "/v1/products")}
    for name in everyone:
        page = await login(name)
        nav = await nav_labels(page)
        role = site.accounts[name].role.value
        assert "Orders" in nav, name
        assert ("Products" in nav) is (role not in ("business_manager", "project_manager")), (name, nav)
        assert ("Open an OEM link" in nav) is (role == "customer"), (name, nav)
        if "Products" not in nav:
            continue
        await go(page, "/products")
        shown = await pids_listed(page)
        by_api = {p["pid"] for p in ok(site, name, "GET", "/v1/products")}
        assert shown == by_api, name  # the page lists what the API answers the same account, no more
        await shot(page, f"products-{role}-{name.split('-')[0]}")
    assert ORIGINAL_PID in acme
    prototype = pid_named(site, "fiona-factory", "prototype")
    buyer = await login("bob-buyer")
    assert prototype not in await buyer.locator("#products").inner_text()  # buyers: trial and mass production only
    other = await go(await login("olga-other"), f"/products/{ORIGINAL_PID}")
    assert "does not exist in your organisation" in await error_of(other)  # another factory's product is not revealed
    await shot(other, "product-of-another-factory")
    tech = await go(await login("tom-technician"), f"/products/{ORIGINAL_PID}")
    assert await tech.locator("#lifecycle").count() == 0
    assert await tech.locator("#make-link").count() == 0
    assert await tech.locator("#configuration").is_visible()
    await shot(tech, "product-technician")
    orders = await go(await login("tom-technician"), "/orders")
    assert await orders.locator("#place").count() == 0  # no grant, nothing to order
    await shot(orders, "orders-technician")


# -- products: lifecycle, locks --------------------------------------------------------------------------------


async def test_lifecycle_buttons_follow_the_stage_and_a_locked_field_is_refused(site: Site, login: Login) -> None:
    pid = pid_named(site, "fiona-factory", "prototype")
    page = await go(await login("fiona-factory"), f"/products/{pid}")

    async def buttons() -> list[str]:
        return await page.locator("#lifecycle button").all_inner_texts()

    assert await buttons() == ["Complete development"]
    await shot(page, "product-development")
    await go(page, f"/products/{pid}/edit")
    assert await page.locator(".lock").count() == 0  # nothing is locked in development
    await page.fill("textarea[name=data_points]", '[{"id": 1, "code": "switch", "type": "bool"')
    await page.click("#save")
    assert "data points are not valid JSON" in await error_of(page)
    await page.fill("textarea[name=data_points]", '[{"id": 1, "code": "switch", "type": "bool"}]')
    await page.check("input[name=services][value=ota]")
    await page.fill("input[name=module]", "WB3S")
    await page.click("#save")
    await expect(page.locator("#data-points")).to_contain_text("switch")
    saved = ok(site, "fiona-factory", "GET", f"/v1/products/{pid}")
    assert (saved["services"], saved["module"]) == (["ota"], "WB3S")
    assert saved["data_points"] == [{"id": 1, "code": "switch", "type": "bool", "mode": "rw"}]
    await go(page, f"/products/{pid}/edit")
    await page.uncheck("input[name=services][value=ota]")  # unticking the last box clears them
    await page.click("#save")
    assert ok(site, "fiona-factory", "GET", f"/v1/products/{pid}")["services"] == []
    await go(page, f"/products/{pid}")
    await page.click("button[data-stage=trial]")
    await expect(page.locator("#stage")).to_have_attribute("data-stage", "trial")
    assert await buttons() == ["Back to development", "Mass production"]
    await go(page, f"/products/{pid}/edit")
    locked = set(await page.locator("[data-lock]").evaluate_all("e => e.map(x => x.dataset.lock)"))
    assert locked == {"protocol", "firmware", "firmware_version", "data_points", "panel", "module"}
    assert "move the product back to development" in await page.locator("[data-lock=panel]").inner_text()
    assert await page.locator("input[name=panel]").is_disabled()
    assert await page.locator("input[name=name]").is_enabled()
    await shot(page, "product-edit-trial-locks")
    await go(page, f"/products/{pid}")
    # A form posted without the session's CSRF token (another site's, say) is refused and moves nothing.
    forged = await page.request.post(f"{site.url}/console/products/{pid}/stage", form={"stage": "development"})
    assert forged.status == 403
    assert "CSRF" in await forged.text()
    assert ok(site, "fiona-factory", "GET", f"/v1/products/{pid}")["stage"] == "trial"
    await page.click("button[data-stage=development]")
    await expect(page.locator("#stage")).to_have_attribute("data-stage", "development")

    # The edit form was loaded in development; the product moves to trial meanwhile (another tab, the API).
    await go(page, f"/products/{pid}/edit")
    await page.fill("input[name=panel]", "panel-v2")
    await page.fill("input[name=name]", "prototype renamed")
    ok(site, "fiona-factory", "POST", f"/v1/products/{pid}/stage", {"stage": "trial"})
    before = ok(site, "fiona-factory", "GET", f"/v1/products/{pid}")
    await page.click("#save")
    assert f"product {pid}: panel is locked in trial production" in await error_of(page)
    assert "move the product back to development" in await error_of(page)
    assert ok(site, "fiona-factory", "GET", f"/v1/products/{pid}") == before  # neither panel nor name changed
    await expect(page.locator("input[name=panel]")).to_have_value(before["panel"])  # the form shows what is stored
    await expect(page.locator("input[name=name]")).to_have_value("prototype renamed")  # and keeps what may be typed
    await shot(page, "product-edit-locked-refused")

    # Mass production: final, every field locked, no button left; the technician never had one.
    await go(page, f"/products/{pid}")
    await page.click("button[data-stage=mass]")
    await expect(page.locator("#stage")).to_have_attribute("data-stage", "mass")
    assert await buttons() == []
    await go(page, f"/products/{pid}/edit")
    assert "mass production, which is final" in await page.locator("[data-lock=name]").inner_text()


# -- OEM links -------------------------------------------------------------------------------------------------


async def _make_link(page: Page, site: Site) -> str:
    await go(page, f"/products/{ORIGINAL_PID}")
    await page.click("#make-link")
    link = await page.locator("#oem-link").input_value()
    assert re.search(r"/console/oem-links/redeem#rbo_[\w-]{40,}$", link), link
    return link


async def test_oem_link_refusals_say_why_and_change_nothing(
    line: Line, site: Site, login: Login, browser: Browser
) -> None:
    fiona = await login("fiona-factory")
    # The button is there only for a product in mass production on oem firmware.
    mcu = ok(
        site, "fiona-factory", "POST", "/v1/products", {"name": "mcu lamp", "model_no": "MCU-1", "firmware": "mcu"}
    )
    for stage in ("trial", "mass"):
        ok(site, "fiona-factory", "POST", f"/v1/products/{mcu['pid']}/stage", {"stage": stage})
        assert await (await go(fiona, f"/products/{mcu['pid']}")).locator("#make-link").count() == 0
    trial = ok(site, "fiona-factory", "POST", "/v1/products", {"name": "oem lamp", "model_no": "OEM-T"})
    ok(site, "fiona-factory", "POST", f"/v1/products/{trial['pid']}/stage", {"stage": "trial"})
    assert await (await go(fiona, f"/products/{trial['pid']}")).locator("#make-link").count() == 0
    assert (
        await (await go(await login("tom-technician"), f"/products/{ORIGINAL_PID}")).locator("#make-link").count() == 0
    )
    link = await _make_link(fiona, site)
    await shot(fiona, "product-oem-link")

    # The factory opening its own link: refused, and the link stays usable.
    await go(fiona, "/oem-links/redeem#" + link.split("#")[1])
    await fiona.fill("#name", "mine")
    await fiona.fill("#model_no", "MINE-1")
    await fiona.click("#redeem")
    assert "made by your own organisation" in await error_of(fiona)
    await shot(fiona, "redeem-own-link-refused")

    # The customer opens the link before logging in: asked to log in, the tab keeps the link meanwhile.
    fresh = await browser.new_context(base_url=site.url)
    anonymous = await fresh.new_page()
    await anonymous.goto(link)
    await expect(anonymous.locator("#login-first")).to_be_visible()
    assert "#" not in anonymous.url  # the token left the address bar
    await shot(anonymous, "redeem-login-first")
    await anonymous.fill("#username", "carla-customer")
    await anonymous.fill("#password", PASSWORD)
    await anonymous.click("#login")
    await anonymous.click("header nav >> text=Open an OEM link")
    await expect(anonymous.locator("#token")).to_have_value(link.split("#")[1])
    await shot(anonymous, "redeem")
    await anonymous.fill("#name", "BrandCo lamp")
    await anonymous.fill("#model_no", "BC-LAMP-1")
    await anonymous.click("#redeem")
    await expect(anonymous.locator("#stage")).to_have_attribute("data-stage", "mass")
    made = await anonymous.locator("#pid").inner_text()
    await fresh.close()
    carla = await login("carla-customer")
    products_before = ok(site, "carla-customer", "GET", "/v1/products")
    assert [p["pid"] for p in products_before] == [made]

    # Used: refused with the date; nothing new.
    await carla.goto(link)
    await expect(carla.locator("#token")).to_have_value(link.split("#")[1])
    await carla.fill("#name", "again")
    await carla.fill("#model_no", "BC-LAMP-2")
    await carla.click("#redeem")
    assert re.search(r"this OEM link was used on \d{4}-\d\d-\d\d \d\d:\d\d UTC", await error_of(carla)), await error_of(
        carla
    )
    await shot(carla, "redeem-used-refused")

    # Expired: a link made two days ago for one day.
    token = await _expired_link(line)
    await carla.goto(f"{site.url}/console/oem-links/redeem#{token}")
    await carla.fill("#name", "late")
    await carla.fill("#model_no", "BC-LAMP-3")
    await carla.click("#redeem")
    assert re.search(r"this OEM link expired on \d{4}-\d\d-\d\d", await error_of(carla)), await error_of(carla)
    assert ok(site, "carla-customer", "GET", "/v1/products") == products_before
    await shot(carla, "redeem-expired-refused")


async def _expired_link(line: Line) -> str:
    platform = await Platform.open(line.data_dir)
    try:
        async with platform.engine.begin() as conn:
            fiona = await acting_as(conn, "fiona-factory")
            token, _ = await oem.create_link(conn, fiona, ORIGINAL_PID, platform.now() - 2 * 86400, valid_s=86400)
        return token
    finally:
        await platform.close()


# -- orders: refusals ------------------------------------------------------------------------------------------


async def test_order_refusals_say_why_and_store_nothing(site: Site, login: Login) -> None:
    certify(site, "fiona-factory")
    prototype = pid_named(site, "fiona-factory", "prototype")
    grant(site, "bob-buyer", ORIGINAL_PID)
    bob = await go(await login("bob-buyer"), "/orders/new")
    await shot(bob, "order-new")
    before = orders_of(site)

    # Wrong phase: a development kind for a product in mass production.
    await order_form(bob, ORIGINAL_PID, "debug_module", 5, "PO-WRONG")
    await bob.click("#submit")
    assert f"product {ORIGINAL_PID} is in mass; orders there are of kind: bulk, value_added" in await error_of(bob)
    await expect(bob.locator("#quantity")).to_have_value("5")  # the form keeps what was typed
    await shot(bob, "order-wrong-kind-refused")

    # Not a buyer: the grant is taken back while the form is open.
    account_id = ok(site, "bob-buyer", "GET", "/v1/me")["account_id"]
    ok(site, "fiona-factory", "DELETE", f"/v1/orders/grants/{account_id}/{ORIGINAL_PID}/buyer")
    await order_form(bob, ORIGINAL_PID, "bulk", 5, "PO-NOGRANT")
    await bob.click("#submit")
    assert f"account bob-buyer is not a buyer of product {ORIGINAL_PID}" in await error_of(bob)
    await shot(bob, "order-not-a-buyer-refused")
    grant(site, "bob-buyer", ORIGINAL_PID)

    # Over the limit: a product in trial production takes at most 1000 units (the prototype is in mass by now,
    # so a second product goes to trial for this).
    assert ok(site, "fiona-factory", "GET", f"/v1/products/{prototype}")["stage"] == "mass"
    trial = ok(site, "fiona-factory", "POST", "/v1/products", {"name": "trial lamp", "model_no": "TRIAL-1"})["pid"]
    ok(site, "fiona-factory", "POST", f"/v1/products/{trial}/stage", {"stage": "trial"})
    grant(site, "bob-buyer", trial)
    await go(bob, "/orders/new")
    await order_form(bob, trial, "bulk", 1001, "PO-BIG")
    await bob.click("#submit")
    assert "quantity 1001: an order in trial holds 1 to 1000 units" in await error_of(bob)
    await shot(bob, "order-over-limit-refused")
    assert orders_of(site) == before  # none of the three stored anything

    # A repeat: warned before anything is stored; submitting anyway stores it.
    await order_form(bob, trial, "bulk", 10, "PO-REPEAT")
    await bob.click("#submit")
    first = bob.url.rsplit("/", 1)[1]
    await go(bob, "/orders/new")
    await order_form(bob, trial, "bulk", 20, "PO-REPEAT")
    await bob.click("#submit")
    await expect(bob.locator("#repeat-warning")).to_contain_text(f"This order repeats {first}")
    assert len(orders_of(site)) == len(before) + 1
    await shot(bob, "order-repeat-warning")
    await bob.click("#confirm-repeat")
    second = bob.url.rsplit("/", 1)[1]
    assert second != first
    assert len(orders_of(site)) == len(before) + 2

    # Wrong phase of a step: the business manager cancels while the buyer's page still offers Cancel.
    ok(site, "betty-business", "POST", f"/v1/orders/{second}/cancel", {"reason": "entered twice"})
    await bob.fill("form[data-step=cancel] [name=reason]", "not needed")
    await bob.click("form[data-step=cancel] button")
    assert f"order {second} is cancelled: cancel is not possible in state cancelled" in await error_of(bob)
    history = ok(site, "bob-buyer", "GET", f"/v1/orders/{second}")["history"]
    assert [e["action"] for e in history] == ["submit", "cancel"]  # the refused step left no trace
    await shot(bob, "order-step-wrong-state-refused")
    other = await go(await login("olga-other"), f"/orders/{first}")
    assert f"order '{first}' does not exist in your organisation" in await error_of(other)  # another factory's order
    betty = await go(await login("betty-business"), f"/orders/{first}")
    await shot(betty, "order-business-manager")
    steps = await betty.locator("#steps form").evaluate_all("e => e.map(f => f.dataset.step)")
    assert steps == ["confirm_price", "cancel"]  # the business manager's steps in intention, no one else's


# -- the end-to-end ----------------------------------------------------------------------------------------------


async def _wait_ledger(site: Site, cert_no: str, replaced: int) -> None:
    deadline = time.monotonic() + LEDGER_S
    while time.monotonic() < deadline:
        found = ok(site, "fiona-factory", "GET", f"/v1/certificates/{cert_no}")
        if found["replaced"] >= replaced:
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(
        f"certificate {cert_no}: {found['replaced']} replaced, not {replaced}:\n{site.log_tail('agent')}"
    )


async def _scan(page: Page, sn: str) -> Any:
    await page.fill("#sn", sn)
    await page.click("#replace")
    row = page.locator(f"#results tr[data-sn='{sn}']").first
    await expect(row).not_to_have_class("waiting", timeout=WAIT_MS)
    return row


async def test_oem_link_to_test_data_through_the_console(line: Line, site: Site, login: Login) -> None:
    fiona, carla, bob = await login("fiona-factory"), await login("carla-customer"), await login("bob-buyer")
    betty, pete = await login("betty-business"), await login("pete-project")
    audrey, tom = await login("audrey-auditor"), await login("tom-technician")

    # OEM link -> the customer's product.
    link = await _make_link(fiona, site)
    await carla.goto(link)
    await carla.fill("#name", "BrandCo bulb")
    await carla.fill("#model_no", "BC-BULB-1")
    await carla.click("#redeem")
    customer_pid = await carla.locator("#pid").inner_text()
    await shot(carla, "customer-product")
    await go(fiona, "/products?oem=1")
    shown = await pids_listed(fiona)
    every = ok(site, "fiona-factory", "GET", "/v1/products")
    assert shown == {p["pid"] for p in every if p["firmware"] == "oem"}
    assert {customer_pid, ORIGINAL_PID} <= shown
    await go(fiona, "/products")
    await shot(fiona, "products-factory")
    await fiona.check("#only-oem")
    await fiona.click("#filter")
    await shot(fiona, "products-factory-only-oem")

    # A bulk order for the managed customer product.
    certify(site, "fiona-factory")
    grant(site, "bob-buyer", customer_pid)
    await go(bob, "/orders/new")
    assert "a customer you manage" in await bob.locator(f"#orderable tr[data-pid='{customer_pid}']").inner_text()
    await order_form(bob, customer_pid, "bulk", UNITS, "PO-E2E")
    await bob.fill("#delivery_address", "Dock 4\nAcme works")
    await bob.click("#submit")
    order_no = bob.url.rsplit("/", 1)[1]
    await expect(bob.locator("#state")).to_have_attribute("data-state", "intention")
    assert ok(site, "bob-buyer", "GET", f"/v1/orders/{order_no}")["delivery_address"] == "Dock 4\nAcme works"
    await shot(bob, "order-intention")

    # The replacement certificate to the customer's PID: applied for and approved in the console.
    await go(fiona, f"/certificates/apply?original_pid={ORIGINAL_PID}")
    await fiona.fill("input[name=new_pid]", customer_pid)
    await fiona.fill("input[name=quantity]", str(UNITS))
    await fiona.fill("textarea[name=reason]", f"order {order_no} for BrandCo")
    await fiona.click("#submit")
    cert_no = next(
        c["cert_no"] for c in ok(site, "fiona-factory", "GET", "/v1/certificates") if c["new_pid"] == customer_pid
    )
    await go(audrey, "/certificates")
    await audrey.locator(f"tr[data-cert={cert_no}] button[value=approve]").click()
    await expect(audrey.locator(f"tr[data-cert={cert_no}] .status")).to_have_class(re.compile("approved"))
    await go(fiona, f"/orders/{order_no}")
    await step(fiona, "link_certificate", cert_no=cert_no)
    await expect(fiona.locator("#cert")).to_have_text(cert_no)

    # The platform's managers move it along; both payment methods on one order are refused.
    await go(betty, f"/orders/{order_no}")
    await step(betty, "confirm_price", price_cents="300000", currency="EUR")
    await go(pete, f"/orders/{order_no}")
    await step(pete, "confirm_software", software_version="oem-2.4.1")
    await go(betty, f"/orders/{order_no}")
    await step(betty, "sign_contract", contract_no="CT-77")
    await step(betty, "pay", amount_cents="100000", method="online", reference="PSP-1")
    await expect(betty.locator("#state")).to_have_attribute("data-state", "paid")
    await step(betty, "pay", amount_cents="200000", method="offline", reference="BANK-1")
    assert "it was paid online already and one order is paid online or offline, never both" in await error_of(betty)
    assert ok(site, "betty-business", "GET", f"/v1/orders/{order_no}")["paid_cents"] == 100000
    await shot(betty, "order-both-payment-methods-refused")
    await go(pete, f"/orders/{order_no}")
    await step(pete, "start_production")

    # The line: a lease of the certificate by the CLI, then the console's Perform replacement page.
    await asyncio.to_thread(line.lease_to_agent, cert_no, UNITS, "fiona-factory")
    await asyncio.to_thread(line.start_agent)
    await go(tom, "/replace")
    await tom.click(f"a[data-gw='{site.gw}']")
    refused = await _scan(tom, f"{MCU_PREFIX}-00000")
    await expect(refused).to_have_class(re.compile("refused"))
    assert f"its MCU reports PID {OTHER_MCU_PID}" in await refused.inner_text()
    assert "wrong_pid" in await refused.inner_text()
    for n in range(UNITS):
        await expect(await _scan(tom, unit_sn(n))).to_have_class(re.compile("confirmed"))
    await shot(tom, "perform-replacement")
    await _wait_ledger(site, cert_no, UNITS)

    early = await go(bob, f"/orders/{order_no}/test-data.csv")  # before it is published: a page saying so
    assert "its test data is downloadable once the project manager published it" in await error_of(early)
    assert await early.locator("#download-csv").count() == 0
    await go(betty, f"/orders/{order_no}")
    await step(betty, "pay", amount_cents="200000", method="online", reference="PSP-2")
    await go(pete, f"/orders/{order_no}")
    await step(pete, "ship", batches="B1, B2", carrier="DHL", tracking_no="JD0001")
    await step(pete, "publish_test_data")
    await expect(pete.locator("#state")).to_have_attribute("data-state", "test_data")

    # The customer's test data, downloaded from the order page: every unit, and nothing else.
    await go(bob, f"/orders/{order_no}")
    await shot(bob, "order-test-data")
    async with bob.expect_download() as got:
        await bob.click("#download-csv")
    csv_file = await got.value
    rows = list(csv.DictReader(io.StringIO(await asyncio.to_thread(Path(await csv_file.path()).read_text))))
    assert csv_file.suggested_filename == f"{order_no}-test-data.csv"
    assert sorted(r["sn"] for r in rows) == [unit_sn(n) for n in range(UNITS)]
    for r in rows:
        assert (r["old_pid"], r["new_pid"], r["gateway"]) == (ORIGINAL_PID, customer_pid, site.gw)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["rebadged_at"]), r
    assert sorted(int(r["slot"]) for r in rows) == list(range(UNITS))
    async with bob.expect_download() as got_json:
        await bob.click("#download-json")
    json_file = await got_json.value
    units = json.loads(await asyncio.to_thread(Path(await json_file.path()).read_text))
    assert units == ok(site, "bob-buyer", "GET", f"/v1/orders/{order_no}/test-data")  # the API's own answer
    assert {u["sn"] for u in units} == {r["sn"] for r in rows}
    rival = await go(await login("olga-other"), f"/orders/{order_no}/test-data.csv")  # another factory: not revealed
    assert "does not exist in your organisation" in await error_of(rival)

    await go(betty, f"/orders/{order_no}")
    await step(betty, "invoice", invoice_no="INV-9")
    await go(bob, f"/orders/{order_no}")
    await step(bob, "complete")
    await expect(bob.locator("#state")).to_have_attribute("data-state", "completed")
    assert [e["action"] for e in ok(site, "bob-buyer", "GET", f"/v1/orders/{order_no}")["history"]] == [
        "submit", "link_certificate", "confirm_price", "confirm_software", "sign_contract", "pay",
        "start_production", "pay", "ship", "publish_test_data", "invoice", "complete",
    ]  # fmt: skip
    await shot(bob, "order-completed")
    await go(bob, "/orders")
    await shot(bob, "orders-buyer")
