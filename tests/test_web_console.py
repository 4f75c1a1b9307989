"""The web console in Debian's chromium (Playwright, `executable_path`; no browser is downloaded): a real
`rebadge cloud serve` on a private mosquitto, a real agent and simulated Wi-Fi goods (tests/console_support.py).
Every page visited is kept as a screenshot under test-output/console/."""

from __future__ import annotations

import asyncio
import http.client
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from click.testing import CliRunner, Result
from playwright.async_api import Browser, Page, async_playwright, expect

from cloud_bridge.console.auth import COOKIE, CSRF_FIELD
from rebadge.cli import main
from tests.console_login import form_token
from tests.console_support import (
    CHROMIUM,
    PASSWORD,
    PEOPLE,
    QUOTA,
    Site,
    log_in,
    nav_labels,
    running_site,
    shot,
    unit_sn,
)
from tests.helpers import NEW_PID, ORIGINAL_PID

# One platform, agent and browser for the module; its tests run on one event loop, as the browser needs.
pytestmark = pytest.mark.asyncio(loop_scope="module")

RESULT_MS = 20_000  # a scan's answer shows within this (the unknown SN waits out the agent's find timeout)
COUNTED_S = 20.0  # the platform counts a confirmed unit within this (the agent's batch, ingest)
SHARED = ["Products", "Orders"]  # cloud_bridge/console/product_pages, order_pages: all but the purchase staff
EVERY_PAGE = ["Certificates", "Perform replacement", "Gateways", "Anomalies", *SHARED]
STAFF_NAV = ["Certificates", "Gateways", "Anomalies", *SHARED]
# What each role's navigation shows, and a page it may not open (with {gw} / {other_gw} filled in).
ROLES = {
    "first admin": (STAFF_NAV, "/console/replace"),
    "audrey-auditor": (STAFF_NAV, "/console/certificates/apply"),
    "fiona-factory": (EVERY_PAGE, "/console/replace/{other_gw}"),
    "tom-technician": (["Certificates", "Perform replacement", "Gateways", *SHARED], "/console/anomalies"),
    "bob-buyer": (SHARED, "/console/certificates"),
    "olga-other": (EVERY_PAGE, "/console/replace/{gw}"),
    "carla-customer": (["Certificates", "Products", "Open an OEM link", "Orders"], "/console/gateways"),
    # The purchase module's staff: orders only (they see no organisation's products or certificates).
    "bea-business": (["Orders"], "/console/gateways"),
    "pat-project": (["Orders"], "/console/certificates"),
}
CREDENTIAL_COLUMNS = [
    "Original PID", "New PID", "Replaced quantity/Total", "Audit status", "Certificate NO.", "Applicant", "Operation",
]  # fmt: skip
SESSION_COOKIE = "rebadge_session"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("web-console")) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        await chromium.close()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


async def _csrf(page: Page) -> str:
    return await page.locator("input[name=csrf]").first.get_attribute("value") or ""


async def _row(page: Page, cert_no: str) -> dict[str, str]:
    cells = await page.locator(f"#credentials tr[data-cert='{cert_no}'] td").all_inner_texts()
    return dict(zip(CREDENTIAL_COLUMNS, (c.strip() for c in cells), strict=True))


def _certificates(site: Site, account: str) -> list[dict[str, object]]:
    status, rows = site.api(account, "GET", "/v1/certificates")
    assert status == 200, rows
    return list(rows)


async def _status(page: Page, path: str) -> int:
    answer = await page.goto(path)
    assert answer is not None
    return answer.status


@pytest.mark.parametrize("name", list(ROLES))
async def test_each_role_sees_its_navigation_and_is_refused_a_page_outside_it(
    site: Site, browser: Browser, name: str
) -> None:
    expected_nav, forbidden = ROLES[name]
    context, page = await log_in(browser, site, name)
    try:
        assert page.url == f"{site.url}/console/", await page.content()
        await expect(page.locator("#who")).to_have_text(f"{name} · {PEOPLE[name][0].value}")
        assert await nav_labels(page) == expected_nav
        await shot(page, f"{_slug(name)}-home")
        links = [(await a.inner_text(), await a.get_attribute("href")) for a in await page.locator("nav a").all()]
        for label, href in links:
            assert await _status(page, href or "") == 200, f"{name}: {label}"
            assert await page.locator("#error").count() == 0, await page.locator("#error").inner_text()
            await shot(page, f"{_slug(name)}-{_slug(label)}")
        assert await _status(page, forbidden.format(gw=site.gw, other_gw=site.other_gw)) in (403, 404)
        await expect(page.locator("#error")).to_be_visible()
        await shot(page, f"{_slug(name)}-refused")
    finally:
        await context.close()


async def _apply(page: Page, quantity: str) -> None:
    await page.fill("input[name=new_pid]", NEW_PID)
    await page.fill("input[name=quantity]", quantity)
    await page.fill("textarea[name=reason]", "brandco's spring batch")
    await page.click("#submit")


async def test_a_factory_applies_and_an_auditor_approves_and_rejects_with_a_comment(
    site: Site, browser: Browser
) -> None:
    fiona, page = await log_in(browser, site, "fiona-factory")
    try:
        await page.goto("/console/certificates?tab=products")
        products = await page.locator("#replaceable tbody tr").all_inner_texts()
        assert any(ORIGINAL_PID in p for p in products)
        assert any(NEW_PID in p for p in products)
        assert not any("PROTO-1" in p for p in products), "a product in development is not replaceable"
        await shot(page, "factory-replaceable-products")
        await page.locator("#replaceable tr", has_text=ORIGINAL_PID).get_by_role("link").click()
        await expect(page.locator("input[name=original_pid]")).to_have_value(ORIGINAL_PID)
        before = len(_certificates(site, "fiona-factory"))
        await _apply(page, "lots")
        await expect(page.locator("#error")).to_contain_text("quantity")
        await expect(page.locator("input[name=original_pid]")).to_have_value(ORIGINAL_PID)  # nothing typed is lost
        await shot(page, "factory-apply-refused")
        assert len(_certificates(site, "fiona-factory")) == before
        applied = []
        for quantity in ("7", "3"):
            await page.goto(f"/console/certificates/apply?original_pid={ORIGINAL_PID}")
            await _apply(page, quantity)
            await page.wait_for_url(re.compile(r"applied="))
            applied.append(page.url.rsplit("=", 1)[1])
        await page.goto("/console/certificates")
        assert await page.locator("#credentials th").all_inner_texts() == CREDENTIAL_COLUMNS
        row = await _row(page, applied[0])
        assert (row["Replaced quantity/Total"], row["Audit status"], row["Applicant"]) == (
            "0/7", "Pending approval", "fiona-factory",
        )  # fmt: skip
        assert await page.locator("form.audit").count() == 0, "a factory admin does not audit"
        await shot(page, "factory-credentials-pending")
    finally:
        await fiona.close()

    audrey, page = await log_in(browser, site, "audrey-auditor")
    comment = "<script>window.__xss = 1</script> the new PID is <b>not</b> brandco's"
    try:
        await page.goto("/console/certificates")
        await shot(page, "auditor-credentials-pending")
        approve, reject = (page.locator(f"tr[data-cert='{no}'] form.audit") for no in applied)
        await approve.locator("input[name=comment]").fill("spring batch checked")
        await approve.get_by_role("button", name="Approve").click()
        await expect(page.locator(f"tr[data-cert='{applied[0]}'] td.status")).to_contain_text("Approved")
        await reject.get_by_role("button", name="Reject").click()  # without a comment
        await expect(page.locator("#error")).to_contain_text("a rejection needs a comment")
        assert (await _row(page, applied[1]))["Audit status"] == "Pending approval"
        await reject.locator("input[name=comment]").fill(comment)
        await reject.get_by_role("button", name="Reject").click()
        await expect(page.locator(f"tr[data-cert='{applied[1]}'] td.status small")).to_have_text(comment)
        assert await page.evaluate("window.__xss") is None, "the comment ran as a script"
        assert await page.locator("#credentials td.status b").count() == 0
        assert (await _row(page, applied[0]))["Audit status"] == "Approved\nspring batch checked"
        await shot(page, "auditor-credentials-decided")
    finally:
        await audrey.close()
    by_no = {c["cert_no"]: c for c in _certificates(site, "audrey-auditor")}
    assert (by_no[applied[0]]["status"], by_no[applied[1]]["status"]) == ("approved", "rejected")
    assert by_no[applied[1]]["audit_comment"] == comment


async def test_a_form_post_without_or_with_a_wrong_csrf_token_is_refused_and_changes_nothing(
    site: Site, browser: Browser
) -> None:
    context, page = await log_in(browser, site, "fiona-factory")
    try:
        token = await _csrf(page)
        form: dict[str, str | float | bool] = {
            "original_pid": ORIGINAL_PID, "new_pid": NEW_PID, "quantity": "2", "reason": "csrf",
        }  # fmt: skip
        before = len(_certificates(site, "fiona-factory"))
        wrong: list[dict[str, str | float | bool]] = [{}, {"csrf": "x" * len(token)}, {"csrf": ""}]
        for sent in wrong:
            answer = await context.request.post("/console/certificates/apply", form=form | sent, max_redirects=0)
            assert answer.status == 403
            assert "CSRF token" in await answer.text()
        assert len(_certificates(site, "fiona-factory")) == before
        scans = site.api("fiona-factory", "GET", f"/v1/gateways/{site.gw}/scans")[1]
        answer = await context.request.post(f"/console/replace/{site.gw}", form={"sn": unit_sn(2)}, max_redirects=0)
        assert answer.status == 403
        assert site.api("fiona-factory", "GET", f"/v1/gateways/{site.gw}/scans")[1] == scans, "a scan went out"
        answer = await context.request.post("/console/logout", form={"csrf": "wrong"}, max_redirects=0)
        assert answer.status == 403
        assert await _status(page, "/console/certificates") == 200  # still logged in
        # The same post with the session's token goes through: the token is what was refused.
        answer = await context.request.post("/console/certificates/apply", form=form | {"csrf": token}, max_redirects=0)
        assert answer.status == 303
        assert len(_certificates(site, "fiona-factory")) == before + 1
    finally:
        await context.close()


async def test_the_session_cookie_is_httponly_and_samesite_and_logout_ends_the_session(
    site: Site, browser: Browser
) -> None:
    context, page = await log_in(browser, site, "tom-technician")
    try:
        (cookie,) = [c for c in await context.cookies() if c.get("name") == SESSION_COOKIE]
        assert (cookie.get("httpOnly"), cookie.get("sameSite"), cookie.get("path")) == (True, "Strict", "/console")
        assert SESSION_COOKIE not in await page.evaluate("document.cookie")
        answer = await page.goto("/console/gateways")
        assert answer is not None
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-frame-options"] == "DENY"
        await page.click("#logout")
        await expect(page.locator("#notice")).to_have_text("you are logged out")
        await shot(page, "logged-out")
    finally:
        await context.close()
    copied = await browser.new_context(base_url=site.url)  # the cookie, copied before the logout
    try:
        await copied.add_cookies([{"name": SESSION_COOKIE, "value": cookie.get("value", ""), "url": site.url}])
        page = await copied.new_page()
        assert await _status(page, "/console/gateways") == 401
        await expect(page.locator("#error")).to_contain_text("session has ended")
        assert await page.locator("#gateways").count() == 0
    finally:
        await copied.close()


def _login_cookie(site: Site, headers: dict[str, str]) -> str:
    host, port = site.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/console/login", headers=headers)
        page = connection.getresponse()
        login_cookie = (page.getheader("set-cookie") or "").split(";")[0]
        token = form_token(page.read().decode())
        body = urllib.parse.urlencode({"username": "tom-technician", "password": PASSWORD, CSRF_FIELD: token})
        form = {"Content-Type": "application/x-www-form-urlencoded", "Cookie": login_cookie}
        connection.request("POST", "/console/login", body, form | headers)
        answer = connection.getresponse()
        assert answer.status == 303
        session = [c for c in answer.headers.get_all("set-cookie") or [] if c.startswith(f"{COOKIE}=")]
        return session[0]
    finally:
        connection.close()


async def test_the_cookie_is_secure_behind_a_local_tls_proxy(site: Site) -> None:
    """A TLS proxy on the platform's host says so in X-Forwarded-Proto, which uvicorn trusts from loopback."""
    proxied = await asyncio.to_thread(_login_cookie, site, {"X-Forwarded-Proto": "https"})
    plain = await asyncio.to_thread(_login_cookie, site, {})
    assert "; secure" in proxied.lower()
    assert "; secure" not in plain.lower()
    assert "httponly" in plain.lower()


async def _try_login(page: Page, name: str, password: str) -> int:
    await page.goto("/console/login")
    await page.fill("#username", name)
    await page.fill("#password", password)
    async with page.expect_response(lambda r: r.request.method == "POST") as posted:
        await page.click("#login")
    return (await posted.value).status


async def test_the_login_throttle_refuses_a_name_after_five_failures_even_with_the_right_password(
    site: Site, browser: Browser
) -> None:
    context = await browser.new_context(base_url=site.url)
    try:
        page = await context.new_page()
        for name, password in [("tina-throttled", f"wrong {n}") for n in range(5)] + [("nobody-at-all", PASSWORD)]:
            assert await _try_login(page, name, password) == 401
            # A wrong name reads as a wrong password: the form does not tell which accounts exist.
            await expect(page.locator("#error")).to_contain_text("user name or password is wrong")
        assert await _try_login(page, "tina-throttled", PASSWORD) == 429
        await expect(page.locator("#error")).to_contain_text("too many failed logins")
        await shot(page, "login-throttled")
        assert [c for c in await context.cookies() if c.get("name") == SESSION_COOKIE] == []
    finally:
        await context.close()
    other, page = await log_in(browser, site, "tom-technician")  # another name is not held up
    try:
        assert await page.locator("#who").count() == 1
    finally:
        await other.close()


async def _result(page: Page, sn: str, nth: int = 0) -> list[str]:
    row = page.locator(f"#results tr[data-sn='{sn}']").nth(-1 - nth)  # newest first: the first sent is last
    await expect(row.locator("td.result")).not_to_have_text("SENT, WAITING", timeout=RESULT_MS)
    cells = await row.locator("td").all_inner_texts()
    return cells[2:5]


async def _send(page: Page, sn: str) -> None:
    await page.fill("#sn", sn)
    await page.press("#sn", "Enter")
    await page.wait_for_load_state()


async def test_perform_replacement_sends_typed_sns_to_the_gateway_and_shows_each_result_live(
    site: Site, browser: Browser
) -> None:
    context, page = await log_in(browser, site, "tom-technician")
    try:
        await page.goto("/console/replace")
        await shot(page, "replace-choose-gateway")
        await page.click(f"a[data-gw='{site.gw}']")
        await expect(page.locator("#results tr.empty")).to_be_visible()
        await _send(page, unit_sn(0))
        word, reason, message = await _result(page, unit_sn(0))
        assert (word, reason) == ("OK", ""), message
        assert f"now {NEW_PID}" in message
        await _send(page, unit_sn(0))
        word, reason, message = await _result(page, unit_sn(0), nth=1)
        assert (word, reason) == ("DONE", "already_rebadged"), message
        assert "now" not in message, "nothing changed on a unit rebadged already"
        await _send(page, "LAMP-09999")  # no such unit on the line: the agent's radios do not find it
        word, reason, message = await _result(page, "LAMP-09999")
        assert (word, reason) == ("REFUSED", "not_found"), message
        await shot(page, "replace-results")
        await _send(page, "<b>no sn</b>")
        await expect(page.locator("#error")).to_contain_text("<b>no sn</b>")
        assert await page.locator("#error b").count() == 0
        assert await page.locator("#results tr[data-sn='<b>no sn</b>']").count() == 0, "a non-SN was sent"
        await shot(page, "replace-refused-sn")
        deadline = time.monotonic() + COUNTED_S
        while True:  # the credential table counts the unit once the gateway's signed records are verified
            await page.goto("/console/certificates")
            replaced = (await _row(page, site.cert_no))["Replaced quantity/Total"]
            if replaced == f"1/{QUOTA}" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
        assert replaced == f"1/{QUOTA}", site.log_tail("agent")
        await shot(page, "technician-credentials-replaced")
    finally:
        await context.close()


async def test_another_factory_can_neither_see_nor_scan_on_a_gateway_or_certificate_not_its_own(
    site: Site, browser: Browser
) -> None:
    scans_before = site.api("tom-technician", "GET", f"/v1/gateways/{site.gw}/scans")[1]
    context, page = await log_in(browser, site, "olga-other")
    try:
        await page.goto("/console/certificates")
        shown = await page.locator("#credentials tr[data-cert]").evaluate_all("rs => rs.map(r => r.dataset.cert)")
        assert site.other_cert_no in shown
        assert site.cert_no not in shown
        await page.goto("/console/replace")
        assert await page.locator("a[data-gw]").evaluate_all("as => as.map(a => a.dataset.gw)") == [site.other_gw]
        assert await _status(page, f"/console/replace/{site.gw}") == 404
        await expect(page.locator("#error")).to_contain_text("not registered in your organisation")
        await page.goto(f"/console/replace/{site.other_gw}")
        token = await _csrf(page)
        answer = await context.request.post(
            f"/console/replace/{site.gw}", form={"sn": unit_sn(1), "csrf": token}, max_redirects=0
        )
        assert answer.status == 404
        answer = await context.request.get(f"/console/replace/{site.gw}/results")
        assert answer.status == 404
        assert unit_sn(0) not in await answer.text()
        answer = await context.request.post(
            f"/console/certificates/{site.cert_no}/audit", form={"decision": "approve", "csrf": token}
        )
        assert answer.status == 403
    finally:
        await context.close()
    status, _ = site.api("olga-other", "POST", f"/v1/gateways/{site.gw}/scans", {"sn": unit_sn(1)})
    assert status == 404
    assert site.api("tom-technician", "GET", f"/v1/gateways/{site.gw}/scans")[1] == scans_before, "a scan went out"
    carla, page = await log_in(browser, site, "carla-customer")
    try:
        await page.goto("/console/certificates")
        assert await page.locator("#credentials tr[data-cert]").count() == 0  # no product of hers is on them
    finally:
        await carla.close()


async def test_a_revoked_gateway_is_offered_no_more_and_a_scan_to_it_is_refused(site: Site, browser: Browser) -> None:
    status, _ = site.api("olga-other", "POST", f"/v1/gateways/{site.other_gw}/revoke")
    assert status == 200
    context, page = await log_in(browser, site, "olga-other")
    try:
        await page.goto("/console/replace")
        assert await page.locator("a[data-gw]").count() == 0
        await page.goto("/console/certificates")
        token = await _csrf(page)
        answer = await context.request.post(
            f"/console/replace/{site.other_gw}", form={"sn": unit_sn(1), "csrf": token}, max_redirects=0
        )
        assert answer.status == 409
        assert "is revoked" in await answer.text()
    finally:
        await context.close()


async def test_a_malformed_gateway_id_in_the_polled_rows_is_shown_as_text(site: Site, browser: Browser) -> None:
    context, _ = await log_in(browser, site, "tom-technician")
    try:
        answer = await context.request.get("/console/replace/<img src=x onerror=alert(1)>/results")
        assert answer.status == 422
        text = await answer.text()
        assert "<img" not in text
        assert "&lt;img" in text
    finally:
        await context.close()


def _set_password(site: Site, password: str) -> Result:
    # In a thread: the command runs its own event loop, as from a shell.
    args = ["cloud", "account", "set-password", "bob-buyer", "--as", "first admin",
            "--data-dir", str(site.workdir / "platform"), "--password-stdin"]  # fmt: skip
    return CliRunner().invoke(main, args, input=password + "\n")


async def test_set_password_gives_a_new_password_ends_sessions_and_refuses_a_short_one(
    site: Site, browser: Browser
) -> None:
    context, page = await log_in(browser, site, "bob-buyer")
    new = "a whole new sentence for bob"
    try:
        short = await asyncio.to_thread(_set_password, site, "short")
        assert short.exit_code != 0
        assert "password must be 12 to 256 characters" in short.output
        assert isinstance(short.exception, SystemExit), "a user's mistake ends in a message, not a traceback"
        done = await asyncio.to_thread(_set_password, site, new)
        assert done.exit_code == 0, done.output
        assert "console password of account" in done.output
        assert await _status(page, "/console/") == 401, "the old session outlived the new password"
    finally:
        await context.close()
    for password, logged_in in ((PASSWORD, False), (new, True)):
        context, page = await log_in(browser, site, "bob-buyer", password)
        try:
            assert (await page.locator("#who").count() == 1) is logged_in
        finally:
            await context.close()
