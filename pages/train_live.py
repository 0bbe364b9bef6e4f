"""Train page, the runs shown under the form: status, progress, Stop, and the curves growing epoch by epoch."""
from __future__ import annotations

import streamlit as st

from explore import charts
from explore.insight import report
from explore.training.store import RunStore
from pages import multitask_section
from pages.common import status_badge


def shown_run_ids(store) -> list[str]:
    """Runs named in the URL (a refresh keeps them), else the ones this session started last."""
    wanted = st.query_params.get_all("run") or st.session_state.get("train_runs", [])
    return [run_id for run_id in wanted if report.run_exists(store, run_id)]


def is_live(manager, record) -> bool:
    """Still worth polling: running, or waiting in this server's queue (a queued run that the
    queue does not know was queued before a server restart: it will never start)."""
    in_queue = manager.queue_position(record.run_id) is not None
    return record.state == "running" or (record.state == "queued" and in_queue)


def live_view(store, manager, run_ids: list[str], finished_before: set[str]) -> None:
    """Status, progress and curves of the shown runs; redrawn every second while any is live."""
    records = [store.load(run_id) for run_id in run_ids]
    finished_now = {r.run_id for r in records if not is_live(manager, r)}
    if finished_now != finished_before:
        st.rerun()  # a run ended: redraw the whole page once, with its final results
    for record in records:
        name_col, state_col, stop_col = st.columns([3, 5, 1], vertical_alignment="center")
        name_col.markdown(f"**{record.label}**  \n{status_badge(record.state)}")
        if record.state == "running":
            fraction, text = report.progress(record.status)
            state_col.progress(fraction, text=text)
        elif record.state == "queued":
            waiting = report.queue_text(manager.queue_position(record.run_id), manager.estimated_wait(record.run_id))
            state_col.write(f"🕒 {waiting}")
        else:
            state_col.write(report.outcome_text(record))
        if is_live(manager, record) and stop_col.button("Stop", key=f"stop-{record.run_id}"):
            manager.stop(record.run_id)
    epochs_so_far = tuple(len(r.metrics) for r in records)
    if not any(epochs_so_far):
        st.caption("The curves appear after the first epoch.")
        return
    loss_col, acc_col = st.columns(2)
    placed = [(loss_col, "loss"), (acc_col, "accuracy")]
    if report.has_learning_rate(records):
        placed.append((loss_col, report.LR_METRIC))
    for column, metric in placed:
        column.vega_lite_chart(curves_spec(str(store.root), tuple(run_ids), epochs_so_far, metric), width="stretch")
    multitask_section.live_auc(records, acc_col)  # per-finding AUC curves of multi-label runs


@st.cache_data(max_entries=256, show_spinner=False)
def curves_spec(root: str, run_ids: tuple[str, ...], epochs_so_far: tuple[int, ...], metric: str) -> dict:
    """The chart's Vega-Lite spec, built once per new epoch: the live view redraws every second,
    and building and validating an Altair chart each time took the training thread's GIL for tens
    of milliseconds. (epochs_so_far is there for the cache key: a new epoch, a new spec.)"""
    store_here = RunStore(root)  # root is this session's own runs folder
    frame = report.curves_for([store_here.load(run_id) for run_id in run_ids])
    if metric == report.LR_METRIC:  # under the loss curves: StepLR's staircase, cosine's half wave
        return charts.learning_rate(frame).to_dict()
    return charts.curves(frame, metric).to_dict()


def show_runs(store, manager, run_ids: list[str]) -> dict:
    """The live view of the shown runs (polled while any is live); returns the ended ones by id."""
    st.divider()
    st.subheader("Your run" if len(run_ids) == 1 else f"Your runs ({len(run_ids)}, in order)")
    records = [store.load(run_id, with_metrics=False) for run_id in run_ids]
    finished = {r.run_id for r in records if not is_live(manager, r)}
    if len(finished) < len(records):
        st.fragment(run_every=1.0)(live_view)(store, manager, run_ids, finished)
    else:
        live_view(store, manager, run_ids, finished)
    return {r.run_id: r for r in records if r.run_id in finished}
