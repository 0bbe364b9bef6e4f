"""Data: choose what the models learn from, and look at it before training anything.

Every number and picture here comes from explore.data.stats on the decoded dataset; the
chosen DataSpec goes to st.session_state["data_spec"], which every other page reads.
"""
import os
from dataclasses import replace

import altair as alt
import streamlit as st

from explore import report
from explore.data import IMAGE_SIZES, DataError, DataSpec, parse_source, stats
from explore.data.folder import default_cache_dir, load_folder
from explore.data.synthetic import KNOBS, SHIFT_KNOBS, no_shift_knobs, render_patient_at_sites
from explore.data.upload import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, save_upload
from explore.settings import NotAllowed, check_source_allowed, check_upload_allowed
from explore.data.xrv import load_xrv
from pages import multitask_section
from pages.common import DECODED_FOLDERS, app_settings, cached_bundle, current_data_spec, default_data_spec
from pages.real_data import real_data_card, show_label_vs_metadata, show_selection, xrv_picker

SOURCES = {"synthetic": "🧪 Synthetic (two hospitals)", "folder": "📁 Image folder",
           "medmnist": "🗜️ MedMNIST npz", "xrv": "🏥 Public set (NIH, RSNA, …)", "upload": "⬆️ Upload"}
CLASS_CHOICES = {2: "2 classes", 3: "3 classes"}
settings = app_settings()  # demo mode narrows paths, uploads and image sizes (the frame shows a banner)
UPLOAD_LIMIT_MB = min(st.get_option("server.maxUploadSize"), DEFAULT_MAX_BYTES // 2**20,
                      settings.max_upload_mb if settings.demo_mode else DEFAULT_MAX_BYTES)
UPLOAD_MAX_FILES = settings.max_upload_files if settings.demo_mode else DEFAULT_MAX_FILES
SIZES = [s for s in IMAGE_SIZES if not settings.demo_mode or s <= settings.max_image_size]
LOAD_ERRORS = (DataError, ValueError, OSError, NotAllowed)

st.title("Data")
st.caption("Choose the images every page trains on. In the synthetic set, **site A** (one hospital) gives "
           "train and val and **site B** (another hospital) gives test: the gap between them is the course's "
           "dataset-mismatch lesson.")
chosen = current_data_spec()
real_data_card(chosen.image_size)  # PneumoniaMNIST → ChestMNIST: the one-click real mismatch


def source_picker(label: str, current: str, key: str, allow_upload: bool = True) -> str | None:
    """A source kind and its path → a source string ('synthetic', 'folder:PATH', ...), or None if incomplete."""
    kind_now, path_now = parse_source(current)
    kinds = [k for k in SOURCES if allow_upload or k != "upload"]
    kind = st.radio(label, kinds, index=kinds.index(kind_now), format_func=SOURCES.get, horizontal=True, key=key)
    if kind == "synthetic":
        return "synthetic"
    if kind == "folder":
        st.caption("Class folders, e.g. `PATH/NORMAL/*.png` and `PATH/PNEUMONIA/*.png`, optionally inside "
                   "`train/`, `val/`, `test/`. Hidden files are ignored; unreadable ones are listed below.")
        path = st.text_input("Folder path", path_now if kind_now == "folder" else "", key=f"{key}_folder",
                             placeholder="/data/chest_xray")
        return f"folder:{path.strip()}" if path.strip() else None
    if kind == "medmnist":
        path = st.text_input("PneumoniaMNIST .npz file (or a folder holding it)",
                             path_now if kind_now == "medmnist" else "", key=f"{key}_npz",
                             placeholder="~/.medmnist/pneumoniamnist_128.npz")
        return f"medmnist:{path.strip()}" if path.strip() else None
    if kind == "xrv":
        return xrv_picker(key, current)
    return upload_picker(key)


def upload_picker(key: str) -> str | None:
    """Upload a zip of class folders, or loose images of one class; saved as a folder on the server."""
    files = st.file_uploader(f"A .zip of class folders, or images of one class (limit {UPLOAD_LIMIT_MB} MB)",
                             type=["zip", "png", "jpg", "jpeg", "bmp", "tif", "tiff", "dcm"],
                             accept_multiple_files=True, key=f"{key}_files")
    loose = bool(files) and not (len(files) == 1 and files[0].name.lower().endswith(".zip"))
    class_name = st.text_input("Class of these images", "PNEUMONIA", key=f"{key}_class") if loose else None
    previous = st.session_state.get(f"{key}_saved")
    add = loose and previous and st.checkbox(f"Add to the previous upload ({os.path.basename(previous)})",
                                             value=True, key=f"{key}_add")
    if files and st.button("Use these files", key=f"{key}_save"):
        try:
            check_upload_allowed(settings, sum(f.size for f in files), len(files))
            st.session_state[f"{key}_saved"] = save_upload(
                [(f.name, f.getvalue()) for f in files], os.path.join(default_cache_dir(), "uploads"),
                max_bytes=UPLOAD_LIMIT_MB * 2**20, max_files=UPLOAD_MAX_FILES, class_name=class_name,
                into=previous if add else None)
        except (DataError, NotAllowed) as error:
            st.error(f"Upload refused: {error}")
    saved = st.session_state.get(f"{key}_saved")
    if saved:
        st.caption(f"Using the upload saved in `{saved}`.")
    return f"folder:{saved}" if saved else None


def decode_with_progress(spec: DataSpec) -> None:
    """Decode a chosen folder with a progress bar, once per server: this fills the on-disk cache
    that cached_bundle then reads. (Not an st.cache_resource: a cached function may not update a
    progress bar created outside it, and Streamlit refuses that when the decode fails.)"""
    for source, as_test in ((spec.source, False), (spec.test_source, True)):
        if not (source and source.startswith(("folder:", "xrv:"))):
            continue
        key = (source, spec.image_size, spec.seed, as_test)
        if key in DECODED_FOLDERS:
            continue
        bar = st.progress(0.0, text=f"Decoding {parse_source(source)[1]} …")

        def show(done: int, total: int) -> None:
            if done == total or done % max(1, total // 100) == 0:
                bar.progress(done / max(total, 1), text=f"Decoding images: {done} of {total} "
                                                        "(cached on disk after the first time)")

        try:
            load = load_xrv if source.startswith("xrv:") else load_folder
            load(parse_source(source)[1], image_size=key[1], seed=key[2], all_as_test=key[3], progress=show)
        finally:
            bar.empty()
        DECODED_FOLDERS.add(key)


# ----- 1. the source ---------------------------------------------------------------------------
with st.container(border=True):
    left, right = st.columns([3, 2], gap="large")
    with left:
        source = source_picker("Source", chosen.source, key="source")
    with right:
        size = st.segmented_control("Image size (px)", SIZES, key="size", required=True,
                                    default=chosen.image_size if chosen.image_size in SIZES else SIZES[-1])
        num_classes = chosen.num_classes
        if source == "synthetic":
            num_classes = st.segmented_control("Classes", [2, 3], default=chosen.num_classes, key="classes",
                                               required=True, format_func=CLASS_CHOICES.get,
                                               help="2: NORMAL / PNEUMONIA · 3: NORMAL / BACTERIAL / VIRAL")
        seed = st.number_input("Seed (synthetic images and folder splits)", 0, 10**6, chosen.seed, key="data_seed")
        other_test = st.toggle("Test on a different source (dataset mismatch)", bool(chosen.test_source),
                               key="other_test")
    test_source = None
    if other_test:
        test_source = source_picker("Test source", chosen.test_source or "synthetic", key="test_source",
                                    allow_upload=False)

if source is None or (other_test and test_source is None):
    st.info("Enter a path (or upload files) to use this source. The other pages keep using: "
            f"**{report.describe_data(chosen)}**.")
    st.stop()

applied_knobs = dict(chosen.synthetic) if chosen.source == "synthetic" else dict(default_data_spec().synthetic)
spec = DataSpec(source=source, image_size=int(size), seed=int(seed), test_source=test_source,
                num_classes=int(num_classes), synthetic=tuple(applied_knobs.items()) if source == "synthetic" else ())

# ----- 2. synthetic knobs with a live preview -------------------------------------------------
def knob_slider(name: str, applied: dict):
    knob, cast = KNOBS[name], int if KNOBS[name].integer else float
    if f"knob_{name}" not in st.session_state:  # start from the dataset in use
        st.session_state[f"knob_{name}"] = cast(applied.get(name, knob.default))
    label = knob.label.replace(" (site B)", "") if name in SHIFT_KNOBS else knob.label  # the heading says "site B"
    high = knob.default if settings.demo_mode and knob.integer else knob.max  # demo: no giant generated sets
    if st.session_state[f"knob_{name}"] > high:
        st.session_state[f"knob_{name}"] = cast(high)
    return st.slider(label, cast(knob.min), cast(high), step=cast(knob.step), help=knob.help, key=f"knob_{name}")


if source == "synthetic":
    with st.expander("🏥 How site B differs from site A — move a knob, see the same patient at both sites",
                     expanded=True):
        def set_knobs(values: dict) -> None:
            for name, knob in KNOBS.items():
                st.session_state[f"knob_{name}"] = (int if knob.integer else float)(values.get(name, knob.default))

        knob_col, preview_col = st.columns([3, 2], gap="large")
        with knob_col:
            sliders = {}
            shift_knobs = [n for n in KNOBS if n in SHIFT_KNOBS]
            other_knobs = [n for n in KNOBS if n not in SHIFT_KNOBS]
            st.markdown("**How site B takes its images** (0 = exactly like site A)")
            for column, name in zip(st.columns(2) * 3, shift_knobs):
                with column:
                    sliders[name] = knob_slider(name, applied_knobs)
            st.markdown("**A shortcut in site A, and how many images**")
            for column, name in zip(st.columns(2) * 2, other_knobs):
                with column:
                    sliders[name] = knob_slider(name, applied_knobs)
            b1, b2, b3 = st.columns(3)
            b2.button("Sites identical", key="no_shift", on_click=set_knobs, args=(no_shift_knobs() | {
                k: v for k, v in sliders.items() if KNOBS[k].integer},), width="stretch")
            b3.button("Defaults", key="default_knobs", on_click=set_knobs, args=({},), width="stretch")
            changed = {k: float(v) for k, v in sliders.items() if float(v) != KNOBS[k].default}
            if b1.button("Apply to dataset", key="apply_knobs", type="primary", width="stretch"):
                spec = replace(spec, synthetic=tuple(changed.items()))
            elif changed != applied_knobs:
                st.caption("The sliders differ from the dataset in use: press **Apply to dataset** to regenerate it.")
        with preview_col:
            p1, p2 = st.columns(2)
            patient = p1.number_input("Patient", 0, 999, 0, key="preview_patient")
            label = p2.selectbox("Diagnosis", [1, 0], format_func={0: "NORMAL", 1: "PNEUMONIA"}.get,
                                 key="preview_label")
            show_masks = st.toggle("Show lung (green), lesion (red) and markers (yellow)", key="preview_masks")
            views = render_patient_at_sites(image_size=128, seed=int(seed), patient=int(patient), label=int(label),
                                            **sliders)
            for column, site in zip(st.columns(2), ("A", "B")):
                view = views[site]
                picture = report.overlay_masks(view["image"], view) if show_masks else report.grey(view["image"])
                column.image(picture, caption=f"site {site} ({'train/val' if site == 'A' else 'test'})",
                             width="stretch")
            multitask_section.data_preview(int(seed))  # the findings multi-task runs add

# ----- 3. load it ---------------------------------------------------------------------------------
try:
    for source_to_check in (spec.source, spec.test_source):
        check_source_allowed(settings, source_to_check)
    decode_with_progress(spec)
    bundle = cached_bundle(spec)
except LOAD_ERRORS as error:
    st.error(f"This dataset cannot be used: {error}")
    st.info(f"The other pages keep using: **{report.describe_data(chosen)}**.")
    st.stop()
st.session_state["data_spec"] = spec
st.success(f"In use on every page: **{report.describe_data(spec)}**", icon=":material/check_circle:")
if spec.source != "synthetic" and bundle.description:
    st.caption(bundle.description)

# ----- 4. what is in it ---------------------------------------------------------------------------
counts = stats.class_counts(bundle)
st.subheader("Samples")
st.caption("Random images of each class; press *enlarge* to see one large, with its id, site and original size.")


@st.dialog("Image", width="large")
def enlarge(split_name: str, index: int) -> None:
    split = bundle.splits[split_name]
    masks = {name: mask[index] for name, mask in split.masks.items()}
    overlay = bool(masks) and st.toggle("Show masks (lung green, lesion red, markers yellow)", key="dialog_masks")
    image = report.overlay_masks(split.images[index], masks) if overlay else report.grey(split.images[index])
    picture, facts = st.columns([3, 2], gap="medium")
    picture.image(image, width="stretch")
    width, height = split.original_sizes[index].tolist()
    size = bundle.image_size
    facts.markdown(f"### {bundle.classes[int(split.labels[index])]}\n"
                   f"- split: **{split_name}**\n- site: **{split.sites[index]}**\n- id: `{split.ids[index]}`\n"
                   f"- original size: {width} × {height} px\n- shown at: {size} × {size} px")


for tab, split_name in zip(st.tabs([f"{s} ({len(bundle.splits[s])})" for s in bundle.splits]), bundle.splits):
    with tab:
        picks = stats.sample_grid(bundle, split_name, per_class=8, seed=spec.seed)
        if not picks:
            st.caption("This split is empty.")
        for class_name in bundle.classes:
            row = [p for p in picks if p[1] == class_name]
            if row:
                st.markdown(f"**{class_name}**")
            for column, (index, _, site, image_id) in zip(st.columns(8), row):
                column.image(report.grey(bundle.splits[split_name].images[index]), caption=f"site {site}",
                             width="stretch")
                if column.button("enlarge", key=f"zoom-{split_name}-{index}", type="tertiary",
                                 icon=":material/zoom_in:"):
                    enlarge(split_name, index)

count_col, hist_col = st.columns(2, gap="large")
with count_col:
    st.subheader("Class counts")
    st.dataframe(counts.pivot(index="class", columns="split", values="count").reindex(
        index=list(bundle.classes), columns=list(bundle.splits)))
    st.altair_chart(alt.Chart(counts).mark_bar().encode(
        x=alt.X("split:N", sort=list(bundle.splits), title=None, axis=alt.Axis(labelAngle=0)),
        xOffset=alt.XOffset("class:N", sort=list(bundle.classes)), y="count:Q",
        color=alt.Color("class:N", sort=list(bundle.classes)), tooltip=["split", "class", "count"],
    ).properties(height=220), width="stretch")
with hist_col:
    st.subheader("Pixel intensities")
    histograms = stats.intensity_histograms(bundle, bins=64)
    histograms["group"] = histograms["split"] + " · site " + histograms["site"]
    st.altair_chart(alt.Chart(histograms).mark_line().encode(
        x=alt.X("intensity_bin:Q", title="grey level (0 black … 255 white)"),
        y=alt.Y("density:Q", title="share of pixels"), color=alt.Color("group:N", title="split · site"),
        tooltip=["split", "site", "intensity_bin", alt.Tooltip("density:Q", format=".4f")],
    ).properties(height=300), width="stretch")
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
scatter_col.altair_chart(alt.Chart(sizes).mark_circle(opacity=0.5).encode(
    x=alt.X("width:Q", title="original width (px)"), y=alt.Y("height:Q", title="original height (px)"),
    color="class:N", shape="split:N", tooltip=["split", "class", "width", "height",
                                               alt.Tooltip("aspect:Q", format=".2f")]).properties(height=260),
    width="stretch")

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

st.subheader("Skipped files")
skipped = stats.skipped_table(bundle)
if skipped.empty:
    st.success("No files skipped.")
else:
    st.warning(f"{len(skipped)} file(s) could not be used and were left out:")
    st.dataframe(skipped, hide_index=True)
