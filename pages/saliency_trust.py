"""Saliency page, 'Do the maps mean anything?': where the attribution falls, and the model-randomisation check."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from explore.insight import attribution as attr
from explore import charts
from explore.insight import saliency_views
from pages.common import loaded_run


@st.cache_data(max_entries=8, show_spinner="Measuring where the attribution falls (four methods, val and test)…")
def shares(root, run_id, target, n_images, device: str):
    return saliency_views.run_shares(loaded_run(root, run_id), device, target, n_images)


@st.cache_data(max_entries=16, show_spinner="Randomising the model layer by layer and recomputing the maps…")
def sanity(root, run_id, method, target, smooth, max_stages, device: str):
    return saliency_views.sanity_pictures(loaded_run(root, run_id), device, method, target, smooth, max_stages)


def where_it_falls(root: str, run_id: str, target: str, device) -> None:
    st.subheader("Where the attribution falls")
    st.caption("Share of each map's positive attribution inside a region, averaged over images, next to the region's "
               "share of the image area (evenly spread attribution would match the area). Synthetic data knows where "
               "the lungs, the lesion and the burned-in markers are; any data has a centre, borders and corners.")
    n_images = st.select_slider("Images measured per split", [8, 16, 24, 32], value=16, key="saliency_share_n")
    if not st.toggle("Measure all four methods on val and test", key="saliency_shares"):
        return
    rows = shares(root, run_id, target, n_images, device)
    percent = st.column_config.NumberColumn
    st.dataframe(pd.DataFrame(saliency_views.shares_table(rows)), hide_index=True, column_config={
        "area": percent("area of the image", format="percent"),
        "val_share": percent("share on val (site A)", format="percent"),
        "test_share": percent("share on test (site B)", format="percent")})
    st.altair_chart(charts.region_shares(rows, {name: m.title for name, m in attr.METHODS.items()}))
    for sentence in saliency_views.describe_shares(rows):
        st.markdown(f"- {sentence}")


def randomisation(root: str, run_id: str, method: str, target: str, smooth: bool, device) -> None:
    st.subheader("Sanity check: randomise the model (Adebayo et al. 2018)")
    st.caption("The same method on copies whose weights are re-initialised from the top layer down. If the map barely "
               "changes (high Spearman rank correlation with the trained model's map), the method shows the image, "
               "not what the model learned.")
    if not st.toggle(f"Run the randomisation test for {attr.METHODS[method].title}", key="saliency_sanity"):
        return
    result = sanity(root, run_id, method, target, smooth, 5, device)
    for pictures, captions in zip(result["pictures"], result["captions"]):
        st.image(pictures, width=130, caption=captions)
    st.altair_chart(charts.randomisation(result["stages"]), width="stretch")
    st.caption("ρ: Spearman rank correlation of |map| with the trained model's |map| (1 = same ranking of pixels; "
               "the curve averages the images above).")
    if result["warning"]:
        st.warning(result["warning"])
    elif result["final"] is not None:
        st.success(f"With every layer randomised the map's rank correlation drops to {result['final']:.2f}: "
                   f"{attr.METHODS[method].title} depends on what the model learned.")
