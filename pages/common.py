"""What every page shares: the job manager, the run store, the chosen dataset, small widgets.

Only Streamlit glue lives here; everything computed comes from `explore`.
Cached objects are shared by every browser session on the server, so they must be
immutable (datasets) or built for sharing (the job manager's queue).
"""
from __future__ import annotations

import uuid

import streamlit as st

from explore.data import DataError, DataSpec, load_bundle
from explore.training.jobs import JobManager
from explore.training.ray_backend import ClusterError
from explore.settings import AppSettings, NotAllowed, demo_small, load_settings, runs_dir
from explore.training.store import RunStore, StoreError


def _run_through_the_frame() -> None:
    """Make a first visit straight to a page URL (e.g. /train?run=...) go through streamlit_app.py.

    Streamlit treats a folder named `pages/` beside the entry script as an old-style multipage app
    until `st.navigation` has run once in the server process. A fresh server whose first request is
    /train would run pages/train.py alone: no frame, no navigation, no demo banner. Switching the
    old mode off and rerunning sends that request through the frame, which opens the same page.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


_run_through_the_frame()


@st.cache_resource
def _shared_job_manager() -> JobManager:
    return JobManager(settings=app_settings)


def job_manager() -> JobManager:
    """One queue per server: a classroom shares the machine through it. Its `submit` is the gate
    that applies the deployment settings (read at every request, secrets.toml included). With
    EXPLORE_RAY_ADDRESS set and no cluster to reach, the page says so instead of a traceback."""
    try:
        return _shared_job_manager()
    except ClusterError as error:
        st.error(f"Runs cannot start: {error}")
        st.stop()


def queue_runs(store: RunStore, configs: list) -> list[str] | None:
    """Queue runs through the job manager's gate and show what it said: the caps it applied
    (demo mode) or why it refused. Returns the run ids, or None when nothing was queued."""
    try:
        run_ids = job_manager().submit(store, configs)
    except (NotAllowed, StoreError, ValueError) as error:
        st.error(f"Cannot start: {error}")
        return None
    if run_ids.notes:
        st.info("Demo mode: " + "; ".join(run_ids.notes), icon="🔒")
    return run_ids


def app_settings() -> AppSettings:
    """Demo mode and classroom settings: environment variables, then .streamlit/secrets.toml."""
    try:
        secrets = dict(st.secrets)
    except Exception:  # no secrets.toml: that's the usual local case
        secrets = {}
    return load_settings(secrets=secrets)


def session_id() -> str:
    """A random id for this browser session, kept in the URL (?session=) so a refresh keeps it."""
    sid = st.session_state.get("session_id") or st.query_params.get("session") or uuid.uuid4().hex[:12]
    st.session_state["session_id"] = sid
    if st.query_params.get("session") != sid:
        st.query_params["session"] = sid
    return sid


def run_store() -> RunStore:
    """The runs folder (EXPLORE_RUNS_DIR, default ./runs); one sub-folder per browser session on a
    shared server or in demo mode, so students only see (and delete) their own runs."""
    settings = app_settings()
    return RunStore(runs_dir(), namespace=f"session-{session_id()}" if settings.per_session_runs else None)


def demo_banner() -> None:
    """Say on screen that demo mode is on and what it limits."""
    settings = app_settings()
    if settings.demo_mode:
        st.info("**Public demo mode** — " + " · ".join(settings.limits_text()), icon="🔒")


# Folders the Data page has decoded on this server (with its progress bar), so a rerun does not
# decode again; the images themselves live in the on-disk decode cache and in cached_bundle.
DECODED_FOLDERS: set[tuple] = set()


@st.cache_resource(show_spinner="Preparing the dataset (decoded once, shared by every page)…")
def cached_bundle(spec: DataSpec):
    return load_bundle(spec)


# EXPLORE_DEMO_SMALL=1: a small, fast default dataset (64 px, a few hundred images) for live
# demos on a laptop CPU and for the browser tests. The Data page can still choose anything.
DEMO_SMALL_SPEC = DataSpec(image_size=64, synthetic=(("n_train", 240), ("n_val", 80), ("n_test", 80)))


def default_data_spec() -> DataSpec:
    """The built-in synthetic set at 128 px, or the small demo set when EXPLORE_DEMO_SMALL=1."""
    return DEMO_SMALL_SPEC if demo_small() else DataSpec()


def current_data_spec() -> DataSpec:
    """The dataset chosen on the Data page (default: `default_data_spec()`)."""
    return st.session_state.get("data_spec", default_data_spec())


@st.cache_resource(max_entries=4, show_spinner="Loading the run and its data…")
def loaded_run(root: str, run_id: str):
    """A finished run ready for analysis (model, input pipeline, predictions, data), shared by the Saliency
    and Mismatch pages. Cached per runs folder and run id; its data comes from `cached_bundle`."""
    from explore.insight.attribution import load_run  # captum: loaded when a student first opens an analysis page

    store = RunStore(root)
    return load_run(store, run_id, bundle=cached_bundle(store.load(run_id).config.data))


def bundle_or_stop(spec: DataSpec | None = None):
    """Load the chosen dataset, or show why not and stop this page (never a traceback)."""
    spec = spec or current_data_spec()
    try:
        return cached_bundle(spec)
    except DataError as error:
        st.error(f"This dataset cannot be used: {error}")
        st.stop()


def status_badge(state: str) -> str:
    icons = {"finished": "✅", "running": "⏳", "queued": "🕒", "diverged": "💥", "stopped": "⏹️",
             "failed": "❌", "damaged": "⚠️"}
    return f"{icons.get(state, '•')} {state}"
