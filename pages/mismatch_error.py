"""Mismatch page, section 2: which kind of error (Andrew Ng's bias and variance with mismatched data)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore import charts
from explore.insight import mismatch as mm
from pages.common import loaded_run


@st.cache_data(max_entries=32, show_spinner="Re-evaluating the training images in eval mode…")
def decomposition(root, run_id, threshold, human_error, device: str):
    return mm.decompose_run(loaded_run(root, run_id), threshold, human_error, device)


def error_kinds(root: str, run_id: str, threshold: float, device: str) -> None:
    st.header("2 · Which kind of error? (bias and variance with mismatched data)")
    human_error = st.number_input("Human / Bayes error (what an expert would get wrong)", 0.0, 0.5, 0.0, 0.01,
                                  key="mismatch_human")
    try:
        parts = decomposition(root, run_id, threshold, human_error, device)
    except ValueError as error:
        st.error(str(error))
        st.stop()
    left, right = st.columns([2, 3])
    left.dataframe(pd.DataFrame(mm.error_levels(parts)), hide_index=True,
                   column_config={"error": st.column_config.NumberColumn(format="percent")})
    right.altair_chart(charts.error_components(parts["components"]))
    for c in parts["components"]:
        st.markdown(f"- **{c['name']}** ({c['from']} → {c['to']}): **{c['value']:+.1%}**. {c['meaning']}.")
    st.caption(mm.train_error_note(parts))
    for note in parts["notes"]:
        st.info(note)
    if parts["largest"]:
        st.markdown(f"**Largest component: {parts['largest']}.**")
