"""Many browsers, one server, in real Chromium: the classroom and public-demo guarantees.

- Two browser contexts (two students) train at once on a shared server (EXPLORE_SHARED_SERVER=1):
  the one job slot holds (the second waits and is told so), each run lands in its own session's
  folder, and each student sees only their own run.
- Bad uploads (a text file renamed .png, a truncated JPEG) are skipped and listed, or refused with
  a clear message when nothing usable is left; the page works on.
- Demo mode (EXPLORE_DEMO_MODE=1) shows its banner and refuses a folder outside its data root.

Screenshots go to test-artifacts/classroom-*.png.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser_helpers import (  # noqa: F401 (fixtures)
    ROOT, app_env, app_server, browser, require_browser, screenshot, start_app, stop_app, wait_for_app_idle)
from explore.training.store import RunStore
from test_browser_flow import open_train_page, run_ids_in_url, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_env_overrides() -> dict[str, str]:
    return {"EXPLORE_SHARED_SERVER": "1"}


def new_student(browser):  # noqa: F811
    """A separate browser context: its own cookies and storage, so its own Streamlit session."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


def session_of(page) -> str:
    [session] = re.findall(r"[?&]session=([0-9a-f]+)", page.url)
    return session


def queue_custom_run(page, name: str, epochs: int) -> None:
    open_train_page(page)
    page.get_by_role("tab", name=re.compile("Custom run")).click()
    for label, value in (("Epochs", str(epochs)), ("Name", name)):
        field = page.get_by_label(label)
        field.fill(value)
        field.press("Enter")
        wait_for_app_idle(page)
    page.get_by_role("button", name="Train", exact=True).click()
    wait_until(page, lambda: run_ids_in_url(page), 30, f"the run id of {name!r} in the URL")


def test_two_students_train_at_once_and_each_sees_only_their_own_run(app_server, browser):  # noqa: F811
    """Alice starts a long run, Bob presses Train while it runs: the server's one job slot holds, so
    Bob's page says he is next in the queue; Alice stops hers, Bob's starts and finishes. Each run
    lands in its own session's folder and each student sees only their own."""
    from playwright.sync_api import expect

    (alice_context, alice, alice_errors), (bob_context, bob, bob_errors) = students = [
        new_student(browser) for _ in range(2)]
    try:
        for page in (alice, bob):
            page.goto(app_server.url)
            wait_for_app_idle(page, timeout_ms=180_000)
        queue_custom_run(alice, "alice's run", epochs=300)
        [alice_run] = run_ids_in_url(alice)
        alice_store = RunStore(app_server.runs_dir, namespace=f"session-{session_of(alice)}")
        wait_until(alice, lambda: alice_store.load(alice_run, with_metrics=False).state == "running", 60,
                   "alice's run to start")
        queue_custom_run(bob, "bob's run", epochs=3)
        [bob_run] = run_ids_in_url(bob)
        bob_store = RunStore(app_server.runs_dir, namespace=f"session-{session_of(bob)}")
        assert alice_run != bob_run and session_of(alice) != session_of(bob)
        # One job at a time on this server: Bob waits, and his page says where he is.
        expect(bob.get_by_text("next in the queue").first).to_be_visible(timeout=30_000)
        assert bob_store.load(bob_run, with_metrics=False).state == "queued"
        screenshot(bob, "classroom-bob-queued")

        wait_until(alice, lambda: len(alice_store.load(alice_run).metrics) >= 2, 120, "two epochs of alice's run")
        alice.get_by_role("button", name="Stop").first.click()
        alice.get_by_text("stopped by the user").first.wait_for(timeout=60_000)
        bob.get_by_text("trained 3 epochs").first.wait_for(timeout=300_000)
        for page in (alice, bob):
            wait_for_app_idle(page)

        # On disk: each run in its own session's folder, complete.
        assert [r.run_id for r in alice_store.list()] == [alice_run]
        assert [r.run_id for r in bob_store.list()] == [bob_run]
        assert alice_store.load(alice_run).state == "stopped"
        bob_record = bob_store.load(bob_run)
        assert bob_record.state == "finished" and [m["epoch"] for m in bob_record.metrics] == [1, 2, 3]
        # On screen: the Compare page lists each student's own run, never the other's.
        for (_, page, errors), own, other in zip(students, ("alice's run", "bob's run"), ("bob's run", "alice's run")):
            page.get_by_test_id("stSidebarNav").get_by_text("Compare", exact=True).click()
            wait_for_app_idle(page, timeout_ms=120_000)
            legend = page.get_by_test_id("stVegaLiteChart").first.locator(".role-legend")
            expect(legend.get_by_text(own).first).to_be_visible(timeout=60_000)
            assert page.get_by_text(other).count() == 0
            assert page.get_by_test_id("stException").count() == 0
            assert not [e for e in errors if "ResizeObserver" not in e], errors
        screenshot(alice, "classroom-student-a-compare")
        screenshot(bob, "classroom-student-b-compare")
    finally:
        alice_context.close()
        bob_context.close()


def png_bytes(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((60, 48), value, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def truncated_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 160), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()[: len(out.getvalue()) // 3]  # cut mid-scan, as an interrupted copy leaves it


def upload(page, files: list[tuple[str, bytes, str]], add_to_previous: bool = False) -> None:
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
        [{"name": name, "mimeType": mime, "buffer": data} for name, data, mime in files])
    button = page.get_by_role("button", name="Use these files")
    button.wait_for(timeout=30_000)
    wait_for_app_idle(page)
    add = page.get_by_role("checkbox", name=re.compile("Add to the previous upload"))
    if add.count() and add.is_checked() != add_to_previous:
        page.get_by_text("Add to the previous upload").click()
        wait_for_app_idle(page)
    button.click()
    wait_for_app_idle(page, timeout_ms=120_000)


def test_bad_uploads_are_listed_or_refused_and_the_page_works_on(app_server, browser):  # noqa: F811
    from playwright.sync_api import expect

    context, page, errors = new_student(browser)
    try:
        page.goto(app_server.url)
        page.get_by_text("Skipped files").wait_for(timeout=180_000)
        page.get_by_test_id("stRadio").first.get_by_text("Upload").click()
        wait_for_app_idle(page)

        # 1. A zip of class folders with two bad files among good ones: the good ones are used and
        #    the bad ones listed as skipped.
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w") as z:
            for k, class_name in enumerate(("NORMAL", "PNEUMONIA")):
                for i in range(10):
                    z.writestr(f"xrays/{class_name}/{i}.png", png_bytes(60 + 90 * k))
            z.writestr("xrays/NORMAL/notes.png", b"these are my notes, not an X-ray\n")
            z.writestr("xrays/PNEUMONIA/cut.jpg", truncated_jpeg())
        upload(page, [("xrays.zip", archive.getvalue(), "application/zip")])
        expect(page.get_by_text("2 file(s) could not be used and were left out")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Class counts")).to_be_visible()
        screenshot(page, "classroom-upload-skipped")

        # 2. Only bad files: a clear refusal, and the rest of the app keeps the dataset it had.
        page.get_by_test_id("stFileChipDeleteBtn").first.click()
        wait_for_app_idle(page)
        upload(page, [("notes.png", b"these are my notes, not an X-ray\n", "image/png"),
                      ("cut.jpg", truncated_jpeg(), "image/jpeg")])
        refusal = page.get_by_test_id("stAlertContentError").first
        expect(refusal).to_be_visible(timeout=120_000)
        assert "cannot be used" in refusal.inner_text() or "refused" in refusal.inner_text()
        expect(page.get_by_text("The other pages keep using")).to_be_visible()
        screenshot(page, "classroom-upload-refused")

        # 3. The page works on: back to the built-in set, samples shown.
        page.get_by_test_id("stRadio").first.get_by_text("Synthetic").click()
        expect(page.get_by_text("No files skipped.")).to_be_visible(timeout=180_000)
        assert page.get_by_test_id("stException").count() == 0
        assert not [e for e in errors if "ResizeObserver" not in e], errors
    finally:
        context.close()


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    """A second server in public demo mode, its data root a folder of its own."""
    require_browser()
    tmp = tmp_path_factory.mktemp("demo-app")
    (tmp / "data-root").mkdir()
    server = start_app(app_env(tmp, EXPLORE_DEMO_MODE="1", EXPLORE_DATA_ROOT=str(tmp / "data-root")),
                       tmp / "streamlit.log")
    yield server
    stop_app(server)


def test_demo_mode_shows_its_limits_and_refuses_a_path_outside_the_data_root(demo_server, browser, tmp_path):  # noqa: F811
    from playwright.sync_api import expect

    outside = tmp_path / "secret-xrays"  # a real folder of images, but not under the data root
    for k, class_name in enumerate(("NORMAL", "PNEUMONIA")):
        (outside / class_name).mkdir(parents=True)
        for i in range(4):
            (outside / class_name / f"{i}.png").write_bytes(png_bytes(60 + 90 * k))
    context, page, errors = new_student(browser)
    try:
        page.goto(demo_server.url)
        page.get_by_text("Skipped files").wait_for(timeout=180_000)
        expect(page.get_by_text("Public demo mode").first).to_be_visible()
        page.get_by_test_id("stRadio").first.get_by_text("Folder").click()
        wait_for_app_idle(page)
        path = page.get_by_label("Folder path")
        path.fill(str(outside))
        path.press("Enter")
        wait_for_app_idle(page, timeout_ms=60_000)
        refusal = page.get_by_test_id("stAlertContentError").first
        expect(refusal).to_be_visible(timeout=60_000)
        assert "demo mode" in refusal.inner_text() and "outside the allowed data folder" in refusal.inner_text()
        expect(page.get_by_text("The other pages keep using")).to_be_visible()
        screenshot(page, "classroom-demo-refuses-path")
        assert not Path(demo_server.runs_dir).exists() or not any(Path(demo_server.runs_dir).rglob("*.pt"))
        assert page.get_by_test_id("stException").count() == 0
        assert not [e for e in errors if "ResizeObserver" not in e], errors
    finally:
        context.close()


def test_memory_soak_and_watch_smoke():
    """The soak and watch measurements that BENCHMARKS.md quotes (20 sessions there; 3 with --quick),
    through the CLI in its own process (Playwright's sync API allows one driver per thread, and this module holds one):
    real sessions train and close, the server's memory is read, and it must not grow by hundreds of MB."""
    require_browser()
    out = subprocess.run([sys.executable, "-m", "explore", "bench", "--only", "soak,watch", "--quick", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    sections = json.loads(out.stdout)["sections"]
    # the watch measurement: a real tab watching a run, with and without Streamlit's post-run gc
    watch = sections["watch"]
    assert "error" not in watch, watch
    for key in ("gc_on", "gc_off"):
        assert watch[key]["watched_epochs_per_second"] > 0 and watch[key]["unwatched_epochs_per_second"] > 0
        assert watch[key]["slowdown"] > 0
    report = sections["soak"]
    assert report["available"] and len(report["after_each_session_mb"]) == report["sessions"] == 3, report
    assert report["idle_mb"] < report["after_first_session_mb"]  # torch and the data load at the first visit
    assert report["growth_after_first_mb"] < 300, report
    assert all(seconds > 0 for seconds in report["session_seconds"])
