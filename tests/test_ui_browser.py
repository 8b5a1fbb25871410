"""The Prefect UI, in a real headless Chromium: a beluga run and its task runs are
there, by name. Needs Debian's ``chromium`` and ``chromium-driver`` (``make test``
installs them with apt); no browser is ever downloaded."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from beluga_flows.tools.server import LocalServer
from beluga_flows.tools.targets import load_target, run_target
from tests.prefect_api import flow_runs, task_runs

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(DRIVER)))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def test_the_ui_shows_the_flow_run_and_its_task_runs(
    prefect_server: LocalServer, browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The demo's first example, as `make demo` runs it.
    report = load_target("flows/sales_report.py:sales_report")
    run_target(report, {"csv_path": "flows/data/sales.csv", "out_dir": str(tmp_path / "out")})
    run = max(flow_runs("sales-report"), key=lambda r: r.created)  # the run just made
    tasks = [t.name for t in task_runs(run.id, expect=3)]

    def page_text(driver: Any) -> str:
        return str(driver.find_element(By.TAG_NAME, "body").text)

    browser.get(f"{prefect_server.ui_url}/runs/flow-run/{run.id}")
    WebDriverWait(browser, 90).until(lambda d: run.name in page_text(d))
    tab = WebDriverWait(browser, 30).until(
        lambda d: next(
            (e for e in d.find_elements(By.XPATH, "//*[normalize-space()='Task Runs']")), None
        )
    )
    tab.click()
    WebDriverWait(browser, 90).until(lambda d: all(t in page_text(d) for t in tasks))
    assert "Completed" in page_text(browser) and "beluga:flow" in page_text(browser)
    shot = tmp_path / "flow-run.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    keep = os.environ.get("BELUGA_UI_SCREENSHOT")  # docs: where to keep a copy
    if keep:
        shutil.copy(shot, keep)
