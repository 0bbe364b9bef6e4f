"""Data page, section 4: what is in the chosen dataset (samples, counts, intensities, sizes, means, skipped files)."""
from __future__ import annotations

import streamlit as st

from explore import charts
from explore.insight import report
from explore.data import DataError, stats
from pages.real_data import show_label_vs_metadata, show_selection


@st.dialog("Image", width="large")
def enlarge(bundle, split_name: str, index: int) -> None:
    split = bundle.splits[split_name]
    masks = {name: mask[index] for name, mask in split.masks.items()}
    overlay = bool(masks) and st.toggle("Show masks (lung green, lesion red, markers yellow)", key="dialog_masks")
    image = report.overlay_masks(split.images[index], masks) if overlay else report.grey(split.images[index])
    picture, facts = st.columns([3, 2], gap="medium")
    picture.image(image, width="stretch")
    f = stats.image_facts(bundle, split_name, index)
    facts.markdown(f"### {f['class']}\n- split: **{f['split']}**\n- site: **{f['site']}**\n- id: `{f['id']}`\n"
                   f"- original size: {f['original']}\n- shown at: {f['shown']}")


def samples(bundle, seed: int) -> None:
    st.subheader("Samples")
    st.caption("Random images of each class; press *enlarge* to see one large, with its id, site and original size.")
    for tab, split_name in zip(st.tabs([f"{s} ({len(bundle.splits[s])})" for s in bundle.splits]), bundle.splits):
        with tab:
            rows = stats.sample_rows(bundle, split_name, per_class=8, seed=seed)
            if not any(rows.values()):
                st.caption("This split is empty.")
            for class_name, row in rows.items():
                if row:
                    st.markdown(f"**{class_name}**")
                for column, (index, _, site, _) in zip(st.columns(8), row):
                    column.image(report.grey(bundle.splits[split_name].images[index]), caption=f"site {site}",
                                 width="stretch")
                    if column.button("enlarge", key=f"zoom-{split_name}-{index}", type="tertiary",
                                     icon=":material/zoom_in:"):
                        enlarge(bundle, split_name, index)


def what_is_in_it(bundle, seed: int) -> None:
    samples(bundle, seed)
    counts = stats.class_counts(bundle)
    count_col, hist_col = st.columns(2, gap="large")
    with count_col:
        st.subheader("Class counts")
        st.dataframe(counts.pivot(index="class", columns="split", values="count").reindex(
            index=list(bundle.classes), columns=list(bundle.splits)))
        st.altair_chart(charts.class_counts(counts, list(bundle.splits), list(bundle.classes)), width="stretch")
    with hist_col:
        st.subheader("Pixel intensities")
        st.altair_chart(charts.intensity_histograms(stats.intensity_histograms(bundle, bins=64)), width="stretch")
        st.caption("A site with brighter, greyer or noisier images shifts this curve before any model is trained.")
    if bundle.selection:  # the public sets: how CSV rows became images, and the real shortcuts
        show_selection(bundle)
    if any(split.metadata for split in bundle.splits.values()):
        show_label_vs_metadata(bundle)
    st.subheader("Original image sizes")
    sizes = stats.original_size_table(bundle)
    size_col, scatter_col = st.columns([3, 2], gap="large")
    size_col.dataframe(report.size_summary(sizes), hide_index=True)
    size_col.caption("Every image is resized to a square: an aspect ratio far from 1 means it was stretched.")
    scatter_col.altair_chart(charts.original_sizes(sizes), width="stretch")
    mean_images(bundle)
    st.subheader("Skipped files")
    skipped = stats.skipped_table(bundle)
    if skipped.empty:
        st.success("No files skipped.")
    else:
        st.warning(f"{len(skipped)} file(s) could not be used and were left out:")
        st.dataframe(skipped, hide_index=True)


def mean_images(bundle) -> None:
    st.subheader("Mean images")
    means = stats.mean_images(bundle)
    columns = st.columns(len(means) + 1)
    for column, (split_name, mean) in zip(columns, means.items()):
        column.image(mean.numpy(), caption=f"mean of {split_name}", clamp=True, width="stretch")
    try:
        difference, scale = report.diverging_rgb(stats.mean_image_difference(bundle, "val", "test"))
        columns[-1].image(difference, caption=f"val − test (red: val brighter, blue: test brighter; full colour "
                                              f"= {scale:.2f})", width="stretch")
    except DataError as error:
        columns[-1].caption(f"No difference image: {error}")
