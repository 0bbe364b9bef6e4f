"""Mismatch: the model scores ~95% on val but less on test, because test comes from another hospital. Why?"""
import altair as alt
import pandas as pd
import streamlit as st

from explore import attribution as attr
from explore import mismatch as mm
from explore.data import DataError
from explore.device import Placement
from explore.store import RunStore, StoreError
from pages.adapt_section import show_adaptation
from pages.common import cached_bundle, queue_runs, run_store

st.title("🏥 Mismatch: why does test score lower than val?")
st.caption("Val comes from the hospital the model was trained on (site A), test from another one (site B). "
           "Measure the gap, split the error into its kinds, and test what the two hospitals' images differ in.")

store = run_store()
runs = attr.explainable_runs(store)
if not runs:
    st.info("No finished run with saved weights yet. Train one on the Train page, then come back here.")
    st.stop()
labels = {record.run_id: attr.run_label(record) for record in runs}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="mismatch_run")
DEVICE = Placement.choose("auto").device
ROOT = str(store.root)
SOURCE_COLOURS = ["#1f77b4", "#d62728"]  # val / site A blue, test / site B red, in every chart


@st.cache_resource(max_entries=4, show_spinner="Loading the run and its data…")
def load(root: str, run_id: str):
    run_store_ = RunStore(root)
    return attr.load_run(run_store_, run_id, bundle=cached_bundle(run_store_.load(run_id).config.data))


@st.cache_data(max_entries=32, show_spinner="Re-evaluating the training images in eval mode…")
def decomposition(root, run_id, threshold, human_error):
    return mm.decompose_run(load(root, run_id), threshold, human_error, DEVICE)


@st.cache_data(max_entries=8, show_spinner="Training a small network to tell the two hospitals apart…")
def source_detector(root, run_id):
    return mm.run_source_classifier(load(root, run_id), device=DEVICE)


@st.cache_data(max_entries=8, show_spinner="Computing the model's penultimate features…")
def features(root, run_id):
    return mm.feature_pca(load(root, run_id), device=DEVICE)


try:
    loaded = load(ROOT, run_id)
except (StoreError, DataError, ValueError, RuntimeError, KeyError) as error:
    st.error(f"This run cannot be analysed: {error}")
    st.stop()
for warning in loaded.warnings:
    st.warning(warning)
if loaded.config.tasks:  # the analyses below read one disease probability per image
    st.info(f"This is a multi-label run ({', '.join(loaded.config.tasks)}): the Mismatch page analyses single-task "
            "pneumonia classifiers. Its per-finding val (site A) and test (site B) AUCs are on the Train page.")
    st.stop()
if "test" not in loaded.predictions:
    st.error("This run has no test predictions (no second source, or test evaluation was off), so there is no "
             "mismatch to measure. Train with a test split from another source.")
    st.stop()

# ----- 1. internal vs external
st.header("1 · The same model on both hospitals")
threshold = st.slider("Decision threshold: call PNEUMONIA when P(disease) ≥", 0.05, 0.95, 0.5, 0.05,
                      key="mismatch_threshold")
report = mm.internal_external(loaded.predictions, threshold)
table = pd.DataFrame([{"split": r["title"], "images": r["n"], "accuracy": r["acc"], "AUC": r["auc"],
                       "sensitivity": r["sensitivity"], "specificity": r["specificity"], "prevalence": r["prevalence"]}
                      for name, r in report.items() if name != "gap"])
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "sensitivity", "specificity", "prevalence")}
    | {"AUC": st.column_config.NumberColumn(format="%.3f")})
if "gap" in report:
    st.metric("Val − test accuracy", f"{report['gap']['acc']:+.1%}",
              help="How much worse the model does on the other hospital's images at this threshold")
roc = pd.DataFrame(mm.roc_rows(loaded.predictions))
points = pd.DataFrame([{"split": r["title"], "fpr": 1 - r["specificity"], "tpr": r["sensitivity"]}
                       for name, r in report.items() if name in ("val", "test")
                       and r["specificity"] is not None and r["sensitivity"] is not None])
sources = alt.Color("split:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400),
                    scale=alt.Scale(domain=[mm.SPLIT_TITLES["val"], mm.SPLIT_TITLES["test"]], range=SOURCE_COLOURS))
curves = alt.Chart(roc).mark_line().encode(x=alt.X("fpr:Q", title="false-positive rate (1 − specificity)"),
                                           y=alt.Y("tpr:Q", title="true-positive rate (sensitivity)"), color=sources)
marks = alt.Chart(points).mark_point(size=90, filled=True).encode(x="fpr:Q", y="tpr:Q", color=sources,
                                                                   tooltip=["split", "fpr", "tpr"])
st.altair_chart((curves + marks).properties(height=340, title="ROC curves; dots: the chosen threshold"))

# ----- 2. error decomposition
st.header("2 · Which kind of error? (bias and variance with mismatched data)")
human_error = st.number_input("Human / Bayes error (what an expert would get wrong)", 0.0, 0.5, 0.0, 0.01,
                              key="mismatch_human")
try:
    parts = decomposition(ROOT, run_id, threshold, human_error)
except ValueError as error:
    st.error(str(error))
    st.stop()
levels = pd.DataFrame([{"level": level["name"], "error": level["error"]} for level in parts["levels"]])
components = pd.DataFrame([{"component": c["name"], "value": c["value"]} for c in parts["components"]])
left, right = st.columns([2, 3])
left.dataframe(levels, hide_index=True, column_config={"error": st.column_config.NumberColumn(format="percent")})
right.altair_chart(alt.Chart(components).mark_bar().encode(
    x=alt.X("value:Q", title="share of images (error)", axis=alt.Axis(format="%")),
    y=alt.Y("component:N", sort=None, title=None),
    color=alt.condition("datum.value >= 0", alt.value("#d62728"), alt.value("#1f77b4")),
    tooltip=["component", alt.Tooltip("value:Q", format=".1%")]).properties(height=180))
for c in parts["components"]:
    st.markdown(f"- **{c['name']}** ({c['from']} → {c['to']}): **{c['value']:+.1%}**. {c['meaning']}.")
st.caption(f"Human error + the components = test error ({parts['test_error']:.1%}). Train error: "
           f"{parts['train_error_how']}"
           + (f"; the last epoch's logged training error was {parts['train_error_logged']:.1%} (measured with "
              f"dropout and augmentation on, while the weights changed)." if parts["train_error_logged"] is not None
              else "."))
for note in parts["notes"]:
    st.info(note)
if parts["largest"]:
    st.markdown(f"**Largest component: {parts['largest']}.**")

# ----- 3. source classifier
st.header("3 · Can a network tell the hospitals apart?")
st.caption("A small CNN learns to predict 'val or test image?' from downsampled pixels alone, tested on images it "
           "did not train on. An AUC near 1.0 means the sources differ in ways any network can pick up, "
           "and can use as a shortcut.")
if st.toggle("Train the source classifier (seconds on a free CPU)", key="mismatch_source"):
    detector = source_detector(ROOT, run_id)
    a, b = st.columns(2)
    a.metric("Held-out AUC: val vs test", f"{detector['auc']:.3f}" if detector["auc"] is not None else "n/a")
    b.metric("Held-out accuracy", f"{detector['accuracy']:.1%}")
    st.markdown(f"Verdict: {detector['verdict']}. ({detector['n_train']} training and {detector['n_holdout']} held-out "
                f"images at {detector['size']} px, {detector['epochs']} epochs, {detector['seconds']:.1f} s.)")
    if detector.get("note"):
        st.info(detector["note"])

# ----- 4. feature space
st.header("4 · Where the images sit in the model's feature space")
if st.toggle("Project the penultimate-layer features onto 2 principal components", key="mismatch_pca"):
    try:
        projected = features(ROOT, run_id)
    except ValueError as error:
        st.error(str(error))
    else:
        frame = pd.DataFrame(projected["rows"])
        explained = projected["explained"]
        base = alt.Chart(frame).mark_circle(size=35, opacity=0.7).encode(
            x=alt.X("pc1:Q", title=f"PC1 ({explained[0]:.0%} of variance)"),
            y=alt.Y("pc2:Q", title=f"PC2 ({explained[1]:.0%})"), tooltip=["id", "source", "class"]).properties(height=300)
        left, right = st.columns(2)
        by_source = alt.Color("split:N", title="source", scale=alt.Scale(domain=["val", "test"], range=SOURCE_COLOURS))
        left.altair_chart(base.encode(color=by_source).properties(title="by source (val = site A, test = site B)"))
        right.altair_chart(base.encode(color=alt.Color("class:N", title="class", scale=alt.Scale(scheme="dark2")))
                           .properties(title="by class"))
        st.caption(f"{projected['dims']} features from the input of the last Linear layer. Separate clouds by source "
                   "mean the model represents the two hospitals differently, whatever the diagnosis.")

# ----- 5. try a fix
st.header("5 · Try a fix")
fixes = mm.available_fixes(loaded.config)
chosen = [fix.key for fix in fixes if st.checkbox(f"**{fix.title}**: {fix.why}", key=f"mismatch_fix_{fix.key}",
                                                  value=fix.key in ("per_image", "intensity_aug", "no_shortcut"))]
epochs = st.number_input("Epochs per run", 1, 200, int(loaded.config.epochs), key="mismatch_epochs")
if st.button(f"Queue {len(chosen)} run(s) as one group", disabled=not chosen, type="primary"):
    try:
        configs = mm.fix_configs(loaded.config, run_id, chosen, int(epochs))
    except ValueError as error:
        st.error(f"Could not queue the runs: {error}")
    else:
        if (ids := queue_runs(store, configs)) is not None:
            st.success(f"Queued {len(ids)} run(s); they train in the background (the table below updates).")

rows = mm.fix_table(store, run_id)
active = any(row["status"] in ("queued", "running") for row in rows)


@st.fragment(run_every=3.0 if active else None)
def fix_results():
    frame = pd.DataFrame(mm.fix_table(store, run_id))
    percent = st.column_config.NumberColumn
    st.dataframe(frame[["variant", "status", "val_acc", "test_acc", "gap", "epochs", "changes"]], hide_index=True,
                 column_config={"val_acc": percent("val acc (site A)", format="percent"),
                                "test_acc": percent("test acc (site B)", format="percent"),
                                "gap": percent("gap (val − test)", format="percent")})
    if len(frame) == 1:
        st.caption("No fixes queued for this run yet.")


fix_results()

# ----- 6. adapt the finished model (AdaBN, few-shot fine-tuning, histogram matching)
show_adaptation(loaded, ROOT, run_id, threshold, DEVICE)
