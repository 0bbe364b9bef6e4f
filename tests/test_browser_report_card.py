"""Real browser: compute the report card for one run on the Saliency page, then see it after a reload.

Needs Chromium at /usr/bin/chromium and the playwright package (see shared/browser-testing.md).
Screenshot: test-artifacts/saliency_report_card.png (look at it).
"""
from __future__ import annotations

import pytest

from browser_helpers import app_env, browser, browser_page, require_browser, screenshot, start_app, stop_app  # noqa: F401
from explore.training.config import RunConfig
from explore.data import DataSpec
from explore.training.jobs import execute_run
from explore.training.store import RunStore

pytestmark = pytest.mark.browser
SPEC = DataSpec(image_size=64, synthetic=(("n_train", 96), ("n_val", 32), ("n_test", 32)))


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    """The app, with one finished hw3_cnn run in its runs folder."""
    require_browser()
    tmp = tmp_path_factory.mktemp("app")
    env = app_env(tmp)
    store = RunStore(env["EXPLORE_RUNS_DIR"])
    run_id = store.create(RunConfig(data=SPEC, model="hw3_cnn", epochs=2, batch_size=16, name="card run"))
    assert list(execute_run(store, run_id))[-1]["status"] == "finished"
    server = start_app(env, tmp / "streamlit.log")
    yield server
    stop_app(server)


def test_report_card_is_computed_with_progress_and_kept(app_server, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    page.goto(app_server.url)
    page.get_by_test_id("stSidebarNav").get_by_text("Saliency", exact=True).click()
    expect(page.get_by_text("Report card: which maps deserve trust?")).to_be_visible(timeout=180_000)
    button = page.get_by_role("button", name="Compute the report card")
    expect(button).to_be_visible(timeout=180_000)
    button.click()
    # The card replaces the progress bar once the background thread has written it to the run folder.
    expect(page.get_by_text("Each cell: the verdict on val")).to_be_visible(timeout=240_000)
    expect(page.get_by_text("tests passed").first).to_be_visible()
    expect(page.locator("[data-testid='stException']")).to_have_count(0)
    card = page.get_by_test_id("stDataFrame").first  # the shares table above is off: the card is the first table
    expect(card).to_be_visible()
    card.scroll_into_view_if_needed()
    expect(page.get_by_text("Deletion: most-attributed pixels removed first")).to_be_visible()
    screenshot(page, "saliency_report_card")
    runs = list(app_server.runs_dir.glob("*/explain_report/*.json"))
    assert len(runs) == 1  # cached beside the run

    # A reload shows the cached card at once: no button, no recomputation.
    page.reload()
    expect(page.get_by_text("Each cell: the verdict on val")).to_be_visible(timeout=180_000)
    expect(page.get_by_role("button", name="Compute the report card")).to_have_count(0)
