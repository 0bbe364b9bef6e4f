"""Real browser: pick two finished runs on the Compare page and see both runs' curves; open ANN vs CNN.

Needs Chromium (/usr/bin/chromium) and Playwright for Python; skipped with the install command otherwise.
Screenshots go to test-artifacts/ (look at them: a page that looks broken is broken).
"""
from __future__ import annotations

import time

import pytest

from browser_helpers import app_server, browser, browser_page, screenshot, wait_for_app_idle  # noqa: F401
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.store import RunStore
from test_compare import write_run

pytestmark = pytest.mark.browser

BASE = RunConfig(data=DataSpec(image_size=32), model="hw3_cnn", epochs=4)


@pytest.fixture(scope="module")
def app_env_overrides(tmp_path_factory) -> dict[str, str]:
    """The server's runs folder, pre-filled with two finished runs in two groups."""
    runs = tmp_path_factory.mktemp("compare-runs")
    store = RunStore(runs)
    now = time.time()
    write_run(store, BASE.replace(name="HW3 CNN", group="hw3_baseline"), val_accs=(0.62, 0.74, 0.80, 0.83),
              test_acc=0.71, created=now - 3600)
    write_run(store, BASE.replace(name="HW3 CNN + dropout", model="hw3_cnn_dropout", group="hw3_overfitting"),
              val_accs=(0.55, 0.66, 0.72, 0.78), test_acc=0.76, created=now)  # newest: preselected
    return {"EXPLORE_RUNS_DIR": str(runs)}


def open_page(page, url: str, title: str) -> None:
    """Through the app's own navigation, as a student gets there."""
    page.goto(url)
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click(timeout=60_000)
    wait_for_app_idle(page)


def test_compare_page_shows_both_picked_runs_curves(app_server, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    open_page(page, app_server.url, "Compare")
    expect(page.get_by_text("Compare runs").first).to_be_visible(timeout=30_000)
    charts = page.get_by_test_id("stVegaLiteChart")
    expect(charts).to_have_count(3, timeout=30_000)  # accuracy, loss, and the learning rate under the loss
    accuracy = charts.first
    # the newest group holds one run: its three curves (train, val, test) only
    expect(accuracy.locator(".mark-line path")).to_have_count(3, timeout=30_000)
    expect(accuracy.locator(".role-legend").get_by_text("HW3 CNN + dropout")).to_be_visible()

    # pick the other run in the run selector
    picker = page.get_by_test_id("stMultiSelect").filter(has_text="Runs")
    expect(picker).to_have_count(1)
    picker.locator("input").click()
    option = page.get_by_role("option").filter(has_text="HW3 CNN ·")
    try:
        option.first.click(timeout=10_000)
    except Exception:
        screenshot(page, "compare-pick-failed")
        raise
    page.keyboard.press("Escape")

    # Vega draws SVG: one line per run and split (2 runs × train/val/test), a legend naming both runs
    expect(accuracy.locator(".mark-line path")).to_have_count(6, timeout=30_000)
    legend = accuracy.locator(".role-legend")
    expect(legend.get_by_text("HW3 CNN + dropout · model=hw3_cnn_dropout")).to_be_visible()
    expect(legend.get_by_text("HW3 CNN · model=hw3_cnn", exact=True)).to_be_visible()
    strokes = {accuracy.locator(".mark-line path").nth(i).get_attribute("stroke") for i in range(6)}
    assert len(strokes) == 2, strokes  # one colour per run
    expect(page.get_by_text("What differs, and what it gave")).to_be_visible()
    screenshot(page, "compare-two-runs")
    assert not page.get_by_test_id("stException").count()
    assert not [e for e in errors if "ResizeObserver" not in e], errors


def test_architectures_page_counts_parameters(app_server, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    open_page(page, app_server.url, "ANN vs CNN")
    expect(page.get_by_text("Size and arithmetic for one 256×256 image")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("33,554,944")).to_be_visible()  # the ANN's first layer: 65,536 × 512 + 512
    charts = page.get_by_test_id("stVegaLiteChart")
    expect(charts.first.locator(".mark-rect path")).to_have_count(4, timeout=30_000)  # one bar per model
    screenshot(page, "architectures")
    assert not page.get_by_test_id("stException").count()
