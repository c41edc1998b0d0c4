"""Swagger UI at /docs in headless Chromium, clicked as a person would: "Try it out", then "Execute".

Debian's chromium and chromium-driver (``make chromium``) run the page from the gateway on
loopback, with every asset served locally, against a real server holding the demo models.
A missing browser is a broken install, so the test fails rather than skips.
"""

from __future__ import annotations

import json

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from regserve.server.config import Settings
from regserve.server.datasets.demo import ensure_demo_models
from regserve.server.registry.disk import ModelRegistry
from regserve.server.registry.store import ModelStore
from regserve.server.runtime.application import create_server
from tests.server.gateway.helpers import running_gateway

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 60.0
"""Generous: the page, its assets and the call take well under a second on an idle machine."""


@pytest.fixture
def docs_url(tmp_path):
    store = ModelStore(ModelRegistry(tmp_path / "models"))
    store.load_all()
    ensure_demo_models(store, spool_dir=str(tmp_path / "spool"))
    app = create_server(Settings(host="127.0.0.1", port=0, model_dir=tmp_path / "models", demo_models=False), store)
    app.start()
    try:
        with running_gateway(f"127.0.0.1:{app.port}", app.local) as http:
            yield str(http.base_url.join("/docs"))
    finally:
        app.stop(0)


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    # The driver is named outright: Selenium would otherwise look for one to download.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _operation(browser: webdriver.Chrome, element_id: str):
    wait = WebDriverWait(browser, WAIT)
    operation = wait.until(expected_conditions.presence_of_element_located((By.ID, element_id)))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    operation.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    return operation


def _execute(browser: webdriver.Chrome, operation) -> str:
    """Click Execute and return the status code Swagger UI shows for the live response."""
    operation.find_element(By.CSS_SELECTOR, ".execute").click()
    shown = ".live-responses-table .response .response-col_status"
    WebDriverWait(browser, WAIT).until(lambda _: operation.find_elements(By.CSS_SELECTOR, shown))
    return operation.find_element(By.CSS_SELECTOR, shown).text.strip()


def test_predict_tried_out_in_swagger_ui_answers_200(browser, docs_url):
    browser.get(docs_url)
    operation = _operation(browser, "operations-RegressionService-RegressionService_Predict")
    body = json.loads(operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text").get_attribute("value"))
    assert set(body) == {"inputs"}  # the example, not a body Swagger UI made up from the schema
    assert _execute(browser, operation) == "200"
    answer = json.loads(operation.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text)
    assert answer["model"] == "iris" and answer["labels"] == ["setosa", "virginica"]


def test_batch_predict_tried_out_in_swagger_ui_answers_200(browser, docs_url):
    browser.get(docs_url)
    operation = _operation(browser, "operations-RegressionService-RegressionService_BatchPredict")
    lines = operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text").get_attribute("value")
    assert [set(json.loads(line)) for line in lines.splitlines()] == [{"inputs"}, {"inputs"}]  # NDJSON as written
    assert _execute(browser, operation) == "200"
