"""Data: choose what the models learn from, and look at it before training anything.

Every number and picture here comes from explore.data.stats on the decoded dataset; the
chosen DataSpec goes to st.session_state["data_spec"], which every other page reads.
The sections live in pages/data_source.py, data_knobs.py, data_look.py and real_data.py.
"""
import streamlit as st

from explore.insight import report
from explore.data import IMAGE_SIZES, DataError, DataSpec
from explore.settings import NotAllowed, check_source_allowed
from pages.common import app_settings, cached_bundle, current_data_spec, default_data_spec
from pages.data_knobs import knobs_section
from pages.data_look import what_is_in_it
from pages.data_source import decode_with_progress, source_card
from pages.real_data import real_data_card

settings = app_settings()  # demo mode narrows paths, uploads and image sizes (the frame shows a banner)
st.title("Data")
st.caption("Choose the images every page trains on. In the synthetic set, **site A** (one hospital) gives "
           "train and val and **site B** (another hospital) gives test: the gap between them is the course's "
           "dataset-mismatch lesson.")
chosen = current_data_spec()
real_data_card(chosen.image_size)  # PneumoniaMNIST → ChestMNIST: the one-click real mismatch

# ----- 1. the source, 2. the synthetic set's knobs ----------------------------------------------
picked = source_card(chosen, settings, settings.image_sizes(IMAGE_SIZES))
if picked is None:
    st.info("Enter a path (or upload files) to use this source. The other pages keep using: "
            f"**{report.describe_data(chosen)}**.")
    st.stop()
applied_knobs = dict((chosen if chosen.source == "synthetic" else default_data_spec()).synthetic)
spec = DataSpec(**picked, synthetic=tuple(applied_knobs.items()) if picked["source"] == "synthetic" else ())
if spec.source == "synthetic":
    spec = knobs_section(spec, applied_knobs, settings)

# ----- 3. load it ---------------------------------------------------------------------------------
try:
    for source_to_check in (spec.source, spec.test_source):
        check_source_allowed(settings, source_to_check)
    decode_with_progress(spec)
    bundle = cached_bundle(spec)
except (DataError, ValueError, OSError, NotAllowed) as error:
    st.error(f"This dataset cannot be used: {error}")
    st.info(f"The other pages keep using: **{report.describe_data(chosen)}**.")
    st.stop()
st.session_state["data_spec"] = spec
st.success(f"In use on every page: **{report.describe_data(spec)}**", icon=":material/check_circle:")
if spec.source != "synthetic" and bundle.description:
    st.caption(bundle.description)

# ----- 4. what is in it ---------------------------------------------------------------------------
what_is_in_it(bundle, spec.seed)
