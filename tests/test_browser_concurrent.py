"""Many students at the same time (the suite's small version of `python -m explore bench --only concurrent`):
3 real browser sessions AT ONCE on one demo-mode server, each loads Data, trains the quick HW3 preset
and opens Saliency. Every run must finish, with no traceback on any page, within the memory goal."""
from __future__ import annotations

import pytest

from browser_helpers import require_browser
from benchmarks import bench
from benchmarks.soak import run_concurrent

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.mark.timeout(1200)
def test_three_students_at_once_all_runs_finish():
    require_browser()
    result = run_concurrent(sessions=3, timeout_s=600, log=print)
    assert result["available"], result
    assert result["students_ok"] == 3, result["students"]
    assert result["all_finished"] and result["runs"] == 3, result
    assert all(not s["errors"] for s in result["students"]), result["students"]
    assert result["memory_samples"] > 3 and result["peak_total_mb"] >= result["peak_server_mb"] > result["idle_mb"] / 2
    assert result["goal_met"], f"peak {result['peak_total_mb']:.0f} MB"
    assert 0 < result["seconds_to_last_run_finished"] <= result["seconds_all_sessions"]
    lines = bench.FORMATTERS["concurrent"](result | {"sessions": 3})
    assert "3 of 3 sessions completed" in lines[1] and "all finished" in lines[1]
