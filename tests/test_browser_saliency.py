"""Real browser: open the Saliency page, click a confusion-matrix cell, see its X-rays with maps.

Needs Chromium at /usr/bin/chromium and the playwright package (see shared/browser-testing.md).
Screenshots go to test-artifacts/.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import execute_run
from explore.training.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
# A real, small synthetic data set: the app process loads it itself through load_bundle.
SPEC = DataSpec(image_size=64, synthetic=(("n_train", 96), ("n_val", 32), ("n_test", 32)))

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is missing: install it with `apt-get install -y chromium` to run the browser tests")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (no `playwright install` needed)")
    runs = tmp_path_factory.mktemp("runs")
    store = RunStore(runs)
    run_id = store.create(RunConfig(data=SPEC, model="hw3_cnn", epochs=3, batch_size=16, lr=1e-3, name="browser run"))
    assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    port = free_port()
    env = dict(os.environ, EXPLORE_RUNS_DIR=str(runs), EXPLORE_THREADS="1")
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the Streamlit server did not answer /_stcore/health within 90 s")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


def open_page(browser, app_url: str, title: str):
    """Open the app at its root and follow the sidebar link, as a student would.

    The viewport is tall because Streamlit scrolls inside the page, so a full-page screenshot
    would only show the first screen.
    """
    page = browser.new_page(viewport={"width": 1400, "height": 2600})
    page.goto(app_url)
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    return page


def wait_until_idle(page, timeout_s: float = 180.0):
    """Until the script has stopped running for 2 s: no spinner, no 'running' status widget."""
    busy = page.locator("[data-testid='stSpinner'], [data-testid='stStatusWidget']")
    deadline, quiet = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline and quiet < 4:
        quiet = quiet + 1 if busy.count() == 0 else 0
        page.wait_for_timeout(500)
    assert quiet >= 4, "the page kept running for more than 3 minutes"


def test_confusion_cell_shows_xrays_with_maps(app_url, browser):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page = open_page(browser, app_url, "Saliency")
    expect(page.get_by_text("Val · site A (training hospital)")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("P(disease)").first).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    page.screenshot(path=str(ARTIFACTS / "saliency_page.png"), full_page=True)

    # Click the val matrix's true-positive cell: the page switches to browsing that cell.
    page.locator(".st-key-cell_val_1_1 button").first.click()  # (Streamlit also renders a hidden copy)
    expect(page.get_by_text("Cell: true PNEUMONIA, predicted PNEUMONIA")).to_be_visible(timeout=120_000)
    wait_until_idle(page)
    captions = page.get_by_text(" · true ")
    expect(captions.first).to_be_visible(timeout=120_000)
    texts = captions.all_inner_texts()
    assert texts and all("true PNEUMONIA" in t and "→ PNEUMONIA" in t for t in texts), texts
    images = page.locator("[data-testid='stImage'] img:visible")
    assert images.count() >= len(texts)  # one original | overlay picture per caption
    assert images.first.evaluate("img => img.naturalWidth") > 0
    page.screenshot(path=str(ARTIFACTS / "saliency_cell_tp.png"), full_page=True)
    page.close()


def test_mismatch_page_renders(app_url, browser):
    from playwright.sync_api import expect

    page = open_page(browser, app_url, "Mismatch")
    expect(page.get_by_text("Which kind of error?")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("held out no train-dev set")).to_be_visible(timeout=120_000)  # this run has none
    wait_until_idle(page)
    expect(page.locator("[data-testid='stException']")).to_have_count(0)
    page.screenshot(path=str(ARTIFACTS / "mismatch_page.png"), full_page=True)
    page.close()
