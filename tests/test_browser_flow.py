"""The first pages a student sees, in a real browser: the Data page's sample grid, a quick preset
trained live to its final metrics, and a long run that survives a refresh and then is stopped.

The server runs with EXPLORE_DEMO_SMALL=1 (240 training images at 64 px) so it trains in seconds on
a CPU. Screenshots of every state go to test-artifacts/ — look at them.
"""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest

from browser_helpers import (  # noqa: F401 (fixtures)
    app_env_overrides, app_server, browser, browser_page, screenshot, wait_for_app_idle)
from explore.training.store import RunStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EPOCH_TEXT = re.compile(r"epoch (\d+) of (\d+)")


def run_ids_in_url(page) -> list[str]:
    return parse_qs(urlparse(page.url).query).get("run", [])


def shown_epoch(page) -> int:
    """The epoch the progress bar is in (0 when no progress bar is showing)."""
    texts = page.locator("[data-testid='stProgress']").all_inner_texts()
    numbers = [int(m.group(1)) for t in texts for m in [EPOCH_TEXT.search(t)] if m]
    return max(numbers, default=0)


def wait_until(page, predicate, timeout_s: float, what: str) -> None:
    """Poll `predicate` while letting the browser work (page.wait_for_timeout, not time.sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def open_train_page(page) -> None:
    page.get_by_role("link", name="Train").click()
    page.get_by_role("tab", name=re.compile("Homework presets")).wait_for(timeout=60_000)
    wait_for_app_idle(page)


def test_data_page_shows_the_sample_grid(app_server, browser_page):  # noqa: F811
    page = browser_page
    page.goto(app_server.url)
    page.get_by_text("Skipped files").wait_for(timeout=180_000)
    wait_for_app_idle(page)
    # a class row of 8 per class, plus the two-site preview (they may still be arriving: wait, don't count once)
    page.wait_for_function("() => document.querySelectorAll(\"[data-testid='stImage'] img\").length >= 18",
                           timeout=60_000)
    # Every visible thumbnail actually loads (a broken image never gets a naturalWidth).
    page.get_by_text("Samples", exact=True).scroll_into_view_if_needed()
    page.wait_for_function("""() => {
        const shown = [...document.querySelectorAll("[data-testid='stImage'] img")].filter(i => i.offsetParent);
        return shown.length >= 18 && shown.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=30_000)
    from playwright.sync_api import expect

    expect(page.get_by_text("No files skipped.")).to_be_visible(timeout=30_000)
    screenshot(page, "data_page")

    page.get_by_role("button", name="enlarge").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("original size").wait_for(timeout=30_000)
    dialog.get_by_text("Show masks").click()
    page.wait_for_timeout(1500)
    screenshot(page, "data_dialog")
    page.keyboard.press("Escape")


def test_quick_preset_trains_live_to_final_metrics(app_server, browser_page):  # noqa: F811
    page = browser_page
    page.goto(app_server.url)
    page.get_by_text("Skipped files").wait_for(timeout=180_000)
    open_train_page(page)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Preset").click()
    page.get_by_role("option", name="HW3 · CNN baseline").click()
    page.get_by_text("quick variant:").wait_for(timeout=30_000)  # on by default without a GPU
    page.get_by_text("Use the Data page's image size").click()
    wait_for_app_idle(page)
    screenshot(page, "train_page")
    page.get_by_role("button", name=re.compile("Train this preset")).click()

    wait_until(page, lambda: run_ids_in_url(page), 30, "the run id in the URL")
    [run_id] = run_ids_in_url(page)
    page.locator("[data-testid='stVegaLiteChart']").first.wait_for(timeout=180_000)  # first epoch done
    first = shown_epoch(page)
    screenshot(page, "train_live")
    # The curves grow: the page shows later epochs without being touched (or the run finished).
    wait_until(page, lambda: shown_epoch(page) > first or page.get_by_text("trained 8 epochs").count() > 0, 180,
               "a later epoch")
    page.get_by_text("trained 8 epochs").first.wait_for(timeout=300_000)
    wait_for_app_idle(page)
    # The final results render after the status line says "trained": wait for them, don't sample once.
    page.get_by_text("val accuracy").first.wait_for(timeout=60_000)
    page.get_by_text("test AUC").first.wait_for(timeout=60_000)
    wait_until(page, lambda: page.get_by_text("ROC curve").count()
               + page.locator("[data-testid='stVegaLiteChart']").count() >= 5, 60, "the final charts")
    record = RunStore(app_server.runs_dir).load(run_id)
    assert record.state == "finished" and [m["epoch"] for m in record.metrics] == list(range(1, 9))
    page.wait_for_timeout(1000)
    screenshot(page, "train_finished")


def test_a_run_survives_a_refresh_and_stops_on_request(app_server, browser_page):  # noqa: F811
    page = browser_page
    page.goto(app_server.url)
    page.get_by_text("Skipped files").wait_for(timeout=180_000)
    open_train_page(page)
    page.get_by_role("tab", name=re.compile("Custom run")).click()
    epochs = page.get_by_label("Epochs")
    epochs.fill("300")
    epochs.press("Enter")
    wait_for_app_idle(page)
    page.get_by_role("button", name="Train", exact=True).click()
    wait_until(page, lambda: run_ids_in_url(page), 30, "the run id in the URL")
    [run_id] = run_ids_in_url(page)
    wait_until(page, lambda: shown_epoch(page) >= 2, 180, "epoch 2")
    before = shown_epoch(page)

    page.reload()  # a refresh: a new browser session that knows only the URL
    wait_until(page, lambda: shown_epoch(page) > before, 180, "training to go on after the refresh")
    assert run_ids_in_url(page) == [run_id]
    store = RunStore(app_server.runs_dir)
    epochs_done = [m["epoch"] for m in store.load(run_id).metrics]
    assert epochs_done == list(range(1, len(epochs_done) + 1))  # one run, never restarted
    screenshot(page, "train_after_refresh")

    page.get_by_role("button", name="Stop").first.click()
    page.get_by_text("stopped by the user").first.wait_for(timeout=60_000)
    wait_for_app_idle(page)
    record = store.load(run_id)
    assert record.state == "stopped" and len(record.metrics) < 300
    assert (record.path / "weights.pt").exists()
    page.wait_for_timeout(1000)
    screenshot(page, "train_stopped")
