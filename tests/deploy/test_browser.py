"""A real browser (headless Chromium through Selenium) shows a finished ``retrain`` flow
run's artifacts in the Prefect dashboard, and the campaign summary rendered.

Slow, and skipped without Chromium, chromedriver (Debian: ``apt-get install chromium
chromium-driver``) or selenium. ``ALFLOW_UPDATE_SCREENSHOTS=1`` copies the screenshots
to docs/img/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowFilter, FlowFilterName

from flows.deployments import campaign_slug
from tests.deploy.helpers import REPO, PrefectServer, write_deploy_campaign

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--window-size=1400,1000")
NAME = "browser-water"


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _body_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def _screenshot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("ALFLOW_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, REPO / "docs" / "img" / name)


def test_dashboard_shows_the_retrain_artifacts(prefect_server: PrefectServer, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    config = write_deploy_campaign(tmp_path, NAME)
    script = ("import sys; from flows.deployments import al_cycle, retrain; "
              "al_cycle(sys.argv[1], generations=0); retrain(sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, str(config)], env=prefect_server.client_env(),
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    with prefect_server.settings(), prefect_server.client() as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])))
        (summary,) = [a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))) if a.key == f"{campaign_slug(NAME)}-summary"]
    wait = WebDriverWait(browser, 90)
    browser.get(f"{prefect_server.url}/runs/flow-run/{run.id}")
    tab = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.p-tab#artifacts"))[0]
    browser.execute_script("arguments[0].click()", tab)
    wait.until(lambda d: f"{campaign_slug(NAME)}-summary" in _body_text(d))
    assert run.name in _body_text(browser) and "MARKDOWN" in _body_text(browser)
    _screenshot(browser, tmp_path, "flow-run-artifacts.png")

    browser.get(f"{prefect_server.url}/artifacts/artifact/{summary.id}")
    wait.until(lambda d: "Latest committee" in _body_text(d))
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h1")]
    assert f"alflow campaign {NAME}" in headings  # the markdown is rendered, not shown raw
    _screenshot(browser, tmp_path, "campaign-summary-artifact.png")
