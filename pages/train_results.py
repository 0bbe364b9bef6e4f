"""Train page, how a run ended: headline numbers, tables, confusion matrices with their X-rays, ROC, settings, sharing."""
from __future__ import annotations

import streamlit as st

from explore import charts
from explore.insight import report
from explore.insight.attribution import cell_name
from explore.training.share import encode_config, export_run_bundle
from explore.training.store import StoreError
from pages import common, multitask_section

PERCENT_COLUMNS = {name: st.column_config.NumberColumn(format="percent")
                   for name in ("accuracy", "sensitivity", "specificity", "val acc", "test acc")}
PERCENT_COLUMNS["AUC"] = st.column_config.NumberColumn(format="%.3f")
PER_CLASS_COLUMNS = {name: st.column_config.NumberColumn(format="percent") for name in ("precision", "recall", "f1")}


def final_results(store, record) -> None:
    """How one run ended: the message, metrics per split, confusion matrices and ROC curves."""
    summary, state = record.summary or {}, record.state
    message = record.damaged or summary.get("message", "")
    {"finished": st.success, "stopped": st.info, "diverged": st.warning}.get(state, st.error)(
        f"{common.status_badge(state)} — {message}")
    if summary.get("tasks"):  # a multi-label run: results per finding
        multitask_section.results(record, store)
        run_settings(record)
        share_run(store, record)
        return
    table = report.metrics_table(summary)
    if table.empty:
        return
    for col, (label, text) in zip(st.columns(len(report.HEADLINE)), report.headline(summary)):
        col.metric(label, text)
    st.dataframe(table, hide_index=True, column_config=PERCENT_COLUMNS)
    classes = summary.get("classes", [])
    per_class = report.per_class_table(summary)
    if len(classes) > 2:  # three classes: the report a student hands in is per class
        st.markdown("**Per class** (precision: right when it says so; recall: found of those there; F1: both)")
        st.dataframe(per_class, hide_index=True, column_config=PER_CLASS_COLUMNS)
    matrix_cols = st.columns([1.1, 1.1, 1.3], gap="medium")
    for col, split in zip(matrix_cols, ("val", "test")):
        if split in summary["splits"]:
            confusion = summary["splits"][split]["confusion"]
            with col:
                st.altair_chart(charts.confusion(report.confusion_frame(confusion, classes),
                                                 f"confusion · {report.SPLIT_LABELS[split]}"), width="content")
                cell_buttons(record.run_id, split, confusion, classes)
    try:
        roc, aucs = report.roc_frame(store.load_predictions(record.run_id))
        matrix_cols[2].altair_chart(charts.roc(roc, aucs), width="stretch")
    except StoreError as error:
        matrix_cols[2].caption(f"No ROC curve: {error}")
    cell_images(store, record)
    if len(classes) <= 2 and not per_class.empty:
        with st.expander("Per class: precision, recall, F1"):
            st.dataframe(per_class, hide_index=True, column_config=PER_CLASS_COLUMNS)
    run_settings(record)
    share_run(store, record)


def cell_buttons(run_id: str, split: str, confusion: list[list[int]], classes: list[str]) -> None:
    """One button per confusion-matrix cell, laid out like the matrix: a click shows that cell's X-rays."""
    st.caption("Open a cell's X-rays" + (" (laid out like the matrix):" if len(classes) > 2 else ":"))
    for t, row in enumerate(confusion):
        for p, (column, count) in enumerate(zip(st.columns(len(row)), row)):
            label = f"{cell_name(t, p, tuple(classes))} · {count}" if len(classes) == 2 else str(count)
            column.button(label, key=f"cell-{run_id}-{split}-{t}-{p}",
                          help=f"true {classes[t]}, predicted {classes[p]}", disabled=count == 0, width="stretch",
                          on_click=pick_cell, args=(run_id, split, t, p))


def pick_cell(run_id: str, split: str, true: int, predicted: int) -> None:
    st.session_state["train_cell"] = (run_id, split, true, predicted)


def cell_images(store, record) -> None:
    """The X-rays of the confusion-matrix cell picked above (mistakes: most confident first)."""
    picked = st.session_state.get("train_cell")
    if not picked or picked[0] != record.run_id or record.config is None:
        return
    _, split, t, p = picked
    classes = (record.summary or {}).get("classes", [])
    try:
        predictions = store.load_predictions(record.run_id)[split]
    except (StoreError, KeyError) as error:
        st.caption(f"No predictions to open: {error}")
        return
    try:
        thumbnails = report.cell_thumbnails(predictions, common.bundle_or_stop(record.config.data).splits[split], (t, p))
    except ValueError as error:
        st.warning(str(error))
        return
    st.markdown(f"**{report.SPLIT_LABELS[split]} · true {classes[t]}, predicted {classes[p]}** "
                f"({len(thumbnails)} shown{', most confident mistakes first' if t != p else ''})")
    for column, (image, caption) in zip(st.columns(8), thumbnails):  # eight to a row whatever the count
        column.image(image, caption=caption, width="stretch")


def run_settings(record) -> None:
    """Everything that decided the run, and the command that reruns it: what a student hands in."""
    if record.config is None:
        return
    from explore.training.reproduce import reproduce_command, settings_rows

    with st.expander("All settings, and how to reproduce this run"):
        st.code(reproduce_command(record.config), language="bash", wrap_lines=True)
        st.caption("Run this in the project folder to train the same run again (same seeds, same data).")
        st.dataframe(settings_rows(record.config, record.summary), hide_index=True, width="stretch")


def share_run(store, record) -> None:
    """A link that opens this run's settings elsewhere, and a bundle that replays it without retraining."""
    if record.config is None:
        return
    link_col, bundle_col = st.columns([3, 1], vertical_alignment="bottom")
    link_col.text_input("Link to these settings (add to this page's address)",
                        f"?config={encode_config(record.config)}", key=f"link-{record.run_id}")
    try:
        bundle = export_run_bundle(store, record.run_id)
    except StoreError as error:
        bundle_col.caption(f"No bundle: {error}")
        return
    bundle_col.download_button("Export run bundle", bundle, file_name=f"{record.run_id}.zip",
                               mime="application/zip", key=f"bundle-{record.run_id}",
                               help="Config, curves, summary, weights and predictions: open it on another "
                                    "machine to replay the run without training.")
