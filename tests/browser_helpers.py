"""Helpers for real-browser tests: start the app on a free port, open headless Chromium.

Usage in a test module:

    from browser_helpers import app_server, browser_page   # fixtures
    pytestmark = pytest.mark.browser

    def test_x(app_server, browser_page):
        browser_page.goto(app_server.url)

`app_server` is module-scoped and starts `streamlit run streamlit_app.py` with the env of
`app_env()` (runs in a temp folder, small demo data); override the `app_env_overrides`
fixture in a module to add variables. Chromium is the system one (/usr/bin/chromium, see
/work/shared/browser-testing.md); without it the tests skip with the install command.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("EXPLORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts"
INSTALL_HINT = ("real-browser tests need Chromium at /usr/bin/chromium and the playwright package: "
                "apt-get update && apt-get install -y chromium && pip install playwright pytest-playwright")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll GET /_stcore/health until it answers 'ok' (or the server dies / time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with status {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"streamlit at {url} was not healthy after {timeout:.0f} s")


@dataclass
class AppServer:
    url: str
    process: subprocess.Popen
    runs_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def start_app(env: dict[str, str], log_path: Path, script: str = "streamlit_app.py") -> AppServer:
    """Start streamlit on a free loopback port in its own process group; returns once healthy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(log_path, "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = AppServer(url, process, Path(env["EXPLORE_RUNS_DIR"]), log_path)
    try:
        wait_healthy(url, process)
    except Exception:
        stop_app(server)
        raise
    return server


def stop_app(server: AppServer) -> None:
    """Stop the server we started (its own process group, by id), then reap it."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=10)


def app_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """The server's environment: runs and caches in `tmp`, the small demo dataset, 1 CPU thread."""
    env = dict(os.environ)
    env.update({
        "EXPLORE_RUNS_DIR": str(tmp / "runs"),
        "EXPLORE_CACHE_DIR": str(tmp / "cache"),
        "EXPLORE_DEMO_SMALL": "1",
        # One intra-op thread: the server shares the CPU with Chromium and the test, and on a busy
        # 2-core machine two spinning OpenMP threads made epochs 10-50x slower than one.
        "EXPLORE_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    })
    env.update(overrides)
    return env


def require_browser():
    """Import playwright and check for Chromium, or skip with the install command."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found — {INSTALL_HINT}")
    return pytest.importorskip("playwright.sync_api", reason=INSTALL_HINT)


@pytest.fixture(scope="module")
def app_env_overrides() -> dict[str, str]:
    """Override in a test module to change the server's environment."""
    return {}


@pytest.fixture(scope="module")
def app_server(tmp_path_factory, app_env_overrides):
    require_browser()
    tmp = tmp_path_factory.mktemp("app")
    server = start_app(app_env(tmp, **app_env_overrides), tmp / "streamlit.log")
    yield server
    stop_app(server)


@pytest.fixture(scope="module")
def browser():
    sync_api = require_browser()
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def browser_page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def screenshot(page, name: str) -> Path:
    """A full-page screenshot in test-artifacts/NAME.png (look at it: passing is not enough).

    Streamlit scrolls inside its main section, not the document, so `full_page` alone sees
    one viewport: the viewport is stretched to the content's height for the shot.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(main.scrollHeight, document.body.scrollHeight);
    }""")
    page.set_viewport_size({"width": size["width"], "height": min(int(height) + 40, 12000)})
    page.wait_for_timeout(500)  # let charts re-layout to the new size
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path


def wait_for_app_idle(page, timeout_ms: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script (no 'Running…' status widget)."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
