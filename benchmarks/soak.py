"""Real browser sessions against a real server: a memory soak, and what watching a run costs.

Soak: browser sessions one after another on one server, each trains a run and closes.

A classroom server lives for hours while students come and go. This drives real Chromium
(Playwright) against `streamlit run streamlit_app.py` the way a student does — open the Train
page, start a short custom run, watch it finish, close the tab — and reads the server process's
resident memory (VmRSS) after each session. Memory that grows with every session is a leak;
memory that stays near its level after the first session (torch, the data cache and the job
manager loaded once for everyone) is the cost of the server.

Watch: the training speed of one run while a tab shows it live, and after the tab is closed.

Concurrent: many students AT ONCE (one Chromium, a context each), each through Data → the quick
HW3 preset → Saliency, with the server's peak memory (children included) and the time to the last
run finished.

Used by `python -m explore bench --only soak,watch,concurrent` (figures in BENCHMARKS.md). Needs the `playwright`
package and Chromium at /usr/bin/chromium (or EXPLORE_CHROMIUM); without them it says so.
"""
from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable
from explore.settings import child_environment, chromium

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def rss_mb(pid: int) -> float:
    """Resident memory of a process now (VmRSS, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def child_pids(pid: int) -> list[int]:
    """Every descendant of a process (worker processes, their helpers), from /proc's children lists."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except (OSError, ValueError):  # the task ended while we looked
                continue
            found += kids
            todo += kids
    return found


def tree_rss_mb(pid: int) -> dict:
    """Resident memory of a process and of all its descendants (runs may train in worker processes)."""
    own = rss_mb(pid)
    children = 0.0
    for child in child_pids(pid):
        try:
            children += rss_mb(child)
        except (OSError, RuntimeError):  # a child that ended (or is a zombie without VmRSS) holds nothing
            continue
    return {"server_mb": own, "children_mb": children, "total_mb": own + children}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, timeout_s: float = 120.0, **extra_env: str) -> tuple[subprocess.Popen, str]:
    """The app as a classroom runs it (one runs folder per session), on the small demo data."""
    port = free_port()
    env = child_environment({"EXPLORE_RUNS_DIR": str(tmp / "runs"), "EXPLORE_CACHE_DIR": str(tmp / "cache"),
                                      "EXPLORE_DEMO_SMALL": "1", "EXPLORE_SHARED_SERVER": "1", "PYTHONPATH": str(ROOT)}
                                     | extra_env)
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


def start_custom_run(context, url: str, epochs: int, timeout_ms: float = 300_000):
    """Open the Train page in a new tab of `context` and start a custom run; returns the page."""
    page = context.new_page()
    page.goto(f"{url}/train")
    page.get_by_role("tab", name=re.compile("Custom run")).click(timeout=timeout_ms)
    field = page.get_by_label("Epochs")
    field.fill(str(epochs))
    field.press("Enter")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Train", exact=True).click()
    return page


def one_session(browser, url: str, epochs: int, timeout_ms: float = 300_000) -> None:
    """A student opens the Train page, trains a short custom run to the end, and closes the tab."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = start_custom_run(context, url, epochs, timeout_ms)
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


def browser_or_reason():
    """(sync_playwright, chromium path) or (None, why not)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, "needs the playwright package: pip install playwright"
    browser = chromium()
    if not Path(browser).exists():
        return None, f"needs Chromium at {browser}: apt-get install -y chromium"
    return sync_playwright, browser


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def epochs_done(runs: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in runs.rglob("metrics.jsonl"))


def training_rate(server: subprocess.Popen, runs: Path, seconds: float, longest_s: float = 120.0) -> dict:
    """Epochs per second finished, and server CPU seconds per epoch, over a window of at least `seconds`
    that lasts until at least one epoch finished in it (at most `longest_s`): on a busy machine one epoch
    can take longer than a short window, which would read as a rate of zero."""
    cpu0, epochs0, t0 = cpu_seconds(server.pid), epochs_done(runs), time.perf_counter()
    time.sleep(seconds)
    while epochs_done(runs) == epochs0 and time.perf_counter() - t0 < longest_s:
        time.sleep(0.25)
    cpu1, epochs1, t1 = cpu_seconds(server.pid), epochs_done(runs), time.perf_counter()
    return {"epochs_per_second": (epochs1 - epochs0) / (t1 - t0),
            "server_cpu_seconds_per_epoch": (cpu1 - cpu0) / max(epochs1 - epochs0, 1)}


def run_watch_cost(window_s: float = 10.0, repeats: int = 2, post_script_gc: bool = False,
                   log: Callable[[str], None] = lambda message: None) -> dict:
    """What a browser tab watching a run live costs the training, in the real app.

    One long run on the small data; its training speed is read over windows while its Train page
    is open (the page redraws status and curves every second), then after the tab is closed (the
    run goes on in the job queue). Training runs on one thread so the browser, which shares this
    machine here but sits on a student's laptop in a classroom, does not take the training's core.
    post_script_gc=True restores Streamlit's default gc.collect() after every script run (the
    app's .streamlit/config.toml turns it off), to show what it cost.
    """
    sync_playwright, chromium = browser_or_reason()
    if sync_playwright is None:
        return {"available": False, "note": f"the watch measurement {chromium}"}
    with tempfile.TemporaryDirectory(prefix="explore-watch-") as tmp:
        server, url = start_server(Path(tmp), EXPLORE_THREADS="1",
                                   STREAMLIT_RUNNER_POST_SCRIPT_GC="true" if post_script_gc else "false")
        runs = Path(tmp) / "runs"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = start_custom_run(context, url, epochs=300)
                page.locator("[data-testid='stProgress']").first.wait_for(timeout=120_000)  # queued or training
                # Past the first epoch and its one-time costs (a worker process may still be starting).
                deadline = time.monotonic() + 300
                while epochs_done(runs) == 0 and time.monotonic() < deadline:
                    time.sleep(0.5)
                watched = [training_rate(server, runs, window_s) for _ in range(repeats)]
                context.close()
                unwatched = [training_rate(server, runs, window_s) for _ in range(repeats)]
                browser.close()
        finally:
            stop_server(server)
    rate = lambda rows: statistics.median(r["epochs_per_second"] for r in rows)  # noqa: E731
    cpu = lambda rows: statistics.median(r["server_cpu_seconds_per_epoch"] for r in rows)  # noqa: E731
    result = {"available": True, "post_script_gc": post_script_gc, "window_seconds": window_s,
              "watched_epochs_per_second": rate(watched), "unwatched_epochs_per_second": rate(unwatched),
              "watched_cpu_seconds_per_epoch": cpu(watched), "unwatched_cpu_seconds_per_epoch": cpu(unwatched),
              "windows": {"watched": watched, "unwatched": unwatched}}
    result["slowdown"] = result["unwatched_epochs_per_second"] / max(result["watched_epochs_per_second"], 1e-9)
    log(f"  watch (post-script gc {'on' if post_script_gc else 'off'}): {rate(watched):.2f} epochs/s watched, "
        f"{rate(unwatched):.2f} unwatched → {result['slowdown']:.2f}×")
    return result


def run_soak(sessions: int = 20, epochs: int = 2, settle_s: float = 3.0,
             log: Callable[[str], None] = lambda message: None) -> dict:
    sync_playwright, chromium = browser_or_reason()
    if sync_playwright is None:
        return {"available": False, "note": f"the soak {chromium}"}
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


# ----------------------------------------------------------------------------- many students at once
def runs_summary(runs: Path) -> dict:
    """State and finish time of every run under `runs` (all sessions' folders)."""
    states, finished = {}, []
    for status_path in runs.rglob("status.json"):
        try:
            status = json.loads(status_path.read_text())
        except (OSError, ValueError):
            continue
        states[status_path.parent.name] = status.get("status")
        if status.get("finished"):
            finished.append(float(status["finished"]))
    return {"states": states, "last_finished": max(finished, default=None)}


class MemorySampler:
    """Reads the server's resident memory, children included, every `interval_s` in a background thread."""

    def __init__(self, pid: int, interval_s: float = 0.5):
        import threading

        self.pid, self.interval_s = pid, interval_s
        self.peak = {"server_mb": 0.0, "children_mb": 0.0, "total_mb": 0.0}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                now = tree_rss_mb(self.pid)
            except (OSError, RuntimeError):  # the server is gone
                return
            self.peak = {k: max(self.peak[k], now[k]) for k in self.peak}
            self.samples += 1
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def _idle(page, timeout_ms: float) -> None:
    """Streamlit has finished the script run (no 'Running…' status widget)."""
    await page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    await page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                 timeout=timeout_ms)


async def _go_to(page, title: str, timeout_ms: float) -> None:
    await page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click(timeout=timeout_ms)
    await _idle(page, timeout_ms)


async def student_session(browser, url: str, index: int, timeout_ms: float, log) -> dict:
    """One student, as the course's first lab goes: the Data page, the quick HW3 preset trained to the
    end on the Data page's (small) images, then Saliency maps on that run. Returns timings and errors."""
    started = time.perf_counter()
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    marks = {}
    try:
        await page.goto(url, timeout=timeout_ms)  # ten first loads at once can take well over the default 30 s
        await page.get_by_text("Skipped files").wait_for(timeout=timeout_ms)
        marks["data_s"] = time.perf_counter() - started
        await _go_to(page, "Train", timeout_ms)
        await page.get_by_role("tab", name=re.compile("Homework presets")).wait_for(timeout=timeout_ms)
        await page.locator("[data-testid='stSelectbox']").filter(has_text="Preset").click(timeout=timeout_ms)
        await page.get_by_role("option", name="HW3 · CNN baseline").click(timeout=timeout_ms)
        await page.get_by_text("quick variant:").wait_for(timeout=timeout_ms)
        await page.get_by_text("Use the Data page's image size").click(timeout=timeout_ms)
        await _idle(page, timeout_ms)
        await page.get_by_role("button", name=re.compile("Train this preset")).click(timeout=timeout_ms)
        await page.get_by_text(re.compile(r"trained \d+ epochs")).first.wait_for(timeout=timeout_ms)
        marks["trained_s"] = time.perf_counter() - started
        await _go_to(page, "Saliency", timeout_ms)
        column = page.get_by_test_id("stColumn").filter(has_text="Test · site B (other hospital)").last
        await column.locator("[data-testid='stImage'] img").first.wait_for(timeout=timeout_ms)
        marks["saliency_s"] = time.perf_counter() - started
        tracebacks = await page.get_by_test_id("stException").count()
        ok = tracebacks == 0
    except Exception as error:  # one student's failure is reported, the others go on
        ok, tracebacks = False, None
        errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
    finally:
        await context.close()
    log(f"  concurrent: student {index + 1} {'done' if ok else 'FAILED'} after {time.perf_counter() - started:.0f} s")
    return {"ok": ok, "errors": [e for e in errors if "ResizeObserver" not in e], "tracebacks": tracebacks, **marks}


async def _all_students(chromium: str, url: str, sessions: int, timeout_ms: float, log) -> list[dict]:
    import asyncio

    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            return await asyncio.gather(*(student_session(browser, url, i, timeout_ms, log) for i in range(sessions)))
        finally:
            await browser.close()


def run_concurrent(sessions: int = 10, timeout_s: float = 3600.0, log: Callable[[str], None] = lambda m: None) -> dict:
    """`sessions` students AT ONCE on one server in demo mode with the small data (one Chromium, one
    context each): each loads the Data page, trains the quick HW3 preset and opens Saliency. Records
    whether every run finished, the server's peak resident memory with its child processes (runs may
    train in worker processes), and the time from the first page load to the last run finished.
    `timeout_s` bounds each step of a session; the last student's run waits behind all the others'."""
    import asyncio

    _, chromium = browser_or_reason()
    if _ is None:
        return {"available": False, "note": f"the concurrent soak {chromium}"}
    with tempfile.TemporaryDirectory(prefix="explore-concurrent-") as tmp:
        server, url = start_server(Path(tmp), EXPLORE_DEMO_MODE="1")
        runs = Path(tmp) / "runs"
        try:
            idle = tree_rss_mb(server.pid)
            with MemorySampler(server.pid) as memory:
                started_wall, started = time.time(), time.perf_counter()
                students = asyncio.run(_all_students(chromium, url, sessions, timeout_s * 1000, log))
                seconds = time.perf_counter() - started
            summary = runs_summary(runs)
        finally:
            stop_server(server)
    states = list(summary["states"].values())
    last = summary["last_finished"]
    return {"available": True, "sessions": sessions, "demo_mode": True,
            "data": "EXPLORE_DEMO_SMALL=1 (240 train images, 64 px)", "preset": "HW3 · CNN baseline, quick, 64 px",
            "students_ok": sum(s["ok"] for s in students), "runs": len(states),
            "runs_finished": states.count("finished"), "all_finished": len(states) == sessions and
            all(s == "finished" for s in states),
            "idle_mb": idle["total_mb"], "peak_server_mb": memory.peak["server_mb"],
            "peak_children_mb": memory.peak["children_mb"], "peak_total_mb": memory.peak["total_mb"],
            "memory_samples": memory.samples, "goal_mb": 2500, "goal_met": memory.peak["total_mb"] <= 2500,
            "seconds_to_last_run_finished": (last - started_wall) if last else None,
            "seconds_all_sessions": seconds, "students": students}
