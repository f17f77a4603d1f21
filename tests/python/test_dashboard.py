"""The status dashboard in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`) driven by Selenium.

Signs in with the admin key, reads the connectors table (a connector named with a `<script>` tag
must show as text), opens a connector (import chart, log link, pause, consent revoke/consent),
runs a Content Search from the search box and signs out. A native connector's page: items
waiting, "Run import now" (result line, chart bar with its failed part, the paused refusal) and
its CSV log fetched in the signed-in session. The page's CSP must not have blocked anything of
its own. Screenshots: target/dashboard-table.png, target/dashboard-connector.png,
target/dashboard-native.png.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import APP_ID, REPO, TENANT, create_item_xml, message_xml

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOTS = REPO / "target"
CONNECTORS = "/api/compliance/connectors"
HOSTILE_NAME = "<script>alert(1)</script> chats"
SESSION_COOKIE = "__Host-ingest-session"


@pytest.fixture
def browser(monkeypatch):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} missing: apt-get install chromium chromium-driver "
                        "(scripts/test does it)")
    # Both paths are given: Selenium Manager has nothing to find, and must not download.
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--ignore-certificate-errors", "--window-size=1280,900",
                     "--no-first-run", "--disable-background-networking"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def admin_json(server, method: str, path: str, body=None) -> dict:
    r = server.admin(method, path, json=body)
    assert r.status_code in (200, 201), (method, path, r.status_code, r.text)
    return r.json()


def wait_for(driver, css: str, timeout: float = 15):
    return WebDriverWait(driver, timeout).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def wait_text(driver, css: str, text: str, timeout: float = 15) -> None:
    WebDriverWait(driver, timeout).until(
        EC.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))


def assert_no_alert(driver) -> None:
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (raises when there is none)


def csp_violations(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]


def seed(server) -> tuple[str, str]:
    """A partner connector for the test app (hostile name) with two imports, and a native one."""
    partner = admin_json(server, "POST", CONNECTORS, {
        "tenant": TENANT, "name": HOSTILE_NAME, "kind": "partner", "appId": APP_ID})
    native = admin_json(server, "POST", CONNECTORS, {
        "tenant": TENANT, "name": "Slack archive", "kind": "Slack"})
    token = server.token()
    for subjects in (["Dashboard quarterly one"],
                     ["Dashboard quarterly two", "Dashboard quarterly three"]):
        r = server.ews(create_item_xml(*(message_xml(subject=s) for s in subjects)), token)
        assert r.status_code == 200, r.text[:2000]
    history = admin_json(server, "GET", f"{CONNECTORS}/{partner['id']}/history")
    assert len(history["value"]) == 2, history
    return partner["id"], native["id"]


def sign_in(driver, server, key: str) -> None:
    field = wait_for(driver, "input[name=key]")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()


def test_dashboard_in_a_browser(server, browser):
    partner_id, native_id = seed(server)
    SCREENSHOTS.mkdir(exist_ok=True)

    # Sign-in: a wrong key is refused on the form, the right one opens the dashboard.
    browser.get(server.base_url + "/")
    sign_in(browser, server, "not-the-key")
    wait_text(browser, "#signin-error", "The admin key is not valid.")
    sign_in(browser, server, server.admin_key)
    wait_for(browser, "#connectors tbody tr")
    cookie = browser.get_cookie(SESSION_COOKIE)
    assert cookie and cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert server.admin_key not in cookie["value"]

    # The table: both connectors; the hostile name is text, not a script.
    rows = {row.get_attribute("data-id"): [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#connectors tbody tr")}
    assert set(rows) == {partner_id, native_id}
    assert rows[partner_id][:3] == [HOSTILE_NAME, "partner", "Active"]
    assert rows[partner_id][3].endswith("ago") or rows[partner_id][3] == "just now"
    assert rows[partner_id][4:] == ["3", "0", "—"]
    assert rows[native_id] == ["Slack archive", "Slack", "Active", "never", "0", "0", "0"]
    assert browser.execute_script("return document.scripts.length") == 1
    assert_no_alert(browser)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-table.png"))

    # A connector: chart of its two imports, log link, details.
    browser.find_element(By.LINK_TEXT, HOSTILE_NAME).click()
    wait_for(browser, "#chart g.bar")
    assert browser.find_element(By.TAG_NAME, "h1").text == HOSTILE_NAME
    bars = browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")
    assert len(bars) == 2
    heights = [float(r.get_attribute("height"))
               for r in browser.find_elements(By.CSS_SELECTOR, "#chart rect.imported")]
    assert len(heights) == 2 and heights[1] == pytest.approx(2 * heights[0])
    log = browser.find_element(By.ID, "log")
    assert log.get_attribute("href") == f"{server.base_url}{CONNECTORS}/{partner_id}/log"
    assert_no_alert(browser)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-connector.png"))

    # Pause, then revoke and give consent again: each through the API with the CSRF token.
    browser.find_element(By.ID, "pause").click()
    wait_text(browser, ".details .state", "Paused")
    assert browser.find_element(By.ID, "pause").text == "Resume"
    assert admin_json(server, "GET", f"{CONNECTORS}/{partner_id}")["paused"] is True
    wait_for(browser, "#revoke").click()
    wait_text(browser, ".details .state", "ConsentRevoked")
    r = server.admin("GET", f"/api/tenants/{TENANT}/servicePrincipals/{APP_ID}")
    assert r.status_code == 404, r.text
    wait_for(browser, "#consent").click()
    wait_text(browser, ".details .state", "Paused")
    assert server.admin("GET", f"/api/tenants/{TENANT}/servicePrincipals/{APP_ID}").ok

    # Content Search from the search box.
    browser.find_element(By.LINK_TEXT, "Search").click()
    query = wait_for(browser, "#query")
    query.send_keys('subject:"Dashboard quarterly"')
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    wait_text(browser, "#hit-count", "3 items match")
    subjects = sorted(td.text for td in browser.find_elements(
        By.CSS_SELECTOR, "#results tbody tr td:first-child"))
    assert subjects == ["Dashboard quarterly one", "Dashboard quarterly three",
                        "Dashboard quarterly two"]
    first = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")[0]
    cells = [td.text for td in first.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "contoso@twitter.example"
    assert cells[2].startswith("alice@contoso.com / ")
    # A KQL syntax error is shown, not thrown away.
    query.clear()
    query.send_keys('subject:"unclosed')
    browser.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    WebDriverWait(browser, 15).until(
        lambda d: d.find_element(By.ID, "status").text.strip() != "")

    assert csp_violations(browser) == []

    # Sign-out ends the session: the old cookie no longer opens the admin API.
    old = browser.get_cookie(SESSION_COOKIE)["value"]
    browser.find_element(By.ID, "signout").click()
    wait_for(browser, "input[name=key]")
    assert browser.get_cookie(SESSION_COOKIE) is None
    with server.session() as s:
        r = s.get(server.base_url + CONNECTORS, headers={"Cookie": f"{SESSION_COOKIE}={old}"},
                  timeout=30)
    assert r.status_code == 401, r.text


def slack_item(item_id: str, subject: str, participants: list[str]) -> dict:
    return {"id": item_id, "from": "alice@contoso.com", "to": ["bob@contoso.com"],
            "subject": subject, "body": "hi", "date": "2026-11-20T10:00:00Z",
            "email": participants}


def detail(driver, term: str) -> str:
    """The value of `term` in the connector's details list."""
    return driver.find_element(
        By.XPATH, f"//dl[@class='details']/dt[.='{term}']/following-sibling::dd[1]").text


def test_native_connector_import_in_a_browser(server, browser):
    native = admin_json(server, "POST", CONNECTORS, {
        "tenant": TENANT, "name": "Slack archive", "kind": "Slack"})
    # Two items: alice and bob map to users, the stranger to nobody (failed, UserNotMapped).
    stranger = "stranger@else.example"
    r = server.admin("POST", f"{CONNECTORS}/{native['id']}/staging", json=[
        slack_item("s-1", "hello", ["alice@contoso.com", "bob@contoso.com", stranger]),
        slack_item("s-2", "again", ["alice@contoso.com", stranger]),
    ])
    assert r.status_code == 202, r.text
    assert r.json() == {"stagedItems": 2, "pendingItems": 2}
    SCREENSHOTS.mkdir(exist_ok=True)
    browser.set_window_size(1280, 1300)  # the whole page in the screenshot, chart and history

    browser.get(server.base_url + "/")
    sign_in(browser, server, server.admin_key)
    row = wait_for(browser, f"#connectors tr[data-id='{native['id']}']")
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")][-1] == "2"

    # The page: items waiting, next import (by default in 24 hours), no import yet.
    browser.find_element(By.LINK_TEXT, "Slack archive").click()
    wait_for(browser, "#run")
    assert detail(browser, "Items waiting") == "2"
    assert re.match(r"in (23 hours|1 day) \(", detail(browser, "Next import"))
    assert detail(browser, "Last import") == "never"
    assert browser.find_elements(By.CSS_SELECTOR, "#chart g.bar") == []

    # Run import now: the result line, nothing left waiting, one bar (imported and failed).
    browser.find_element(By.ID, "run").click()
    wait_text(browser, "#notice", "Imported 3, partially 0, skipped 0, failed 2.")
    wait_for(browser, "#chart g.bar")
    assert detail(browser, "Items waiting") == "0"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")) == 1
    imported = browser.find_element(By.CSS_SELECTOR, "#chart rect.imported")
    failed = browser.find_element(By.CSS_SELECTOR, "#chart rect.failed")
    assert float(imported.get_attribute("height")) == pytest.approx(
        1.5 * float(failed.get_attribute("height")))
    assert failed.value_of_css_property("fill") == "rgb(196, 50, 47)"  # --failed, red
    assert browser.find_elements(By.CSS_SELECTOR, "#chart rect.partial, #chart rect.skipped") == []
    assert_no_alert(browser)
    browser.save_screenshot(str(SCREENSHOTS / "dashboard-native.png"))

    # The log link, fetched with the session cookie: the CSV with the stranger's failures.
    href = browser.find_element(By.ID, "log").get_attribute("href")
    assert href == f"{server.base_url}{CONNECTORS}/{native['id']}/log"
    fetched = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch(arguments[0], { credentials: 'same-origin' })
          .then(async (r) => done({ status: r.status, type: r.headers.get('Content-Type'),
                                    disposition: r.headers.get('Content-Disposition'),
                                    text: await r.text() }))
          .catch((e) => done({ error: String(e) }));
    """, href)
    assert fetched.get("status") == 200, fetched
    assert fetched["type"].startswith("text/csv")
    assert fetched["disposition"].startswith("attachment")
    assert fetched["text"].startswith("Record type,Import completion time (UTC)")
    records = list(csv.reader(io.StringIO(fetched["text"])))
    failures = [rec for rec in records if rec[0] == "Failed item"]
    assert len(failures) == 2, records
    assert all(stranger in rec for rec in failures), failures
    assert sorted(rec[9] for rec in failures) == ["s-1", "s-2"]

    # Again: nothing was waiting, no new bar.
    browser.find_element(By.ID, "run").click()
    wait_text(browser, "#notice", "Nothing was waiting.")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart g.bar")) == 1

    # Paused: the API's refusal (409) is shown as text, and the result line goes.
    browser.find_element(By.ID, "pause").click()
    wait_text(browser, ".details .state", "Paused")
    assert detail(browser, "Next import") == "not while paused"
    browser.find_element(By.ID, "run").click()
    wait_text(browser, "#status", "is paused")
    assert browser.find_element(By.ID, "notice").text == ""
    assert len(server.admin("GET", f"{CONNECTORS}/{native['id']}/history").json()["value"]) == 1

    assert csp_violations(browser) == []
