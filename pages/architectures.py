"""ANN vs CNN: what each architecture costs, what it bought, and how it reacts to a shifted image."""
import pandas as pd
import streamlit as st

from explore import analysis, charts
from explore.device import Placement
from explore.models import MODELS
from pages.common import cached_bundle, current_data_spec, job_manager, run_store

st.title("🧮 ANN vs CNN")
st.caption("A fully connected network (ANN) gives every pixel its own weight in every unit; a convolutional "
           "network (CNN) slides one small filter over the whole image. Here is what that means in numbers.")

c1, c2 = st.columns([3, 1])
names = c1.multiselect("Architectures", list(MODELS), default=list(analysis.COURSE_ARCHITECTURES))
size = c2.select_slider("Image size (px)", [32, 64, 128, 224, 256], value=256)
batch_norm = st.toggle("Batch norm in mlp, cnn and cnn_gap", key="arch_batch_norm",
                       help="BatchNorm after each hidden layer or convolution: two learned numbers (γ, β) per "
                            "channel or unit, counted in the tables below (hw3_ann has it always).")
if not names:
    st.info("Pick two or more architectures to compare.")
    st.stop()


@st.cache_data(show_spinner="Running one image through each model to count parameters and MACs…")
def profiles(names: tuple, size: int, batch_norm: bool):
    return analysis.profile_architectures(names, size, batch_norm)


totals, layers = profiles(tuple(names), size, batch_norm)
for row in totals[totals.error.notna()].itertuples():
    st.warning(f"{row.model} cannot be profiled at {size} px: {row.error}")
totals = totals[totals.error.isna()].drop(columns=["error"])

# ----- size and arithmetic --------------------------------------------------------------------------
st.header(f"Size and arithmetic for one {size}×{size} image")
st.dataframe(totals.drop(columns=["first_layer_formula", "family"]), hide_index=True, width="stretch", column_config={
    "params": st.column_config.NumberColumn("parameters", format="localized"),
    "macs": st.column_config.NumberColumn("MACs / image", format="localized"),
    "first_layer_weights": st.column_config.NumberColumn("first-layer weights", format="localized")})
log = st.toggle("Log scale", value=True)
left, right = st.columns(2)
left.altair_chart(charts.model_cost(totals, "params", log), width="stretch")
right.altair_chart(charts.model_cost(totals, "macs", log), width="stretch")
st.caption("MACs = multiply-accumulates, counted by PyTorch (FlopCounterMode) while one image runs through the "
           "real module: a conv layer does H_out·W_out·C_out·C_in·k·k of them, a linear layer in·out. "
           "The ANN has many weights but uses each once; a CNN has few weights and reuses each at every pixel.")

st.subheader("How many weights the first layer needs")
for row in totals.itertuples():
    st.markdown(f"- **{row.model}** — `{row.first_layer}`: {row.first_layer_formula} "
                f"= **{row.first_layer_weights:,}**")

with st.expander("Per-layer table (output shape, parameters, MACs)"):
    for tab, name in zip(st.tabs(list(totals.model)), totals.model):
        part = layers[layers.model == name].drop(columns=["model"])
        total_row = pd.DataFrame([{"name": "TOTAL", "type": "", "output_shape": "", "params": part.params.sum(),
                                   "macs": part.macs.sum()}])
        tab.dataframe(pd.concat([part, total_row], ignore_index=True), hide_index=True, width="stretch",
                      column_config={"params": st.column_config.NumberColumn(format="localized"),
                                     "macs": st.column_config.NumberColumn("MACs", format="localized")})

# ----- measured on this machine ---------------------------------------------------------------------
st.header("Measured on this machine")
placement = Placement.choose()
c1, c2, c3 = st.columns(3)
batch_size = c1.number_input("Batch size", 1, 512, 32)
n_images = c2.number_input("Images (random, the same for every model)", 16, 4096, 128, step=16)
c3.markdown(f"**Device:** {placement.describe()}")
if job_manager().active()["running"]:
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
    cols = st.columns(3)
    for column, metric in zip(cols, ("seconds_per_epoch", "images_per_second", "peak_memory_mb")):
        column.altair_chart(charts.measured(ok, metric), width="stretch")
    if len(ok):
        first = ok.iloc[0]
        st.caption(f"Measured on {first.device} at {first.image_size} px, batch {first.batch_size}, "
                   f"{first.n_images} images. Seconds per epoch: the fastest of two epochs after a warm-up, through "
                   f"the same training loop as real runs. Memory: {first.memory_measure}"
                   + (" — on a CPU this is the whole process, so other work in it (the app, other sessions) "
                      "can add to it." if "RSS" in str(first.memory_measure) else "."))

# ----- trained results ------------------------------------------------------------------------------
st.header("What the parameters bought")
results = analysis.trained_results(run_store().list(with_metrics=True), names)
if results.empty:
    st.info("No finished runs of these architectures yet: queue the presets **HW3 · ANN vs CNN** and "
            "**HW3 · global average pooling** on the Train page, then come back.")
else:
    st.altair_chart(charts.model_accuracy(results))
    st.dataframe(results.drop(columns=["created"]), hide_index=True, width="stretch", column_config={
        c: st.column_config.NumberColumn(c.replace("_", " "), format="percent")
        for c in ("train_acc", "val_acc", "test_acc")} | {"params": st.column_config.NumberColumn(format="localized")})

# ----- translation sensitivity ----------------------------------------------------------------------
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
    store = run_store()
    try:
        if source.startswith("trained"):
            classifiers = [analysis.classifier_from_run(store, run_id) for run_id in newest.run_id]
            spec = store.load(newest.run_id.iloc[0], with_metrics=False).config.data
        else:
            classifiers = [analysis.fresh_classifier(name, size) for name in totals.model]
            spec = current_data_spec()
        test = cached_bundle(spec).test
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
    left.image(cached_bundle(picked["spec"]).test.images[picked["index"], 0].numpy(),
               caption=f"test image {picked['index']} (unshifted)", width="stretch")
    right.altair_chart(charts.translation(shifted), width="stretch")
    st.dataframe(analysis.translation_summary(shifted), hide_index=True, width="stretch",
                 column_config={c: st.column_config.NumberColumn(c.replace("_", " "), format="%.3f")
                                for c in ("prob_unshifted", "largest_change", "prob_range")})
    if shifted.model.str.endswith("(untrained)").all():
        st.caption("Untrained models answer about 0.5 for everything, so their curves are flat: the architecture "
                   "alone says little. Train the HW3 ANN vs CNN preset and use 'trained runs' to see the lesson.")

# ----- batch size vs time ---------------------------------------------------------------------------
st.header("Batch size vs seconds per epoch")
st.caption("The lecture's point: bigger batches finish an epoch faster until the hardware is full, and nothing "
           "special happens at powers of two (24, 48 and 96 are as good as their neighbours).")
c1, c2, c3 = st.columns(3)
timed_model = c1.selectbox("Model", list(totals.model), index=min(1, len(totals) - 1))
timed_size = c2.select_slider("Image size for this test", [32, 64, 128, 224, 256],
                              value=size if placement.device.type == "cuda" else 64)
timed_images = c3.number_input("Images", 32, 8192, 192, step=32)
batch_sizes = st.multiselect("Batch sizes", [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512],
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
