"""Memory soak: browser sessions one after another on one server, each trains a run and closes.

A classroom server lives for hours while students come and go. This drives real Chromium
(Playwright) against `streamlit run streamlit_app.py` the way a student does — open the Train
page, start a short custom run, watch it finish, close the tab — and reads the server process's
resident memory (VmRSS) after each session. Memory that grows with every session is a leak;
memory that stays near its level after the first session (torch, the data cache and the job
manager loaded once for everyone) is the cost of the server.

Used by `python -m explore bench --only soak` (figures in BENCHMARKS.md). Needs the `playwright`
package and Chromium at /usr/bin/chromium (or EXPLORE_CHROMIUM); without them it says so.
"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, timeout_s: float = 120.0) -> tuple[subprocess.Popen, str]:
    """The app as a classroom runs it (one runs folder per session), on the small demo data."""
    port = free_port()
    env = os.environ | {"EXPLORE_RUNS_DIR": str(tmp / "runs"), "EXPLORE_CACHE_DIR": str(tmp / "cache"),
                        "EXPLORE_DEMO_SMALL": "1", "EXPLORE_SHARED_SERVER": "1", "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "streamlit_app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read() == b"ok":
                    return server, url
        except OSError:
            time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"streamlit did not answer within {timeout_s:.0f} s")


def stop_server(server: subprocess.Popen, timeout_s: float = 15.0) -> None:
    """Ask the server to stop, then make sure it has (and reap it)."""
    server.terminate()
    try:
        server.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def one_session(browser, url: str, epochs: int, timeout_ms: float = 300_000) -> None:
    """A student opens the Train page, trains a short custom run to the end, and closes the tab."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.goto(f"{url}/train")
        page.get_by_role("tab", name=re.compile("Custom run")).click(timeout=timeout_ms)
        field = page.get_by_label("Epochs")
        field.fill(str(epochs))
        field.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Train", exact=True).click()
        page.get_by_text(f"trained {epochs} epochs").first.wait_for(timeout=timeout_ms)
    finally:
        context.close()


def least_squares_slope(ys: list[float]) -> float:
    """MB per session: the slope of a straight line through the readings (0 for fewer than 2)."""
    n = len(ys)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys)) / sum((x - mean_x) ** 2 for x in range(n))


def run_soak(sessions: int = 20, epochs: int = 2, settle_s: float = 3.0,
             log: Callable[[str], None] = lambda message: None) -> dict:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"available": False, "note": "the soak needs the playwright package: pip install playwright"}
    chromium = os.environ.get("EXPLORE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return {"available": False, "note": f"the soak needs Chromium at {chromium}: apt-get install -y chromium"}
    with tempfile.TemporaryDirectory(prefix="explore-soak-") as tmp:
        server, url = start_server(Path(tmp))
        try:
            idle = rss_mb(server.pid)
            readings, seconds = [], []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                try:
                    for index in range(sessions):
                        started = time.perf_counter()
                        one_session(browser, url, epochs)
                        time.sleep(settle_s)  # let the server notice the closed tab
                        seconds.append(time.perf_counter() - started)
                        readings.append(rss_mb(server.pid))
                        log(f"  soak: session {index + 1} of {sessions}: {seconds[-1]:.1f} s, "
                            f"server RSS {readings[-1]:.0f} MB")
                finally:
                    browser.close()
            time.sleep(max(settle_s, 10.0))
            final = rss_mb(server.pid)
        finally:
            stop_server(server)
    after_first = readings[0]
    return {"available": True, "sessions": sessions, "epochs_per_session": epochs, "data": "EXPLORE_DEMO_SMALL=1 "
            "(240 train images, 64 px)", "idle_mb": idle, "after_first_session_mb": after_first,
            "after_each_session_mb": readings, "max_mb": max(readings), "final_mb": final,
            "growth_after_first_mb": final - after_first,
            "slope_mb_per_session": least_squares_slope(readings[1:]),
            "session_seconds": seconds}
