"""The researcher's view, checked in a real headless Chromium: the MLflow runs page and the report.

Skipped (with the reason) only where Chromium or Playwright is missing. Screenshots are
saved under test-artifacts/ at the repository root.
"""

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from test_ui import force_stop, free_port, server_groups, start_ui, wait_for_health

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def mlflow_ui(smoke_run, tmp_path_factory):
    work, env, _ = smoke_run
    port, log = free_port(), tmp_path_factory.mktemp("ui") / "ui.log"
    ui = start_ui(port, env["MLFLOW_TRACKING_URI"], work, env, log)
    groups = set()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, ui, log)
        groups = server_groups(ui)
        yield url, env
    finally:
        if ui.poll() is None:
            ui.send_signal(signal.SIGINT)  # what Ctrl-C does: `ui` stops its server group
            try:
                ui.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        force_stop(ui, groups)  # whatever happened above, no server is left behind


def test_mlflow_runs_page_lists_parent_and_child_runs(browser, mlflow_ui):
    from mlflow.tracking import MlflowClient

    url, env = mlflow_ui
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("sparsealign-smoke")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sparsealign.role") == "pipeline")
    child_names = {r.data.tags["mlflow.runName"] for r in runs
                   if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1600, "height": 1400})
    page.goto(f"{url}/#/experiments/{experiment.experiment_id}/runs")
    parent_cell = page.locator("[role=gridcell]").filter(has_text=parent.info.run_name).first
    parent_cell.wait_for(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "mlflow_runs_page.png")
    parent_cell.locator("button").first.click()  # expand the parent: its jobs are listed under it
    page.get_by_text("train_sae").first.wait_for(timeout=60_000)
    page.screenshot(path=ARTIFACTS / "mlflow_child_runs.png")
    text = page.inner_text("body")
    missing = [name for name in child_names if name not in text]
    assert not missing, f"child runs not shown: {missing}"
    page.close()


def test_report_renders_offline_with_figures(browser, smoke_run):
    work, _, _ = smoke_run
    report = work / "results-smoke" / "report.html"
    context = browser.new_context(offline=True)
    page = context.new_page()
    page.goto(report.as_uri())
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert widths and all(w > 100 for w in widths), widths
    headings = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
    assert any("toy" in h for h in headings) and "Provenance" in headings
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "report.png", full_page=True)
    context.close()
