"""The page at / in a real headless Chromium (Debian's chromium and chromedriver, `make browser`), against tests/conftest.py's live server.

Fills the form, submits, waits for the plot, checks the layers shown and that the console
stayed clean, and saves a screenshot (``TENSORINIT_SCREENSHOT=docs/page.png`` writes the
README's; otherwise it goes to the test's temporary directory).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from service.api.app import create_app
from service.api.settings import Settings
from tests.conftest import LiveServer, start_server, stop_server


def _fill(driver: Any, name: str, value: str) -> None:
    field = driver.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def _drawn_or_failed(driver: Any) -> bool:
    ready = driver.execute_script(
        "const img = document.querySelector('#plot'), h = document.querySelector('#histogram');"
        "return document.body.dataset.layers !== undefined && img.complete && img.naturalWidth > 0 && h.complete && h.naturalWidth > 0;"
    )
    return bool(ready) or "error" in driver.find_element(By.ID, "status").get_attribute("class")


def test_page_draws_the_network(live_server: LiveServer, browser: Any, tmp_path: Path) -> None:
    browser.get(live_server.url + "/")
    assert browser.title == "tensorinit · signal propagation"
    Select(browser.find_element(By.NAME, "activation")).select_by_visible_text("tanh")
    _fill(browser, "depth", "16")
    _fill(browser, "width", "256")
    _fill(browser, "batch", "256")
    _fill(browser, "layer", "3")
    for box in browser.find_elements(By.NAME, "scheme"):
        if box.get_attribute("value") in ("lecun_normal", "orthogonal") and not box.is_selected():
            box.click()
    browser.find_element(By.CSS_SELECTOR, "#network button").click()
    WebDriverWait(browser, 120).until(_drawn_or_failed)
    status = browser.find_element(By.ID, "status")
    assert "error" not in (status.get_attribute("class") or ""), status.text
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-layers") == "16"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#layers tbody tr")) == 16
    verdicts = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#verdicts tbody tr")]
    assert [v.split()[0] for v in verdicts] == ["he_normal", "glorot_normal", "lecun_normal", "orthogonal"]
    assert "layers.3.weight" in browser.find_element(By.ID, "hist-title").text
    numbers = browser.find_element(By.ID, "hist-numbers").text
    assert "std (theory)" in numbers
    assert "sha256" in numbers
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    shot = Path(os.environ.get("TENSORINIT_SCREENSHOT") or tmp_path / "page.png")
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


KEY = "browser-page-key"


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    """The shared launcher's server, with an API key (the session-wide live_server has none)."""
    live = start_server(create_app(Settings(api_keys=KEY)))
    try:
        yield live
    finally:
        stop_server(live)


def test_page_takes_the_key_when_the_server_needs_one(keyed_server: LiveServer, browser: Any) -> None:
    # The page and its files open without a key; its calls carry the one typed into it.
    browser.get(keyed_server.url + "/")
    assert browser.title == "tensorinit · signal propagation"
    _fill(browser, "depth", "4")
    _fill(browser, "width", "32")
    _fill(browser, "batch", "16")
    button = browser.find_element(By.CSS_SELECTOR, "#network button")
    button.click()
    WebDriverWait(browser, 60).until(_drawn_or_failed)
    assert "needs an API key" in browser.find_element(By.ID, "status").text
    _fill(browser, "key", KEY)
    button.click()
    WebDriverWait(browser, 120).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-layers") == "4")
    assert "error" not in (browser.find_element(By.ID, "status").get_attribute("class") or "")
    assert browser.execute_script("return sessionStorage.getItem('tensorinit.api-key')") == KEY
    browser.refresh()  # the tab keeps it, and the field shows it again
    assert browser.find_element(By.NAME, "key").get_attribute("value") == KEY
    # Only the refused calls are in the console (Chromium logs each 401 fetch), nothing else.
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING") and "401" not in e["message"]]
    assert errors == []
