"""The Mismatch page's "adapt the model to the new hospital" section (explore/insight/adapt.py does the work).

Not a page of its own; pages/mismatch.py calls `show_adaptation` after its other sections.
"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import adapt as ad
from explore import charts
from explore.insight.attribution import LoadedRun

TITLES = {"bn": "AdaBN (BatchNorm statistics of the new hospital)", "finetune": "Few-shot fine-tuning",
          "histmatch": "Histogram matching to the training images"}


@st.cache_data(max_entries=32, show_spinner="Adapting the model and re-scoring the test images…")
def adaptation(_loaded: LoadedRun, root: str, run_id: str, method: str, k: int, threshold: float, device: str) -> dict:
    """One adaptation's before/after (root and run_id key the cache; the loaded run is not hashed)."""
    return ad.adapt(_loaded, method, k=k, threshold=threshold, device=device)


def result_rows(results: list[dict]) -> pd.DataFrame:
    rows = []
    for r in results:
        name = TITLES[r["method"]] + (f" (k = {r['k']})" if "k" in r else "")
        for when in ("before", "after"):
            rows.append({"fix": name, "when": when, "test images": r[when]["n"], "accuracy": r[when]["acc"],
                         "AUC": r[when]["auc"], "sensitivity": r[when]["sensitivity"],
                         "specificity": r[when]["specificity"]})
    return pd.DataFrame(rows)


def show_adaptation(loaded: LoadedRun, root: str, run_id: str, threshold: float, device) -> None:
    st.header("6 · Adapt this model to the new hospital (no retraining)")
    st.caption("Three fixes that start from the finished model. Each is scored on the same test images before and "
               "after; few-shot fine-tuning uses k labelled test images and leaves them out of both scores.")
    has_bn = bool(ad.batchnorm_layers(loaded.model))
    offered = [m for m in ad.METHODS if m != "bn" or has_bn]  # AdaBN only where there is BatchNorm
    methods = [m for m in offered if st.checkbox(f"**{TITLES[m]}**: {ad.METHODS[m]}", value=True, key=f"adapt_{m}")]
    if not has_bn:
        st.caption(f"AdaBN needs BatchNorm layers; {loaded.config.model} has none (hw3_ann and the pretrained "
                   "backbones do).")
    k = st.select_slider("k labelled images of the new hospital (few-shot)", ad.SHOT_COUNTS, value=32, key="adapt_k")
    if st.button("Adapt and re-score", key="adapt_go", disabled=not methods):
        st.session_state["adapt_shown"] = (run_id, tuple(methods), int(k))
    shown = st.session_state.get("adapt_shown")
    if not shown or shown[0] != run_id:
        return
    results = []
    for method in shown[1]:
        try:
            results.append(adaptation(loaded, root, run_id, method, shown[2], threshold, str(device)))
        except ad.AdaptError as error:
            st.warning(f"{TITLES[method]}: {error}")
    if not results:
        return
    frame = result_rows(results)
    percent = {c: st.column_config.NumberColumn(format="percent") for c in ("accuracy", "sensitivity", "specificity")}
    st.dataframe(frame, hide_index=True, column_config=percent | {"AUC": st.column_config.NumberColumn(format="%.3f")})
    st.altair_chart(charts.adaptation(frame))
    for r in results:
        if "gap" in r:
            st.markdown(f"- {TITLES[r['method']]}: val − test accuracy gap **{r['gap']['before']['acc']:+.1%} → "
                        f"{r['gap']['after']['acc']:+.1%}**, AUC {_auc(r['before'])} → {_auc(r['after'])}.")


def _auc(report: dict) -> str:
    return "n/a" if report["auc"] is None else f"{report['auc']:.3f}"
