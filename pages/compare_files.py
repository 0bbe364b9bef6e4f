"""Compare page, saving: a chart in every format this machine can write, a run's files, deleting runs."""
from __future__ import annotations

import streamlit as st

from explore import charts
from explore.insight import compare
from pages import common


def chart_downloads(chart, stem: str, key: str) -> None:
    """One download button per format this machine can write (PNG/SVG need vl-convert-python)."""
    formats = charts.chart_formats()
    for column, fmt in zip(st.columns(len(formats)), formats):
        column.download_button(fmt.upper(), data=lambda fmt=fmt: charts.chart_bytes(chart, fmt),
                               file_name=f"{stem}.{fmt}", mime=charts.MIME_TYPES[fmt], key=f"{key}-{fmt}",
                               on_click="ignore", width="stretch")
    if "png" not in formats:
        st.caption("PNG and SVG need the vl-convert-python package; HTML and the Vega-Lite JSON always work.")


def export_and_delete(store, selected: list[str], label_of: dict) -> None:
    """The 'Export and delete' tab: one run's files as a zip; the selected runs deleted (never active ones)."""
    run_id = st.selectbox("Run", selected, format_func=lambda r: label_of.get(r, r), key="export_run")
    st.download_button("Download its config, metrics and summary (zip)", data=lambda: compare.run_zip(store, run_id),
                       file_name=f"{run_id}.zip", mime="application/zip", on_click="ignore")
    st.divider()
    st.markdown(f"**Delete the {len(selected)} selected runs** (their folders, weights included).")
    confirmed = st.checkbox("Yes, delete them permanently", key="confirm_delete")
    if st.button("Delete", disabled=not confirmed, type="primary"):
        active = common.job_manager().active()
        deleted, refused = compare.delete_runs(store, selected, active["running"] + active["queued"])
        if refused:
            st.warning(f"{len(refused)} runs are still queued or training: stop them on the Train page first.")
        st.session_state.pop("confirm_delete", None)
        st.session_state.pop("compare_runs", None)
        st.toast(f"Deleted {len(deleted)} runs.")
        st.rerun()
