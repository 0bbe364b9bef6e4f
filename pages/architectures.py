"""ANN vs CNN: what each architecture costs, what it bought, and how it reacts to a shifted image.

The sections after the cost tables live in pages/architectures_measure.py and architectures_trained.py."""
import streamlit as st

from explore.insight import analysis
from explore import charts
from explore.device import Placement
from explore.models.registry import MODELS
from pages.architectures_measure import batch_size_timing, measured_here
from pages.architectures_trained import shift_test, trained_results

st.title("🧮 ANN vs CNN")
st.caption("A fully connected network (ANN) gives every pixel its own weight in every unit; a convolutional "
           "network (CNN) slides one small filter over the whole image. Here is what that means in numbers.")

c1, c2 = st.columns([3, 1])
names = c1.multiselect("Architectures", list(MODELS), default=list(analysis.COURSE_ARCHITECTURES))
size = c2.select_slider("Image size (px)", analysis.IMAGE_SIZE_CHOICES, value=256)
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
        tab.dataframe(analysis.layer_table(layers, name), hide_index=True, width="stretch",
                      column_config={"params": st.column_config.NumberColumn(format="localized"),
                                     "macs": st.column_config.NumberColumn("MACs", format="localized")})

# ----- measured on this machine, what the parameters bought, a shifted image, batch sizes ------------
placement = Placement.choose()
measured_here(names, size, placement)
results = trained_results(names)
shift_test(results, list(totals.model), size)
batch_size_timing(list(totals.model), size, placement)
