"""Train: replay a homework preset or set every knob yourself, then watch the model learn.

Training runs in the server's job queue, not in this script: changing a widget, switching
pages or refreshing the browser never stops or restarts it. The run ids sit in the URL
(?run=...), so a refresh finds them again. The sections live in pages/train_*.py.
"""
import streamlit as st

from explore.insight import report
from pages.common import app_settings, current_data_spec, job_manager, run_store
from pages.train_custom import custom_config
from pages.train_form import preset_configs, shared_config, submit
from pages.train_live import show_runs, shown_run_ids
from pages.train_results import final_results
from pages.train_runs import bottom

store, manager, settings = run_store(), job_manager(), app_settings()
spec = current_data_spec()
st.title("Train a classifier")
st.caption(f"Dataset: **{report.describe_data(spec)}** — choose another on the Data page.")

tab_names = ["📚 Homework presets", "🛠️ Custom run"] + (["🔗 Shared link"] if "config" in st.query_params else [])
tabs = st.tabs(tab_names)
with tabs[0]:
    submit(store, lambda: preset_configs(spec))
with tabs[1]:
    submit(store, lambda: custom_config(spec, settings))
if len(tabs) == 3:
    with tabs[2]:
        submit(store, shared_config)

run_ids = shown_run_ids(store)
if run_ids:
    done = show_runs(store, manager, run_ids)
    if done:
        pick = next(iter(done)) if len(done) == 1 else st.selectbox(
            "Final results of", list(done), format_func=lambda i: f"{done[i].label} ({done[i].state})",
            key="result_pick")
        final_results(store, store.load(pick, with_metrics=False))

bottom(store, manager, settings)
