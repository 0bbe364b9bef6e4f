"""Mismatch page, sections 3 and 4: can a network tell the hospitals apart, and where do their images sit
in the model's feature space."""
from __future__ import annotations

import streamlit as st

from explore import charts
from explore.insight import mismatch as mm
from pages.common import loaded_run


@st.cache_data(max_entries=8, show_spinner="Training a small network to tell the two hospitals apart…")
def source_detector(root, run_id, device: str):
    return mm.run_source_classifier(loaded_run(root, run_id), device=device)


@st.cache_data(max_entries=8, show_spinner="Computing the model's penultimate features…")
def features(root, run_id, device: str):
    return mm.feature_pca(loaded_run(root, run_id), device=device)


def source_classifier(root: str, run_id: str, device: str) -> None:
    st.header("3 · Can a network tell the hospitals apart?")
    st.caption("A small CNN learns to predict 'val or test image?' from downsampled pixels alone, tested on images it "
               "did not train on. An AUC near 1.0 means the sources differ in ways any network can pick up, "
               "and can use as a shortcut.")
    if not st.toggle("Train the source classifier (seconds on a free CPU)", key="mismatch_source"):
        return
    detector = source_detector(root, run_id, device)
    a, b = st.columns(2)
    a.metric("Held-out AUC: val vs test", f"{detector['auc']:.3f}" if detector["auc"] is not None else "n/a")
    b.metric("Held-out accuracy", f"{detector['accuracy']:.1%}")
    st.markdown(f"Verdict: {detector['verdict']}. ({detector['n_train']} training and {detector['n_holdout']} held-out "
                f"images at {detector['size']} px, {detector['epochs']} epochs, {detector['seconds']:.1f} s.)")
    if detector.get("note"):
        st.info(detector["note"])


def feature_space(root: str, run_id: str, device: str) -> None:
    st.header("4 · Where the images sit in the model's feature space")
    if not st.toggle("Project the penultimate-layer features onto 2 principal components", key="mismatch_pca"):
        return
    try:
        projected = features(root, run_id, device)
    except ValueError as error:
        st.error(str(error))
        return
    left, right = st.columns(2)
    left.altair_chart(charts.feature_pca(projected, "split"))
    right.altair_chart(charts.feature_pca(projected, "class"))
    st.caption(f"{projected['dims']} features from the input of the last Linear layer. Separate clouds by source "
               "mean the model represents the two hospitals differently, whatever the diagnosis.")
