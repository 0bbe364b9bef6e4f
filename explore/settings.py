"""Deployment settings: local laptop, classroom server, or public demo.

Read once from environment variables (or a mapping such as Streamlit's `st.secrets`, which the
app passes in), so the library stays free of Streamlit:

  EXPLORE_DEMO_MODE=1        public demo: folder paths only under EXPLORE_DATA_ROOT, capped uploads,
                             epochs, image size and sweeps, no deleting other sessions' runs, no
                             uploaded weights
  EXPLORE_SHARED_SERVER=1    many browsers, one server (classroom): each session gets its own runs
                             namespace (always on in demo mode)
  EXPLORE_DATA_ROOT=PATH     the only folder tree demo mode may read images from
  EXPLORE_MAX_EPOCHS, EXPLORE_MAX_IMAGE_SIZE, EXPLORE_MAX_SWEEP_RUNS,
  EXPLORE_MAX_UPLOAD_MB, EXPLORE_MAX_UPLOAD_FILES   the demo caps (defaults below)
  EXPLORE_MAX_QUEUED_PER_SESSION   shared server or demo: runs one session may have queued or
                             training at once (default 8), so one student cannot fill the queue
  EXPLORE_RAY_ADDRESS=auto|HOST:PORT   train runs on a Ray cluster instead of local worker
                             processes (explore.training.ray_backend; needs `pip install "explore[cluster]"`)
  EXPLORE_RAY_SHIP_MB        a folder or npz whose files total at most this many MB (default 256)
                             is decoded here and sent to the Ray workers through the object store

Every run passes one gate, `gate_request` (called by `JobManager.submit`): pages and the CLI only
show what it said.
  EXPLORE_INSTRUCTOR_TOKEN=SECRET   turns on the instructor's class view: /instructor?token=SECRET

This module is the one place that reads the environment. Besides the deployment settings above,
small functions at the end answer where files go and how this process trains (read at every call,
so a worker's own environment and a test's monkeypatch.setenv count):
  EXPLORE_RUNS_DIR (runs_dir), EXPLORE_CACHE_DIR (cache_dir), EXPLORE_DEMO_SMALL (demo_small),
  EXPLORE_MAX_JOBS (max_jobs), EXPLORE_EXECUTOR (executor_name), EXPLORE_OFFLINE (offline),
  EXPLORE_THREADS (cpu_threads), EXPLORE_REUSE_MEMORY (reuse_memory), EXPLORE_BUNDLE_CACHE
  (bundle_cache), EXPLORE_CHROMIUM (chromium); child_environment() for subprocesses.
"""
from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

# `RunConfig` in the annotations below is explore.training.config.RunConfig, named but not imported (not even for type
# checkers): settings sits below every other module, and every module may ask it about the environment.

TRUE = ("1", "true", "yes", "on")
FORM_MAX_EPOCHS = 300  # the Train form's upper bound outside demo mode


class NotAllowed(Exception):
    """Refused by demo mode; the message says what is limited and why."""


@dataclass(frozen=True)
class AppSettings:
    demo_mode: bool = False
    shared_server: bool = False
    data_root: Path | None = None
    max_epochs: int = 15
    max_image_size: int = 128
    max_sweep_runs: int = 6
    max_upload_mb: int = 50
    max_upload_files: int = 2000
    max_queued_per_session: int = 8
    instructor_token: str | None = field(default=None, repr=False)  # None: no class view; never printed
    ray_address: str | None = None  # None: runs train in local worker processes
    ray_ship_mb: int = 256

    @property
    def per_session_runs(self) -> bool:
        return self.demo_mode or self.shared_server

    @property
    def epoch_limit(self) -> int:
        """The most epochs the Train form offers: the demo cap in demo mode, else FORM_MAX_EPOCHS."""
        return self.max_epochs if self.demo_mode else FORM_MAX_EPOCHS

    def image_sizes(self, sizes) -> list[int]:
        """The image sizes the Data page offers: demo mode drops those above its cap."""
        return [s for s in sizes if not self.demo_mode or s <= self.max_image_size]

    def upload_limits(self, server_max_mb: int, library_max_bytes: int, library_max_files: int) -> tuple[int, int]:
        """(MB, files) one upload may hold: the smallest of the web server's, the library's and demo mode's caps."""
        megabytes = min(server_max_mb, library_max_bytes // 2**20,
                        self.max_upload_mb if self.demo_mode else library_max_bytes)
        return megabytes, self.max_upload_files if self.demo_mode else library_max_files

    def knob_upper(self, knob) -> float:
        """A synthetic knob's slider maximum: in demo mode the image counts stay at their defaults (no giant sets)."""
        return knob.default if self.demo_mode and knob.integer else knob.max

    def limits_text(self) -> list[str]:
        """What demo mode limits, as lines for the banner."""
        if not self.demo_mode:
            return []
        root = str(self.data_root) if self.data_root else "none (built-in data and uploads only)"
        return [
            f"image folders only under: {root}",
            f"uploads: at most {self.max_upload_mb} MB and {self.max_upload_files} files",
            f"at most {self.max_epochs} epochs, {self.max_image_size} px images, {self.max_sweep_runs} runs per request",
            f"at most {self.max_queued_per_session} of your runs queued or training at once",
            "runs are private to your browser session; other sessions' runs cannot be deleted",
            "uploaded weights are never accepted",
        ]


def load_settings(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> AppSettings:
    """Environment first, then `secrets` (e.g. .streamlit/secrets.toml) for keys the env lacks."""
    env = dict(os.environ if env is None else env)
    merged = {k.upper(): str(v) for k, v in (secrets or {}).items() if not isinstance(v, Mapping)} | env

    def flag(name):
        return merged.get(name, "").strip().lower() in TRUE

    def number(name, default):
        try:
            return int(merged.get(name, default))
        except ValueError:
            return default

    root = merged.get("EXPLORE_DATA_ROOT")
    defaults = AppSettings()
    return AppSettings(
        demo_mode=flag("EXPLORE_DEMO_MODE"),
        shared_server=flag("EXPLORE_SHARED_SERVER"),
        data_root=Path(root).resolve() if root else None,
        max_epochs=number("EXPLORE_MAX_EPOCHS", defaults.max_epochs),
        max_image_size=number("EXPLORE_MAX_IMAGE_SIZE", defaults.max_image_size),
        max_sweep_runs=number("EXPLORE_MAX_SWEEP_RUNS", defaults.max_sweep_runs),
        max_upload_mb=number("EXPLORE_MAX_UPLOAD_MB", defaults.max_upload_mb),
        max_upload_files=number("EXPLORE_MAX_UPLOAD_FILES", defaults.max_upload_files),
        max_queued_per_session=number("EXPLORE_MAX_QUEUED_PER_SESSION", defaults.max_queued_per_session),
        instructor_token=merged.get("EXPLORE_INSTRUCTOR_TOKEN", "").strip() or None,
        ray_address=merged.get("EXPLORE_RAY_ADDRESS", "").strip() or None,
        ray_ship_mb=number("EXPLORE_RAY_SHIP_MB", defaults.ray_ship_mb),
    )


def check_source_allowed(settings: AppSettings, source: str | None) -> None:
    """In demo mode a folder or npz must lie inside the data root (symlinks and '..' resolved first)."""
    if not settings.demo_mode or not source or source == "synthetic" or source.startswith("memory:"):
        return  # (memory:NAME is a bundle this process already holds: nothing is read from the server's disk)
    kind, _, arg = source.partition(":")
    if settings.data_root is None:
        raise NotAllowed(f"demo mode: reading {kind} paths from the server is turned off; "
                         "use the built-in data or upload a zip")
    if kind == "xrv":  # xrv:NAME:IMAGE_DIR[;labels=CSV]: both paths must be inside the root
        image_dir, _, option = arg.partition(":")[2].partition(";")
        paths = [image_dir] + ([option.partition("=")[2]] if option else [])
    else:
        paths = [arg]
    for text in paths:
        path = Path(text).expanduser().resolve()
        if path != settings.data_root and settings.data_root not in path.parents:
            raise NotAllowed(f"demo mode: {text} is outside the allowed data folder {settings.data_root}")


def check_upload_allowed(settings: AppSettings, size_bytes: int, n_files: int = 1) -> None:
    if not settings.demo_mode:
        return
    if size_bytes > settings.max_upload_mb * 1024 * 1024:
        raise NotAllowed(f"demo mode: uploads are limited to {settings.max_upload_mb} MB "
                         f"(this one is {size_bytes / 1024 / 1024:.1f} MB)")
    if n_files > settings.max_upload_files:
        raise NotAllowed(f"demo mode: at most {settings.max_upload_files} files per upload ({n_files} given)")


def apply_limits(settings: AppSettings, config: RunConfig) -> tuple[RunConfig, list[str]]:
    """Cap a run to what demo mode allows; returns the capped config and what was changed."""
    if not settings.demo_mode:
        return config, []
    check_source_allowed(settings, config.data.source)
    check_source_allowed(settings, config.data.test_source)
    notes, changes = [], {}
    if config.epochs > settings.max_epochs:
        changes["epochs"] = settings.max_epochs
        notes.append(f"epochs capped at {settings.max_epochs} (asked {config.epochs})")
    if config.data.image_size > settings.max_image_size:
        changes["data"] = replace(config.data, image_size=settings.max_image_size)
        notes.append(f"image size capped at {settings.max_image_size} px (asked {config.data.image_size})")
    return (config.replace(**changes) if changes else config), notes


def check_sweep_allowed(settings: AppSettings, n_runs: int) -> None:
    if settings.demo_mode and n_runs > settings.max_sweep_runs:
        raise NotAllowed(f"demo mode: a request (sweep, repeat, preset) may queue at most {settings.max_sweep_runs} runs ({n_runs} asked)")


def check_session_room(settings: AppSettings, n_runs: int, active_in_session: int) -> None:
    """On a shared server or in demo mode a session may hold at most `max_queued_per_session` runs."""
    cap = settings.max_queued_per_session
    if settings.per_session_runs and active_in_session + n_runs > cap:
        raise NotAllowed(f"at most {cap} of your runs may be queued or training at once: you have "
                         f"{active_in_session} and asked for {n_runs} more. Wait for some to finish or stop them.")


def gate_request(settings: AppSettings, configs: list[RunConfig],
                 active_in_session: int = 0) -> tuple[list[RunConfig], list[str]]:
    """The one gate every request for runs passes: refuse it whole, or return the (capped) configs
    and one note per change, e.g. 'epochs capped at 15 (asked 30)'."""
    check_sweep_allowed(settings, len(configs))
    check_session_room(settings, len(configs), active_in_session)
    capped = [apply_limits(settings, config) for config in configs]
    notes = list(dict.fromkeys(note for _, run_notes in capped for note in run_notes))  # once each, in order
    return [config for config, _ in capped], notes


def instructor_allowed(settings: AppSettings, token: str | None) -> bool:
    """True when `token` (from the page's URL) is the instructor token; always False when none is set.

    compare_digest takes as long for a near miss as for a wild guess, so the time a refusal takes
    does not tell a student how many leading characters they got right.
    """
    if not settings.instructor_token or not token:
        return False
    return hmac.compare_digest(settings.instructor_token.encode(), str(token).encode())


# ----- process settings: where files go, how this process trains ------------------------------
def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def runs_dir() -> Path:
    """EXPLORE_RUNS_DIR: the run store's root (default ./runs)."""
    return Path(_env("EXPLORE_RUNS_DIR") or "runs")


def cache_dir() -> Path:
    """EXPLORE_CACHE_DIR: decoded images, bundles and backbone features (default ./.explore_cache)."""
    return Path(_env("EXPLORE_CACHE_DIR") or Path.cwd() / ".explore_cache")


def demo_small() -> bool:
    """EXPLORE_DEMO_SMALL=1: the small, fast default dataset (live demos on a laptop, browser tests)."""
    return _env("EXPLORE_DEMO_SMALL") == "1"


def max_jobs() -> int | None:
    """EXPLORE_MAX_JOBS: how many runs train at once (None: one per GPU, or one on a CPU server)."""
    value = _env("EXPLORE_MAX_JOBS").strip()
    return int(value) if value else None


def executor_name() -> str | None:
    """EXPLORE_EXECUTOR: process | thread | ray, where the job manager trains runs (None: its default)."""
    return _env("EXPLORE_EXECUTOR") or None


def offline() -> bool:
    """EXPLORE_OFFLINE=1: never try to download pretrained weights."""
    return _env("EXPLORE_OFFLINE") not in ("", "0")


def cpu_threads() -> int | None:
    """EXPLORE_THREADS: torch's CPU threads in this process (None: one per core)."""
    value = _env("EXPLORE_THREADS").strip()
    return int(value) if value else None


def reuse_memory() -> bool:
    """EXPLORE_REUSE_MEMORY=0 leaves malloc alone (default: keep freed tensor memory for the next batch)."""
    return _env("EXPLORE_REUSE_MEMORY") != "0"


def bundle_cache() -> bool:
    """EXPLORE_BUNDLE_CACHE=0 turns the on-disk cache of built synthetic bundles off."""
    return _env("EXPLORE_BUNDLE_CACHE") != "0"


def chromium() -> str:
    """EXPLORE_CHROMIUM: the browser the soak test drives (default /usr/bin/chromium)."""
    return _env("EXPLORE_CHROMIUM", "/usr/bin/chromium")


def python_path_with(folder: str) -> str:
    """PYTHONPATH with `folder` first, for a subprocess that must import this checkout's explore."""
    return os.pathsep.join(filter(None, [folder, _env("PYTHONPATH")]))


def child_environment(overrides: Mapping[str, str] | None = None, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This process's environment for a subprocess, with `overrides` set and the names in `drop` removed."""
    return {k: v for k, v in os.environ.items() if k not in drop} | dict(overrides or {})


def set_in_this_process(name: str, value: str, keep_existing: bool = False) -> None:
    """Set a process setting for the code that runs later in this process (a Ray worker's threads and cache)."""
    if not (keep_existing and name in os.environ):
        os.environ[name] = value
