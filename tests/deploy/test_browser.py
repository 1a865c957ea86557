"""A real browser (headless Chromium through Selenium) shows a finished ``al-cycle`` flow
run's artifacts in the Prefect dashboard: the campaign summary rendered with its plots,
the generation table without sideways scrolling.

Slow, and skipped without Chromium, chromedriver (Debian: ``apt-get install chromium
chromium-driver``) or selenium (the ``browser`` extra). ``ALFLOW_UPDATE_SCREENSHOTS=1`` copies the screenshots
to docs/img/.
"""

from __future__ import annotations

import json
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


def _images_rendered(driver) -> list[int]:
    """naturalWidth of every data-URI image on the page (0: not decoded)."""
    return driver.execute_script(
        "return [...document.images].filter(i => i.src.startsWith('data:image/png')).map(i => i.naturalWidth)")


def test_dashboard_shows_the_science_on_the_al_cycle_run(prefect_server: PrefectServer, browser,
                                                         tmp_path: Path) -> None:
    """The run a person started (``al-cycle``, generations 0 and 1) carries the summary with
    its three plots rendered, the narrow generation table and the progress counts; a
    retrain that finds nothing new is named after why it skipped."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    config = write_deploy_campaign(tmp_path, NAME)
    script = ("import sys; from flows.deployments import al_cycle, retrain; "
              "al_cycle(sys.argv[1], generations=1); retrain(sys.argv[1], min_new_labels=5)")
    subprocess.run([sys.executable, "-c", script, str(config)], env=prefect_server.client_env(),
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    slug = campaign_slug(NAME)
    with prefect_server.settings(), prefect_server.client() as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["al-cycle"])))
        (skipped,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])))
        artifacts = {a.key: a for a in sorted(client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))), key=lambda a: a.created)}  # latest of each key
    assert {f"{slug}-{what}" for what in ("summary", "generations", "timings", "exploration", "labelling",
                                          "training")} <= set(artifacts)
    assert skipped.state.name == "Skipped: 0 new labels < 5"
    rows = artifacts[f"{slug}-generations"].data
    assert [row["generation"] for row in (json.loads(rows) if isinstance(rows, str) else rows)] == [0, 1]

    wait = WebDriverWait(browser, 90)
    browser.get(f"{prefect_server.url}/runs/flow-run/{run.id}")
    tab = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "li.p-tab#artifacts"))[0]
    browser.execute_script("arguments[0].click()", tab)
    wait.until(lambda d: f"{slug}-summary" in _body_text(d))
    browser.execute_script("arguments[0].scrollIntoView()", tab)
    text = _body_text(browser)
    assert run.name in text and "QM labels:" in text and "done, 0 failed" in text and "epoch" in text
    _screenshot(browser, tmp_path, "flow-run-artifacts.png")

    browser.set_window_size(1100, 1950)
    browser.get(f"{prefect_server.url}/artifacts/artifact/{artifacts[f'{slug}-summary'].id}")
    wait.until(lambda d: "Force error against labels" in _body_text(d))
    headings = [h.text for h in browser.find_elements(By.TAG_NAME, "h1")]
    assert f"alflow campaign {NAME}" in headings  # the markdown is rendered, not shown raw
    widths = wait.until(lambda d: (w := _images_rendered(d)) and len(w) == 3 and all(w) and w)
    assert all(width > 200 for width in widths)  # three decoded PNG plots
    _screenshot(browser, tmp_path, "campaign-summary-artifact.png")

    browser.set_window_size(1400, 700)
    browser.get(f"{prefect_server.url}/artifacts/artifact/{artifacts[f'{slug}-generations'].id}")
    wait.until(lambda d: "labels so far" in _body_text(d))
    assert "fresh F MAE / target (meV/Å)" in _body_text(browser)
    overflow = browser.execute_script(
        "const t = document.querySelector('table'); return t.scrollWidth - t.parentElement.clientWidth")
    assert overflow <= 0, f"the generation table scrolls sideways by {overflow} px"
    _screenshot(browser, tmp_path, "generation-table-artifact.png")
