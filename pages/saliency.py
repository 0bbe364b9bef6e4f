"""Saliency: where does a trained model look, on its own hospital's X-rays (val) and on another's (test)?"""
import streamlit as st

from explore.insight import attribution as attr
from explore.data import DataError
from explore.device import Placement
from explore.training.store import StoreError
from pages.common import loaded_run, run_store
from pages.saliency_browse import browse_maps
from pages.saliency_card import report_card_section
from pages.saliency_trust import randomisation, where_it_falls

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
device = Placement.choose("auto").device
ROOT, DEVICE = str(store.root), str(device)  # cache keys: plain strings

try:
    loaded = loaded_run(ROOT, run_id)
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

# ----- which images: browse by outcome, using the run's saved predictions (pages/saliency_browse.py)
browse_maps(loaded, ROOT, run_id, method, target, smooth, DEVICE)

# ----- can the maps be trusted? (pages/saliency_trust.py)
st.header("Do the maps mean anything?")
where_it_falls(ROOT, run_id, target, DEVICE)
randomisation(ROOT, run_id, method, target, smooth, DEVICE)

# ----- the report card: faithfulness, stability, randomisation, ground truth (pages/saliency_card.py)
report_card_section(store, run_id, loaded, device)
