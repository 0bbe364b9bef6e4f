"""ANN vs CNN page, measured on this machine: speed and memory per model, and seconds per epoch by batch size."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import analysis
from explore import charts
from pages import common


def measured_here(names: list[str], size: int, placement) -> None:
    st.header("Measured on this machine")
    c1, c2, c3 = st.columns(3)
    batch_size = c1.number_input("Batch size", 1, 512, 32)
    n_images = c2.number_input("Images (random, the same for every model)", 16, 4096, 128, step=16)
    c3.markdown(f"**Device:** {placement.describe()}")
    if common.job_manager().active()["running"]:
        st.warning("Training runs are in progress on this machine: they share it, so these timings will be slower.")
    if st.button("Measure speed and memory", type="primary"):
        with st.spinner("Training each model for a warm-up epoch and two timed epochs…"):
            st.session_state["arch_measured"] = analysis.measure_architectures(
                names, size, int(batch_size), int(n_images), placement).to_dict("records")
    if "arch_measured" in st.session_state:
        measured = pd.DataFrame(st.session_state["arch_measured"])
        for row in measured[measured.error.notna()].itertuples():
            st.warning(f"{row.model}: {row.error}")
        ok = measured[measured.error.isna()]
        st.dataframe(ok[["model", "params", "seconds_per_epoch", "images_per_second", "peak_memory_mb"]], hide_index=True,
                     width="stretch", column_config={
                         "params": st.column_config.NumberColumn("parameters", format="localized"),
                         "seconds_per_epoch": st.column_config.NumberColumn("training s / epoch", format="%.2f"),
                         "images_per_second": st.column_config.NumberColumn("inference images / s", format="%.0f"),
                         "peak_memory_mb": st.column_config.NumberColumn("peak memory (MB)", format="%.0f")})
        for column, metric in zip(st.columns(3), ("seconds_per_epoch", "images_per_second", "peak_memory_mb")):
            column.altair_chart(charts.measured(ok, metric), width="stretch")
        if len(ok):
            st.caption(analysis.measurement_note(ok))


def batch_size_timing(models: list[str], size: int, placement) -> None:
    st.header("Batch size vs seconds per epoch")
    st.caption("The lecture's point: bigger batches finish an epoch faster until the hardware is full, and nothing "
               "special happens at powers of two (24, 48 and 96 are as good as their neighbours).")
    c1, c2, c3 = st.columns(3)
    timed_model = c1.selectbox("Model", models, index=min(1, len(models) - 1))
    timed_size = c2.select_slider("Image size for this test", analysis.IMAGE_SIZE_CHOICES,
                                  value=size if placement.device.type == "cuda" else 64)
    timed_images = c3.number_input("Images", 32, 8192, 192, step=32)
    batch_sizes = st.multiselect("Batch sizes", analysis.BATCH_SIZE_CHOICES,
                                 default=list(analysis.LECTURE_BATCH_SIZES))
    if st.button("Time one epoch at each batch size", disabled=not batch_sizes):
        with st.spinner("Timing…"):
            try:
                st.session_state["arch_batches"] = analysis.time_batch_sizes(
                    timed_model, timed_size, sorted(batch_sizes), int(timed_images), placement).to_dict("records")
            except Exception as error:
                st.error(f"Timing failed: {error}")
    if "arch_batches" in st.session_state:
        timings = pd.DataFrame(st.session_state["arch_batches"])
        st.altair_chart(charts.batch_size(timings), width="stretch")
        st.caption(f"Measured on {timings.device.iloc[0]}; each point is the fastest of two epochs after a warm-up.")
