"""/docs (Swagger UI) in headless Chromium that can reach only the local server: every operation listed, nothing refused."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import LiveServer

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _operations(live_server: LiveServer) -> list[tuple[str, str]]:
    document = httpx.get(live_server.url + "/openapi.json", timeout=30).json()
    return sorted((method.upper(), path) for path, item in document["paths"].items() for method in item if method in METHODS)


def test_docs_render_every_operation_offline_under_the_csp(live_server: LiveServer, offline_browser: Any) -> None:
    expected = _operations(live_server)
    with pytest.raises(WebDriverException, match="net::ERR_"):  # the CDN FastAPI's own /docs uses: no way out
        offline_browser.get("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js")

    offline_browser.get(live_server.url + "/docs")
    WebDriverWait(offline_browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= len(expected))
    shown = sorted(
        (
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
            block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"),
        )
        for block in offline_browser.find_elements(By.CSS_SELECTOR, ".opblock")
    )
    assert shown == expected
    assert offline_browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("tensorinit")
    # One operation opened, as a reader would: its parameters, responses and media-type selects drawn.
    offline_browser.find_element(By.CSS_SELECTOR, "#operations-tensors-init_post .opblock-summary").click()
    WebDriverWait(offline_browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#operations-tensors-init_post .responses-table"))
    # Everything the page loaded came from the server it was opened on; the console holds no
    # refusal (a CSP violation is a SEVERE console entry) and no failed load.
    loaded = offline_browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded
    assert {urlsplit(url).netloc for url in loaded if not url.startswith("data:")} == {urlsplit(live_server.url).netloc}
    errors = [entry for entry in offline_browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert errors == []


@pytest.mark.parametrize("path", ["/docs", "/docs/start.js", "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"])
def test_docs_files_carry_the_strict_policy(live_server: LiveServer, path: str) -> None:
    response = httpx.get(live_server.url + path, timeout=30)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "style-src 'self'" in policy
    assert "unsafe" not in policy
    assert "http" not in policy  # no other origin


def test_an_unknown_docs_file_is_a_problem(live_server: LiveServer) -> None:
    response = httpx.get(live_server.url + "/docs/../../etc/passwd", timeout=30)
    assert response.status_code == 404
    assert httpx.get(live_server.url + "/docs/nope.js", timeout=30).headers["content-type"] == "application/problem+json"
