"""The console in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against the app served by uvicorn. An operator logs in, finds a dead job,
retries it and sees it pending; a form sent without its CSRF token is refused; every page is
saved as a screenshot under test-output/screenshots/.

Without chromium and chromium-driver the tests are skipped, with the reason; with
REQUIRE_BROWSER=1 (CI) their absence is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SECRET
from tests.security.conftest import serving
from zoho_moodle_sync.api.app import create_app
from zoho_moodle_sync.db.session import Database
from zoho_moodle_sync.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"


@pytest.fixture
def chrome() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        missing = "chromium" if CHROMIUM is None else "chromium-driver (chromedriver)"
        reason = f"{missing} is not installed (Debian: apt-get install chromium chromium-driver)"
        if REQUIRED:
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1366,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def console_url(settings: Settings, db: Database) -> Iterator[str]:
    with serving(create_app(settings, db)) as base:
        yield base


def shoot(driver: Any, name: str, backend: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}-{backend}.png"))


def shown(driver: Any, by: str, value: str, text: str) -> str:
    """The text of the element once it holds `text` (after a click, the browser may still show
    the page it is leaving)."""
    from selenium.common.exceptions import (
        NoSuchElementException,
        StaleElementReferenceException,
        WebDriverException,
    )
    from selenium.webdriver.support.ui import WebDriverWait

    def holds(current: Any) -> str | None:
        try:
            found: str = current.find_element(by, value).text
        except WebDriverException as error:
            # Chromium's driver sometimes reports an element of the page being left as this
            # rather than as a stale element: the same thing, so wait for the next page.
            if "does not belong to the document" not in str(error.msg):
                raise
            return None
        return found if text in found else None

    waiting = WebDriverWait(
        driver, 15, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )
    result: str = waiting.until(holds, message=f"{text!r} never appeared in {value}")
    return result


def log_in(driver: Any, base: str, backend: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/ui/")
    assert driver.current_url == f"{base}/ui/login"
    shoot(driver, "01-login", backend)
    driver.find_element(By.ID, "token").send_keys(TEST_SECRET)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    shown(driver, By.TAG_NAME, "h1", "overview")


def test_an_operator_logs_in_retries_a_dead_job_and_sees_it_pending(
    chrome: Any, console_url: str, console_college: dict[str, Any], backend: str
) -> None:
    from selenium.webdriver.common.by import By

    dead, world = console_college["dead"], console_college["world"]
    log_in(chrome, console_url, backend)
    shoot(chrome, "02-overview", backend)

    chrome.find_element(By.LINK_TEXT, "Jobs").click()
    shown(chrome, By.ID, f"job-{dead.id}", "Invalid parameter value detected")
    row = chrome.find_element(By.ID, f"job-{dead.id}")
    assert "dead" in row.text
    shoot(chrome, "03-dead-jobs", backend)
    row.find_element(By.TAG_NAME, "button").click()

    shown(chrome, By.CLASS_NAME, "flash", f"job {dead.id} is pending again")
    chrome.get(f"{console_url}/ui/jobs?tenant=default&state=pending")
    assert "pending" in chrome.find_element(By.ID, f"job-{dead.id}").text
    shoot(chrome, "04-pending-after-retry", backend)

    pages = {
        "05-held-jobs": "/ui/jobs?state=held",
        "06-parked": "/ui/parked",
        "07-events": f"/ui/events?zoho_id={dead.zoho_id}",
        "08-record-refused": f"/ui/records/students/{dead.zoho_id}",
        "09-record-parked": f"/ui/records/enrollments/{console_college['parked']['id']}",
        "10-record-in-moodle": f"/ui/records/enrollments/{world.enrollments[0]['id']}",
    }
    for name, path in pages.items():
        chrome.get(f"{console_url}{path}")
        assert chrome.find_element(By.TAG_NAME, "h1").text, name
        shoot(chrome, name, backend)
    assert "is in" in chrome.find_element(By.ID, "verdict").text


def test_a_form_posted_without_its_csrf_token_is_refused_in_the_browser(
    chrome: Any, console_url: str, console_college: dict[str, Any], backend: str
) -> None:
    from selenium.webdriver.common.by import By

    dead = console_college["dead"]
    log_in(chrome, console_url, backend)
    chrome.get(f"{console_url}/ui/jobs?tenant=default&state=dead")
    row = chrome.find_element(By.ID, f"job-{dead.id}")
    chrome.execute_script("arguments[0].remove()", row.find_element(By.NAME, "csrf"))
    row.find_element(By.TAG_NAME, "button").click()

    shown(chrome, By.TAG_NAME, "main", "security token is missing")
    shoot(chrome, "11-csrf-refused", backend)
    chrome.get(f"{console_url}/ui/jobs?tenant=default&state=dead")
    assert "dead" in chrome.find_element(By.ID, f"job-{dead.id}").text
