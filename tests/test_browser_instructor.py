"""The instructor's class view in real Chromium: two students train, the class view shows both runs;
without the token the page is refused, and students never see it in their navigation.

Screenshots: test-artifacts/instructor-class-view.png and instructor-projector.png (look at them).
"""
from __future__ import annotations

import pytest

from browser_helpers import (  # noqa: F401 (fixtures)
    app_server, browser, screenshot, wait_for_app_idle)
from explore.training.store import RunStore
from test_browser_classroom import new_student, queue_custom_run, session_of
from test_browser_flow import run_ids_in_url, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TOKEN = "class-of-2026"


@pytest.fixture(scope="module")
def app_env_overrides() -> dict[str, str]:
    return {"EXPLORE_SHARED_SERVER": "1", "EXPLORE_INSTRUCTOR_TOKEN": TOKEN}


def test_class_view_shows_both_students_runs_and_refuses_without_the_token(app_server, browser):  # noqa: F811
    from playwright.sync_api import expect

    students = [new_student(browser) for _ in range(2)]
    teacher_context, teacher, teacher_errors = new_student(browser)
    try:
        runs = []
        for index, (_, page, _) in enumerate(students):
            page.goto(app_server.url)
            wait_for_app_idle(page, timeout_ms=180_000)
            assert page.get_by_test_id("stSidebarNav").get_by_text("Class view").count() == 0
            queue_custom_run(page, f"student run {index}", epochs=2)
            [run_id] = run_ids_in_url(page)
            runs.append((RunStore(app_server.runs_dir, namespace=f"session-{session_of(page)}"), run_id))
        wait_until(students[0][1], lambda: all(s.load(r, with_metrics=False).state == "finished" for s, r in runs),
                   300, "both students' runs to finish")

        for url in (f"{app_server.url}/instructor", f"{app_server.url}/instructor?token=wrong"):
            teacher.goto(url)
            wait_for_app_idle(teacher, timeout_ms=120_000)
            expect(teacher.get_by_text("This page is for the instructor only")).to_be_visible(timeout=60_000)
            assert teacher.get_by_test_id("stVegaLiteChart").count() == 0
        screenshot(teacher, "instructor-refused")

        teacher.goto(f"{app_server.url}/instructor?token={TOKEN}")
        wait_for_app_idle(teacher, timeout_ms=120_000)
        chart = teacher.get_by_test_id("stVegaLiteChart").first
        expect(chart).to_be_visible(timeout=60_000)
        metrics = teacher.get_by_test_id("stMetric")
        expect(metrics.filter(has_text="finished runs").get_by_test_id("stMetricValue")).to_have_text("2")
        expect(metrics.filter(has_text="students").get_by_test_id("stMetricValue")).to_have_text("2")
        expect(chart.locator(".role-legend").get_by_text("hw3_cnn").first).to_be_visible()
        expect(teacher.get_by_text("server memory (RSS)")).to_be_visible()
        screenshot(teacher, "instructor-class-view")

        teacher.get_by_text("Projector").click()
        wait_for_app_idle(teacher)
        teacher.wait_for_timeout(1000)
        font = teacher.evaluate("() => getComputedStyle(document.querySelector('.stMainBlockContainer p')).fontSize")
        assert float(font.removesuffix("px")) >= 20, font
        screenshot(teacher, "instructor-projector")
        assert teacher.get_by_test_id("stException").count() == 0
        assert not [e for e in teacher_errors if "ResizeObserver" not in e], teacher_errors
    finally:
        for context, _, _ in students:
            context.close()
        teacher_context.close()
