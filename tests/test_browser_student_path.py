"""A student's whole path through the app in one real browser session.

Data → a quick preset trained live → a second run → Compare both → Transfer (offline weights:
the message, then a random-init run) → Saliency on test X-rays → the Mismatch table.

The server runs with EXPLORE_DEMO_SMALL=1 (240 training images at 64 px) and one CPU thread, so
the whole path takes a few minutes. Each page's screenshot goes to test-artifacts/student-*.png.
"""
from __future__ import annotations

import re

import pytest

from browser_helpers import (  # noqa: F401 (fixtures)
    app_env_overrides, app_server, browser, browser_page, screenshot, wait_for_app_idle)
from explore.training.store import RunStore
from test_browser_flow import open_train_page, run_ids_in_url, shown_epoch, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_env_overrides(tmp_path_factory) -> dict[str, str]:
    # An empty hub cache: no pretrained weights on disk and no network, as on this machine.
    return {"TORCH_HOME": str(tmp_path_factory.mktemp("torch-home")), "EXPLORE_OFFLINE": "1"}


def go_to(page, title: str) -> None:
    """Follow the sidebar link, as a student does."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click(timeout=60_000)
    wait_for_app_idle(page, timeout_ms=180_000)


def pick_run(page, label: str) -> None:
    """Choose a run in the page's Run selector."""
    page.locator("[data-testid='stSelectbox']").filter(has_text="Run").first.click()
    page.get_by_role("option").filter(has_text=label).first.click()
    wait_for_app_idle(page, timeout_ms=180_000)


def no_tracebacks(page, errors: list[str]) -> None:
    assert page.get_by_test_id("stException").count() == 0, page.get_by_test_id("stException").all_inner_texts()
    assert not [e for e in errors if "ResizeObserver" not in e], errors


def train_quick_preset(page) -> str:
    """The HW3 CNN baseline, quick variant, on the small data: the curves grow, then final metrics."""
    open_train_page(page)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Preset").click()
    page.get_by_role("option", name="HW3 · CNN baseline").click()
    page.get_by_text("quick variant:").wait_for(timeout=30_000)
    page.get_by_text("Use the Data page's image size").click()
    wait_for_app_idle(page)
    page.get_by_role("button", name=re.compile("Train this preset")).click()
    wait_until(page, lambda: run_ids_in_url(page), 30, "the run id in the URL")
    [run_id] = run_ids_in_url(page)
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=180_000)
    first = shown_epoch(page)
    screenshot(page, "student-2-train-live")
    wait_until(page, lambda: shown_epoch(page) > first or page.get_by_text("trained 8 epochs").count() > 0, 180,
               "the curves to grow")
    page.get_by_text("trained 8 epochs").first.wait_for(timeout=300_000)
    wait_for_app_idle(page)
    return run_id


def train_custom_mlp(page, previous_run: str) -> str:
    """A second run to compare with: the MLP, 3 epochs."""
    page.get_by_role("tab", name=re.compile("Custom run")).click()
    page.locator("[data-testid='stSelectbox']").filter(has_text="Model").first.click()
    page.get_by_role("option", name="hw2_mlp").click()
    wait_for_app_idle(page)
    epochs = page.get_by_label("Epochs", exact=True)  # not the chart marks labelled "epoch: 1; ..."
    epochs.fill("3")
    epochs.press("Enter")
    name = page.get_by_label("Name", exact=True)
    name.fill("second run: MLP")
    name.press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Train", exact=True).click()
    wait_until(page, lambda: run_ids_in_url(page) not in ([], [previous_run]), 30, "the second run id in the URL")
    [run_id] = run_ids_in_url(page)
    page.get_by_text("trained 3 epochs").first.wait_for(timeout=300_000)
    wait_for_app_idle(page)
    return run_id


def compare_both(page) -> None:
    """Both runs' curves on one chart: 2 runs × (train, val, test) lines in two colours."""
    from playwright.sync_api import expect

    go_to(page, "Compare")
    picker = page.get_by_test_id("stMultiSelect").filter(has_text="Runs")
    accuracy = page.get_by_test_id("stVegaLiteChart").first
    lines = accuracy.locator(".mark-line path")
    expect(lines.first).to_be_visible(timeout=60_000)
    for label in ("HW3 CNN", "second run: MLP"):
        if accuracy.locator(".role-legend").get_by_text(label).count() == 0:
            picker.locator("input").click()
            page.get_by_role("option").filter(has_text=label).first.click(timeout=20_000)
            page.keyboard.press("Escape")
            wait_for_app_idle(page)
    expect(lines).to_have_count(6, timeout=60_000)
    strokes = {lines.nth(i).get_attribute("stroke") for i in range(6)}
    assert len(strokes) == 2, strokes
    expect(page.get_by_text("What differs, and what it gave")).to_be_visible()
    screenshot(page, "student-3-compare")


def transfer_offline_then_random_init(page, store: RunStore) -> None:
    """No ImageNet weights here: the page says so and offers a clearly labelled random-init run."""
    from playwright.sync_api import expect

    go_to(page, "Transfer")
    expect(page.get_by_text("Parameters: total vs trainable")).to_be_visible(timeout=60_000)
    warning = page.get_by_test_id("stAlertContentWarning").first
    expect(warning).to_be_visible(timeout=60_000)
    assert re.search(r"offline|not in the cache|cannot be downloaded|no network", warning.inner_text(), re.I), \
        warning.inner_text()
    run_button = page.get_by_role("button", name=re.compile(r"^Run (frozen|feature)"))
    expect(run_button).to_be_disabled()
    page.get_by_text("Train from random initialisation instead").click()
    page.get_by_text("Quick: at most 128 px and 3 epochs").click()
    wait_for_app_idle(page)
    expect(run_button).to_be_enabled()
    before = {r.run_id for r in store.list()}
    run_button.click()
    wait_until(page, lambda: len({r.run_id for r in store.list()} - before) == 1, 30, "the transfer run to queue")
    [run_id] = {r.run_id for r in store.list()} - before
    wait_until(page, lambda: store.load(run_id, with_metrics=False).state not in ("queued", "running"), 300,
               "the transfer run to end")
    record = store.load(run_id, with_metrics=False)
    assert record.state == "finished", (record.state, record.summary)
    page.wait_for_timeout(3000)  # the page polls its group every few seconds
    wait_for_app_idle(page)
    assert record.summary["weights"] == "random" and record.label.endswith("(random init)")
    # the group's status line names the run as random-init and its weights as random
    line = page.get_by_text(re.compile(r"finished .*\(random init\) · weights: random"))
    expect(line.first).to_be_visible(timeout=60_000)
    screenshot(page, "student-4-transfer")


def saliency_on_test_images(page) -> None:
    """The preset's run, maps on site B's test X-rays."""
    from playwright.sync_api import expect

    go_to(page, "Saliency")
    pick_run(page, "HW3 CNN")
    test_column = page.get_by_test_id("stColumn").filter(has_text="Test · site B (other hospital)").last
    expect(test_column).to_be_visible(timeout=120_000)
    expect(test_column.locator("[data-testid='stImage'] img").first).to_be_visible(timeout=120_000)
    wait_for_app_idle(page, timeout_ms=180_000)
    images = test_column.locator("[data-testid='stImage'] img:visible")
    assert images.count() >= 1
    # the picture has arrived (a broken or still-loading image has no naturalWidth)
    images.first.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done))")
    assert images.first.evaluate("img => img.naturalWidth") > 0
    captions = test_column.get_by_text(" · true ")
    assert captions.count() >= 1 and "P(disease)" in captions.first.inner_text()
    screenshot(page, "student-5-saliency")


def mismatch_table(page) -> None:
    from playwright.sync_api import expect

    go_to(page, "Mismatch")
    pick_run(page, "HW3 CNN")
    expect(page.get_by_text("1 · The same model on both hospitals")).to_be_visible(timeout=120_000)
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Which kind of error?")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Can a network tell the hospitals apart?")).to_be_visible(timeout=180_000)
    expect(page.get_by_test_id("stSpinner")).to_have_count(0, timeout=180_000)  # every section computed
    wait_for_app_idle(page, timeout_ms=180_000)
    screenshot(page, "student-6-mismatch")


def test_a_students_whole_path(app_server, browser_page):  # noqa: F811
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    store = RunStore(app_server.runs_dir)

    page.goto(app_server.url)
    page.get_by_text("Skipped files").wait_for(timeout=180_000)
    wait_for_app_idle(page)
    screenshot(page, "student-1-data")

    preset_run = train_quick_preset(page)
    mlp_run = train_custom_mlp(page, preset_run)
    assert preset_run != mlp_run
    assert {store.load(r, with_metrics=False).state for r in (preset_run, mlp_run)} == {"finished"}
    no_tracebacks(page, errors)

    compare_both(page)
    no_tracebacks(page, errors)
    transfer_offline_then_random_init(page, store)
    no_tracebacks(page, errors)
    saliency_on_test_images(page)
    no_tracebacks(page, errors)
    mismatch_table(page)
    no_tracebacks(page, errors)
