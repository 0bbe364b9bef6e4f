"""Saliency: where does a trained model look, on its own hospital's X-rays (val) and on another's (test)?"""
import altair as alt
import pandas as pd
import streamlit as st

from explore import attribution as attr
from explore.data import DataError
from explore.device import Placement
from explore.store import RunStore, StoreError
from pages.common import cached_bundle, run_store
from pages.saliency_card import report_card_section

st.title("🔥 Saliency: where does the model look?")
st.caption("Pick a finished run. Val images come from the hospital the model was trained on (site A); test images "
           "from the other one (site B). The maps show which pixels drive the model's score, computed on a copy "
           "of the model: looking never changes it.")

store = run_store()
runs = attr.explainable_runs(store)
if not runs:
    st.info("No finished run with saved weights yet. Train one on the Train page, then come back here.")
    st.stop()
labels = {record.run_id: attr.run_label(record) for record in runs}
run_id = st.selectbox("Run", list(labels), format_func=labels.get, key="saliency_run")
DEVICE = Placement.choose("auto").device


@st.cache_resource(max_entries=4, show_spinner="Loading the run and its data…")
def load(root: str, run_id: str):
    run_store_ = RunStore(root)
    return attr.load_run(run_store_, run_id, bundle=cached_bundle(run_store_.load(run_id).config.data))


@st.cache_data(max_entries=64, show_spinner="Computing attribution maps…")
def explain(root, run_id, split, index, method, target, smooth):
    return attr.explain_images(load(root, run_id), split, list(index), method, target, smooth, DEVICE)


@st.cache_data(max_entries=8, show_spinner="Measuring where the attribution falls (four methods, val and test)…")
def shares(root, run_id, target, n_images):
    loaded = load(root, run_id)
    splits = {name: loaded.split(name) for name in ("val", "test") if len(loaded.split(name))}
    return attr.where_attribution_falls(loaded.explainer(DEVICE), splits, n_images=n_images, target=target)


@st.cache_data(max_entries=16, show_spinner="Randomising the model layer by layer and recomputing the maps…")
def sanity(root, run_id, method, target, smooth, max_stages):
    loaded = load(root, run_id)
    index = attr.balanced_sample(loaded.split("val").labels, 2, seed=1)
    check = attr.randomisation_check(loaded.explainer(DEVICE), loaded.split("val").images[index], method, target,
                                     smooth, max_stages=max_stages)
    images = loaded.split("val").images[index]
    signed = attr.METHODS[method].signed
    zoom = max(1, 128 // images.shape[-1])
    pictures = [[attr.overlay(images[i], check["original"][i], signed, zoom)]
                + [attr.overlay(images[i], stage["maps"][i], signed, zoom) for stage in check["stages"]]
                for i in range(len(index))]
    stages = [{k: v for k, v in stage.items() if k != "maps"} for stage in check["stages"]]
    return {"pictures": pictures, "stages": stages, "warning": check["warning"], "final": check["final_spearman"]}


try:
    loaded = load(str(store.root), run_id)
except (StoreError, DataError, ValueError, RuntimeError, KeyError) as error:
    st.error(f"This run cannot be explained: {error}")
    st.stop()
for warning in loaded.warnings:
    st.warning(warning)

# ----- what to compute
left, middle, right = st.columns([3, 2, 2])
method = left.radio("Method", list(attr.METHODS), format_func=lambda m: attr.METHODS[m].title, horizontal=True,
                    key="saliency_method")
if loaded.config.tasks:  # multi-label run: explain any one finding (its own sigmoid output)
    target = middle.selectbox("Explain the log-odds of the finding", range(len(loaded.config.tasks)),
                              format_func=loaded.config.tasks.__getitem__, key="saliency_finding")
else:
    target = middle.radio("Explain the log-odds of", attr.TARGETS, horizontal=True, key="saliency_target",
                          format_func={"positive": "PNEUMONIA", "predicted": "the predicted class"}.get)
smooth = right.toggle("SmoothGrad (NoiseTunnel)", key="saliency_smooth", disabled=not attr.METHODS[method].smoothable,
                      help="Average the map over 8 noisy copies of the image: less speckle, 8× the compute")
smooth = smooth and attr.METHODS[method].smoothable
if method == "gradcam" and loaded.gradcam_layer_name is None:
    st.error("Grad-CAM needs a convolutional layer and this model has none (it is an MLP). Pick another method.")
    st.stop()
layer_note = f" (layer `{loaded.gradcam_layer_name}`)" if method == "gradcam" else ""
st.info(f"**{attr.METHODS[method].title}**{layer_note}: {attr.METHODS[method].description}")

# ----- which images: browse by outcome, using the run's saved predictions
BROWSE = {"all": "All", "correct": "Correct", "wrong": "Wrong", "cell": "Confusion-matrix cell",
          "top_losses": "Top losses (most confident mistakes)"}
per_split = st.slider("Images per split", 2, 12, 4, key="saliency_n")
browse = st.radio("Show", list(BROWSE), format_func=BROWSE.get, horizontal=True, key="saliency_browse")
cell = tuple(st.session_state.get("saliency_cell", (1, 0)))
classes = loaded.outcome_classes(target)  # a multi-label run: the chosen finding absent / present


def pick_cell(true: int, predicted: int):
    st.session_state["saliency_cell"] = (true, predicted)
    st.session_state["saliency_browse"] = "cell"


if browse == "cell":
    st.caption(f"Cell: true **{classes[cell[0]]}**, predicted **{classes[cell[1]]}** "
               f"({attr.cell_name(cell[0], cell[1], classes)}). Click another cell below to change it.")

columns = st.columns(2, gap="large")
for column, split in zip(columns, ("val", "test")):
    stored = loaded.predictions.get(split)
    with column:
        st.subheader("Val · site A (training hospital)" if split == "val" else "Test · site B (other hospital)")
        if stored is None or len(stored["labels"]) == 0:
            st.info(f"This run has no {split} predictions.")
            continue
        outcome = loaded.outcomes(split, target)
        matrix = [[int(((outcome["labels"] == t) & (outcome["predicted"] == p)).sum()) for p in range(len(classes))]
                  for t in range(len(classes))]
        st.caption("Confusion matrix (rows: true class, columns: predicted). Click a cell to see its X-rays.")
        for t, row in enumerate(matrix):
            buttons = st.columns(len(classes))
            for p, count in enumerate(row):
                buttons[p].button(f"{attr.cell_name(t, p, classes)} · {count}", key=f"cell_{split}_{t}_{p}",
                                  help=f"true {classes[t]}, predicted {classes[p]}", on_click=pick_cell, args=(t, p),
                                  type="primary" if browse == "cell" and (t, p) == cell else "secondary",
                                  width="stretch")
        index = attr.select(outcome, browse, cell, per_split)
        if not index:
            st.caption("No images in this group.")
            continue
        pictures = explain(str(store.root), run_id, split, tuple(index), method, target, smooth)
        cards = st.columns(2)
        for row, i in enumerate(index):
            extra = " · ".join(f"{name} share {values[row]:.0%}" for name, values in pictures["shares"].items()
                               if name in ("lesion", "marker", "cardiomegaly", "effusion") and values[row] is not None)
            with cards[row % 2]:
                st.image(pictures["pairs"][row], width="stretch",
                         caption=f"original | {attr.METHODS[method].title} → {pictures['targets'][row]}")
                st.caption(attr.describe_image(loaded, split, i, outcome, classes) + (f" · {extra}" if extra else ""))

# ----- can the maps be trusted?
st.header("Do the maps mean anything?")
st.subheader("Where the attribution falls")
st.caption("Share of each map's positive attribution inside a region, averaged over images, next to the region's "
           "share of the image area (evenly spread attribution would match the area). Synthetic data knows where "
           "the lungs, the lesion and the burned-in markers are; any data has a centre, borders and corners.")
n_images = st.select_slider("Images measured per split", [8, 16, 24, 32], value=16, key="saliency_share_n")
if st.toggle("Measure all four methods on val and test", key="saliency_shares"):
    rows = shares(str(store.root), run_id, target, n_images)
    table = pd.DataFrame(attr.shares_table(rows))
    percent = st.column_config.NumberColumn
    st.dataframe(table, hide_index=True, column_config={
        "area": percent("area of the image", format="percent"),
        "val_share": percent("share on val (site A)", format="percent"),
        "test_share": percent("share on test (site B)", format="percent")})
    frame = pd.DataFrame([r for r in rows if r["share"] is not None])
    frame["method"] = frame["method"].map(lambda m: attr.METHODS[m].title)
    chart = alt.Chart(frame, title="Share of positive attribution per region").mark_bar().encode(
        x=alt.X("split:N", title=None, sort=["val", "test"]), y=alt.Y("share:Q", title=None, axis=alt.Axis(format="%")),
        color=alt.Color("split:N", title="split", scale=alt.Scale(domain=["val", "test"], range=["#1f77b4", "#d62728"])),
        column=alt.Column("region:N", title=None),
        row=alt.Row("method:N", title=None), tooltip=["method", "region", "split", alt.Tooltip("share:Q", format=".1%"),
                                                      alt.Tooltip("area:Q", format=".1%")],
    ).properties(width=60, height=90)
    st.altair_chart(chart)
    for sentence in attr.describe_shares(rows):
        st.markdown(f"- {sentence}")

st.subheader("Sanity check: randomise the model (Adebayo et al. 2018)")
st.caption("The same method on copies whose weights are re-initialised from the top layer down. If the map barely "
           "changes (high Spearman rank correlation with the trained model's map), the method shows the image, "
           "not what the model learned.")
if st.toggle(f"Run the randomisation test for {attr.METHODS[method].title}", key="saliency_sanity"):
    result = sanity(str(store.root), run_id, method, target, smooth, 5)
    for image, pictures in enumerate(result["pictures"]):
        st.image(pictures, width=130, caption=["trained model"] + [
            f"top {s['layers']} layer(s) random · ρ = {s['spearman'][image]:.2f}" for s in result["stages"]])
    curve = pd.DataFrame({"layers randomised (from the top)": [0] + [s["layers"] for s in result["stages"]],
                          "Spearman ρ": [1.0] + [s["spearman_mean"] for s in result["stages"]]})
    st.line_chart(curve, x="layers randomised (from the top)", y="Spearman ρ", height=220)
    st.caption("ρ: Spearman rank correlation of |map| with the trained model's |map| (1 = same ranking of pixels; "
               "the curve averages the images above).")
    if result["warning"]:
        st.warning(result["warning"])
    elif result["final"] is not None:
        st.success(f"With every layer randomised the map's rank correlation drops to {result['final']:.2f}: "
                   f"{attr.METHODS[method].title} depends on what the model learned.")

# ----- the report card: faithfulness, stability, randomisation, ground truth (pages/saliency_card.py)
report_card_section(store, run_id, loaded, DEVICE)
