"""The Train page's multi-task parts: the custom run's findings, per-label AUC curves and results.

Thin Streamlit code over explore/training/multilabel.py and explore/insight/multilabel_report.py (pages/train.py
calls these through a few one-line hooks).
"""
from dataclasses import replace

import streamlit as st

from explore import charts
from explore.training import multilabel
from explore.insight import multilabel_report as mlr
from explore.training.store import StoreError

LABEL_SHARES = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
TABLE_FORMAT = {name: st.column_config.NumberColumn(format="percent") for name in ("sensitivity", "specificity")}
TABLE_FORMAT["AUC"] = st.column_config.NumberColumn(format="%.3f")


def options(spec) -> dict:
    """RunConfig changes for a multi-task custom run ({} = the usual single pneumonia classifier)."""
    choices = multilabel.task_choices(spec)
    with st.expander("🧩 Multi-task learning: several findings, one sigmoid output each"):
        if len(choices) == 1:
            st.caption("This dataset has pneumonia labels only. The built-in synthetic set (with findings), "
                       "ChestMNIST and NIH have more findings.")
            return {}
        on = st.checkbox("Train on several findings (multi-label)", key="mt_on",
                         help="One image, several labels (the lecture's last topic): the same layers are shared, "
                              "each finding gets its own sigmoid output and BCE; unknown labels are left out of "
                              "the loss.")
        tasks = st.multiselect("Findings", choices, default=list(choices[:3]), key="mt_tasks", disabled=not on)
        share = st.select_slider("Pneumonia labels kept in train", LABEL_SHARES, value=1.0, key="mt_share",
                                 format_func="{:.0%}".format, disabled=not on,
                                 help="The rest of train loses its pneumonia label (unknown, not 'absent'): "
                                      "scarce labels, as when only some films were read for pneumonia.")
        if spec.source == "synthetic" and on:
            st.caption("The synthetic set gets cardiomegaly and pleural effusion drawn in "
                       "(each in 30% of the images, independently of pneumonia).")
    if not on:
        return {}
    return {"tasks": tuple(tasks), "pneumonia_label_fraction": float(share), "data": replace(spec, findings=True)}


def live_auc(records, column) -> None:
    """Per-label AUC per epoch under the loss and accuracy curves (multi-label runs only)."""
    multi = [r for r in records if mlr.is_multilabel(r)]
    frame = mlr.auc_frame(multi)
    if not frame.empty:
        column.altair_chart(charts.finding_auc(frame), width="stretch")


def results(record, store) -> None:
    """A finished multi-label run: per-label AUC, sensitivity, specificity, confusion and ROC."""
    summary = record.summary or {}
    tasks = mlr.tasks_of(record)
    st.caption("Multi-label run: one sigmoid per finding, threshold 0.5. Accuracy = exact match "
               "(every known label of an image right).")
    for col, task in zip(st.columns(len(tasks)), tasks):
        val = summary["splits"].get("val", {}).get("labels", {}).get(task, {}).get("auc")
        test = summary["splits"].get("test", {}).get("labels", {}).get(task, {}).get("auc")
        col.metric(f"{task} · val AUC", "—" if val is None else f"{val:.3f}",
                   help=f"test AUC {test:.3f}" if test is not None else None)
    st.dataframe(mlr.per_label_frame(summary), hide_index=True, column_config=TABLE_FORMAT)
    tabs = st.tabs([f"confusion · {task}" for task in tasks])
    for tab, task in zip(tabs, tasks):
        with tab:
            for col, split in zip(st.columns(2), ("val", "test")):
                if split in summary["splits"]:
                    col.altair_chart(charts.confusion(mlr.label_confusion(summary, split, task), mlr.confusion_title(split, task)), width="content")
    try:
        predictions = store.load_predictions(record.run_id)
    except StoreError as error:
        st.caption(f"No ROC curves: {error}")
        return
    for col, split in zip(st.columns(2), ("val", "test")):
        frame = mlr.roc_frame(predictions, split, tasks)
        if not frame.empty:
            col.altair_chart(charts.finding_roc(frame, split), width="stretch")


def compare(records) -> None:
    """Compare page: the val AUC of every finding per epoch, one line style per run."""
    frame = mlr.auc_frame([r for r in records if mlr.is_multilabel(r)])
    if frame.empty:
        return
    st.subheader("Per-finding AUC (multi-label runs)")
    st.altair_chart(charts.finding_auc(frame), width="stretch")


@st.cache_data(max_entries=4, show_spinner=False)
def _examples(seed: int) -> list[dict]:
    return mlr.finding_examples(128, seed)


def data_preview(seed: int) -> None:
    """Data page: what the multi-task findings look like (drawn only in multi-task runs)."""
    with st.expander("🧩 Findings for multi-task learning: cardiomegaly and pleural effusion"):
        st.caption("Turned on per run (Train page: *Multi-task learning*; CLI: `--findings`). Each is drawn in 30% of "
                   "the images, independently of pneumonia. Outlined: the enlarged heart (magenta; cardiothoracic "
                   "ratio > 0.5) and the fluid at a lung base (blue; its meniscus blunts the costophrenic angle).")
        examples = _examples(seed)
        for row in range(0, len(examples), 2):  # two to a row: the preview column is narrow
            for column, example in zip(st.columns(2), examples[row:row + 2]):
                column.image(example["picture"], caption=example["caption"], width="stretch")
