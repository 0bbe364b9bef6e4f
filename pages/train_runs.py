"""Train page, the bottom: this store's recent runs, and opening a run bundle from another machine."""
from __future__ import annotations

import streamlit as st

from explore.insight import report
from explore.training.share import import_run_bundle
from explore.training.store import StoreError
from pages.common import status_badge
from pages.train_results import PERCENT_COLUMNS


def recent_runs(store) -> None:
    """The runs in this store, newest first; selecting one shows it above. Damaged folders say why."""
    st.subheader("Recent runs")
    recent = store.list()[:30]
    if not recent:
        st.caption(f"No runs yet in {store.root}.")
        return
    table = report.runs_table(recent)
    table["status"] = table["status"].map(status_badge)

    def open_selected():
        rows = st.session_state["recent_runs"]["selection"]["rows"]
        if rows:
            st.query_params["run"] = [table["run"][rows[0]]]
            st.session_state["train_runs"] = [table["run"][rows[0]]]

    st.dataframe(table, hide_index=True, on_select=open_selected, selection_mode="single-row", key="recent_runs",
                 column_config=PERCENT_COLUMNS, placeholder="", column_order=list(table.columns[1:]))
    st.caption("Select a row to show that run above.")


def open_bundle(store, settings) -> None:
    """Replay a run exported on another machine: curves, comparisons and saliency without retraining."""
    with st.expander("📦 Open a run bundle from another machine"):
        if settings.demo_mode:
            st.caption("Demo mode: curves and metrics are imported, uploaded weights are never accepted.")
        upload = st.file_uploader("Run bundle (.zip from 'Export run bundle')", type=["zip"], key="bundle_upload")
        if upload is not None and st.button("Open this run", key="open_bundle"):
            try:
                run_id = import_run_bundle(upload.getvalue(), store, accept_weights=not settings.demo_mode)
            except StoreError as error:
                st.error(f"This bundle cannot be opened: {error}")
                return
            st.query_params["run"] = [run_id]
            st.session_state["train_runs"] = [run_id]
            st.rerun()


def bottom(store, manager, settings) -> None:
    st.divider()
    open_bundle(store, settings)
    if manager.active()["running"] or manager.active()["queued"]:
        st.fragment(run_every=2.0)(recent_runs)(store)  # statuses change while something trains
    else:
        recent_runs(store)
