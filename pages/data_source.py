"""Data page, section 1: where the images come from (built-in, a folder, an npz, a public set, an upload)."""
from __future__ import annotations

import os

import streamlit as st

from explore.data import DataSpec, DataError, parse_source
from explore.data.folder import default_cache_dir, load_folder
from explore.data.upload import DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, save_upload
from explore.data.xrv import load_xrv
from explore.settings import NotAllowed, check_upload_allowed
from pages.common import DECODED_FOLDERS
from pages.real_data import xrv_picker

SOURCES = {"synthetic": "🧪 Synthetic (two hospitals)", "folder": "📁 Image folder",
           "medmnist": "🗜️ MedMNIST npz", "xrv": "🏥 Public set (NIH, RSNA, …)", "upload": "⬆️ Upload"}


def source_picker(label: str, current: str, key: str, settings, allow_upload: bool = True) -> str | None:
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
    return upload_picker(key, settings)


def upload_picker(key: str, settings) -> str | None:
    """Upload a zip of class folders, or loose images of one class; saved as a folder on the server."""
    limit_mb, max_files = settings.upload_limits(st.get_option("server.maxUploadSize"), DEFAULT_MAX_BYTES,
                                                 DEFAULT_MAX_FILES)
    files = st.file_uploader(f"A .zip of class folders, or images of one class (limit {limit_mb} MB)",
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
                max_bytes=limit_mb * 2**20, max_files=max_files, class_name=class_name,
                into=previous if add else None)
        except (DataError, NotAllowed) as error:
            st.error(f"Upload refused: {error}")
    saved = st.session_state.get(f"{key}_saved")
    if saved:
        st.caption(f"Using the upload saved in `{saved}`.")
    return f"folder:{saved}" if saved else None


def source_card(chosen: DataSpec, settings, sizes: list[int]) -> dict | None:
    """Source, image size, classes, seed and an optional other test source; None while a path is missing."""
    with st.container(border=True):
        left, right = st.columns([3, 2], gap="large")
        with left:
            source = source_picker("Source", chosen.source, "source", settings)
        with right:
            size = st.segmented_control("Image size (px)", sizes, key="size", required=True,
                                        default=chosen.image_size if chosen.image_size in sizes else sizes[-1])
            num_classes = chosen.num_classes
            if source == "synthetic":
                num_classes = st.segmented_control("Classes", [2, 3], default=chosen.num_classes, key="classes",
                                                   required=True, format_func=lambda n: f"{n} classes",
                                                   help="2: NORMAL / PNEUMONIA · 3: NORMAL / BACTERIAL / VIRAL")
            seed = st.number_input("Seed (synthetic images and folder splits)", 0, 10**6, chosen.seed,
                                   key="data_seed")
            other_test = st.toggle("Test on a different source (dataset mismatch)", bool(chosen.test_source),
                                   key="other_test")
        test_source = None
        if other_test:
            test_source = source_picker("Test source", chosen.test_source or "synthetic", "test_source", settings,
                                        allow_upload=False)
    if source is None or (other_test and test_source is None):
        return None
    return {"source": source, "image_size": int(size), "seed": int(seed), "test_source": test_source,
            "num_classes": int(num_classes)}


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
