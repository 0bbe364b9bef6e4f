"""Mismatch: the model scores ~95% on val but less on test, because test comes from another hospital. Why?"""
import pandas as pd
import streamlit as st

from explore.insight import attribution as attr
from explore import charts
from explore.insight import mismatch as mm
from explore.data import DataError
from explore.device import Placement
from explore.training.store import StoreError
from pages.adapt_section import show_adaptation
from pages.common import loaded_run, run_store
from pages.mismatch_error import error_kinds
from pages.mismatch_fixes import try_a_fix
from pages.mismatch_probe import feature_space, source_classifier

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
device = Placement.choose("auto").device
ROOT, DEVICE = str(store.root), str(device)  # cache keys: plain strings


try:
    loaded = loaded_run(ROOT, run_id)
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
st.dataframe(pd.DataFrame(mm.internal_external_rows(report)), hide_index=True, column_config={
    c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "sensitivity", "specificity", "prevalence")}
    | {"AUC": st.column_config.NumberColumn(format="%.3f")})
if "gap" in report:
    st.metric("Val − test accuracy", f"{report['gap']['acc']:+.1%}",
              help="How much worse the model does on the other hospital's images at this threshold")
roc, aucs = mm.roc_points(loaded.predictions)
st.altair_chart(charts.roc(roc, aucs, pd.DataFrame(mm.operating_points(report)), titles=mm.SPLIT_TITLES, height=340,
                           title="ROC curves; dots: the chosen threshold", legend_below=True))

# ----- 2. error decomposition (pages/mismatch_error.py)
error_kinds(ROOT, run_id, threshold, DEVICE)

# ----- 3. source classifier, 4. feature space (pages/mismatch_probe.py)
source_classifier(ROOT, run_id, DEVICE)
feature_space(ROOT, run_id, DEVICE)

# ----- 5. try a fix (pages/mismatch_fixes.py)
try_a_fix(store, run_id, loaded.config)

# ----- 6. adapt the finished model (AdaBN, few-shot fine-tuning, histogram matching)
show_adaptation(loaded, ROOT, run_id, threshold, DEVICE)
