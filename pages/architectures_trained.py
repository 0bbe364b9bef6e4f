"""ANN vs CNN page, trained runs: what the parameters bought, and how each model answers a shifted image."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import analysis
from explore import charts
from pages import common


def trained_results(names: list[str]) -> pd.DataFrame:
    st.header("What the parameters bought")
    results = analysis.trained_results(common.run_store().list(with_metrics=True), names)
    if results.empty:
        st.info("No finished runs of these architectures yet: queue the presets **HW3 · ANN vs CNN** and "
                "**HW3 · global average pooling** on the Train page, then come back.")
    else:
        st.altair_chart(charts.model_accuracy(results))
        st.dataframe(results.drop(columns=["created"]), hide_index=True, width="stretch", column_config={
            c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
            for c in ("train_acc", "val_acc", "test_acc")} | {"params": st.column_config.NumberColumn(format="localized")})
    return results


def shift_test(results: pd.DataFrame, models: list[str], size: int) -> None:
    st.header("Shift the image a few pixels")
    st.caption("Convolution and pooling make a CNN (nearly) indifferent to where a pattern is; an ANN's weights are "
               "tied to pixel positions. Move one test image left and right and watch each model's answer.")
    newest = results.drop_duplicates("model") if not results.empty else results
    sources = (["trained runs (newest per model)"] if not newest.empty else []) + ["untrained (random weights)"]
    c1, c2, c3 = st.columns(3)
    source = c1.radio("Models", sources)
    max_shift = c2.slider("Largest shift (px)", 1, 32, 8)
    axis = c3.radio("Direction", ["x", "y"], format_func=lambda a: "left / right" if a == "x" else "up / down",
                    horizontal=True)
    image_index = st.number_input("Test image number", 0, 100_000, 0)
    if st.button("Shift and predict"):
        store, trained = common.run_store(), source.startswith("trained")
        try:
            classifiers = analysis.shift_models(store, newest, models, size, trained)
            spec = (store.load(newest.run_id.iloc[0], with_metrics=False).config.data if trained
                    else common.current_data_spec())
            test = common.cached_bundle(spec).test
            index = min(int(image_index), len(test) - 1)
            table = analysis.translation_sensitivity(classifiers, test.images[index], range(-max_shift, max_shift + 1),
                                                     axis)
            st.session_state["arch_shift"] = {"rows": table.to_dict("records"), "spec": spec, "index": index}
        except Exception as error:  # a damaged run, a dataset that cannot load: say so, never a traceback
            st.error(f"Cannot run the shift test: {error}")
    if "arch_shift" in st.session_state:
        shifted = pd.DataFrame(st.session_state["arch_shift"]["rows"])
        left, right = st.columns([1, 3])
        picked = st.session_state["arch_shift"]
        left.image(common.cached_bundle(picked["spec"]).test.images[picked["index"], 0].numpy(),
                   caption=f"test image {picked['index']} (unshifted)", width="stretch")
        right.altair_chart(charts.translation(shifted), width="stretch")
        st.dataframe(analysis.translation_summary(shifted), hide_index=True, width="stretch",
                     column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="%.3f")
                                    for c in ("prob_unshifted", "largest_change", "prob_range")})
        if shifted.model.str.endswith("(untrained)").all():
            st.caption("Untrained models answer about 0.5 for everything, so their curves are flat: the architecture "
                       "alone says little. Train the HW3 ANN vs CNN preset and use 'trained runs' to see the lesson.")
