"""The web console in a real browser (headless chromium under Selenium) over the whole
loop: a real heal through real Prometheus, Alertmanager, dockerd and `healer serve` (with
an admin token). The browser logs in, lists heals, filters them, opens the heal (its
timeline steps and the inline SVG chart of its verify samples), reads the rules, pauses
and resumes healing through the page, logs out; and a heal whose label holds a
``<script>`` shows it as text without running it. Each page is saved as a PNG (and into
$HEALER_SCREENSHOTS when set: docs/images/console-*.png come from there)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.env import wait_until
from tests.support.scenarios.loop import Loop
from tests.support.servers.browser import Screenshots

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.prometheus]

RULE = "restart-unhealthy-service"
HOSTILE = "<script>document.title='pwned';window.pwned=1</script>"


def _hostile_heal(loop: Loop) -> str:
    """A manual dry-run heal of the service whose label ``note`` holds a script; its id
    once it ended."""
    response = httpx.post(
        f"{loop.healer.url}/api/v1/heals",
        json={
            "handler": "docker.restart",
            "params": {"containers": [loop.service.name]},
            "labels": {"note": HOSTILE},
            "dry_run": True,
        },
        headers={"Authorization": f"Bearer {loop.admin_token}"},
        timeout=5.0,
    )
    assert response.status_code == 202, response.text
    heal_id: str = response.json()["heal_id"]
    wait_until(
        lambda: loop.heal(heal_id)["outcome"] is not None, timeout=30, what="the manual heal"
    )
    return heal_id


def _wait(driver: webdriver.Chrome, what: str, predicate) -> None:  # type: ignore[no-untyped-def]
    # A click navigates: an element of the page before may go stale while we look.
    wait = WebDriverWait(
        driver, 20, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    wait.until(lambda d: predicate(d), message=what)


def _listed(driver: webdriver.Chrome) -> list[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#heals tr.heal")
    return [row.get_attribute("data-heal") or "" for row in rows]


def test_console_in_a_real_browser(make_loop, browser: webdriver.Chrome, tmp_path: Path) -> None:
    """After a real recovered heal the console, in chromium, shows it through login,
    list, filters, its page (timeline steps, one chart point per verify sample), rules;
    pauses and resumes healing by its forms; and renders a hostile label literally with
    the script not run."""
    loop = make_loop()
    loop.service.break_()
    heal = loop.wait_for_finished_heal()
    assert heal["outcome"] == "recovered", (heal["reason"], loop.healer.log_tail())
    hostile_id = _hostile_heal(loop)
    base = loop.healer.url
    shots = Screenshots(tmp_path / "screenshots")
    driver = browser

    # Not logged in: the console sends the browser to its login form.
    driver.get(f"{base}/ui")
    _wait(driver, "the login page", lambda d: "/ui/login" in d.current_url)
    shots.take(driver, "login")
    driver.find_element(By.ID, "token").send_keys(loop.admin_token)
    driver.find_element(By.ID, "name").send_keys("operator")
    driver.find_element(By.ID, "login").click()
    _wait(driver, "both heals listed", lambda d: set(_listed(d)) == {heal["id"], hostile_id})
    shots.take(driver, "heals")

    # Filters: the rule and the outcome leave the alert's heal only.
    Select(driver.find_element(By.ID, "f-rule")).select_by_value(RULE)
    Select(driver.find_element(By.ID, "f-outcome")).select_by_value("recovered")
    Select(driver.find_element(By.ID, "f-since")).select_by_value("1h")
    driver.find_element(By.ID, "f-apply").click()
    _wait(driver, "the filtered list", lambda d: "outcome=recovered" in d.current_url)
    _wait(driver, "the heal alone listed", lambda d: _listed(d) == [heal["id"]])

    # The heal: its timeline as steps and the verify samples as SVG points.
    driver.find_element(By.CSS_SELECTOR, f'tr[data-heal="{heal["id"]}"] a').click()
    _wait(driver, "the heal page", lambda d: d.find_elements(By.ID, "timeline"))
    kinds = [
        li.get_attribute("data-kind")
        for li in driver.find_elements(By.CSS_SELECTOR, "#timeline li")
    ]
    for kind in ("matched", "check", "act", "verify_start", "verify_sample", "outcome"):
        assert kind in kinds, kinds
    samples = sum(1 for e in heal["timeline"] if e["kind"] == "verify_sample")
    points = driver.find_elements(By.CSS_SELECTOR, "#chart svg circle")
    assert len(points) == samples > 0
    assert driver.find_element(By.ID, "outcome").text == "recovered"
    shots.take(driver, "heal")

    driver.get(f"{base}/ui/rules")
    rule = driver.find_element(By.CSS_SELECTOR, f'section[data-rule="{RULE}"]')
    assert "recovered" in rule.text
    shots.take(driver, "rules")

    # Pause and resume through the page.
    driver.get(f"{base}/ui/safety")
    reason = driver.find_element(By.ID, "pause-reason")
    reason.send_keys("deploy")
    driver.find_element(By.ID, "pause").click()
    _wait(driver, "the pause banner", lambda d: d.find_elements(By.ID, "paused-banner"))
    assert loop.paused()
    assert "deploy" in driver.find_element(By.ID, "paused-banner").text
    shots.take(driver, "paused")
    driver.find_element(By.ID, "resume").click()
    _wait(
        driver,
        "the resumed page",
        lambda d: d.find_elements(By.ID, "pause-form"),  # only a page not paused has it
    )
    assert "not paused" in driver.find_element(By.ID, "pause-state").text
    assert not loop.paused()

    # A hostile label is text: the script did not run.
    driver.get(f"{base}/ui/heals/{hostile_id}")
    _wait(driver, "the hostile heal", lambda d: d.find_elements(By.ID, "labels"))
    assert HOSTILE in driver.find_element(By.ID, "labels").text
    assert driver.execute_script("return window.pwned === undefined") is True
    assert driver.title != "pwned"
    shots.take(driver, "hostile-label")
    driver.get(f"{base}/ui/heals")
    assert driver.execute_script("return window.pwned === undefined") is True
    assert HOSTILE in driver.find_element(By.ID, "heals").text

    # Logout ends the session: the console asks for the token again.
    driver.find_element(By.ID, "logout").click()
    _wait(driver, "the login page", lambda d: "/ui/login" in d.current_url)
    driver.get(f"{base}/ui/rules")
    _wait(driver, "the login page again", lambda d: "next=%2Fui%2Frules" in d.current_url)
    for name in ("login", "heals", "heal", "rules", "paused", "hostile-label"):
        assert (tmp_path / "screenshots" / f"console-{name}.png").stat().st_size > 0
